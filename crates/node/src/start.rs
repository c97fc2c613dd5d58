//! [`Node::start`]: a whole node from [`NodeSettings`]: the TEE, the engine, the signing key, the
//! on-chain life, the HTTP server, and a clean shutdown.

mod error;
mod gpu;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cloister_attest::collect::gpu::GpuEvidence;
use cloister_attest::collect::{Attester, DetectOptions, detect};
use cloister_chain::{ChainConfig, DevnetFile};
use cloister_crypto::EnclaveKey;
use cloister_engine::Engine;
use cloister_engine::builtin::{BuiltinConfig, BuiltinEngine};
use cloister_engine::source::ModelSource;
use cloister_engine::upstream::{UpstreamConfig, UpstreamEngine};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use error::NodeError;
pub use gpu::GpuMode;

use crate::onchain::{OnChainConfig, OnChainNode};
use crate::{AppState, NodeSettings};

/// A client's withdrawal due within this is settled first.
const WITHDRAWAL_MARGIN: Duration = Duration::from_secs(30);
/// How often the on-chain tasks look for new chain state.
const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// How long a deposit read from chain is trusted.
const DEPOSIT_TTL: Duration = Duration::from_secs(30);

/// A node assembled from its settings (TEE chosen, engine loaded, signing key made), not yet
/// serving. Most callers want [`Node::start`], which also serves.
///
/// ```no_run
/// # async fn run() -> Result<(), cloister_node::NodeError> {
/// use cloister_node::{Node, NodeSettings};
/// let settings = NodeSettings::load("node.toml".as_ref())?;
/// let node = Node::start(settings).await?;
/// println!("serving on {} as {}", node.local_addr(), node.signing_address());
/// node.wait(async { let _ = tokio::signal::ctrl_c().await; }).await?;
/// # Ok(()) }
/// ```
pub struct Node {
    settings: NodeSettings,
    attester: Arc<dyn Attester>,
    gpu: Option<Arc<dyn GpuEvidence>>,
    engine: Arc<dyn Engine>,
    key: Arc<EnclaveKey>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("tee", &self.attester.tee())
            .field("signing_address", &self.key.address_hex())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Assembles the node ([`Node::assemble`]) and serves it ([`Node::serve`]).
    pub async fn start(settings: NodeSettings) -> Result<RunningNode, NodeError> {
        Self::assemble(settings).await?.serve().await
    }

    /// Picks the evidence source (dstack, then configfs-tsm, then, only with
    /// `dev_simulated_tee`, the simulator) and the GPU evidence source (setting `gpu`), builds the
    /// engine (the built-in GGUF engine for
    /// `model`, or the `upstream` server) and makes the signing key ([`crate::start_key`]).
    pub async fn assemble(settings: NodeSettings) -> Result<Self, NodeError> {
        let attester = detect(&DetectOptions {
            dev_simulated: settings.dev_simulated_tee,
            dstack_socket: settings.dstack_socket.clone(),
            configfs_root: settings.configfs_root.clone(),
        })
        .await
        .map_err(NodeError::Attester)?;
        let gpu = gpu::select(&settings)?;
        let engine = build_engine(&settings).await?;
        let key = Arc::new(crate::start_key(attester.as_ref()).await);
        Ok(Self {
            settings,
            attester,
            gpu,
            engine,
            key,
        })
    }

    /// The engine the node serves.
    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    /// The TEE evidence source.
    pub fn attester(&self) -> &Arc<dyn Attester> {
        &self.attester
    }

