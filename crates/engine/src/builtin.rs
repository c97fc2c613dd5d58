//! The built-in engine: a local GGUF model run in-process by llama.cpp (`llama-cpp-2`).
//!
//! The tokenizer and the chat template come from the GGUF metadata. One OS thread owns the llama.cpp
//! context and decodes up to [`BuiltinConfig::slots`] requests together (continuous batching);
//! requests wait in a bounded queue in front of it, and a full queue answers
//! [`Error::Overloaded`] at once instead of making clients wait without bound.
//!
//! The rendered prompt is tokenized with special-token parsing on, as llama.cpp's own server does:
//! text in a message that spells a control token (`<|im_end|>`) becomes that token.
//!
//! ```no_run
//! # async fn demo() -> cloister_engine::Result<()> {
//! use cloister_engine::Engine;
//! use cloister_engine::builtin::{BuiltinConfig, BuiltinEngine};
//! use cloister_types::openai::{ChatCompletionRequest, ChatMessage};
//!
//! let engine = BuiltinEngine::load_async(BuiltinConfig::new("models/SmolLM2-135M-Instruct.Q4_1.gguf")).await?;
//! let req = ChatCompletionRequest {
//!     model: engine.model_id().to_owned(),
//!     messages: vec![ChatMessage::text("user", "Why is the sky blue?")],
//!     max_tokens: Some(64),
//!     temperature: Some(0.0),
//!     ..Default::default()
//! };
//! let answer = engine.complete(req).await?;
//! println!("{}", answer.choices[0].message.text_content());
//! # Ok(()) }
//! ```

mod chunks;
mod completion;
mod embed;
pub(crate) mod params;
mod prompt;
mod template;
mod text;
mod worker;

#[cfg(test)]
mod prefix_tests;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cloister_types::openai::{
    ChatCompletion, ChatCompletionRequest, ChatMessage, Choice, CompletionRequest, EmbeddingRequest,
    EmbeddingResponse, TextCompletion,
};
use futures::StreamExt;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::token::LlamaToken;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tracing::{debug, info};

use self::chunks::chunk_stream;
use self::params::{GenParams, Sampling};
use self::template::ChatTemplate;
use self::worker::{Event, Job, KvLayout, PrefixCounters, WorkerConfig};
use crate::{ChunkStream, Engine, Error, ModelCard, Result, TextChunkStream};

/// Tokens per decode call: prompt chunks share it with the running sequences' tokens.
const N_BATCH: u32 = 512;
/// Longest rendered prompt accepted for tokenization, in bytes (llama.cpp counts in `i32`).
const MAX_PROMPT_BYTES: usize = 256 << 20;

/// Default of [`BuiltinConfig::prompt_cache_mib`]: about a hundred 110-token prefixes of the demo
/// model (23 KB of K and V a token), a dozen of an 8B model's (128 KB a token).
pub const DEFAULT_PROMPT_CACHE_MIB: usize = 256;

/// How to load and run a GGUF model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltinConfig {
    /// The GGUF file.
    pub model_path: PathBuf,
    /// The id clients put in `model`; default: the file name without `.gguf`.
    pub model_id: Option<String>,
    /// CPU threads for decoding; default: the available parallelism.
    pub threads: Option<usize>,
    /// Sequences decoded together.
    pub slots: usize,
    /// Context (prompt plus completion) of one sequence, in tokens.
    pub ctx_per_slot: u32,
    /// Requests that may wait for a free slot before [`Error::Overloaded`].
    pub max_queue: usize,
    /// Layers offloaded to the GPU (needs the `cuda` feature).
    pub gpu_layers: u32,
    /// A sentence-embedding GGUF served at `/v1/embeddings` beside the chat model (its id: the file
    /// name without `.gguf`); `None`: no embeddings.
    pub embedding_model: Option<PathBuf>,
    /// Keep each slot's KV cells after a request and start the next prompt from the longest common
    /// prefix (the system prompt, the conversation so far) instead of processing it again.
    pub prefix_cache: bool,
    /// One pool of KV cells for all slots instead of one stream per slot: any mix of slots decodes
    /// in one pass over the weights, and concurrent prompts share a common prefix's cells; answers
    /// then differ in the last bits with the traffic around them (no batch invariance).
    pub kv_unified: bool,
    /// MiB of KV state the prefix cache may keep in host memory for prefixes that left their slot
    /// (0: none); used only with `prefix_cache`.
    pub prompt_cache_mib: usize,
}

