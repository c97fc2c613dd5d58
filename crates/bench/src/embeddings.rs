//! `cloister bench embeddings`: the built-in engine's embeddings (the embedding GGUF run by
//! llama.cpp, see `cloister_engine::builtin`) against sentence-transformers on CPU torch, on the same
//! sentences, batch size and threads, in the same run. Ours runs in process, through the engine's
//! embedding thread exactly as a request does (tokenize, queue, encode, pool, normalise); the peer
//! runs in a Python process ([`PEER_SCRIPT`]) that loads the same weights from their Hugging Face
//! directory. Rounds: ours, then the peer's, then ours again (the median of all of ours), so drift
//! from other load on the machine shows on both sides. The vectors of both are compared (cosine per
//! sentence): the ratio means something only if they agree.

use std::path::PathBuf;
use std::time::Instant;

use cloister_engine::Engine as _;
use cloister_engine::builtin::{BuiltinConfig, BuiltinEngine};
use cloister_types::openai::EmbeddingRequest;
use serde::Deserialize;

use crate::stats::median;
use crate::{Error, Result};

/// The sentence-transformers peer (run with the venv's Python).
pub const PEER_SCRIPT: &str = include_str!("embeddings/st_peer.py");

/// What to run.
#[derive(Clone, Debug)]
pub struct EmbeddingsOptions {
    /// The chat GGUF the built-in engine loads beside the embedding model.
    pub chat_model: PathBuf,
    /// The embedding GGUF (ours).
    pub gguf: PathBuf,
    /// The same model's Hugging Face directory (the peer's).
    pub hf_dir: PathBuf,
    /// A Python with sentence-transformers and torch.
    pub python: PathBuf,
    /// Sentences per round.
    pub sentences: usize,
    /// Sentences per encode call (both sides).
    pub batch: usize,
    /// CPU threads (both sides).
    pub threads: usize,
    /// Rounds per side (ours twice as many: before and after the peer's).
    pub rounds: usize,
}

/// Figures of one run.
#[derive(Clone, Debug)]
pub struct EmbeddingsReport {
    /// Sentences per round.
    pub sentences: usize,
    /// Tokens in all sentences (with `[CLS]`/`[SEP]`), as our usage counts them.
    pub tokens: usize,
    /// Seconds of each of our rounds.
    pub ours_s: Vec<f64>,
    /// Seconds of each of the peer's rounds.
    pub peer_s: Vec<f64>,
    /// The peer's torch version.
    pub torch: String,
    /// Lowest and mean cosine between our vector and the peer's for the same sentence.
    pub cosine_min: f64,
    /// See `cosine_min`.
    pub cosine_mean: f64,
}

impl EmbeddingsReport {
    /// Median sentences per second: (ours, peer's).
    pub fn throughput(&self) -> (f64, f64) {
        let rate = |s: &[f64]| self.sentences as f64 / median(s.iter().copied()).max(f64::MIN_POSITIVE);
        (rate(&self.ours_s), rate(&self.peer_s))
    }
}

/// `n` deterministic English-like sentences of 6 to 40 words (a fixed word list and an LCG).
pub fn sentences(n: usize) -> Vec<String> {
    const WORDS: &[&str] = &[
        "the",
        "a",
        "model",
        "network",
        "node",
        "quietly",
        "answers",
        "every",
        "request",
        "with",
        "signed",
        "bytes",
        "inside",
        "an",
        "enclave",
        "while",
        "clients",
        "verify",
        "attestation",
        "reports",
        "before",
        "sending",
        "prompts",
        "cats",
        "sleep",
        "on",
        "warm",
        "mats",
        "markets",
        "rose",
        "sharply",
        "after",
        "news",
        "of",
        "rain",
        "in",
        "the",
        "mountains",
        "children",
        "read",
        "books",
        "about",
        "distant",
        "planets",
        "and",
        "old",
        "ships",
        "engineers",
        "measure",
        "latency",
        "under",
        "load",
        "tonight",
    ];
    let mut state: u64 = 0x5eed_cafe_f00d;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as usize
    };
    (0..n)
        .map(|_| {
            let len = 6 + next() % 35;
            let mut s: Vec<&str> = (0..len).map(|_| WORDS[next() % WORDS.len()]).collect();
            s.push(".");
            s.join(" ")
        })
        .collect()
}

#[derive(Deserialize)]
struct PeerOut {
    seconds: Vec<f64>,
    torch: String,
    vectors: Vec<Vec<f64>>,
}