    /// Binds `listen`, starts the on-chain life when the settings name a chain (register or
    /// reattest, billing, settlement, oracle), and serves until [`RunningNode::shutdown`].
    pub async fn serve(self) -> Result<RunningNode, NodeError> {
        let Self {
            settings,
            attester,
            gpu,
            engine,
            key,
        } = self;
        let listen = settings.listen;
        let bind_error = |source| NodeError::Bind { addr: listen, source };
        let listener = tokio::net::TcpListener::bind(listen).await.map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        let models: Vec<String> = engine.models().into_iter().map(|m| m.id).collect();
        tracing::info!(
            listen = %local_addr,
            tee = %attester.tee(),
            signing_address = %key.address_hex(),
            models = ?models,
            "node serving"
        );
        let mut state = AppState::new(
            Arc::clone(&engine),
            Arc::clone(&attester),
            Arc::clone(&key),
            settings.node_config(),
        );
        if let Some(gpu) = gpu {
            state = state.with_gpu(gpu);
        }
        let chain = ChainConfig::resolve(settings.chain.as_deref(), &settings.chain_overrides())
            .await
            .map_err(NodeError::Chain)?;
        let onchain = match chain {
            Some(chain) => {
                chain
                    .require_node_contracts(!settings.no_oracle)
                    .map_err(NodeError::Chain)?;
                let config = onchain_config(&settings, chain, &models, local_addr)?;
                let node = OnChainNode::start_with_e2ee(config, engine, attester, key, state.e2ee_key())
                    .await
                    .map_err(NodeError::OnChain)?;
                let r = &node.registration;
                tracing::info!(
                    action = r.action,
                    tx = %r.tx_hash,
                    gas = r.gas_used,
                    resigned = r.resigned,
                    rejected = r.rejected,
                    "registry"
                );
                state = state.with_billing(Arc::clone(&node.billing));
                Some(node)
            }
            None => None,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(crate::serve(listener, state.clone(), async move {
            let _ = stopped.await;
        }));
        Ok(RunningNode {
            local_addr,
            state,
            onchain,
            stop: Some(stop),
            server: Some(server),
        })
    }
}

/// The engine the settings ask for.
async fn build_engine(settings: &NodeSettings) -> Result<Arc<dyn Engine>, NodeError> {
    match (&settings.model, &settings.upstream) {
        (Some(_), Some(_)) => Err(NodeError::TwoEngines),
        (None, None) => Err(NodeError::NoEngine),
        (None, Some(url)) => {
            let engine = UpstreamEngine::connect(UpstreamConfig {
                base_url: url.clone(),
                api_key: settings.upstream_api_key.as_ref().map(|k| k.expose().to_owned()),
                models: settings.upstream_models.clone(),
                timeout: Duration::from_secs(settings.request_timeout_secs),
            })
            .await
            .map_err(|source| NodeError::Upstream {
                url: url.clone(),
                source,
            })?;
            Ok(Arc::new(engine))
        }
        (Some(spec), None) => {
            let model_error = |source| NodeError::Model {
                spec: spec.clone(),
                source,
            };
            let source: ModelSource = spec.parse().map_err(model_error)?;
            let path = source.resolve(true).await.map_err(model_error)?;
            let mut config = BuiltinConfig::new(path);
            config.model_id.clone_from(&settings.model_id);
            config.threads = settings.threads;
            if let Some(slots) = settings.slots {
                config.slots = slots;
            }
            if let Some(ctx) = settings.ctx_per_slot {
                config.ctx_per_slot = ctx;
            }
            if let Some(layers) = settings.gpu_layers {
                config.gpu_layers = layers;
            }
            config.embedding_model.clone_from(&settings.embedding_model);
            config.prefix_cache = !settings.no_prefix_cache;
            if let Some(mib) = settings.prompt_cache_mib {
                config.prompt_cache_mib = mib;
            }
            config.kv_unified = settings.kv_unified;
            let engine = BuiltinEngine::load_async(config).await.map_err(model_error)?;
            Ok(Arc::new(engine))
        }
    }
}

/// What the on-chain life needs, from the settings, the resolved chain, the served models and
/// the bound address.
fn onchain_config(
    settings: &NodeSettings,
    chain: ChainConfig,
    models: &[String],
    local: SocketAddr,
) -> Result<OnChainConfig, NodeError> {
    let operator = match &settings.operator_key {
        Some(key) => key.clone(),
        None => {
            let dev_operator = settings
                .chain
                .as_deref()
                .and_then(|f| DevnetFile::load(f).ok())
                .and_then(|d| d.account("operator").map(|a| a.private_key.clone()))
                .ok_or(NodeError::NoOperatorKey)?;
            cloister_chain::parse_private_key(&dev_operator).map_err(NodeError::Chain)?
        }
    };
    let mut prices = HashMap::new();
    for spec in &settings.prices {
        if !models.contains(&spec.model) {
            return Err(NodeError::UnservedPrice {
                model: spec.model.clone(),
                served: models.to_vec(),
            });
        }
        prices.insert(spec.model.clone(), spec.price);
    }
    for model in models {
        prices.entry(model.clone()).or_insert(settings.default_price.0);
    }
    Ok(OnChainConfig {
        chain,
        operator,
        endpoint: settings
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("http://{local}")),
        prices,
        stake: settings.stake,
        ledger_path: settings.ledger.clone(),
        settle_interval: Duration::from_secs(settings.settle_interval_secs),
        settle_threshold: settings.settle_threshold,
        withdrawal_margin: WITHDRAWAL_MARGIN,
        poll_interval: POLL_INTERVAL,
        deposit_ttl: DEPOSIT_TTL,
        oracle: !settings.no_oracle,
    })
}

/// A serving node. Dropping it stops accepting connections (in-flight requests finish) and
/// stops the on-chain tasks where they are, as in a crash (the ledger keeps every voucher); call
/// [`RunningNode::shutdown`] to also settle what waits.
pub struct RunningNode {
    local_addr: SocketAddr,
    state: AppState,
    onchain: Option<OnChainNode>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl std::fmt::Debug for RunningNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningNode")
            .field("local_addr", &self.local_addr)
            .field("state", &self.state)
            .field("onchain", &self.onchain)
            .finish_non_exhaustive()
    }
}

impl RunningNode {
    /// The address the node listens on (the bound port when `listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://<local address>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// The EIP-55 `0x` address of the signing key (the one the attestation report binds).
    pub fn signing_address(&self) -> &str {
        self.state.signing_address()
    }

    /// The state the HTTP layer serves from.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The on-chain side (registration outcome, billing and ledger, chain), when on chain.
    pub fn onchain(&self) -> Option<&OnChainNode> {
        self.onchain.as_ref()
    }

    /// Serves until `signal` resolves, then shuts down as [`RunningNode::shutdown`] does. Returns
    /// early with the error if the HTTP server fails first.
    pub async fn wait(mut self, signal: impl Future<Output = ()>) -> Result<(), NodeError> {
        if let Some(server) = self.server.as_mut() {
            tokio::select! {
                () = signal => {}
                ended = server => {
                    self.server = None;
                    ended.map_err(NodeError::Task)?.map_err(NodeError::Serve)?;
                }
            }
        }
        self.shutdown().await
    }

    /// Stops accepting connections, lets in-flight requests (streams included) finish, then
    /// settles waiting vouchers and stops the on-chain tasks.
    pub async fn shutdown(mut self) -> Result<(), NodeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.map_err(NodeError::Task)?.map_err(NodeError::Serve)?;
        }
        if let Some(node) = self.onchain.take() {
            tracing::info!("settling waiting vouchers before exit");
            node.shutdown().await;
        }
        tracing::info!("node stopped");
        Ok(())
    }
}

impl Drop for RunningNode {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
