//! An OpenAI-compatible server (vLLM, SGLang, llama.cpp server, Ollama) as an [`Engine`].
//!
//! Requests pass through with their unknown fields (`extra`). Streams are parsed as they arrive and
//! every chunk is handed on as soon as its event is complete, never buffered to the end.
//!
//! Usage on streams: the upstream is asked for `stream_options.include_usage`, and its usage chunk
//! ends the stream. If it sends none (older servers), the engine ends the stream with a usage chunk
//! of its own whose `completion_tokens` is the number of chunks that carried text or tool-call deltas and whose
//! `prompt_tokens` is 0: an approximation (servers usually send one token per chunk), flagged in the
//! logs at debug level.
//!
//! ```no_run
//! # async fn demo() -> cloister_engine::Result<()> {
//! use cloister_engine::upstream::{UpstreamConfig, UpstreamEngine};
//!
//! let engine = UpstreamEngine::connect(UpstreamConfig::new("http://127.0.0.1:8000/v1")).await?;
//! # Ok(()) }
//! ```

mod completion;
mod embeddings;
mod passthrough;
pub(crate) mod sse;

use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use cloister_types::http::{ReadError, read_limited};
use cloister_types::openai::{
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, CompletionRequest, EmbeddingRequest,
    EmbeddingResponse, ModelList, StreamOptions, TextCompletion,
};
use cloister_types::wire;
use futures::{Stream, StreamExt};
use serde_json::Value;
use tracing::debug;

use self::passthrough::Passthrough;
use crate::{ChunkStream, Engine, Error, ModelCard, Result, TextChunkStream};

/// Largest upstream body (non-streamed answer, model list) or single stream event accepted.
pub const MAX_UPSTREAM_BODY: usize = 16 << 20;
/// Longest upstream error message kept (it may be shown to the client).
const MAX_ERROR_MESSAGE: usize = 1024;

/// Where the upstream server is and how to talk to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// Base URL including `/v1`, e.g. `http://127.0.0.1:8000/v1`.
    pub base_url: String,
    /// Sent as `Authorization: Bearer ...`.
    pub api_key: Option<String>,
    /// Model ids served; empty: ask the upstream (`GET {base}/models`) at [`UpstreamEngine::connect`].
    pub models: Vec<String>,
    /// Connect timeout, longest silence from the upstream, and the whole of a non-streamed
    /// completion.
    pub timeout: Duration,
}

impl UpstreamConfig {
    /// Models discovered at connect, no key, 300 s timeout.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: None,
            models: Vec::new(),
            timeout: Duration::from_secs(300),
        }
    }
}

