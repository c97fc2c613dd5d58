//! The explorer: `GET /explorer`, one server-rendered HTML page (no JavaScript) for the auditor
//! and the curious user, readable on a phone.
//!
//! It shows every registered node (endpoint, signer, operator, models and prices, stake,
//! measurement, whether governance allows it now and the registry's pending measurement changes),
//! the gateway's own latest verification of each node with every named check, the settled
//! earnings of each node and the last settlements (the `Escrow`'s `Settled` events), and the
//! network totals.
//!
//! The node view is the [`crate::Directory`]'s (refreshed on its own schedule). The extra chain
//! reads (pending changes, settlements) are cached for [`CHAIN_CACHE`] and refreshed by at most
//! one page load at a time, so a busy gateway never reads the chain per page load; settlements
//! are scanned incrementally from the deployment block ([`chain::ChainView`]).
//!
//! Everything the chain or a node says is untrusted: every string is HTML-escaped
//! ([`render::esc`]) and the page is served with a `Content-Security-Policy` that forbids scripts.

pub mod chain;
pub mod render;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cloister_types::wire;

use crate::Gateway;

/// How long the explorer's own chain reads are reused.
pub const CHAIN_CACHE: Duration = Duration::from_secs(3);

/// What the page may load: its inline style, nothing else (no script, no frame, no form target).
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src 'none'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// The explorer's route (`GET` [`wire::EXPLORER_PATH`]), with its own chain cache.
pub fn routes() -> Router<Gateway> {
    let cache = Arc::new(chain::ChainCache::new(CHAIN_CACHE));
    Router::new().route(
        wire::EXPLORER_PATH,
        get(move |State(gw): State<Gateway>| {
            let cache = Arc::clone(&cache);
            async move { page(&gw, &cache).await }
        }),
    )
}

async fn page(gw: &Gateway, cache: &chain::ChainCache) -> Response {
    let view = cache.get(gw).await;
    let snapshot = gw.directory().snapshot();
    let html = render::page(&render::PageInput {
        config: gw.config(),
        gateway_signer: gw.signer(),
        snapshot: &snapshot,
        chain: &view,
        now: cloister_types::unix_now(),
    });
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}
