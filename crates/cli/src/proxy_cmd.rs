//! `cloister proxy`: flags into a [`NodePool`] (from `--node`, `--network` and registry discovery
//! with `--chain`) and a policy, served by `cloister_client::proxy`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use cloister_chain::alloy::primitives::U256;
use cloister_client::discover::{Discovery, RegistryConfig, discover_with_limits};
use cloister_client::wallet::{Wallet, WalletConfig};
use cloister_client::{E2eeMode, NodePool, proxy};
use serde::Deserialize;

use crate::proof::{PolicyArgs, VerifyOpts};

/// `cloister proxy`.
#[derive(Debug, Args)]
pub(crate) struct ProxyArgs {
    /// Address to serve the OpenAI API on (keep it on loopback: answers leave the proxy in clear).
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,
    /// Node URL (repeatable); requests go round-robin and fail over between verified nodes.
    #[arg(long = "node")]
    pub nodes: Vec<String>,
    /// JSON file listing node URLs: `["http://..", ..]` or `{"nodes": ["http://..", ..]}`.
    #[arg(long)]
    pub network: Option<PathBuf>,
    /// Which nodes to accept.
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Seconds a node's verified report is trusted before it is verified again.
    #[arg(long, default_value_t = 300)]
    pub verdict_ttl_secs: u64,
    /// Discover nodes on chain: a `devnet.json` or chain config JSON. The active nodes of the
    /// `NodeRegistry` are added to the pool, and unless `--allowed-measurements` is given the
    /// measurements governance allows there become the allowlist.
    #[arg(long)]
    pub chain: Option<PathBuf>,
    /// DEVELOPMENT ONLY: verify every node with this nonce (64 hex) instead of a fresh random one.
    /// Replayed reports then pass; it exists to check replayed test evidence (`node run
    /// --dev-gpu-replay`) through the proxy. Never use it in production.
    #[arg(long)]
    pub dev_fixed_nonce: Option<String>,
    /// Reach nodes through this gateway (`cloister gateway`): it lists the nodes for each model
    /// and forwards sealed requests; every node is still verified here, end to end.
    #[arg(long, conflicts_with_all = ["nodes", "network"])]
    pub gateway: Option<String>,
    /// With --gateway: the client's private key (hex, or a file holding it; also
    /// CLOISTER_WALLET_KEY). The proxy signs a spend authorization for each node it routes to,
    /// within --budget, so one wallet pays any node.
    #[arg(long, env = "CLOISTER_WALLET_KEY", hide_env_values = true, requires_all = ["gateway", "budget"])]
    pub wallet: Option<String>,
    /// With --wallet: the most all authorizations together may allow (token base units).
    #[arg(long, requires = "wallet")]
    pub budget: Option<U256>,
    /// With --wallet: the cap of one authorization [default: a quarter of --budget].
    #[arg(long, requires = "wallet")]
    pub node_budget: Option<U256>,
    /// With --wallet: days until the authorizations expire.
    #[arg(long, default_value_t = 30, requires = "wallet")]
    pub authorization_days: u64,
}

/// The wallet key: hex text, or a file holding it.
fn wallet_secret(text: &str) -> anyhow::Result<[u8; 32]> {
    let path = Path::new(text);
    let hex_text = if path.is_file() {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    } else {
        text.to_owned()
    };
    cloister_client::wallet::parse_secret_key(&hex_text)
        .context("--wallet: neither a private key nor a file holding one")
}

/// The wallet the flags describe, on the escrow of `--chain` or else the one the gateway names.
async fn wallet(
    args: &ProxyArgs,
    gateway: &cloister_client::gateway::GatewayRoute,
) -> anyhow::Result<Option<Wallet>> {
    let (Some(key), Some(budget)) = (&args.wallet, args.budget) else {
        return Ok(None);
    };
    let (chain_id, escrow) = match &args.chain {
        Some(path) => {
            let config = cloister_chain::ChainConfig::load(path)
                .with_context(|| format!("reading {}", path.display()))?;
            (config.chain_id, config.escrow)
        }
        None => {
            let network = gateway
                .network()
                .await
                .context("asking the gateway for its escrow")?;
            let escrow = network
                .escrow
                .context("the gateway names no escrow; give --chain FILE")?
                .parse()
                .context("the gateway's escrow address")?;
            (network.chain_id, escrow)
        }
    };
    let per_node = args
        .node_budget
        .unwrap_or(budget / U256::from(4u64))
        .max(U256::from(1u64));
    let wallet = Wallet::new(WalletConfig {
        secret: wallet_secret(key)?,
        chain_id,
        escrow,
        budget,
        per_node,
        expiry: cloister_client::unix_now().saturating_add(args.authorization_days.saturating_mul(86_400)),
    })?;
    eprintln!(
        "wallet {:#x}: budget {budget}, at most {per_node} per authorization, escrow {escrow:#x} on chain {chain_id}",
        wallet.client()
    );
    Ok(Some(wallet))
}