/// An OpenAI-compatible upstream server.
#[derive(Clone, Debug)]
pub struct UpstreamEngine {
    client: reqwest::Client,
    base: String,
    api_key: Option<String>,
    timeout: Duration,
    models: Vec<ModelCard>,
    /// The POST endpoints, parsed once (a URL parse per request cost ~2% of the node's CPU).
    endpoints: Vec<(&'static str, reqwest::Url)>,
}

/// The paths the engine posts to.
const POST_PATHS: [&str; 3] = [
    wire::CHAT_COMPLETIONS_PATH,
    wire::COMPLETIONS_PATH,
    wire::EMBEDDINGS_PATH,
];

impl UpstreamEngine {
    /// Builds the client and, when `config.models` is empty, lists the upstream's models.
    pub async fn connect(config: UpstreamConfig) -> Result<Self> {
        let base = config.base_url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::Config(format!("upstream URL must be http(s): {base}")));
        }
        let client = reqwest::Client::builder()
            .connect_timeout(config.timeout)
            .read_timeout(config.timeout)
            .build()
            .map_err(|e| Error::UpstreamUnavailable(format!("HTTP client: {e}")))?;
        let endpoints = POST_PATHS
            .into_iter()
            .map(|path| {
                reqwest::Url::parse(&wire::api_url(&base, path))
                    .map(|url| (path, url))
                    .map_err(|e| Error::Config(format!("upstream URL {base}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut engine = Self {
            client,
            base,
            api_key: config.api_key,
            timeout: config.timeout,
            models: Vec::new(),
            endpoints,
        };
        engine.models = if config.models.is_empty() {
            engine.discover_models().await?
        } else {
            config
                .models
                .into_iter()
                .map(|id| ModelCard {
                    id,
                    sha256: None,
                    owned_by: "upstream".into(),
                })
                .collect()
        };
        debug!(base = %engine.base, models = ?engine.models.iter().map(|m| &m.id).collect::<Vec<_>>(), "upstream ready");
        Ok(engine)
    }

    /// The upstream base URL (no trailing slash).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    async fn discover_models(&self) -> Result<Vec<ModelCard>> {
        let mut req = self
            .client
            .get(wire::api_url(&self.base, wire::MODELS_PATH))
            .timeout(self.timeout);
        if let Some(key) = &self.api_key {
            req = req.bearer_auth(key);
        }
        let resp = check_status(req.send().await.map_err(transport_error)?).await?;
        let body = read_body(resp, MAX_UPSTREAM_BODY).await?;
        let list: ModelList = serde_json::from_slice(&body)
            .map_err(|e| Error::UpstreamProtocol(format!("GET /models: not a model list: {e}")))?;
        if list.data.is_empty() {
            return Err(Error::UpstreamProtocol("the upstream lists no models".into()));
        }
        Ok(list
            .data
            .into_iter()
            .map(|m| {
                let owned_by = if m.owned_by.is_empty() {
                    "upstream".to_owned()
                } else {
                    m.owned_by
                };
                ModelCard {
                    id: m.id,
                    sha256: None,
                    owned_by,
                }
            })
            .collect())
    }

    fn check_model(&self, model: &str) -> Result<()> {
        if self.models.iter().any(|m| m.id == model) {
            Ok(())
        } else {
            Err(Error::UnknownModel(model.to_owned()))
        }
    }

    fn post(&self, path: &str, body: &impl serde::Serialize) -> reqwest::RequestBuilder {
        let mut req = match self.endpoints.iter().find(|(p, _)| *p == path) {
            Some((_, url)) => self.client.post(url.clone()),
            None => self.client.post(wire::api_url(&self.base, path)),
        }
        .json(body);
        if let Some(key) = &self.api_key {
            req = req.bearer_auth(key);
        }
        req
    }

    /// `POST {base}{path}` with `body`, not streamed: the whole answer, parsed as `R` (`what`
    /// names it in the error when it does not parse).
    async fn post_whole<R: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
        what: &str,
    ) -> Result<R> {
        let resp = self
            .post(path, body)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(transport_error)?;
        let resp = check_status(resp).await?;
        let bytes = read_body(resp, MAX_UPSTREAM_BODY).await?;
        serde_json::from_slice(&bytes).map_err(|e| Error::UpstreamProtocol(format!("not a {what}: {e}")))
    }

    /// `POST {base}{path}` with `body`, asking for an event stream: the accepted answer's body.
    async fn post_stream(&self, path: &str, body: &impl serde::Serialize) -> Result<ByteStream> {
        let resp = self
            .post(path, body)
            .header(reqwest::header::ACCEPT, wire::EVENT_STREAM_CONTENT_TYPE)
            .send()
            .await
            .map_err(transport_error)?;
        let resp = check_status(resp).await?;
        Ok(Box::pin(resp.bytes_stream()))
    }
}

/// Maps a transport failure: the upstream could not be reached or went away.
fn transport_error(e: reqwest::Error) -> Error {
    if e.is_decode() {
        Error::UpstreamProtocol(e.to_string())
    } else if e.is_timeout() {
        Error::UpstreamUnavailable(format!("timed out: {e}"))
    } else {
        // `{:#}`-style chain: reqwest's own message hides the cause (connection refused, ...).
        let mut msg = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            source = s.source();
        }
        Error::UpstreamUnavailable(msg)
    }
}

/// Reads an upstream body through the one size-limited read
/// ([`cloister_types::http::read_limited`]), refusing more than `limit` bytes.
async fn read_body(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>> {
    read_limited(&mut resp, limit).await.map_err(|e| match e {
        ReadError::Transport(e) => transport_error(e),
        e => Error::UpstreamProtocol(format!("upstream {e}")),
    })
}

/// Non-2xx becomes `Error::Upstream` with the message from the OpenAI error body when there is one.
async fn check_status(resp: reqwest::Response) -> Result<reqwest::Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = read_body(resp, 64 << 10).await.unwrap_or_default();
    let message = error_message(&body).unwrap_or_else(|| {
        let text = String::from_utf8_lossy(&body);
        let text = text.trim();
        if text.is_empty() {
            status.canonical_reason().unwrap_or("error").to_owned()
        } else {
            text.to_owned()
        }
    });
    Err(Error::Upstream {
        status: status.as_u16(),
        message: truncate(message),
    })
}

/// The message of an error body: OpenAI's `{"error":{"message"}}`, or the shapes vLLM, Ollama and
/// FastAPI use (`{"message"}`, `{"error": "..."}`, `{"detail": "..."}`).
fn error_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let text = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_owned);
    text("/error/message")
        .or_else(|| text("/error"))
        .or_else(|| text("/message"))
        .or_else(|| text("/detail"))
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_ERROR_MESSAGE {
        let mut at = MAX_ERROR_MESSAGE;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
        s.push('…');
    }
    s
}

