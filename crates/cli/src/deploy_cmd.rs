//! `cloister deploy --network NAME --rpc-url URL --token ADDR`: the production contracts on a named
//! network (the Automata DCAP quote verifier adapter, registry, escrow, oracle), written as the chain
//! file `node run --chain`, `proxy --chain` and the escrow/key commands read.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use cloister_chain::alloy::primitives::Address;
use cloister_chain::{DeploySpec, Network, Token, deploy_network, parse_private_key, read_provider};

/// `cloister deploy`.
#[derive(Debug, Args)]
pub(crate) struct DeployArgs {
    /// A shipped network (base, base-sepolia, op-mainnet, op-sepolia) or the path of a network file
    /// (see networks/template.toml and docs/networks.md).
    #[arg(long)]
    pub network: String,
    /// JSON-RPC endpoint of that network (its chain id must be the network's).
    #[arg(long)]
    pub rpc_url: String,
    /// The payment and stake token: an existing ERC-20 on the network (e.g. its USDC).
    #[arg(long)]
    pub token: Address,
    /// Automata's DCAP attestation contract [default: the network file's].
    #[arg(long)]
    pub automata: Option<Address>,
    /// Owner of the registry (governance) [default: the deployer].
    #[arg(long)]
    pub governance: Option<Address>,
    /// Minimum operator stake, in whole tokens (the token's own decimals apply).
    #[arg(long, default_value = "100")]
    pub min_stake: String,
    /// Seconds a registration stays active without reattesting.
    #[arg(long, default_value_t = 24 * 3600)]
    pub max_age: u64,
    /// Seconds an operator waits to withdraw its stake.
    #[arg(long, default_value_t = 7 * 24 * 3600)]
    pub unbonding_delay: u64,
    /// Seconds between announcing a measurement allowlist change and applying it (`cloister governance`).
    #[arg(long, default_value_t = 2 * 24 * 3600)]
    pub measurement_delay: u64,
    /// Seconds a client waits to withdraw its escrow.
    #[arg(long, default_value_t = 24 * 3600)]
    pub withdraw_delay: u64,
    /// Seconds an oracle request waits for its answer.
    #[arg(long, default_value_t = 3600)]
    pub oracle_timeout: u64,
    /// The deployer's private key (hex). Prefer the environment variable: flags show up in `ps`.
    #[arg(long, env = "CLOISTER_PRIVATE_KEY", hide_env_values = true)]
    pub private_key: String,
    /// Where to write the chain file [default: deployment-<network>.json].
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub(crate) async fn run(args: DeployArgs) -> anyhow::Result<ExitCode> {
    let network = Network::resolve(&args.network)?;
    let deployer = parse_private_key(&args.private_key).context("the deployer's private key")?;
    let token = Token::connect(read_provider(&args.rpc_url)?, args.token)
        .await
        .context("reading the payment token")?;
    let min_stake = cloister_chain::parse_amount(&args.min_stake, token.decimals())?;
    let spec = DeploySpec {
        rpc_url: args.rpc_url.clone(),
        token: args.token,
        automata: args.automata,
        governance: args.governance,
        min_stake,
        max_age: args.max_age,
        unbonding_delay: args.unbonding_delay,
        measurement_delay: args.measurement_delay,
        withdraw_delay: args.withdraw_delay,
        oracle_timeout: args.oracle_timeout,
    };
    eprintln!(
        "deploying to {} (chain {}) as {:#x}, paid in {}",
        network.name,
        network.chain_id,
        deployer.address(),
        token.symbol()
    );
    let deployed = deploy_network(&network, &spec, deployer).await?;
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from(format!("deployment-{}.json", network.name)));
    deployed.config.save(&out)?;
    println!(
        "quote verifier   {:#x} (AutomataDcapAdapter)",
        deployed.quote_verifier
    );
    println!("registry         {:#x}", deployed.config.registry);
    println!("escrow           {:#x}", deployed.config.escrow);
    println!("oracle           {:#x}", deployed.config.oracle);
    println!("deploy block     {}", deployed.config.deploy_block);
    println!("chain file       {}", out.display());
    println!(
        "next: governance announces measurements (cloister governance announce --chain {}; they apply after {}s with `governance execute`) and accepts TCB statuses (NodeRegistry.setTcbStatus); nodes run with --chain {}",
        out.display(),
        args.measurement_delay,
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}