impl BuiltinConfig {
    /// Defaults: 4 slots of 2048 tokens, a queue of 64, all cores, CPU only, prefix cache on with
    /// [`DEFAULT_PROMPT_CACHE_MIB`] of host memory, one KV stream per slot.
    pub fn new(model_path: impl Into<PathBuf>) -> Self {
        Self {
            model_path: model_path.into(),
            model_id: None,
            threads: None,
            slots: 4,
            ctx_per_slot: 2048,
            max_queue: 64,
            gpu_layers: 0,
            embedding_model: None,
            prefix_cache: true,
            kv_unified: false,
            prompt_cache_mib: DEFAULT_PROMPT_CACHE_MIB,
        }
    }
}

/// Totals of the prefix cache since the engine loaded ([`BuiltinEngine::prefix_cache_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrefixCacheStats {
    /// Prompt tokens of the requests admitted so far.
    pub prompt_tokens: u64,
    /// Of those, tokens whose KV cells were kept from an earlier request in the same slot.
    pub cached_tokens: u64,
}

/// Figures from [`BuiltinEngine::bench_decode`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BenchFigures {
    /// Tokens in the rendered prompt.
    pub prompt_tokens: usize,
    /// Prompt processing speed (one batch), tokens per second.
    pub prompt_tok_per_s: f64,
    /// Tokens decoded one at a time after the first.
    pub gen_tokens: usize,
    /// Generation speed, tokens per second.
    pub gen_tok_per_s: f64,
}

/// A GGUF model served by llama.cpp in this process. Cheap to clone (shared handle).
#[derive(Clone)]
pub struct BuiltinEngine {
    inner: Arc<Inner>,
}

struct Inner {
    model: Arc<LlamaModel>,
    template: ChatTemplate,
    bos: Option<(LlamaToken, String)>,
    jobs: SyncSender<Job>,
    card: ModelCard,
    config: BuiltinConfig,
    load_time: Duration,
    embedder: Option<embed::Embedder>,
    prefix_counters: Arc<PrefixCounters>,
}

impl std::fmt::Debug for BuiltinEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltinEngine")
            .field("card", &self.inner.card)
            .field("config", &self.inner.config)
            .field("template", &self.inner.template)
            .finish_non_exhaustive()
    }
}

/// llama.cpp's process-wide backend: initialized once, never torn down.
fn backend() -> Result<&'static LlamaBackend> {
    static BACKEND: OnceLock<std::result::Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            // llama.cpp prints to stderr by default; route it to tracing (targets `llama.cpp`, `ggml`).
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| Error::Load(format!("llama.cpp backend: {e}")))
}

