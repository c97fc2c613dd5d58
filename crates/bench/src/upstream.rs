//! A test double of an OpenAI-compatible upstream: it answers every chat completion at once with
//! the same canned answer (plain or streamed), so that a comparison against it isolates what the
//! node in front of it adds. `cloister bench` runs it; tests may too.
//!
//! ```no_run
//! # async fn demo() -> cloister_bench::Result<()> {
//! let addr = cloister_bench::upstream::start_reference_upstream().await?;
//! let base_url = format!("http://{addr}/v1");
//! # Ok(()) }
//! ```

use std::net::SocketAddr;

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::routing::{get, post};
use bytes::Bytes;
use cloister_types::wire::{
    CHAT_COMPLETIONS_PATH, EVENT_STREAM_CONTENT_TYPE, JSON_CONTENT_TYPE, MODELS_PATH, SSE_DONE_EVENT,
};

use crate::{Error, Result};

/// The one model the reference upstream serves.
pub const REFERENCE_MODEL: &str = "ref-model";

/// The reference upstream's answer to every plain chat completion.
pub const REFERENCE_ANSWER: &str = r#"{"id":"chatcmpl-ref","object":"chat.completion","created":1700000000,"model":"ref-model","choices":[{"index":0,"message":{"role":"assistant","content":"The sky is blue because air scatters short wavelengths of sunlight more than long ones."},"finish_reason":"stop"}],"usage":{"prompt_tokens":24,"completion_tokens":17,"total_tokens":41}}"#;

/// The reference model list (`GET /v1/models`).
const REFERENCE_MODELS: &str =
    r#"{"object":"list","data":[{"id":"ref-model","object":"model","created":0,"owned_by":"bench"}]}"#;

/// The reference upstream's answer to every streamed chat completion: ten content chunks, a finish
/// chunk, a usage chunk and `data: [DONE]`.
pub fn reference_stream() -> String {
    let words = [
        "The",
        " sky",
        " is",
        " blue",
        " because",
        " air",
        " scatters",
        " blue",
        " light",
        ".",
    ];
    let mut out = String::new();
    for (i, w) in words.iter().enumerate() {
        let role = if i == 0 { r#""role":"assistant","# } else { "" };
        out.push_str(&format!(
            "data: {{\"id\":\"chatcmpl-ref\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"ref-model\",\"choices\":[{{\"index\":0,\"delta\":{{{role}\"content\":\"{w}\"}},\"finish_reason\":null}}]}}\n\n"
        ));
    }
    out.push_str("data: {\"id\":\"chatcmpl-ref\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"ref-model\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n");
    out.push_str("data: {\"id\":\"chatcmpl-ref\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"ref-model\",\"choices\":[],\"usage\":{\"prompt_tokens\":24,\"completion_tokens\":10,\"total_tokens\":34}}\n\n");
    out.push_str(SSE_DONE_EVENT);
    out
}

/// The chat request every benchmark sends (one short user message, 32 tokens at most).
pub fn reference_request(stream: bool) -> Result<Bytes> {
    serde_json::to_vec(&serde_json::json!({
        "model": REFERENCE_MODEL,
        "messages": [{"role": "user", "content": "Why is the sky blue?"}],
        "max_tokens": 32,
        "stream": stream,
    }))
    .map(Bytes::from)
    .map_err(|e| Error::json("the reference request", e))
}

/// The reference upstream's routes: `GET /v1/models` and `POST /v1/chat/completions` (streamed when
/// the body says `"stream": true`).
pub fn reference_router() -> Router {
    let stream_body = Bytes::from(reference_stream());
    Router::new()
        .route(
            MODELS_PATH,
            get(|| async { ([(CONTENT_TYPE, JSON_CONTENT_TYPE)], REFERENCE_MODELS) }),
        )
        .route(
            CHAT_COMPLETIONS_PATH,
            post(move |body: Bytes| {
                let stream_body = stream_body.clone();
                async move {
                    let wants_stream = serde_json::from_slice::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v.get("stream").and_then(|s| s.as_bool()))
                        .unwrap_or(false);
                    if wants_stream {
                        ([(CONTENT_TYPE, EVENT_STREAM_CONTENT_TYPE)], stream_body)
                    } else {
                        (
                            [(CONTENT_TYPE, JSON_CONTENT_TYPE)],
                            Bytes::from_static(REFERENCE_ANSWER.as_bytes()),
                        )
                    }
                }
            }),
        )
}

/// Serves [`reference_router`] on a loopback port from a task of the current runtime; it stops
/// with the runtime.
pub async fn start_reference_upstream() -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| Error::io("binding the reference upstream", e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("the reference upstream's address", e))?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, reference_router()).await;
    });
    Ok(addr)
}
