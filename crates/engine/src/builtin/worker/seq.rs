//! A running sequence: its job, sampler, how far its prompt is fed, what it generated, and the
//! text it has yet to send.

use std::time::Instant;

use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;

use super::prefix::common_prefix;
use super::slots::{SlotId, Want};
use super::{Job, Stats};
use crate::builtin::params::Sampling;
use crate::builtin::text::{StopMatcher, StopScan, Utf8Decoder};

/// A running sequence.
pub(super) struct Seq {
    pub(super) id: i32,
    /// Admission order: older prompts are fed first.
    pub(super) ticket: u64,
    pub(super) job: Job,
    pub(super) sampler: LlamaSampler,
    /// Prompt tokens in the KV cache or in the current batch.
    pub(super) fed: usize,
    /// Prompt tokens found in the slot's prefix cache at admission.
    pub(super) cached: usize,
    /// Sampled tokens put in a batch, in order: with the prompt, what the KV cells hold.
    pub(super) generated: Vec<LlamaToken>,
    /// Tokens in the KV cache.
    pub(super) n_past: i32,
    /// Sampled token not yet decoded (generation phase).
    pub(super) next: Option<LlamaToken>,
    /// Tokens this sequence put in the current batch.
    pub(super) in_batch: i32,
    /// Index of this sequence's logits in the current batch.
    pub(super) logits_at: Option<i32>,
    pub(super) n_gen: usize,
    pub(super) decoder: Utf8Decoder,
    pub(super) stops: StopMatcher,
    pub(super) admitted: Instant,
    pub(super) first_token: Option<Instant>,
    pub(super) last_token: Option<Instant>,
    #[cfg(test)]
    pub(super) sampled_logits: Vec<Vec<f32>>,
}

impl Seq {
    pub(super) fn new(id: i32, ticket: u64, job: Job, cached: usize) -> Self {
        let sampler = match job.params.sampling {
            Sampling::Greedy => LlamaSampler::greedy(),
            Sampling::Random {
                temperature,
                top_p,
                seed,
            } => LlamaSampler::chain_simple([
                LlamaSampler::temp(temperature),
                LlamaSampler::top_p(top_p, 1),
                LlamaSampler::dist(seed),
            ]),
        };
        let stops = StopMatcher::new(job.params.stop.clone());
        Self {
            id,
            ticket,
            job,
            sampler,
            fed: cached,
            cached,
            generated: Vec::new(),
            n_past: i32::try_from(cached).unwrap_or(0),
            next: None,
            in_batch: 0,
            logits_at: None,
            n_gen: 0,
            decoder: Utf8Decoder::default(),
            stops,
            admitted: Instant::now(),
            first_token: None,
            last_token: None,
            #[cfg(test)]
            sampled_logits: Vec::new(),
        }
    }

    /// What this sequence puts in the next batch.
    pub(super) fn want(&self) -> (u64, Want) {
        let want = if self.next.is_some() {
            Want::Decode
        } else if self.fed < self.job.prompt.len() {
            Want::Prompt {
                left: self.job.prompt.len() - self.fed,
            }
        } else {
            Want::Nothing
        };
        (self.ticket, want)
    }

    pub(super) fn stats(&self) -> Stats {
        let secs = |a: Option<Instant>, b: Instant| a.map_or(0.0, |a| a.duration_since(b).as_secs_f64());
        Stats {
            prompt_tokens: self.job.prompt.len(),
            cached_tokens: self.cached,
            completion_tokens: self.n_gen,
            prompt_secs: secs(self.first_token, self.admitted),
            gen_secs: match (self.first_token, self.last_token) {
                (Some(first), last) => secs(last, first),
                (None, _) => 0.0,
            },
        }
    }

    /// The tokens at positions `0..n_past` of this sequence's KV cells.
    pub(super) fn kv_tokens(self) -> Vec<LlamaToken> {
        let n = usize::try_from(self.n_past).unwrap_or(0);
        let mut tokens = self.job.prompt;
        if n <= tokens.len() {
            tokens.truncate(n);
        } else {
            tokens.extend_from_slice(&self.generated);
            tokens.truncate(n);
        }
        tokens
    }

    /// How many leading tokens of `prompt` this sequence's decoded KV cells hold.
    pub(super) fn decoded_prefix(&self, prompt: &[LlamaToken]) -> usize {
        let n = usize::try_from(self.n_past).unwrap_or(0);
        common_prefix(self.job.prompt.iter().chain(&self.generated).take(n), prompt)
    }

    /// Everything still held back, for the end of the text.
    pub(super) fn drain(&mut self) -> (String, bool) {
        let rest = self.decoder.finish();
        match self.stops.push(&rest) {
            StopScan::Stopped(before) => (before, true),
            StopScan::Continue(mut out) => {
                out.push_str(&self.stops.finish());
                (out, false)
            }
        }
    }
}

impl SlotId for Seq {
    fn slot_id(&self) -> i32 {
        self.id
    }
}
