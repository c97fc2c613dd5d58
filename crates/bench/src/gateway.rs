//! The gateway under load, and under a fault: three paid nodes (`cloister node run` subprocesses in
//! upstream mode, registered on an anvil devnet, in front of the zero-work reference upstream),
//! one gateway, and two verifying proxies paying from one wallet: one reaching the nodes through
//! the gateway, one reaching them directly. Rounds are interleaved, so the difference between the
//! two is what the gateway adds. Then one node is killed (`SIGKILL`) in the middle of a run through
//! the gateway, and the client-visible errors are counted against the requests that node had in
//! flight.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cloister_chain::devnet::{self, DeployParams, Devnet, DevnetOptions, TOKEN};
use cloister_chain::{Chain, DevnetFile, parse_private_key};
use cloister_client::gateway::Candidate;
use cloister_client::wallet::{Wallet, WalletConfig};
use cloister_client::{NodeClient, NodePool, Policy};
use cloister_gateway::{Gateway, GatewayConfig};
use cloister_types::wire::{self, CHAT_COMPLETIONS_PATH, JSON_CONTENT_TYPE};
use futures::StreamExt;
use futures::stream::FuturesUnordered;

use crate::load::{load_round, post_json};
use crate::stats::{RoundStats, percentile};
use crate::upstream::{REFERENCE_MODEL, reference_request, start_reference_upstream};
use crate::{Error, Result};

/// The dev accounts that run the three nodes (each registers as its own operator).
const OPERATORS: [&str; 3] = ["operator", "requester", "governance"];

/// What to run.
#[derive(Debug, Clone)]
pub struct GatewayBenchOptions {
    /// The `cloister` binary that runs the nodes.
    pub cloister: PathBuf,
    /// Requests per round per path.
    pub requests: usize,
    /// Requests in flight at once (the clients).
    pub concurrency: usize,
    /// Rounds (direct and via the gateway interleaved).
    pub rounds: usize,
    /// Streamed requests instead of plain ones.
    pub stream: bool,
}

/// One round: the same clients straight to the nodes, and through the gateway.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GatewayRound {
    /// Proxy → nodes.
    pub direct: RoundStats,
    /// Proxy → gateway → nodes.
    pub via_gateway: RoundStats,
}

/// The fault run.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultFigures {
    /// Requests sent through the gateway.
    pub requests: usize,
    /// Answers that verified.
    pub ok: usize,
    /// Client-visible errors.
    pub errors: usize,
    /// Requests the killed node had in flight through the gateway when it was killed.
    pub in_flight_at_kill: u32,
    /// Requests the killed node had been forwarded before it was killed.
    pub served_before_kill: u64,
    /// The killed node's signing address.
    pub killed: String,
    /// Requests/s and latency of the run.
    pub stats: RoundStats,
}

/// A `cloister node run` subprocess, killed when dropped.
struct NodeProc {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io("a free port", e))?;
    Ok(l.local_addr().map_err(|e| Error::io("a free port", e))?.port())
}

