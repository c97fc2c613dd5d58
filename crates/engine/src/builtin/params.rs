//! Request validation: an OpenAI request becomes generation parameters, or `InvalidRequest`.

use cloister_types::openai::ChatCompletionRequest;

use crate::{Error, Result};

/// Most stop strings one request may carry (OpenAI allows 4; a few more cost nothing).
const MAX_STOPS: usize = 16;
/// Longest stop string, in bytes.
const MAX_STOP_LEN: usize = 1024;

/// How the next token is chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Sampling {
    /// The most likely token (temperature 0).
    Greedy,
    /// Temperature, then nucleus (top-p), then a seeded draw.
    Random {
        /// Temperature in (0, 2].
        temperature: f32,
        /// Nucleus mass in (0, 1].
        top_p: f32,
        /// Seed for llama.cpp's sampler.
        seed: u32,
    },
}

/// Everything the worker needs besides the prompt.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct GenParams {
    /// Upper bound on generated tokens; `None`: until the slot's context is full.
    pub(crate) max_tokens: Option<u32>,
    /// Stop strings (never sent to the client).
    pub(crate) stop: Vec<String>,
    /// Token choice.
    pub(crate) sampling: Sampling,
    /// Keep going past end-of-generation tokens (benchmarks only).
    pub(crate) ignore_eos: bool,
}

impl GenParams {
    /// Validates the sampling fields of `req` (the model and messages are checked elsewhere).
    pub(crate) fn from_request(req: &ChatCompletionRequest) -> Result<Self> {
        let temperature = req.temperature.unwrap_or(1.0);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(Error::InvalidRequest(format!(
                "temperature must be between 0 and 2, got {temperature}"
            )));
        }
        let top_p = req.top_p.unwrap_or(1.0);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(Error::InvalidRequest(format!(
                "top_p must be in (0, 1], got {top_p}"
            )));
        }
        let max_tokens = req.max_new_tokens();
        if max_tokens == Some(0) {
            return Err(Error::InvalidRequest("max_tokens must be at least 1".into()));
        }
        if let Some(n) = req.extra.get("n").and_then(serde_json::Value::as_u64)
            && n != 1
        {
            return Err(Error::InvalidRequest(
                "n must be 1 for the built-in engine".into(),
            ));
        }
        let stop = req.stop_sequences();
        if stop.len() > MAX_STOPS {
            return Err(Error::InvalidRequest(format!(
                "at most {MAX_STOPS} stop sequences are allowed"
            )));
        }
        if stop.iter().any(|s| s.len() > MAX_STOP_LEN) {
            return Err(Error::InvalidRequest(format!(
                "a stop sequence is longer than {MAX_STOP_LEN} bytes"
            )));
        }
        let sampling = if temperature == 0.0 {
            Sampling::Greedy
        } else {
            Sampling::Random {
                temperature,
                top_p,
                seed: llama_seed(req.seed),
            }
        };
        Ok(Self {
            max_tokens,
            stop,
            sampling,
            ignore_eos: false,
        })
    }
}

/// Folds a 64-bit request seed into llama.cpp's 32-bit one; a random seed when none is given.
/// `u32::MAX` means "pick a random seed" to llama.cpp, so it is never passed on.
fn llama_seed(seed: Option<u64>) -> u32 {
    let folded = match seed {
        Some(s) => ((s >> 32) ^ (s & 0xffff_ffff)) as u32,
        None => rand::random::<u32>(),
    };
    if folded == u32::MAX { u32::MAX - 1 } else { folded }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(f: impl FnOnce(&mut ChatCompletionRequest)) -> Result<GenParams> {
        let mut r = ChatCompletionRequest::default();
        f(&mut r);
        GenParams::from_request(&r)
    }

    #[test]
    fn defaults_are_openai_defaults() {
        let p = req(|_| {}).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            matches!(p.sampling, Sampling::Random { temperature, top_p, .. } if temperature == 1.0 && top_p == 1.0)
        );
        assert_eq!(p.max_tokens, None);
    }

    #[test]
    fn ranges_are_checked() {
        for t in [-0.1, 2.01, f32::NAN] {
            assert!(
                matches!(req(|r| r.temperature = Some(t)), Err(Error::InvalidRequest(_))),
                "{t}"
            );
        }
        for p in [0.0, 1.01, f32::NAN] {
            assert!(
                matches!(req(|r| r.top_p = Some(p)), Err(Error::InvalidRequest(_))),
                "{p}"
            );
        }
        assert!(matches!(
            req(|r| r.max_tokens = Some(0)),
            Err(Error::InvalidRequest(_))
        ));
        assert!(matches!(
            req(|r| {
                r.extra.insert("n".into(), 2.into());
            }),
            Err(Error::InvalidRequest(_))
        ));
        assert!(matches!(
            req(|r| r.temperature = Some(0.0)),
            Ok(GenParams {
                sampling: Sampling::Greedy,
                ..
            })
        ));
    }

    #[test]
    fn seeds_are_stable() {
        assert_eq!(llama_seed(Some(42)), llama_seed(Some(42)));
        assert_ne!(llama_seed(Some(u64::from(u32::MAX))), u32::MAX);
    }
}
