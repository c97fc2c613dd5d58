//! A node in front of the reference upstream, on loopback, for the benchmarks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cloister_attest::collect::{DetectOptions, detect};
use cloister_engine::upstream::{UpstreamConfig, UpstreamEngine};

use crate::upstream::{REFERENCE_MODEL, start_reference_upstream};
use crate::{Error, Result};

/// A node (simulated TEE: the benchmark machine has none; attestation is not on the request path)
/// in front of the zero-work reference upstream, on loopback.
///
/// ```no_run
/// # async fn demo() -> cloister_bench::Result<()> {
/// let bench = cloister_bench::node::BenchNode::start(16).await?;
/// println!("node at http://{}, upstream at http://{}", bench.node, bench.upstream);
/// bench.stop().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct BenchNode {
    /// The reference upstream.
    pub upstream: SocketAddr,
    /// The node.
    pub node: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl BenchNode {
    /// Starts the upstream and the node, admitting at least `concurrency` requests at once.
    pub async fn start(concurrency: usize) -> Result<Self> {
        let upstream = start_reference_upstream().await?;
        let engine = UpstreamEngine::connect(UpstreamConfig {
            base_url: format!("http://{upstream}/v1"),
            api_key: None,
            models: vec![REFERENCE_MODEL.into()],
            timeout: Duration::from_secs(30),
        })
        .await?;
        let mut config = cloister_node::NodeConfig::default();
        config.max_concurrent_requests = config.max_concurrent_requests.max(concurrency);
        let DevNode {
            addr: node,
            stop,
            server,
        } = DevNode::serve(Arc::new(engine), config).await?;
        Ok(Self {
            upstream,
            node,
            stop,
            server,
        })
    }

    /// Stops the node (the upstream stops with the runtime).
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.server.await;
    }
}

/// A node over `engine` with the simulated TEE, serving on a free loopback port until `stop` fires:
/// the shared start of [`BenchNode`] and the engine bench's node.
pub(crate) struct DevNode {
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    /// Fire to shut it down.
    pub(crate) stop: tokio::sync::oneshot::Sender<()>,
    /// The server task.
    pub(crate) server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl DevNode {
    /// Starts it.
    pub(crate) async fn serve(
        engine: Arc<dyn cloister_engine::Engine>,
        config: cloister_node::NodeConfig,
    ) -> Result<Self> {
        let attester = detect(&DetectOptions {
            dev_simulated: true,
            ..Default::default()
        })
        .await?;
        let key = Arc::new(cloister_node::start_key(attester.as_ref()).await);
        let state = cloister_node::AppState::new(engine, attester, key, config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| Error::io("binding the bench node", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("the bench node's address", e))?;
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(cloister_node::serve(listener, state, async move {
            let _ = stop_rx.await;
        }));
        Ok(Self { addr, stop, server })
    }
}
