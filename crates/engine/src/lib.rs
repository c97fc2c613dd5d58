//! Inference engines behind one [`Engine`] trait.
//!
//! - [`builtin`]: a GGUF model run in-process by llama.cpp (through `llama-cpp-2`), with the
//!   tokenizer and chat template taken from the GGUF metadata, and several requests decoded together
//!   in one batch.
//! - [`upstream`]: any OpenAI-compatible server (vLLM, SGLang, llama.cpp server, Ollama); streams
//!   pass through chunk by chunk.
//!
//! The HTTP layer never knows which engine runs: it holds an `Arc<dyn Engine>`.
//!
//! Stream contract: every stream starts with a chunk whose delta carries `role: "assistant"`, carries
//! the text in order, sets `finish_reason` on its last content chunk, and always ends with one chunk
//! with empty `choices` and `usage` set (the node meters from it, and drops it if the client did not
//! ask for usage).
//!
//! - [`source`]: where a GGUF comes from (a path or `hf:owner/repo/file.gguf`), and a spinner for
//!   the load.
//!
//! ```no_run
//! # async fn demo() -> cloister_engine::Result<()> {
//! use std::sync::Arc;
//!
//! use cloister_engine::builtin::{BuiltinConfig, BuiltinEngine};
//! use cloister_engine::source::ModelSource;
//! use cloister_engine::Engine;
//! use cloister_types::openai::{ChatCompletionRequest, ChatMessage};
//! use futures::StreamExt;
//!
//! let path = "models/SmolLM2-135M-Instruct.Q4_1.gguf".parse::<ModelSource>()?.resolve(false).await?;
//! let engine: Arc<dyn Engine> = Arc::new(BuiltinEngine::load_async(BuiltinConfig::new(path)).await?);
//! let req = ChatCompletionRequest {
//!     model: engine.models()[0].id.clone(),
//!     messages: vec![ChatMessage::text("user", "Why is the sky blue?")],
//!     max_tokens: Some(32),
//!     ..Default::default()
//! };
//! let mut chunks = engine.stream(req).await?;
//! while let Some(chunk) = chunks.next().await {
//!     let chunk = chunk?;
//!     if let Some(text) = chunk.choices.first().and_then(|c| c.delta.content.as_deref()) {
//!         print!("{text}");
//!     }
//!     if let Some(usage) = chunk.usage {
//!         println!("\n{} prompt + {} completion tokens", usage.prompt_tokens, usage.completion_tokens);
//!     }
//! }
//! # Ok(()) }
//! ```

mod error;

pub mod builtin;
#[doc(hidden)]
pub mod fuzzing;
pub mod source;
pub mod upstream;

use std::pin::Pin;

use async_trait::async_trait;
use cloister_types::openai::{
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, CompletionRequest, EmbeddingRequest,
    EmbeddingResponse, TextCompletion,
};
use futures::Stream;

pub use error::{Error, Result};

/// A stream of chat-completion chunks.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<ChatCompletionChunk>> + Send>>;

/// A stream of text-completion chunks (`text_completion` objects), under the same contract as
/// [`ChunkStream`] except that there is no role chunk: text in order, `finish_reason` on the last
/// content chunk, then one chunk with empty `choices` and `usage` set.
pub type TextChunkStream = Pin<Box<dyn Stream<Item = Result<TextCompletion>> + Send>>;

/// A model an engine serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelCard {
    /// The id clients put in `model`.
    pub id: String,
    /// SHA-256 (hex) of the weights file, where the engine has the file (built-in engine).
    pub sha256: Option<String>,
    /// Owner label for `/v1/models`.
    pub owned_by: String,
}

/// Something that answers chat completions.
#[async_trait]
pub trait Engine: Send + Sync {
    /// The models served: the same list for the engine's whole life (the node reads it once for
    /// its metrics labels).
    fn models(&self) -> Vec<ModelCard>;

    /// One whole completion. `req.stream` is ignored.
    async fn complete(&self, req: ChatCompletionRequest) -> Result<ChatCompletion>;

    /// A streamed completion (see the crate docs for the stream contract). `req.stream` is ignored.
    async fn stream(&self, req: ChatCompletionRequest) -> Result<ChunkStream>;

    /// One whole legacy text completion (`/v1/completions`): the raw prompt, no chat template.
    /// `req.stream` is ignored. Engines that cannot serve it answer [`Error::InvalidRequest`].
    async fn complete_text(&self, req: CompletionRequest) -> Result<TextCompletion> {
        Err(text_unsupported(&req))
    }

    /// A streamed legacy text completion (see [`TextChunkStream`]). `req.stream` is ignored.
    async fn stream_text(&self, req: CompletionRequest) -> Result<TextChunkStream> {
        Err(text_unsupported(&req))
    }

    /// Embeddings (`/v1/embeddings`) of `req.input`, one vector per input, with `usage` counting
    /// the input tokens. Engines (or models) that cannot serve them answer [`Error::InvalidRequest`].
    async fn embed(&self, req: EmbeddingRequest) -> Result<EmbeddingResponse> {
        Err(Error::InvalidRequest(format!(
            "embeddings (/v1/embeddings) are not served for model `{}`",
            req.model
        )))
    }
}

fn text_unsupported(req: &CompletionRequest) -> Error {
    Error::InvalidRequest(format!(
        "text completions (/v1/completions) are not supported for model `{}`; use /v1/chat/completions",
        req.model
    ))
}