fn cosine(a: &[f32], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * y).sum();
    let na = a
        .iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt();
    let nb = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    dot / (na * nb).max(f64::MIN_POSITIVE)
}

/// Our rounds: every sentence, `batch` per engine call, timed whole.
fn our_rounds(
    engine: &BuiltinEngine,
    texts: &[&str],
    batch: usize,
    rounds: usize,
) -> Result<(Vec<f64>, Vec<Vec<f32>>)> {
    let mut seconds = Vec::with_capacity(rounds);
    let mut vectors = Vec::new();
    for _ in 0..rounds {
        let started = Instant::now();
        vectors.clear();
        for chunk in texts.chunks(batch) {
            vectors.extend(engine.embed_blocking(chunk)?);
        }
        seconds.push(started.elapsed().as_secs_f64());
    }
    Ok((seconds, vectors))
}

/// Runs the benchmark (blocking: call it from a blocking thread).
pub fn run(opts: &EmbeddingsOptions) -> Result<EmbeddingsReport> {
    if opts.sentences == 0 || opts.batch == 0 || opts.rounds == 0 || opts.threads == 0 {
        return Err(Error::NotWorking(
            "sentences, batch, threads and rounds must be at least 1".into(),
        ));
    }
    let mut config = BuiltinConfig::new(&opts.chat_model);
    config.slots = 1;
    config.ctx_per_slot = 256;
    config.threads = Some(opts.threads);
    config.embedding_model = Some(opts.gguf.clone());
    let engine = BuiltinEngine::load(config)?;
    let owned = sentences(opts.sentences);
    let texts: Vec<&str> = owned.iter().map(String::as_str).collect();
    // Once through the request path (`Engine::embed`): the token count its usage reports.
    let req = EmbeddingRequest {
        model: engine
            .embedding_model()
            .map(|(id, _)| id.to_owned())
            .unwrap_or_default(),
        input: serde_json::json!(texts),
        ..EmbeddingRequest::default()
    };
    let answer = futures::executor::block_on(engine.embed(req))?;
    let tokens = answer.usage.map_or(0, |u| u.prompt_tokens as usize);

    let dir = tempfile::tempdir().map_err(|e| Error::io("temporary directory", e))?;
    let script = dir.path().join("st_peer.py");
    std::fs::write(&script, PEER_SCRIPT).map_err(|e| Error::io("writing the peer script", e))?;
    let input = dir.path().join("sentences.json");
    let json = serde_json::to_vec(&texts).map_err(|e| Error::json("sentences", e))?;
    std::fs::write(&input, json).map_err(|e| Error::io("writing the sentences", e))?;

    our_rounds(&engine, &texts[..opts.batch.min(texts.len())], opts.batch, 1)?; // warm-up
    let (mut ours_s, _) = our_rounds(&engine, &texts, opts.batch, opts.rounds)?;
    let out = std::process::Command::new(&opts.python)
        .arg(&script)
        .arg(&opts.hf_dir)
        .arg(&input)
        .args([opts.threads, opts.batch, opts.rounds].map(|n| n.to_string()))
        .output()
        .map_err(|e| Error::io(format!("running {}", opts.python.display()), e))?;
    if !out.status.success() {
        return Err(Error::NotWorking(format!(
            "the sentence-transformers peer failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let peer: PeerOut =
        serde_json::from_slice(&out.stdout).map_err(|e| Error::json("the peer's output", e))?;
    let (after, ours) = our_rounds(&engine, &texts, opts.batch, opts.rounds)?;
    ours_s.extend(after);

    if peer.vectors.len() != ours.len() {
        return Err(Error::NotWorking(format!(
            "the peer gave {} vectors for {} sentences",
            peer.vectors.len(),
            ours.len()
        )));
    }
    let cosines: Vec<f64> = ours
        .iter()
        .zip(&peer.vectors)
        .map(|(a, b)| cosine(a, b))
        .collect();
    let cosine_min = cosines.iter().copied().fold(f64::INFINITY, f64::min);
    let cosine_mean = cosines.iter().sum::<f64>() / cosines.len() as f64;
    Ok(EmbeddingsReport {
        sentences: texts.len(),
        tokens,
        ours_s,
        peer_s: peer.seconds,
        torch: peer.torch,
        cosine_min,
        cosine_mean,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_are_deterministic_and_varied() {
        let a = sentences(50);
        assert_eq!(a, sentences(50));
        let distinct: std::collections::HashSet<_> = a.iter().collect();
        assert_eq!(distinct.len(), 50);
        assert!(a.iter().all(|s| (7..=42).contains(&s.split(' ').count())));
    }
}
