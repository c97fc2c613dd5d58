//! `GET /metrics` (and `/v1/metrics`, the vllm-proxy path): Prometheus text format.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

/// The handler.
pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    let text = state.metrics().render(state.signature_count());
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