/// An event that is not a chunk: an error object mid-stream, or garbage.
fn stream_event_error(data: &str, parse_error: &serde_json::Error) -> Error {
    let Ok(v) = serde_json::from_str::<Value>(data) else {
        return Error::UpstreamProtocol(format!("stream event is not JSON: {parse_error}"));
    };
    let is_error = v.get("error").is_some() || v.get("object").and_then(Value::as_str) == Some("error");
    if !is_error {
        return Error::UpstreamProtocol(format!(
            "stream event is not a chat completion chunk: {parse_error}"
        ));
    }
    let code = v
        .pointer("/error/code")
        .or_else(|| v.get("code"))
        .and_then(Value::as_u64);
    let status = code
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| (400..600).contains(c))
        .unwrap_or(502);
    let message = error_message(data.as_bytes()).unwrap_or_else(|| "upstream error".into());
    Error::Upstream {
        status,
        message: truncate(message),
    }
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// Runs `reads` (an upstream's streamed body, split as its reads arrived) through the stream
/// pass-through, and returns every item handed on. For the fuzz targets (`crate::fuzzing`).
pub(crate) fn pass_through_reads(reads: Vec<Vec<u8>>, model: &str) -> Vec<Result<ChatCompletionChunk>> {
    let body = futures::stream::iter(reads.into_iter().map(|read| Ok(Bytes::from(read))));
    let state = Passthrough::<ChatCompletionChunk>::new(Box::pin(body), model.to_owned());
    futures::executor::block_on(futures::stream::unfold(state, Passthrough::next_item).collect())
}

#[async_trait]
impl Engine for UpstreamEngine {
    fn models(&self) -> Vec<ModelCard> {
        self.models.clone()
    }

    async fn complete(&self, req: ChatCompletionRequest) -> Result<ChatCompletion> {
        self.check_model(&req.model)?;
        let mut body = req;
        body.stream = false;
        body.stream_options = None;
        self.post_whole(wire::CHAT_COMPLETIONS_PATH, &body, "chat completion")
            .await
    }

    async fn stream(&self, req: ChatCompletionRequest) -> Result<ChunkStream> {
        self.check_model(&req.model)?;
        let model = req.model.clone();
        let mut body = req;
        body.stream = true;
        body.stream_options = Some(StreamOptions { include_usage: true });
        let body = self.post_stream(wire::CHAT_COMPLETIONS_PATH, &body).await?;
        let state = Passthrough::<ChatCompletionChunk>::new(body, model);
        Ok(Box::pin(futures::stream::unfold(state, Passthrough::next_item)))
    }

    async fn complete_text(&self, req: CompletionRequest) -> Result<TextCompletion> {
        self.complete_text_upstream(req).await
    }

    async fn stream_text(&self, req: CompletionRequest) -> Result<TextChunkStream> {
        self.stream_text_upstream(req).await
    }

    async fn embed(&self, req: EmbeddingRequest) -> Result<EmbeddingResponse> {
        self.embed_upstream(req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_of_common_servers() {
        let m = |b: &str| error_message(b.as_bytes());
        assert_eq!(
            m(r#"{"error":{"message":"bad","type":"x"}}"#).as_deref(),
            Some("bad")
        );
        assert_eq!(
            m(r#"{"object":"error","message":"vllm says"}"#).as_deref(),
            Some("vllm says")
        );
        assert_eq!(m(r#"{"error":"ollama says"}"#).as_deref(), Some("ollama says"));
        assert_eq!(m(r#"{"detail":"fastapi says"}"#).as_deref(), Some("fastapi says"));
        assert_eq!(m("not json"), None);
        assert!(truncate("é".repeat(2000)).len() <= MAX_ERROR_MESSAGE + 3);
    }

    #[test]
    fn mid_stream_error_events_map_to_upstream_errors() {
        let parse_err = serde_json::from_str::<ChatCompletionChunk>("{").err();
        let Some(parse_err) = parse_err else {
            panic!("expected a parse error")
        };
        let e = stream_event_error(r#"{"error":{"message":"oom","code":503}}"#, &parse_err);
        assert!(
            matches!(e, Error::Upstream { status: 503, ref message } if message == "oom"),
            "{e:?}"
        );
        assert!(matches!(
            stream_event_error("{{{", &parse_err),
            Error::UpstreamProtocol(_)
        ));
        assert!(matches!(
            stream_event_error(r#"{"foo":1}"#, &parse_err),
            Error::UpstreamProtocol(_)
        ));
    }
}