/// Reads the registry named in the chain file at `path`.
async fn discover_from(path: &Path) -> anyhow::Result<Discovery> {
    let config =
        cloister_chain::ChainConfig::load(path).with_context(|| format!("reading {}", path.display()))?;
    // From the deployment block, in windows the network's RPC accepts (networks/*.toml).
    let limits = config.log_scan_limits();
    crate::governance_cmd::log_pending(&config).await;
    let http = cloister_client::default_http_client()?;
    let registry = RegistryConfig {
        rpc_url: config.rpc_url,
        chain_id: config.chain_id,
        registry: config.registry,
    };
    let found = discover_with_limits(&http, &registry, limits)
        .await
        .context("reading the NodeRegistry")?;
    eprintln!(
        "registry {:#x}: {} active node(s) of {}",
        found.registry,
        found.active_endpoints().len(),
        found.nodes.len()
    );
    Ok(found)
}

/// The node list in a `--network` file.
#[derive(Deserialize)]
#[serde(untagged)]
enum NetworkFile {
    List(Vec<String>),
    Object { nodes: Vec<String> },
}

fn node_urls(args: &ProxyArgs, discovered: &[String]) -> anyhow::Result<Vec<String>> {
    let mut urls = args.nodes.clone();
    urls.extend(discovered.iter().cloned());
    if let Some(path) = &args.network {
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let file: NetworkFile = serde_json::from_slice(&text).with_context(|| {
            format!(
                "{}: expected a JSON list of node URLs or {{\"nodes\": [..]}}",
                path.display()
            )
        })?;
        urls.extend(match file {
            NetworkFile::List(l) | NetworkFile::Object { nodes: l } => l,
        });
    }
    if urls.is_empty() {
        bail!("no nodes: give --node URL (repeatable), --network FILE, or --chain FILE with active nodes");
    }
    Ok(urls)
}

/// Builds the pool the flags describe.
async fn pool(args: &ProxyArgs) -> anyhow::Result<NodePool> {
    let on_chain = match &args.chain {
        Some(path) => Some(discover_from(path).await?),
        None => None,
    };
    let opts = VerifyOpts {
        nonce: args.dev_fixed_nonce.clone(),
        ..args.policy.verify_opts()
    };
    let mut policy = opts.client_policy(E2eeMode::Required)?;
    policy.verdict_ttl = Duration::from_secs(args.verdict_ttl_secs);
    if args.dev_fixed_nonce.is_some() {
        policy.dev_fixed_nonce = Some(opts.nonce().context("--dev-fixed-nonce")?);
    }
    if let Some(found) = &on_chain
        && args.policy.allowed_measurements.is_none()
    {
        // An empty on-chain list refuses everything (see `Discovery::allowlist`).
        policy.allowed_measurements = found.allowlist();
    }
    if let Some(url) = &args.gateway {
        let pool = NodePool::via_gateway(url, Arc::new(policy))?;
        let Some(route) = pool.gateway() else {
            bail!("a gateway pool without its gateway");
        };
        return Ok(match wallet(args, route).await? {
            Some(w) => pool.with_wallet(Arc::new(w)),
            None => pool,
        });
    }
    let discovered = on_chain.map(|c| c.active_endpoints()).unwrap_or_default();
    Ok(NodePool::new(node_urls(args, &discovered)?, Arc::new(policy))?)
}