/// SHA-256 (hex) of a file, read in 1 MiB pieces.
fn sha256_file(path: &Path) -> Result<String> {
    let mut file =
        std::fs::File::open(path).map_err(|e| Error::Load(format!("cannot open {}: {e}", path.display())))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| Error::Load(format!("reading {}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

impl BuiltinEngine {
    /// Loads the model (blocking: hashes the file, maps the weights, creates the context, starts
    /// the decode thread). In async code use [`BuiltinEngine::load_async`].
    pub fn load(config: BuiltinConfig) -> Result<Self> {
        let started = Instant::now();
        let path = config.model_path.clone();
        if config.slots == 0 || config.slots > N_BATCH as usize {
            return Err(Error::Config(format!("slots must be between 1 and {N_BATCH}")));
        }
        if config.ctx_per_slot < 16 {
            return Err(Error::Config("ctx_per_slot must be at least 16 tokens".into()));
        }
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Err(Error::Load(format!("{} is not a file", path.display()))),
            Err(e) => return Err(Error::Load(format!("model file {}: {e}", path.display()))),
        }
        let backend = backend()?;
        let params = LlamaModelParams::default().with_n_gpu_layers(config.gpu_layers);
        // Hash while llama.cpp maps the weights: both read the whole file.
        let (sha256, model) = std::thread::scope(|s| {
            let hashing = s.spawn(|| sha256_file(&path));
            let model = LlamaModel::load_from_file(backend, &path, &params)
                .map_err(|e| Error::Load(format!("llama.cpp cannot load {}: {e}", path.display())));
            let sha = hashing
                .join()
                .unwrap_or_else(|_| Err(Error::Load("hashing thread panicked".into())));
            (sha, model)
        });
        let (sha256, model) = (sha256?, Arc::new(model?));

        let mut config = config;
        let n_ctx_train = model.n_ctx_train();
        if n_ctx_train > 0 && config.ctx_per_slot > n_ctx_train {
            info!(
                requested = config.ctx_per_slot,
                n_ctx_train, "ctx_per_slot capped at the model's training context"
            );
            config.ctx_per_slot = n_ctx_train;
        }
        let threads = config
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
            .max(1);
        config.threads = Some(threads);
        config.max_queue = config.max_queue.max(1);
        let model_id = config.model_id.clone().unwrap_or_else(|| {
            path.file_stem()
                .map_or_else(|| "model".to_owned(), |s| s.to_string_lossy().into_owned())
        });
        config.model_id = Some(model_id.clone());

        let vocab = model.vocab();
        // llama.cpp throws (and the process aborts) on ids outside the vocabulary, such as the
        // "no token" id -1 of models without a BOS.
        let in_vocab = |t: LlamaToken| (0..vocab.n_tokens()).contains(&t.0);
        let token_text = |t: LlamaToken| {
            in_vocab(t)
                .then(|| vocab.text(t).map(|c| c.to_string_lossy().into_owned()))
                .flatten()
                .unwrap_or_default()
        };
        let bos_token = vocab.bos();
        let bos_text = token_text(bos_token);
        let eos_text = token_text(vocab.eos());
        let bos = (vocab.should_add_bos() && in_vocab(bos_token)).then(|| (bos_token, bos_text.clone()));
        let template_source = model.meta_val_str("tokenizer.chat_template").ok();
        let template = ChatTemplate::new(template_source, bos_text, eos_text)?;
        if !template.is_from_model() {
            info!(model = %model_id, "the GGUF has no chat template; using ChatML");
        }

        let (jobs, queue) = std::sync::mpsc::sync_channel(config.max_queue);
        let worker_config = WorkerConfig {
            slots: u32::try_from(config.slots).unwrap_or(1),
            ctx_per_slot: config.ctx_per_slot,
            n_batch: N_BATCH,
            threads: i32::try_from(threads).unwrap_or(1),
            prefix_cache: config.prefix_cache,
            layout: if config.kv_unified {
                KvLayout::Unified
            } else {
                KvLayout::PerSequence
            },
            host_cache_bytes: config.prompt_cache_mib.saturating_mul(1 << 20),
        };
        let prefix_counters = Arc::new(PrefixCounters::default());
        worker::spawn(
            Arc::clone(&model),
            backend,
            worker_config,
            queue,
            Arc::clone(&prefix_counters),
        )?;
        let embedder = match &config.embedding_model {
            Some(path) => Some(embed::Embedder::load(
                backend,
                path,
                worker_config.threads,
                config.gpu_layers,
            )?),
            None => None,
        };

        let load_time = started.elapsed();
        debug!(
            model = %model_id,
            path = %path.display(),
            sha256 = %sha256,
            load_ms = load_time.as_millis() as u64,
            slots = config.slots,
            ctx_per_slot = config.ctx_per_slot,
            threads,
            "model loaded"
        );
        let card = ModelCard {
            id: model_id,
            sha256: Some(sha256),
            owned_by: "cloister".into(),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                model,
                template,
                bos,
                jobs,
                card,
                config,
                load_time,
                embedder,
                prefix_counters,
            }),
        })
    }

    /// [`BuiltinEngine::load`] on tokio's blocking pool.
    pub async fn load_async(config: BuiltinConfig) -> Result<Self> {
        tokio::task::spawn_blocking(move || Self::load(config))
            .await
            .map_err(|e| Error::Load(format!("model loading task failed: {e}")))?
    }

    /// The model id clients put in `model`.
    pub fn model_id(&self) -> &str {
        &self.inner.card.id
    }

    /// SHA-256 (hex) of the weights file.
    pub fn sha256(&self) -> &str {
        self.inner.card.sha256.as_deref().unwrap_or_default()
    }

    /// The configuration in effect (defaults filled in, `ctx_per_slot` capped at the model's
    /// training context).
    pub fn config(&self) -> &BuiltinConfig {
        &self.inner.config
    }

    /// Prompt tokens admitted and served from the prefix cache since the engine loaded.
    pub fn prefix_cache_stats(&self) -> PrefixCacheStats {
        let c = &self.inner.prefix_counters;
        PrefixCacheStats {
            prompt_tokens: c.prompt_tokens.load(std::sync::atomic::Ordering::Relaxed),
            cached_tokens: c.cached_tokens.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// How long [`BuiltinEngine::load`] took (hashing, mapping, context creation, one warm-up decode).
    pub fn load_time(&self) -> Duration {
        self.inner.load_time
    }

    /// The prompt text the chat template makes of `messages` (assistant turn opened).
    pub fn render_prompt(&self, messages: &[ChatMessage]) -> Result<String> {
        self.inner.template.render(messages)
    }

    /// Number of tokens `messages` take as a prompt (what `usage.prompt_tokens` reports).
    pub fn count_prompt_tokens(&self, messages: &[ChatMessage]) -> Result<usize> {
        let text = self.inner.template.render(messages)?;
        Ok(self.inner.tokenize(&text)?.len())
    }

    /// Greedy generation of exactly `n_gen` tokens after the chat-rendered user message `prompt`,
    /// ignoring end-of-generation tokens; blocking. Goes through the decode thread like any request,
    /// so run it on an otherwise idle engine for clean figures.
    pub fn bench_decode(&self, prompt: &str, n_gen: u32) -> Result<BenchFigures> {
        if n_gen == 0 {
            return Err(Error::InvalidRequest("n_gen must be at least 1".into()));
        }
        let tokens = self.inner.prompt_tokens(&[ChatMessage::text("user", prompt)])?;
        let needed = tokens.len() + n_gen as usize + 1;
        let context = self.inner.config.ctx_per_slot as usize;
        if needed > context {
            return Err(Error::ContextOverflow {
                prompt: needed,
                context,
            });
        }
        let params = GenParams {
            // One more than asked: the first token comes out of prompt processing.
            max_tokens: Some(n_gen + 1),
            stop: Vec::new(),
            sampling: Sampling::Greedy,
            ignore_eos: true,
        };
        let (events, mut rx) = unbounded_channel();
        self.inner
            .jobs
            .send(Job {
                prompt: tokens,
                params,
                events,
                // Prompt processing is part of what this measures.
                reuse_prefix: false,
            })
            .map_err(|_| Error::Closed)?;
        let finished = loop {
            match futures::executor::block_on(rx.recv()) {
                Some(Event::Text(_)) => {}
                Some(Event::Finished(f)) => break f,
                Some(Event::Failed(e)) => return Err(e),
                None => return Err(Error::Closed),
            }
        };
        let s = finished.stats;
        let rate = |n: usize, secs: f64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        let gen_tokens = s.completion_tokens.saturating_sub(1);
        Ok(BenchFigures {
            prompt_tokens: s.prompt_tokens,
            prompt_tok_per_s: rate(s.prompt_tokens, s.prompt_secs),
            gen_tokens,
            gen_tok_per_s: rate(gen_tokens, s.gen_secs),
        })
    }

    fn check_request(&self, req: &ChatCompletionRequest) -> Result<GenParams> {
        if req.model != self.inner.card.id {
            return Err(Error::UnknownModel(req.model.clone()));
        }
        if req.messages.is_empty() {
            return Err(Error::InvalidRequest("messages must not be empty".into()));
        }
        GenParams::from_request(req)
    }

    /// Validates, renders and tokenizes `req` and queues it; the receiver gets the worker's events.
    async fn submit(&self, req: &ChatCompletionRequest) -> Result<UnboundedReceiver<Event>> {
        let params = self.check_request(req)?;
        let inner = Arc::clone(&self.inner);
        let messages = req.messages.clone();
        self.enqueue(move || inner.prompt_tokens(&messages), params).await
    }
}

impl Inner {
    /// Tokens of `text`, special tokens parsed, BOS first when the model wants one.
    fn tokenize(&self, text: &str) -> Result<Vec<LlamaToken>> {
        if text.len() > MAX_PROMPT_BYTES {
            return Err(Error::InvalidRequest(format!(
                "prompt is longer than {MAX_PROMPT_BYTES} bytes"
            )));
        }
        let body = self.model.vocab().tokenize(text.as_bytes(), false, true);
        let mut tokens = Vec::with_capacity(body.len() + 1);
        if let Some((bos, _)) = &self.bos
            && body.first() != Some(bos)
        {
            tokens.push(*bos);
        }
        tokens.extend(body);
        Ok(tokens)
    }

    /// The prompt tokens of a conversation, checked against the slot context.
    fn prompt_tokens(&self, messages: &[ChatMessage]) -> Result<Vec<LlamaToken>> {
        let text = self.template.render(messages)?;
        self.fit(self.tokenize(&text)?)
    }
}

#[async_trait]
impl Engine for BuiltinEngine {
    fn models(&self) -> Vec<ModelCard> {
        let mut cards = vec![self.inner.card.clone()];
        cards.extend(self.inner.embedder.as_ref().map(|e| e.card().clone()));
        cards
    }

    async fn complete(&self, req: ChatCompletionRequest) -> Result<ChatCompletion> {
        let mut stream = self.stream(req).await?;
        let mut id = String::new();
        let mut created = 0;
        let mut text = String::new();
        let mut finish_reason = None;
        let mut usage = None;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            id = chunk.id;
            created = chunk.created;
            for choice in chunk.choices {
                text.push_str(choice.delta.content.as_deref().unwrap_or_default());
                finish_reason = choice.finish_reason.or(finish_reason);
            }
            usage = chunk.usage.or(usage);
        }
        Ok(ChatCompletion {
            id,
            object: "chat.completion".into(),
            created,
            model: self.inner.card.id.clone(),
            choices: vec![Choice {
                index: 0,
                message: ChatMessage::text("assistant", text),
                finish_reason,
                extra: Default::default(),
            }],
            usage,
            extra: Default::default(),
        })
    }

    async fn stream(&self, req: ChatCompletionRequest) -> Result<ChunkStream> {
        let rx = self.submit(&req).await?;
        Ok(chunk_stream(rx, self.inner.card.id.clone()))
    }

    async fn complete_text(&self, req: CompletionRequest) -> Result<TextCompletion> {
        completion::collect(self.stream_text(req).await?).await
    }

    async fn stream_text(&self, req: CompletionRequest) -> Result<TextChunkStream> {
        let rx = self.submit_text(&req).await?;
        Ok(completion::text_stream(chunk_stream(
            rx,
            self.inner.card.id.clone(),
        )))
    }

    async fn embed(&self, req: EmbeddingRequest) -> Result<EmbeddingResponse> {
        self.embed_request(req).await
    }
}
