//! Embeddings on the built-in engine: a second GGUF (a sentence-embedding model such as
//! all-MiniLM-L6-v2, converted with llama.cpp's `convert_hf_to_gguf.py`) run by its own thread, which
//! owns a llama.cpp context with embeddings on and the pooling the GGUF names (mean for
//! all-MiniLM-L6-v2). Vectors are L2-normalised, as sentence-transformers' `Normalize` module does
//! for that model.
//!
//! One request's inputs are packed into as few batches as fit ([`MAX_BATCH_TOKENS`],
//! [`MAX_BATCH_SEQS`]), each sequence whole in one batch (the encoder attends both ways). Inputs
//! longer than the model's training context are refused, not truncated.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender};

use cloister_types::openai::{
    Embedding, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage, encode_vector_base64,
};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::token::LlamaToken;
use serde_json::Value;
use tokio::sync::oneshot;
use tracing::debug;

use super::{MAX_PROMPT_BYTES, sha256_file};
use crate::{Error, ModelCard, Result};

/// Tokens per encode call (all sequences of the batch together).
pub(crate) const MAX_BATCH_TOKENS: u32 = 2048;
/// Sequences per encode call.
pub(crate) const MAX_BATCH_SEQS: u32 = 64;
/// Inputs in one request (OpenAI allows 2048).
const MAX_INPUTS: usize = 2048;
/// Requests waiting for the embedding thread before [`Error::Overloaded`].
const MAX_QUEUE: usize = 64;

/// One request's tokenized inputs and where its vectors go.
struct Job {
    inputs: Vec<Vec<LlamaToken>>,
    reply: oneshot::Sender<Result<Vec<Vec<f32>>>>,
}

/// The embedding model and the queue of its thread.
pub(super) struct Embedder {
    model: Arc<LlamaModel>,
    jobs: SyncSender<Job>,
    card: ModelCard,
    /// Longest input accepted, in tokens.
    max_tokens: usize,
}

