//! `cloister gateway`: flags into a [`GatewayConfig`], served by `cloister_gateway`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use cloister_attest::collect::{Attester, DetectOptions, detect};
use cloister_client::E2eeMode;
use cloister_client::discover::RegistryConfig;
use cloister_gateway::{Gateway, GatewayConfig};

use crate::proof::PolicyArgs;

/// `cloister gateway`.
#[derive(Debug, Args)]
pub(crate) struct GatewayArgs {
    /// Address to serve on. The gateway sees only sealed requests, so it may face the network.
    #[arg(long, default_value = "127.0.0.1:8088")]
    pub listen: SocketAddr,
    /// The chain: a `devnet.json` or a deployment file (`cloister deploy`); its `NodeRegistry`
    /// lists the nodes, and its `Escrow` is shown to paying clients.
    #[arg(long)]
    pub chain: PathBuf,
    /// Seconds between registry reads (every node is verified again at each).
    #[arg(long, default_value_t = 30)]
    pub refresh_secs: u64,
    /// Requests forwarded to one node at once; more are answered 429.
    #[arg(long, default_value_t = 64)]
    pub max_in_flight: u32,
    /// Which nodes to route to (with the registry's allowlist unless --allowed-measurements).
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// DEVELOPMENT ONLY: serve the gateway's own attestation report from a SIMULATED TEE when no
    /// real one is found.
    #[arg(long)]
    pub dev_simulated_tee: bool,
}

/// The gateway's own attester: a real TEE when there is one, else the simulated one when asked,
/// else none (it then serves no report of its own, which nothing a client checks depends on).
async fn attester(args: &GatewayArgs) -> Option<Arc<dyn Attester>> {
    match detect(&DetectOptions {
        dev_simulated: args.dev_simulated_tee,
        ..DetectOptions::default()
    })
    .await
    {
        Ok(a) => Some(a),
        Err(e) => {
            eprintln!("cloister gateway: no TEE found ({e}); serving no attestation report of its own");
            None
        }
    }
}

pub(crate) async fn run(args: GatewayArgs) -> anyhow::Result<ExitCode> {
    if args.policy.allow_simulated {
        eprintln!("!!! cloister gateway: --allow-simulated is DEVELOPMENT ONLY: nodes with a SIMULATED TEE");
        eprintln!("!!! are listed as verified. Clients still verify every node under their own policy.");
    }
    let chain = cloister_chain::ChainConfig::load(&args.chain)
        .with_context(|| format!("reading {}", args.chain.display()))?;
    let policy = args.policy.verify_opts().client_policy(E2eeMode::Required)?;
    let mut config = GatewayConfig::new(RegistryConfig {
        rpc_url: chain.rpc_url.clone(),
        chain_id: chain.chain_id,
        registry: chain.registry,
    });
    config.log_limits = chain.log_scan_limits();
    config.escrow = Some(chain.escrow);
    config.policy = policy;
    config.own_allowlist = args.policy.allowed_measurements.is_some();
    config.refresh = Duration::from_secs(args.refresh_secs.max(1));
    config.max_in_flight = args.max_in_flight.max(1);
    let attester = attester(&args).await;
    let gateway = Gateway::start(config, attester).await?;
    let snapshot = gateway.directory().snapshot();
    for node in &snapshot.nodes {
        match &node.verdict {
            Ok(_) => eprintln!(
                "node {:#x} at {}: verified",
                node.registered.signer, node.registered.endpoint
            ),
            Err(why) => eprintln!(
                "node {:#x} at {}: NOT routed: {why}",
                node.registered.signer, node.registered.endpoint
            ),
        }
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    eprintln!(
        "cloister gateway listening on http://{addr}/v1 (signer {:#x}; {} node(s) registered)",
        gateway.signer(),
        snapshot.nodes.len()
    );
    cloister_gateway::serve(listener, gateway, crate::shutdown::shutdown_signal())
        .await
        .context("gateway server")?;
    Ok(ExitCode::SUCCESS)
}
