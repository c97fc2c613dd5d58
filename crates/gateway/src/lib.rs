//! The gateway: one endpoint many clients share, in front of every node a `NodeRegistry` lists.
//!
//! - [`directory`]: it reads the registry (nodes, models, prices, measurements), verifies each node
//!   itself under a [`Policy`] with a fresh nonce, and keeps a health, load and latency view.
//! - [`routes`]: `GET /v1/models` across the network, `GET /v1/gateway/nodes` (the verified nodes,
//!   best first), each node's attestation report fetched with the client's nonce, and the
//!   forwarding of requests **sealed to a node the client names** (`x-cloister-gateway-node`), byte
//!   for byte, streams included. A request that is not sealed is refused: the gateway never
//!   carries a prompt in clear.
//! - [`attested`]: its own attestation report, for clients that choose to trust it for routing.
//!   Nothing a client verifies about a node depends on it.
//!
//! It is stateless apart from caches: N replicas behind any load balancer see the same registry
//! and route the same way. What it sees of a request is the model id, the node, sizes and timing
//! (`docs/threat-model.md`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use cloister_client::discover::RegistryConfig;
//! use cloister_gateway::{Gateway, GatewayConfig};
//!
//! let config = GatewayConfig::new(RegistryConfig {
//!     rpc_url: "http://127.0.0.1:8545".into(),
//!     chain_id: 31337,
//!     registry: "0x5FbDB2315678afecb367f032d93F642f64180aa3".parse()?,
//! });
//! let gateway = Gateway::start(config, None).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8088").await?;
//! cloister_gateway::serve(listener, gateway, std::future::pending()).await?;
//! # Ok(()) }
//! ```

pub mod attested;
pub mod directory;
pub mod explorer;
mod forward;
pub mod routes;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::Address;
use cloister_attest::collect::Attester;
use cloister_client::Policy;
use cloister_client::discover::RegistryConfig;
use cloister_crypto::EnclaveKey;
use cloister_types::logscan::LogScanLimits;

pub use directory::Directory;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Building the HTTP client failed.
    #[error("building the HTTP client: {0}")]
    Http(String),
    /// The attester could not give the gateway's signing key.
    #[error("the attester: {0}")]
    Attester(String),
}

/// How a gateway runs.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// The registry to read.
    pub registry: RegistryConfig,
    /// From which block, and in which windows, the registry's logs are read.
    pub log_limits: LogScanLimits,
    /// The `Escrow` the network settles in (shown to clients that mint spend authorizations, and
    /// read by the explorer); `None` when unknown.
    pub escrow: Option<Address>,
    /// How nodes are verified. Unless [`GatewayConfig::own_allowlist`], its measurement allowlist
    /// is replaced at each refresh by the one governance sets on chain.
    pub policy: Policy,
    /// Keep `policy.allowed_measurements` as given instead of following the registry's.
    pub own_allowlist: bool,
    /// How often the registry is read and every node verified again.
    pub refresh: Duration,
    /// Requests forwarded to one node at once; more are answered 429.
    pub max_in_flight: u32,
    /// Limit on verifying one node.
    pub verify_timeout: Duration,
}

impl GatewayConfig {
    /// Defaults around `registry`: refresh every 30 s, 64 requests in flight per node, the
    /// registry's allowlist, a 20 s verification limit.
    pub fn new(registry: RegistryConfig) -> Self {
        Self {
            registry,
            log_limits: LogScanLimits::default(),
            escrow: None,
            policy: Policy::default(),
            own_allowlist: false,
            refresh: Duration::from_secs(30),
            max_in_flight: 64,
            verify_timeout: Duration::from_secs(20),
        }
    }
}

/// A started gateway: the directory (refreshed in the background while this value lives), its
/// HTTP client to the nodes, and its own key and attester.
#[derive(Clone)]
pub struct Gateway {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: GatewayConfig,
    pub(crate) directory: Arc<Directory>,
    pub(crate) http: reqwest::Client,
    pub(crate) key: EnclaveKey,
    pub(crate) attester: Option<Arc<dyn Attester>>,
    refresher: tokio::task::JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("registry", &self.inner.config.registry.registry)
            .field("signer", &self.inner.key.address())
            .finish()
    }
}

impl Gateway {
    /// Reads the registry and verifies every node once, then keeps doing so every
    /// `config.refresh` in the background. `attester`: where the gateway's own attestation report
    /// comes from (`None`: it serves none).
    pub async fn start(
        config: GatewayConfig,
        attester: Option<Arc<dyn Attester>>,
    ) -> Result<Self, GatewayError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .pool_max_idle_per_host(256)
            .build()
            .map_err(|e| GatewayError::Http(e.to_string()))?;
        let key = match &attester {
            Some(a) => a
                .derived_signing_key()
                .await
                .map_err(|e| GatewayError::Attester(e.to_string()))?,
            None => None,
        }
        .unwrap_or_else(EnclaveKey::generate);
        let directory = Arc::new(Directory::new(config.clone(), http.clone()));
        directory.refresh().await;
        let refresher = tokio::spawn(Arc::clone(&directory).refresh_forever());
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                directory,
                http,
                key,
                attester,
                refresher,
            }),
        })
    }

    /// The directory of nodes.
    pub fn directory(&self) -> &Directory {
        &self.inner.directory
    }

    /// The configuration.
    pub fn config(&self) -> &GatewayConfig {
        &self.inner.config
    }

    /// The gateway's own signing address (its attestation report binds it).
    pub fn signer(&self) -> Address {
        self.inner.key.address()
    }
}

/// Serves [`routes::router`]`(gateway)` on `listener` until `shutdown` resolves, then finishes the
/// requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(cloister_client::proxy::nodelay(listener), routes::router(gateway))
        .with_graceful_shutdown(shutdown)
        .await
}