impl Embedder {
    /// Loads the GGUF at `path` (hashing it), creates the context on a new thread.
    pub(super) fn load(
        backend: &'static LlamaBackend,
        path: &Path,
        threads: i32,
        gpu_layers: u32,
    ) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::Load(format!(
                "embedding model file {} not found",
                path.display()
            )));
        }
        let sha256 = sha256_file(path)?;
        let params = LlamaModelParams::default().with_n_gpu_layers(gpu_layers);
        let model = Arc::new(
            LlamaModel::load_from_file(backend, path, &params)
                .map_err(|e| Error::Load(format!("llama.cpp cannot load {}: {e}", path.display())))?,
        );
        let n_ctx_train = usize::try_from(model.n_ctx_train()).unwrap_or(0);
        let max_tokens = if n_ctx_train == 0 {
            MAX_BATCH_TOKENS as usize
        } else {
            n_ctx_train.min(MAX_BATCH_TOKENS as usize)
        };
        let (jobs, queue) = std::sync::mpsc::sync_channel(MAX_QUEUE);
        spawn(Arc::clone(&model), backend, threads, queue)?;
        let id = model_id(path);
        debug!(model = %id, sha256 = %sha256, max_tokens, "embedding model loaded");
        Ok(Self {
            model,
            jobs,
            card: ModelCard {
                id,
                sha256: Some(sha256),
                owned_by: "cloister".into(),
            },
            max_tokens,
        })
    }

    /// The embedding model's card (its id is the file name without `.gguf`).
    pub(super) fn card(&self) -> &ModelCard {
        &self.card
    }

    /// Width of the vectors.
    pub(super) fn dimensions(&self) -> usize {
        usize::try_from(self.model.n_embd()).unwrap_or(0)
    }

    /// The tokens of one input, with the model's own special tokens (`[CLS]` … `[SEP]`).
    fn tokenize(&self, text: &str) -> Result<Vec<LlamaToken>> {
        if text.len() > MAX_PROMPT_BYTES {
            return Err(Error::InvalidRequest(format!(
                "input is longer than {MAX_PROMPT_BYTES} bytes"
            )));
        }
        let tokens = self.model.vocab().tokenize(text.as_bytes(), true, false);
        if tokens.is_empty() {
            return Err(Error::InvalidRequest("an input has no tokens".into()));
        }
        if tokens.len() > self.max_tokens {
            return Err(Error::ContextOverflow {
                prompt: tokens.len(),
                context: self.max_tokens,
            });
        }
        Ok(tokens)
    }

    /// Answers `req` (its model already checked against this one).
    pub(super) async fn embed(&self, req: &EmbeddingRequest) -> Result<EmbeddingResponse> {
        let texts = req.input_texts().ok_or_else(|| {
            Error::InvalidRequest("`input` must be a string or a non-empty array of strings".into())
        })?;
        if texts.len() > MAX_INPUTS {
            return Err(Error::InvalidRequest(format!(
                "at most {MAX_INPUTS} inputs per request"
            )));
        }
        if let Some(d) = req.dimensions
            && d as usize != self.dimensions()
        {
            return Err(Error::InvalidRequest(format!(
                "this model's embeddings have {} dimensions; `dimensions` cannot change that",
                self.dimensions()
            )));
        }
        match req.encoding_format.as_deref() {
            None | Some("float" | "base64") => {}
            Some(other) => {
                return Err(Error::InvalidRequest(format!(
                    "unknown encoding_format `{other}` (float or base64)"
                )));
            }
        }
        let inputs = texts
            .iter()
            .map(|t| self.tokenize(t))
            .collect::<Result<Vec<_>>>()?;
        let prompt_tokens: usize = inputs.iter().map(Vec::len).sum();
        let (reply, answer) = oneshot::channel();
        self.jobs.try_send(Job { inputs, reply }).map_err(|e| match e {
            std::sync::mpsc::TrySendError::Full(_) => Error::Overloaded(MAX_QUEUE),
            std::sync::mpsc::TrySendError::Disconnected(_) => Error::Closed,
        })?;
        let vectors = answer.await.map_err(|_| Error::Closed)??;
        let base64 = req.wants_base64();
        let data = (0..)
            .zip(vectors)
            .map(|(index, v)| Embedding {
                object: "embedding".into(),
                index,
                embedding: if base64 {
                    Value::String(encode_vector_base64(&v))
                } else {
                    Value::from(v)
                },
                extra: Default::default(),
            })
            .collect();
        Ok(EmbeddingResponse {
            id: String::new(),
            object: "list".into(),
            data,
            model: self.card.id.clone(),
            usage: Some(EmbeddingUsage::new(
                u32::try_from(prompt_tokens).unwrap_or(u32::MAX),
            )),
            extra: Default::default(),
        })
    }

    /// Embeds `inputs` on the calling thread's turn in the queue; blocking. For benchmarks.
    pub(super) fn embed_blocking(&self, inputs: &[&str]) -> Result<Vec<Vec<f32>>> {
        let inputs = inputs
            .iter()
            .map(|t| self.tokenize(t))
            .collect::<Result<Vec<_>>>()?;
        let (reply, answer) = oneshot::channel();
        self.jobs.send(Job { inputs, reply }).map_err(|_| Error::Closed)?;
        answer.blocking_recv().map_err(|_| Error::Closed)?
    }
}

impl super::BuiltinEngine {
    /// The embedding model's id and the width of its vectors, when one is loaded.
    pub fn embedding_model(&self) -> Option<(&str, usize)> {
        let e = self.inner.embedder.as_ref()?;
        Some((e.card().id.as_str(), e.dimensions()))
    }

    /// Embeddings of `inputs` from the embedding model (normalised, in order); blocking. Goes
    /// through the embedding thread's queue like any request. For benchmarks.
    pub fn embed_blocking(&self, inputs: &[&str]) -> Result<Vec<Vec<f32>>> {
        self.inner
            .embedder
            .as_ref()
            .ok_or_else(|| Error::Config("no embedding model loaded".into()))?
            .embed_blocking(inputs)
    }

    /// `Engine::embed`: the embedding model answers; the chat model's id is refused with a hint.
    pub(super) async fn embed_request(&self, req: EmbeddingRequest) -> Result<EmbeddingResponse> {
        match &self.inner.embedder {
            Some(e) if e.card().id == req.model => e.embed(&req).await,
            _ if req.model == self.inner.card.id => Err(Error::InvalidRequest(format!(
                "`{}` is a chat model; embeddings are served by the embedding model (node run --embedding-model)",
                req.model
            ))),
            _ => Err(Error::UnknownModel(req.model)),
        }
    }
}