async fn spawn_node(
    opts: &GatewayBenchOptions,
    dir: &Path,
    devnet_json: &Path,
    upstream: SocketAddr,
    role: &str,
    key: &str,
) -> Result<NodeProc> {
    let listen = format!("127.0.0.1:{}", free_port()?);
    let log = dir.join(format!("node-{role}.log"));
    let file = std::fs::File::create(&log).map_err(|e| Error::io("a node log", e))?;
    let err = file.try_clone().map_err(|e| Error::io("a node log", e))?;
    let child = Command::new(&opts.cloister)
        .args(["node", "run", "--upstream"])
        .arg(format!("http://{upstream}/v1"))
        .args([
            "--upstream-model",
            REFERENCE_MODEL,
            "--dev-simulated-tee",
            "--listen",
            &listen,
        ])
        .arg("--chain")
        .arg(devnet_json)
        .args(["--operator-key", key, "--ledger"])
        .arg(dir.join(format!("{role}.sqlite")))
        .args(["--price", &format!("{REFERENCE_MODEL}=1:1")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(err))
        .spawn()
        .map_err(|e| Error::io(format!("starting {}", opts.cloister.display()), e))?;
    let mut node = NodeProc {
        child,
        url: format!("http://{listen}"),
        log,
    };
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(r) = http
            .get(format!("{}{}", node.url, wire::HEALTH_PATH))
            .send()
            .await
            && r.status().is_success()
        {
            return Ok(node);
        }
        if let Ok(Some(status)) = node.child.try_wait() {
            let log = std::fs::read_to_string(&node.log).unwrap_or_default();
            return Err(Error::NotWorking(format!(
                "node {role} exited with {status}:\n{log}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(Error::NotWorking(format!(
        "node {role} did not start within 60 s"
    )))
}

async fn serve_proxy(pool: NodePool) -> Result<(String, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| Error::io("binding a proxy", e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("a proxy's address", e))?;
    let task = tokio::spawn(cloister_client::proxy::serve(
        listener,
        pool,
        std::future::pending(),
    ));
    Ok((format!("http://{addr}{CHAT_COMPLETIONS_PATH}"), task))
}

fn wallet(file: &DevnetFile) -> Result<Arc<Wallet>> {
    let key = &file
        .account("client")
        .ok_or_else(|| Error::NotWorking("the devnet has no client account".into()))?
        .private_key;
    let secret = cloister_client::wallet::parse_secret_key(key)
        .map_err(|e| Error::NotWorking(format!("the devnet's client key: {e}")))?;
    Ok(Arc::new(Wallet::new(WalletConfig {
        secret,
        chain_id: file.chain_id,
        escrow: file.contracts.escrow,
        budget: TOKEN,
        per_node: TOKEN / cloister_chain::alloy::primitives::U256::from(4u64),
        expiry: cloister_types::unix_now() + 86_400,
    })?))
}

/// Runs the rounds, then the fault run; `on_round(round, figures)` sees each round as it ends.
pub async fn run(
    opts: GatewayBenchOptions,
    mut on_round: impl FnMut(usize, &GatewayRound),
) -> Result<(Vec<GatewayRound>, FaultFigures)> {
    let chain_err = |e: cloister_chain::ChainError| Error::NotWorking(format!("devnet: {e}"));
    let dir = tempfile::tempdir().map_err(|e| Error::io("a temporary directory", e))?;
    let anvil = Devnet::spawn(DevnetOptions::default()).await.map_err(chain_err)?;
    let file = devnet::deploy_devnet(anvil.rpc_url(), &DeployParams::default())
        .await
        .map_err(chain_err)?;
    let devnet_json = dir.path().join("devnet.json");
    file.save(&devnet_json).map_err(chain_err)?;
    let client_key = &file
        .account("client")
        .ok_or_else(|| Error::NotWorking("the devnet has no client account".into()))?
        .private_key;
    let client = Chain::connect(
        file.chain_config(),
        Some(parse_private_key(client_key).map_err(chain_err)?),
    )
    .await
    .map_err(chain_err)?;
    client
        .escrow()
        .map_err(chain_err)?
        .deposit(TOKEN)
        .await
        .map_err(chain_err)?;

    let upstream = start_reference_upstream().await?;
    let mut nodes = Vec::new();
    let mut operators = Vec::new();
    for role in OPERATORS {
        let account = file
            .account(role)
            .ok_or_else(|| Error::NotWorking(format!("the devnet has no {role} account")))?;
        nodes.push(
            spawn_node(
                &opts,
                dir.path(),
                &devnet_json,
                upstream,
                role,
                &account.private_key,
            )
            .await?,
        );
        operators.push(account.address);
    }

    // The gateway, in process.
    let policy = Policy::dev_allow_simulated();
    let mut config = GatewayConfig::new(cloister_client::discover::RegistryConfig {
        rpc_url: file.rpc_url.clone(),
        chain_id: file.chain_id,
        registry: file.contracts.registry,
    });
    config.escrow = Some(file.contracts.escrow);
    config.policy = policy.clone();
    config.refresh = Duration::from_secs(3600);
    config.max_in_flight = u32::try_from(opts.concurrency * 4).unwrap_or(u32::MAX);
    let gateway = Gateway::start(config, None)
        .await
        .map_err(|e| Error::NotWorking(format!("gateway: {e}")))?;
    let verified = gateway.directory().ranked(Some(REFERENCE_MODEL)).len();
    if verified != OPERATORS.len() {
        return Err(Error::NotWorking(format!(
            "the gateway verified {verified} of {} nodes",
            OPERATORS.len()
        )));
    }
    let gw_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| Error::io("binding the gateway", e))?;
    let gw_addr = gw_listener
        .local_addr()
        .map_err(|e| Error::io("the gateway's address", e))?;
    let gw_task = tokio::spawn(cloister_gateway::serve(
        gw_listener,
        gateway.clone(),
        std::future::pending(),
    ));

    // The clients: a verifying proxy through the gateway, and one straight to the nodes.
    let policy = Arc::new(policy);
    let via_pool =
        NodePool::via_gateway(&format!("http://{gw_addr}"), Arc::clone(&policy))?.with_wallet(wallet(&file)?);
    let direct_http = cloister_client::default_http_client()?;
    let direct_pool = NodePool::from_candidates(
        nodes
            .iter()
            .zip(&operators)
            .map(|(n, op)| Candidate {
                client: NodeClient::with_http(&n.url, Arc::clone(&policy), direct_http.clone()),
                operator: Some(*op),
            })
            .collect(),
    )
    .with_wallet(wallet(&file)?);
    let (via_url, via_task) = serve_proxy(via_pool).await?;
    let (direct_url, direct_task) = serve_proxy(direct_pool).await?;

    let body = reference_request(opts.stream)?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(opts.concurrency * 2)
        .build()?;
    let direct = || post_json(http.clone(), direct_url.clone(), body.clone());
    let via = || post_json(http.clone(), via_url.clone(), body.clone());
    load_round(50, opts.concurrency, direct).await?;
    load_round(50, opts.concurrency, via).await?;
    let mut rounds = Vec::with_capacity(opts.rounds);
    for round in 1..=opts.rounds {
        let figures = GatewayRound {
            direct: load_round(opts.requests, opts.concurrency, direct).await?,
            via_gateway: load_round(opts.requests, opts.concurrency, via).await?,
        };
        on_round(round, &figures);
        rounds.push(figures);
    }

    let fault = fault_run(&opts, &gateway, &mut nodes, &http, &via_url, &body).await?;
    via_task.abort();
    direct_task.abort();
    gw_task.abort();
    drop(nodes);
    drop(anvil);
    Ok((rounds, fault))
}

/// One request through a proxy; `true` when it answered 200 with a body.
async fn try_once(http: reqwest::Client, url: String, body: Bytes) -> (bool, f64) {
    let t = Instant::now();
    let ok = match http
        .post(&url)
        .header(reqwest::header::CONTENT_TYPE, JSON_CONTENT_TYPE)
        .body(body)
        .send()
        .await
    {
        Ok(resp) => resp.status().is_success() && resp.bytes().await.is_ok_and(|b| !b.is_empty()),
        Err(_) => false,
    };
    (ok, t.elapsed().as_secs_f64() * 1000.0)
}

/// Requests through the gateway with the first node killed a third of the way in.
async fn fault_run(
    opts: &GatewayBenchOptions,
    gateway: &Gateway,
    nodes: &mut [NodeProc],
    http: &reqwest::Client,
    url: &str,
    body: &Bytes,
) -> Result<FaultFigures> {
    let victim = nodes
        .first_mut()
        .ok_or_else(|| Error::NotWorking("no node to kill".into()))?;
    let snapshot = gateway.directory().snapshot();
    let entry = snapshot
        .nodes
        .iter()
        .find(|n| cloister_client::node_base(&n.registered.endpoint) == victim.url)
        .cloned()
        .ok_or_else(|| Error::NotWorking("the gateway does not list the node to kill".into()))?;
    let kill_at = opts.requests / 3;
    let done = AtomicUsize::new(0);
    let started = Instant::now();
    let mut inflight = FuturesUnordered::new();
    let mut sent = 0;
    let mut latencies = Vec::with_capacity(opts.requests);
    let (mut ok, mut errors) = (0, 0);
    let mut at_kill = None;
    while sent < opts.requests.min(opts.concurrency) {
        inflight.push(try_once(http.clone(), url.to_owned(), body.clone()));
        sent += 1;
    }
    while let Some((good, ms)) = inflight.next().await {
        latencies.push(ms);
        if good {
            ok += 1;
        } else {
            errors += 1;
        }
        if done.fetch_add(1, Ordering::Relaxed) + 1 == kill_at {
            at_kill = Some((entry.stats.in_flight(), entry.stats.forwarded()));
            let _ = victim.child.kill();
            let _ = victim.child.wait();
        }
        if sent < opts.requests {
            inflight.push(try_once(http.clone(), url.to_owned(), body.clone()));
            sent += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(|a, b| a.total_cmp(b));
    let (in_flight_at_kill, served_before_kill) = at_kill.unwrap_or_default();
    Ok(FaultFigures {
        requests: opts.requests,
        ok,
        errors,
        in_flight_at_kill,
        served_before_kill,
        killed: format!("{:#x}", entry.registered.signer),
        stats: RoundStats {
            rps: opts.requests as f64 / elapsed,
            p50_ms: percentile(&latencies, 0.50),
            p99_ms: percentile(&latencies, 0.99),
        },
    })
}
