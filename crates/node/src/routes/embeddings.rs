//! `POST /v1/embeddings`: one vector per input, served, signed, metered (prompt tokens only) and
//! sealed as a whole chat answer is (`super::chat::complete`, `super::e2ee`): the signature covers
//! the request bytes received and the response bytes sent, and a sealed request's AAD binds this
//! route's path.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::response::Response;
use cloister_types::openai::{EmbeddingRequest, EmbeddingResponse, Usage};
use cloister_types::wire::EMBEDDINGS_PATH;

use super::chat::{Answer, Exchange, complete};
use super::e2ee;
use crate::error::ApiError;
use crate::state::AppState;

/// The handler. A sealed request is opened first and its answer sealed on the way out, as for chat.
pub(super) async fn embeddings(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    e2ee::serve_sealable(
        state,
        &headers,
        body,
        EMBEDDINGS_PATH,
        async |state, body, started| embed(state, &headers, body, started).await,
    )
    .await
}

async fn embed(
    state: AppState,
    headers: &HeaderMap,
    raw: &[u8],
    started: Instant,
) -> Result<Response, ApiError> {
    let req: EmbeddingRequest = serde_json::from_slice(raw).map_err(|e| ApiError::from_json(&e))?;
    let exchange = Exchange::open(&state, headers, &req.model, false, EMBEDDINGS_PATH, started).await?;
    let engine = Arc::clone(&state.engine);
    complete(state, raw, engine.embed(req), exchange).await
}

impl Answer for EmbeddingResponse {
    fn set_id(&mut self, id: &str) {
        id.clone_into(&mut self.id);
    }
    /// Prompt tokens only: an embedding generates nothing.
    fn usage(&self) -> Option<Usage> {
        self.usage.as_ref().map(|u| u.as_usage())
    }
    fn has_choices(&self) -> bool {
        !self.data.is_empty()
    }
    fn clear_usage(&mut self) {
        self.usage = None;
    }
}
