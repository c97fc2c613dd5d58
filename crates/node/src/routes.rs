//! The router: OpenAI API, attestation and signature endpoints, health and metrics.

mod aci;
mod attestation;
mod chat;
mod completions;
mod e2ee;
mod embeddings;
mod health;
mod metrics;
mod models;
mod signature;
mod sse;

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{Method, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cloister_types::wire::{
    ACI_ATTESTATION_PATH, ACI_RECEIPT_ROUTE, ATTESTATION_REPORT_PATH, CHAT_COMPLETIONS_PATH,
    COMPLETIONS_PATH, EMBEDDINGS_PATH, HEALTH_PATH, METRICS_PATH, METRICS_V1_PATH, MODELS_PATH,
    SIGNATURE_ROUTE,
};
use http_body::{Frame, SizeHint};
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::state::{AppState, InFlight};

pub(crate) use signature::SignatureEvent;

/// Builds the node's router over `state`.
pub(crate) fn router(state: AppState) -> Router {
    let body_limit = state.config.body_limit;
    // API routes count against `max_concurrent_requests`; health and metrics never do, so an
    // operator can still see a saturated node.
    let api = Router::new()
        .route(CHAT_COMPLETIONS_PATH, post(chat::chat_completions))
        .route(COMPLETIONS_PATH, post(completions::completions))
        .route(EMBEDDINGS_PATH, post(embeddings::embeddings))
        .route(MODELS_PATH, get(models::list_models))
        .route(ATTESTATION_REPORT_PATH, get(attestation::report))
        .route(SIGNATURE_ROUTE, get(signature::get_signature))
        .route(ACI_ATTESTATION_PATH, get(aci::attestation))
        .route(ACI_RECEIPT_ROUTE, get(aci::receipt))
        .route_layer(middleware::from_fn_with_state(state.clone(), admit));
    let ops = Router::new()
        .route(HEALTH_PATH, get(health::health))
        .route(METRICS_PATH, get(metrics::metrics))
        .route(METRICS_V1_PATH, get(metrics::metrics));
    api.merge(ops)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), aci::headers))
        .layer(middleware::from_fn_with_state(state.clone(), record_http))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::RouteNotFound(uri.path().to_owned())
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed(method.to_string())
}

/// Counts every response by route template (never the raw path) and status.
async fn record_http(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let response = next.run(req).await;
    state.metrics().http_request(
        route.as_deref().unwrap_or("unmatched"),
        response.status().as_u16(),
    );
    response
}

/// Refuses requests past `max_concurrent_requests` with 429; an admitted request keeps its slot
/// until its response body has been sent (the whole stream, for SSE).
async fn admit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(guard) = state.try_admit() else {
        return ApiError::NodeBusy(state.config.max_concurrent_requests).into_response();
    };
    next.run(req)
        .await
        .map(|inner| Body::new(GuardedBody { inner, _guard: guard }))
}

/// A response body that holds an admission slot until it is dropped.
struct GuardedBody {
    inner: Body,
    _guard: InFlight,
}

impl http_body::Body for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