/// The id of the model at `path`: the file name without `.gguf`.
fn model_id(path: &Path) -> String {
    PathBuf::from(path.file_name().unwrap_or_default())
        .file_stem()
        .map_or_else(|| "embedding".to_owned(), |s| s.to_string_lossy().into_owned())
}

/// Starts the embedding thread and waits until its context exists.
fn spawn(
    model: Arc<LlamaModel>,
    backend: &'static LlamaBackend,
    threads: i32,
    jobs: Receiver<Job>,
) -> Result<()> {
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<Result<()>>(1);
    std::thread::Builder::new()
        .name("cloister-embed".into())
        .spawn(move || {
            let params = LlamaContextParams::default()
                .with_n_ctx(NonZeroU32::new(MAX_BATCH_TOKENS))
                .with_n_batch(MAX_BATCH_TOKENS)
                .with_n_ubatch(MAX_BATCH_TOKENS)
                .with_n_seq_max(MAX_BATCH_SEQS)
                .with_embeddings(true)
                .with_pooling_type(LlamaPoolingType::Unspecified)
                .with_n_threads(threads)
                .with_n_threads_batch(threads);
            let mut ctx = match model.new_context(backend, params) {
                Ok(ctx) => ctx,
                Err(e) => {
                    let _ = ready_tx.send(Err(Error::Load(format!(
                        "cannot create the embedding context: {e}"
                    ))));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(()));
            while let Ok(job) = jobs.recv() {
                let result = run(&mut ctx, &job.inputs);
                let _ = job.reply.send(result);
            }
            debug!("embedding thread stopped");
        })
        .map_err(|e| Error::Load(format!("cannot start the embedding thread: {e}")))?;
    ready_rx
        .recv()
        .map_err(|_| Error::Load("the embedding thread stopped while starting".into()))?
}

/// Embeds every input: packs them into batches, encodes each, reads the pooled vector of each
/// sequence and normalises it.
fn run(ctx: &mut LlamaContext<'_>, inputs: &[Vec<LlamaToken>]) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(inputs.len());
    let mut batch = LlamaBatch::new(MAX_BATCH_TOKENS as usize, 1);
    let mut start = 0;
    while start < inputs.len() {
        let mut end = start;
        let mut tokens = 0;
        while end < inputs.len()
            && end - start < MAX_BATCH_SEQS as usize
            && tokens + inputs[end].len() <= MAX_BATCH_TOKENS as usize
        {
            tokens += inputs[end].len();
            end += 1;
        }
        if end == start {
            return Err(Error::ContextOverflow {
                prompt: inputs[start].len(),
                context: MAX_BATCH_TOKENS as usize,
            });
        }
        batch.clear();
        for (seq, input) in (0..).zip(&inputs[start..end]) {
            batch
                .add_sequence(input, seq, true)
                .map_err(|e| Error::Inference(format!("embedding batch: {e}")))?;
        }
        ctx.clear_kv_cache();
        ctx.decode(&mut batch)
            .map_err(|e| Error::Inference(format!("llama.cpp embedding decode: {e}")))?;
        for seq in 0..(end - start) {
            let seq = i32::try_from(seq).unwrap_or(i32::MAX);
            let pooled = ctx
                .embeddings_seq_ith(seq)
                .map_err(|e| Error::Inference(format!("no pooled embedding (does the GGUF pool?): {e}")))?;
            out.push(normalize(pooled));
        }
        start = end;
    }
    Ok(out)
}

/// `v / max(‖v‖₂, 1e-12)`, as `torch.nn.functional.normalize` computes it.
fn normalize(v: &[f32]) -> Vec<f32> {
    let norm = v
        .iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt()
        .max(1e-12);
    v.iter().map(|x| (f64::from(*x) / norm) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalised_to_unit_length() {
        let v = normalize(&[3.0, 4.0]);
        assert_eq!(v, vec![0.6, 0.8]);
        assert_eq!(normalize(&[0.0, 0.0]), vec![0.0, 0.0]);
    }

    #[test]
    fn model_id_is_the_file_stem() {
        assert_eq!(
            model_id(Path::new("models/all-MiniLM-L6-v2.gguf")),
            "all-MiniLM-L6-v2"
        );
    }
}