pub(crate) async fn run(args: ProxyArgs) -> anyhow::Result<ExitCode> {
    if args.policy.allow_simulated {
        eprintln!("!!! cloister proxy: --allow-simulated is DEVELOPMENT ONLY: nodes with a SIMULATED TEE");
        eprintln!(
            "!!! are accepted; nothing protects prompts or answers on them. Never use it in production."
        );
    }
    if args.dev_fixed_nonce.is_some() {
        eprintln!("!!! cloister proxy: --dev-fixed-nonce is DEVELOPMENT ONLY: every verification sends the");
        eprintln!("!!! same nonce, so a replayed (stale) report is accepted as fresh.");
    }
    let pool = pool(&args).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    for node in pool.nodes() {
        tracing::info!(node = %node.url(), "proxying to node");
    }
    if let Some(gw) = pool.gateway() {
        eprintln!(
            "routing through the gateway at {} (every node verified here)",
            gw.url()
        );
    }
    eprintln!("cloister proxy listening on http://{addr}/v1");
    let wallet = pool.wallet().cloned();
    proxy::serve(listener, pool, crate::shutdown::shutdown_signal())
        .await
        .context("proxy server")?;
    if let Some(wallet) = wallet {
        print_grants(&wallet);
    }
    Ok(ExitCode::SUCCESS)
}

/// The wallet's authorizations and the receipts collected for each, per node.
fn print_grants(wallet: &Wallet) {
    let grants = wallet.grants();
    eprintln!(
        "wallet {:#x}: {} spend authorization(s) signed",
        wallet.client(),
        grants.len()
    );
    for g in grants {
        eprintln!(
            "  node {:#x}  authorization {:#x}  cap {}  receipts up to {}",
            g.node, g.id, g.cap, g.received
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(nodes: &[&str], network: Option<PathBuf>) -> ProxyArgs {
        ProxyArgs {
            listen: "127.0.0.1:0"
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0))),
            nodes: nodes.iter().map(|s| (*s).to_owned()).collect(),
            network,
            policy: PolicyArgs {
                allowed_measurements: None,
                accept_tcb: vec!["UpToDate".into()],
                allow_simulated: false,
                collateral: Vec::new(),
                pccs: String::new(),
            },
            verdict_ttl_secs: 300,
            chain: None,
            dev_fixed_nonce: None,
            gateway: None,
            wallet: None,
            budget: None,
            node_budget: None,
            authorization_days: 30,
        }
    }

    #[test]
    fn nodes_come_from_flags_and_network_files() {
        let dir = std::env::temp_dir().join(format!("cloister-proxy-test-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let list = dir.join("list.json");
        let object = dir.join("object.json");
        let bad = dir.join("bad.json");
        let _ = std::fs::write(&list, r#"["http://a:1", "http://b:2"]"#);
        let _ = std::fs::write(&object, r#"{"nodes": ["http://c:3"]}"#);
        let _ = std::fs::write(&bad, r#"{"urls": []}"#);
        let urls = |a: &ProxyArgs| node_urls(a, &[]).unwrap_or_default();
        assert_eq!(
            urls(&args(&["http://x:9"], Some(list))),
            ["http://x:9", "http://a:1", "http://b:2"]
        );
        assert_eq!(urls(&args(&[], Some(object))), ["http://c:3"]);
        assert!(node_urls(&args(&[], Some(bad)), &[]).is_err());
        assert!(node_urls(&args(&[], None), &[]).is_err());
        assert_eq!(
            node_urls(&args(&[], None), &["http://d:4".into()]).unwrap_or_default(),
            ["http://d:4"]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn flags_become_the_policy() {
        let strict = pool(&args(&["http://x:9"], None))
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        let policy = strict.nodes()[0].policy();
        assert!(!policy.allow_simulated());
        assert!(policy.allowed_measurements.is_any());
        assert_eq!(policy.e2ee, E2eeMode::Required);
        assert_eq!(policy.verdict_ttl, Duration::from_secs(300));

        let dir = std::env::temp_dir().join(format!("cloister-proxy-policy-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let list = dir.join("allowed.txt");
        let _ = std::fs::write(&list, format!("# another build\n{}\n", "ab".repeat(32)));
        let mut a = args(&["http://x:9"], None);
        a.policy.allow_simulated = true;
        a.policy.allowed_measurements = Some(list);
        a.verdict_ttl_secs = 7;
        let pinned = pool(&a).await.unwrap_or_else(|e| panic!("{e:#}"));
        let policy = pinned.nodes()[0].policy();
        assert!(policy.allow_simulated());
        assert!(policy.allowed_measurements.allows(Some(&"ab".repeat(32))));
        assert!(!policy.allowed_measurements.allows(Some(&"cd".repeat(32))));
        assert_eq!(policy.verdict_ttl, Duration::from_secs(7));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
