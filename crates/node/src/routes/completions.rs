//! `POST /v1/completions`: OpenAI's legacy text completions (a raw prompt, no chat template),
//! served, signed, metered and sealed exactly as chat is (`super::chat`, `super::sse`,
//! `super::e2ee`): the signature covers the request bytes received and the response bytes sent,
//! and a stream of `text_completion` chunks ends at `data: [DONE]` (with the signature event after
//! it on request).

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::response::Response;
use cloister_types::openai::CompletionRequest;
use cloister_types::wire::COMPLETIONS_PATH;

use super::chat::{Exchange, complete, inline_signature, stream};
use super::e2ee;
use crate::error::ApiError;
use crate::state::AppState;

/// The handler. A sealed request is opened first and its answer sealed on the way out, as for chat.
pub(super) async fn completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    e2ee::serve_sealable(
        state,
        &headers,
        body,
        COMPLETIONS_PATH,
        async |state, body, started| text(state, &headers, body, started).await,
    )
    .await
}

async fn text(
    state: AppState,
    headers: &HeaderMap,
    raw: &[u8],
    started: Instant,
) -> Result<Response, ApiError> {
    let req: CompletionRequest = serde_json::from_slice(raw).map_err(|e| ApiError::from_json(&e))?;
    let exchange = Exchange::open(&state, headers, &req.model, req.stream, COMPLETIONS_PATH, started).await?;
    let engine = Arc::clone(&state.engine);
    if req.stream {
        let include_usage = req.stream_options.as_ref().is_some_and(|o| o.include_usage);
        let opened = async move { engine.stream_text(req).await };
        stream(
            state,
            raw,
            opened,
            include_usage,
            exchange,
            inline_signature(headers),
        )
        .await
    } else {
        complete(state, raw, engine.complete_text(req), exchange).await
    }
}
