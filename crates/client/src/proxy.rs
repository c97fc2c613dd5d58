//! The verifying proxy: a plain OpenAI API in front of attested nodes. Each request goes only to a
//! node that verified under the policy, sealed to its attested E2EE key; each answer is opened and
//! its signature checked before (plain) or while (streamed) it is passed on. A failed verification
//! is an OpenAI-shaped error naming the reason, never a fallback to an unverified node.
//!
//! Answers leave the proxy in clear: serve it on loopback (or behind TLS to the one client it
//! serves). Every answer carries the `x-cloister-*` headers of [`wire`] (verified, signer, TEE,
//! measurement, signature check, E2EE, node).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use cloister_client::{NodePool, Policy, proxy};
//!
//! let pool = NodePool::new(["http://127.0.0.1:8080"], Arc::new(Policy::default()))?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//! proxy::serve(listener, pool, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

mod answer;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use cloister_types::wire;
use futures::StreamExt;

use crate::{NodePool, RequestOptions};
use answer::{error_response, openai_error, stream_item, verified_headers};

/// The proxy's routes over `pool`: `GET /v1/models` (the union of the verified nodes' models),
/// `POST /v1/chat/completions` and `POST /v1/completions` (plain or streamed, each checked the same
/// way), `POST /v1/embeddings` and `GET /health`. The pool's policy decides
/// which nodes verify.
pub fn router(pool: NodePool) -> Router {
    Router::new()
        .route(wire::MODELS_PATH, get(models))
        .route(wire::CHAT_COMPLETIONS_PATH, post(chat))
        .route(wire::COMPLETIONS_PATH, post(completions))
        .route(wire::EMBEDDINGS_PATH, post(embeddings))
        .route(wire::HEALTH_PATH, get(|| async { "ok" }))
        .with_state(Arc::new(pool))
}

/// Serves [`router`]`(pool)` on `listener` (with [`nodelay`]) until `shutdown` resolves, then
/// finishes the requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    pool: NodePool,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(nodelay(listener), router(pool))
        .with_graceful_shutdown(shutdown)
        .await
}

/// `listener` with `TCP_NODELAY` on each connection: SSE events are small, and each goes out at
/// once rather than waiting for Nagle (and the client's delayed ACK, 40 ms a round).
pub fn nodelay(listener: tokio::net::TcpListener) -> impl axum::serve::Listener<Addr = SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(%err, "TCP_NODELAY not set");
        }
    })
}

async fn models(State(pool): State<Arc<NodePool>>) -> Response {
    match pool.models().await {
        Ok(list) => axum::Json(list).into_response(),
        Err(e) => error_response(&e),
    }
}

async fn chat(State(pool): State<Arc<NodePool>>, headers: HeaderMap, body: Bytes) -> Response {
    forward(&pool, &headers, body, wire::CHAT_COMPLETIONS_PATH).await
}

async fn completions(State(pool): State<Arc<NodePool>>, headers: HeaderMap, body: Bytes) -> Response {
    forward(&pool, &headers, body, wire::COMPLETIONS_PATH).await
}

async fn embeddings(State(pool): State<Arc<NodePool>>, headers: HeaderMap, body: Bytes) -> Response {
    forward(&pool, &headers, body, wire::EMBEDDINGS_PATH).await
}

/// One request to `path` (chat or text completions, embeddings), plain or streamed by its `stream` field.
async fn forward(pool: &NodePool, headers: &HeaderMap, body: Bytes, path: &'static str) -> Response {
    let opts = RequestOptions {
        authorization: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_json",
            "the request body is not JSON",
        );
    };
    let text = path == wire::COMPLETIONS_PATH;
    let streamed = value.get("stream").and_then(|s| s.as_bool()).unwrap_or(false);
    if path != wire::EMBEDDINGS_PATH && streamed {
        let opened = if text {
            pool.completion_stream(body, &opts).await
        } else {
            pool.chat_stream(body, &opts).await
        };
        chat_stream(opened)
    } else {
        let answered = match path {
            wire::COMPLETIONS_PATH => pool.completion(body, &opts).await,
            wire::EMBEDDINGS_PATH => pool.embeddings(body, &opts).await,
            _ => pool.chat(body, &opts).await,
        };
        chat_plain(answered)
    }
}

fn chat_plain(answered: crate::Result<crate::VerifiedResponse>) -> Response {
    let r = match answered {
        Ok(r) => r,
        Err(e) => return error_response(&e),
    };
    tracing::debug!(node = %r.node.url, sealed = r.sealed, "answer verified");
    let mut resp = (StatusCode::OK, r.body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(wire::JSON_CONTENT_TYPE),
    );
    verified_headers(h, &r.node, r.sealed, "true");
    if let Some(v) = serde_json::to_string(&r.signature)
        .ok()
        .and_then(|s| HeaderValue::from_str(&s).ok())
    {
        h.insert(wire::SIGNATURE_HEADER, v);
    }
    // The node's metering receipt (signed by the enclave key) goes to the client as is.
    if let Some(v) = r.receipt.as_deref().and_then(|r| HeaderValue::from_str(r).ok()) {
        h.insert(wire::RECEIPT_HEADER, v);
    }
    resp
}

fn chat_stream(opened: crate::Result<crate::ChatStream>) -> Response {
    let s = match opened {
        Ok(s) => s,
        Err(e) => return error_response(&e),
    };
    let node = Arc::clone(&s.node);
    let sealed = s.sealed;
    // Opened events go out as they come (the attested E2EE key authenticates them); `[DONE]` only
    // once the end marker and the signature checked; an error event, and no `[DONE]`, otherwise.
    let events = s.map(move |item| Ok::<_, std::convert::Infallible>(stream_item(item, sealed)));
    let mut resp = Response::new(Body::from_stream(events));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(wire::EVENT_STREAM_CONTENT_TYPE),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    verified_headers(h, &node, sealed, wire::SIGNATURE_VERIFIED_AT_END);
    resp
}
