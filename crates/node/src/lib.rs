//! The Cloister node's HTTP server: an OpenAI-compatible API served from inside a TEE, that proves
//! what it runs and signs every answer.
//!
//! - `POST /v1/chat/completions`: OpenAI chat completions, plain or streamed (SSE). Every answer
//!   is signed (EIP-191 `personal_sign`) over `sha256(request bytes) ":" sha256(response bytes)`,
//!   the exact bytes on the wire; plain answers carry the signature in the
//!   [`SIGNATURE_HEADER`](cloister_types::wire::SIGNATURE_HEADER) header, streams end with a
//!   [`SIGNATURE_EVENT`](cloister_types::wire::SIGNATURE_EVENT) event. Every path, header and
//!   event name is in [`cloister_types::wire`].
//! - `GET /v1/attestation/report?nonce=<64 hex>`: a TEE quote whose report_data binds the signing
//!   address and the nonce, in the Phala/NEAR private-ml-sdk shape.
//! - `GET /v1/signature/{id}`: the signature of a recent answer (kept for
//!   [`NodeConfig::signature_ttl`]).
//! - `GET /v1/models`, `GET /health`, `GET /metrics` (Prometheus text).
//!
//! The HTTP layer knows the engine only as `Arc<dyn Engine>` and the TEE only as
//! `Arc<dyn Attester>`. Errors are OpenAI-shaped (`{"error": {"message", "type", "code",
//! "param"}}`, see [`ApiError`]).
//!
//! A whole node (TEE, engine, signing key, on-chain life, server) starts from [`NodeSettings`],
//! which is also the TOML settings file format, with [`Node::start`]:
//!
//! ```no_run
//! use cloister_node::{Node, NodeSettings};
//!
//! # async fn run() -> Result<(), cloister_node::NodeError> {
//! let settings = NodeSettings {
//!     model: Some("models/SmolLM2-135M-Instruct.Q4_1.gguf".into()),
//!     ..NodeSettings::load("node.toml".as_ref())?
//! };
//! let node = Node::start(settings).await?;
//! node.wait(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(())
//! # }
//! ```
//!
//! The parts can also be put together by hand:
//!
//! ```no_run
//! use std::sync::Arc;
//! use cloister_attest::collect::{DetectOptions, detect};
//! use cloister_engine::upstream::{UpstreamConfig, UpstreamEngine};
//! use cloister_node::{AppState, NodeConfig, serve, start_key};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let attester = detect(&DetectOptions::default()).await?;
//! let key = Arc::new(start_key(attester.as_ref()).await);
//! let engine = UpstreamEngine::connect(UpstreamConfig::new("http://127.0.0.1:8000/v1")).await?;
//! let state = AppState::new(Arc::new(engine), attester, key, NodeConfig::default());
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
//! serve(listener, state, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(())
//! # }
//! ```

mod aci;
pub mod billing;
mod config;
mod error;
mod metrics;
pub mod onchain;
mod routes;
mod settings;
mod sigcache;
mod start;
mod state;

use std::future::Future;

use axum::serve::ListenerExt as _;
use cloister_attest::collect::Attester;
use cloister_crypto::EnclaveKey;

pub use config::NodeConfig;
pub use error::{ApiError, E2eeRefusal, Result};
pub use settings::{InvalidPrice, ModelPriceSpec, NodeSettings, PriceSpec, Secret};
pub use start::{GpuMode, Node, NodeError, RunningNode};
pub use state::AppState;

/// The node's router over `state` (for tests with `tower::ServiceExt::oneshot`, or to nest).
pub fn router(state: AppState) -> axum::Router {
    routes::router(state)
}

/// Serves the node on `listener` until `shutdown` resolves, then stops accepting connections and
/// waits for in-flight requests (streams included) to finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, signing_address = %state.signing_address(), "node listening");
    }
    // SSE chunks are small: send each at once rather than wait for Nagle.
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(%err, "TCP_NODELAY not set");
        }
    });
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await?;
    tracing::debug!("HTTP server stopped");
    Ok(())
}

pub(crate) use cloister_types::unix_now;

/// The signing key for this run: the one the attester derives (dstack `GetKey`: stable across
/// restarts of the same app) if it offers one, else a fresh random key.
///
/// The key never leaves memory; only its address is logged.
pub async fn start_key(attester: &dyn Attester) -> EnclaveKey {
    let key = match attester.derived_signing_key().await {
        Ok(Some(key)) => {
            tracing::info!(address = %key.address_hex(), "signing key derived by the TEE");
            return key;
        }
        Ok(None) => EnclaveKey::generate(),
        Err(err) => {
            tracing::warn!(%err, "TEE key derivation failed; using a random signing key");
            EnclaveKey::generate()
        }
    };
    tracing::info!(address = %key.address_hex(), "random signing key generated");
    key
}
