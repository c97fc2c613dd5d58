//! `cloister node run`: flags and a TOML config file.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use cloister_attest::collect::{Attester, DetectOptions, detect};
use cloister_chain::alloy::primitives::U256;
use cloister_chain::{ChainConfig, DevnetFile};
use cloister_engine::Engine;
use cloister_engine::builtin::{BuiltinConfig, BuiltinEngine};
use cloister_engine::source::ModelSource;
use cloister_engine::upstream::{UpstreamConfig, UpstreamEngine};
use cloister_node::billing::Price;
use cloister_node::onchain::{OnChainConfig, OnChainNode};
use cloister_node::{AppState, NodeConfig};
use serde::Deserialize;

/// Node commands.
#[derive(Debug, Subcommand)]
pub(crate) enum NodeCommand {
    /// Serve the OpenAI-compatible API with attestation and signed answers.
    Run(Box<RunArgs>),
}

/// `cloister node run` flags. Every flag can also be set in the `--config` TOML file (same names,
/// with `_` for `-`); a flag given on the command line wins over the file.
#[derive(Debug, Default, Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub(crate) struct RunArgs {
    /// TOML config file.
    #[arg(long, short = 'c')]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Built-in engine: a local GGUF path, or a Hugging Face file `hf:owner/repo/file.gguf`.
    #[arg(long, conflicts_with = "upstream")]
    pub model: Option<String>,
    /// Model id to serve the built-in model as [default: the file name without .gguf].
    #[arg(long)]
    pub model_id: Option<String>,
    /// Upstream OpenAI-compatible server instead of the built-in engine (vLLM, SGLang, llama.cpp
    /// server, Ollama), e.g. `http://127.0.0.1:8000/v1`.
    #[arg(long)]
    pub upstream: Option<String>,
    /// Models the upstream serves (repeatable) [default: ask the upstream's /models].
    #[arg(long = "upstream-model")]
    #[serde(default)]
    pub upstream_models: Vec<String>,
    /// Bearer key for the upstream (also CLOISTER_UPSTREAM_API_KEY).
    #[arg(long, env = "CLOISTER_UPSTREAM_API_KEY", hide_env_values = true)]
    pub upstream_api_key: Option<String>,
    /// Engine threads [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Sequences the built-in engine decodes together [default: 4].
    #[arg(long)]
    pub slots: Option<usize>,
    /// Context tokens per sequence [default: 2048].
    #[arg(long)]
    pub ctx_per_slot: Option<u32>,
    /// Layers to offload to a GPU (needs a `cuda` build) [default: 0].
    #[arg(long)]
    pub gpu_layers: Option<u32>,
    /// DEVELOPMENT ONLY: without a TEE, attest with a simulated quote that every verifier refuses
    /// unless told to accept simulated evidence.
    #[arg(long)]
    #[serde(default)]
    pub dev_simulated_tee: bool,
    /// dstack guest agent socket [default: /var/run/dstack.sock if present].
    #[arg(long)]
    pub dstack_socket: Option<PathBuf>,
    /// configfs-tsm report directory [default: /sys/kernel/config/tsm/report].
    #[arg(long)]
    pub configfs_root: Option<PathBuf>,
    /// Largest accepted request body in bytes [default: 1048576].
    #[arg(long)]
    pub body_limit: Option<usize>,
    /// Request timeout in seconds [default: 300].
    #[arg(long)]
    pub request_timeout_secs: Option<u64>,
    /// Live on chain: a `devnet.json` (from `cloister devnet up`) or a chain config JSON
    /// (`rpc_url`, `chain_id`, contract addresses). The node registers (or reattests) at start,
    /// requires API keys, meters into the ledger and settles vouchers.
    #[arg(long)]
    pub chain: Option<PathBuf>,
    /// Instead of --chain: the JSON-RPC endpoint (with --registry, --escrow, --oracle, --token).
    #[arg(long, conflicts_with = "chain", requires_all = ["registry", "escrow", "oracle", "token"])]
    pub rpc_url: Option<String>,
    /// `NodeRegistry` address (with --rpc-url).
    #[arg(long, requires = "rpc_url")]
    pub registry: Option<String>,
    /// `Escrow` address (with --rpc-url).
    #[arg(long, requires = "rpc_url")]
    pub escrow: Option<String>,
    /// `InferenceOracle` address (with --rpc-url).
    #[arg(long, requires = "rpc_url")]
    pub oracle: Option<String>,
    /// Payment/stake token address (with --rpc-url).
    #[arg(long, requires = "rpc_url")]
    pub token: Option<String>,
    /// Operator private key (also CLOISTER_OPERATOR_KEY) [default with a devnet.json: its
    /// `operator` dev account].
    #[arg(long, env = "CLOISTER_OPERATOR_KEY", hide_env_values = true)]
    #[serde(skip)]
    pub operator_key: Option<String>,
    /// Public URL registered for this node [default: http://<listen address>].
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Price of a model, `MODEL=INPUT:OUTPUT` in token base units per token (repeatable)
    /// [default: every served model at 1000000000:3000000000].
    #[arg(long = "price")]
    #[serde(default)]
    pub prices: Vec<String>,
    /// Stake (token base units) for the first registration [default: the registry's minimum].
    #[arg(long)]
    pub stake: Option<String>,
    /// SQLite ledger of metered vouchers [default: .cloister/ledger.sqlite].
    #[arg(long)]
    pub ledger: Option<PathBuf>,
    /// Settle waiting vouchers at least this often, in seconds [default: 300].
    #[arg(long)]
    pub settle_interval_secs: Option<u64>,
    /// Settle at once when this many vouchers wait [default: 100].
    #[arg(long)]
    pub settle_threshold: Option<usize>,
    /// Do not answer InferenceOracle requests.
    #[arg(long)]
    #[serde(default)]
    pub no_oracle: bool,
}

impl RunArgs {
    /// Fills every flag not given on the command line from `file`.
    fn merge(mut self, file: RunArgs) -> Self {
        macro_rules! take {
            ($($f:ident),*) => { $( if self.$f.is_none() { self.$f = file.$f; } )* };
        }
        take!(
            listen,
            model,
            model_id,
            upstream,
            upstream_api_key,
            threads,
            slots,
            ctx_per_slot,
            gpu_layers,
            dstack_socket,
            configfs_root,
            body_limit,
            request_timeout_secs,
            chain,
            rpc_url,
            registry,
            escrow,
            oracle,
            token,
            endpoint,
            stake,
            ledger,
            settle_interval_secs,
            settle_threshold
        );
        if self.prices.is_empty() {
            self.prices = file.prices;
        }
        self.no_oracle |= file.no_oracle;
        if self.upstream_models.is_empty() {
            self.upstream_models = file.upstream_models;
        }
        self.dev_simulated_tee |= file.dev_simulated_tee;
        self
    }
}

pub(crate) fn load_config(path: &Path) -> anyhow::Result<RunArgs> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

pub(crate) async fn run(cmd: NodeCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        NodeCommand::Run(args) => run_node(*args).await,
    }
}

/// Builds the engine the flags ask for.
pub(crate) async fn build_engine(args: &RunArgs) -> anyhow::Result<Arc<dyn Engine>> {
    if let Some(url) = &args.upstream {
        let engine = UpstreamEngine::connect(UpstreamConfig {
            base_url: url.clone(),
            api_key: args.upstream_api_key.clone(),
            models: args.upstream_models.clone(),
            timeout: Duration::from_secs(args.request_timeout_secs.unwrap_or(300)),
        })
        .await
        .with_context(|| format!("connecting to upstream {url}"))?;
        return Ok(Arc::new(engine));
    }
    let Some(spec) = &args.model else {
        bail!("no engine: give --model <gguf path | hf:owner/repo/file.gguf> or --upstream <url>");
    };
    let source: ModelSource = spec.parse().with_context(|| format!("model `{spec}`"))?;
    let path = source
        .resolve(true)
        .await
        .with_context(|| format!("resolving model `{spec}`"))?;
    let mut config = BuiltinConfig::new(path.clone());
    config.model_id = args.model_id.clone();
    config.threads = args.threads;
    if let Some(s) = args.slots {
        config.slots = s;
    }
    if let Some(c) = args.ctx_per_slot {
        config.ctx_per_slot = c;
    }
    if let Some(g) = args.gpu_layers {
        config.gpu_layers = g;
    }
    let engine = tokio::task::spawn_blocking(move || BuiltinEngine::load(config))
        .await
        .context("model loading task panicked")?
        .with_context(|| format!("loading {}", path.display()))?;
    Ok(Arc::new(engine))
}

/// Picks dstack, then configfs-tsm, then (only with the dev flag) the simulator.
pub(crate) async fn build_attester(args: &RunArgs) -> anyhow::Result<Arc<dyn Attester>> {
    let opts = DetectOptions {
        dev_simulated: args.dev_simulated_tee,
        dstack_socket: args.dstack_socket.clone(),
        configfs_root: args.configfs_root.clone(),
    };
    detect(&opts).await.context("choosing the TEE evidence source")
}

pub(crate) fn node_config(args: &RunArgs) -> NodeConfig {
    let mut config = NodeConfig::default();
    if let Some(limit) = args.body_limit {
        config.body_limit = limit;
    }
    if let Some(secs) = args.request_timeout_secs {
        config.request_timeout = Duration::from_secs(secs);
    }
    config
}

async fn run_node(args: RunArgs) -> anyhow::Result<ExitCode> {
    let args = match &args.config {
        Some(path) => {
            let file = load_config(path)?;
            args.merge(file)
        }
        None => args,
    };
    let attester = build_attester(&args).await?;
    let engine = build_engine(&args).await?;
    let key = Arc::new(cloister_node::start_key(attester.as_ref()).await);
    let listen = args
        .listen
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let models: Vec<String> = engine.models().into_iter().map(|m| m.id).collect();
    tracing::info!(
        listen = %listener.local_addr().unwrap_or(listen),
        tee = %attester.tee(),
        signing_address = %key.address_hex(),
        models = ?models,
        "node serving"
    );
    let local = listener.local_addr().unwrap_or(listen);
    let mut state = AppState::new(
        Arc::clone(&engine),
        Arc::clone(&attester),
        Arc::clone(&key),
        node_config(&args),
    );
    let chain_config = chain_config(&args).await?;
    let onchain = match chain_config {
        Some((chain, chain_file)) => {
            let config = onchain_config(&args, chain, chain_file.as_deref(), &models, local)?;
            let node = OnChainNode::start(config, engine, attester, key)
                .await
                .context("starting the node's on-chain life (registration)")?;
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
    cloister_node::serve(listener, state, shutdown_signal())
        .await
        .context("serving HTTP")?;
    if let Some(node) = onchain {
        tracing::info!("settling waiting vouchers before exit");
        node.shutdown().await;
    }
    tracing::info!("node stopped");
    Ok(ExitCode::SUCCESS)
}

/// The price of a model when `--price` does not name it (and the demo's): token base units per
/// token, 1e-9 and 3e-9 of an 18-decimal token.
pub(crate) fn default_price() -> Price {
    Price {
        input: U256::from(1_000_000_000u64),
        output: U256::from(3_000_000_000u64),
    }
}

fn parse_price(spec: &str) -> anyhow::Result<(String, Price)> {
    let (model, prices) = spec
        .rsplit_once('=')
        .with_context(|| format!("--price `{spec}`: expected MODEL=INPUT:OUTPUT"))?;
    let (input, output) = prices
        .split_once(':')
        .with_context(|| format!("--price `{spec}`: expected MODEL=INPUT:OUTPUT"))?;
    let parse = |v: &str| -> anyhow::Result<U256> {
        v.trim()
            .parse::<U256>()
            .with_context(|| format!("--price `{spec}`: `{v}` is not a whole number of base units"))
    };
    Ok((
        model.to_owned(),
        Price {
            input: parse(input)?,
            output: parse(output)?,
        },
    ))
}

/// The chain the flags name: `--chain FILE`, or `--rpc-url` with the contract addresses (the chain
/// id is asked from the endpoint). `None`: the node is not on chain.
async fn chain_config(args: &RunArgs) -> anyhow::Result<Option<(ChainConfig, Option<PathBuf>)>> {
    if let Some(path) = &args.chain {
        let chain = ChainConfig::load(path).with_context(|| format!("reading {}", path.display()))?;
        return Ok(Some((chain, Some(path.clone()))));
    }
    let Some(rpc_url) = &args.rpc_url else {
        return Ok(None);
    };
    let address =
        |flag: &str, v: &Option<String>| -> anyhow::Result<cloister_chain::alloy::primitives::Address> {
            v.as_deref()
                .with_context(|| format!("--rpc-url needs --{flag}"))?
                .parse()
                .with_context(|| format!("--{flag} is not an address"))
        };
    use cloister_chain::alloy::providers::Provider as _;
    let chain_id = cloister_chain::read_provider(rpc_url)?
        .get_chain_id()
        .await
        .with_context(|| format!("asking {rpc_url} for its chain id"))?;
    Ok(Some((
        ChainConfig {
            rpc_url: rpc_url.clone(),
            chain_id,
            token: address("token", &args.token)?,
            registry: address("registry", &args.registry)?,
            escrow: address("escrow", &args.escrow)?,
            oracle: address("oracle", &args.oracle)?,
            consumer: None,
        },
        None,
    )))
}

fn onchain_config(
    args: &RunArgs,
    chain: ChainConfig,
    chain_file: Option<&Path>,
    models: &[String],
    local: SocketAddr,
) -> anyhow::Result<OnChainConfig> {
    let operator_key = match &args.operator_key {
        Some(k) => k.clone(),
        None => chain_file
            .and_then(|f| DevnetFile::load(f).ok())
            .and_then(|d| d.account("operator").map(|a| a.private_key.clone()))
            .context("no operator key: give --operator-key (or CLOISTER_OPERATOR_KEY)")?,
    };
    let operator = cloister_chain::parse_private_key(&operator_key).context("--operator-key")?;
    let mut prices = HashMap::new();
    for spec in &args.prices {
        let (model, price) = parse_price(spec)?;
        if !models.contains(&model) {
            bail!("--price names `{model}`, which this node does not serve ({models:?})");
        }
        prices.insert(model, price);
    }
    for model in models {
        prices.entry(model.clone()).or_insert_with(default_price);
    }
    let stake = args
        .stake
        .as_deref()
        .map(|s| s.parse::<U256>().with_context(|| format!("--stake `{s}`")))
        .transpose()?;
    Ok(OnChainConfig {
        chain,
        operator,
        endpoint: args.endpoint.clone().unwrap_or_else(|| format!("http://{local}")),
        prices,
        stake,
        ledger_path: args
            .ledger
            .clone()
            .unwrap_or_else(|| PathBuf::from(".cloister/ledger.sqlite")),
        settle_interval: Duration::from_secs(args.settle_interval_secs.unwrap_or(300)),
        settle_threshold: args.settle_threshold.unwrap_or(100),
        withdrawal_margin: Duration::from_secs(30),
        poll_interval: Duration::from_secs(2),
        deposit_ttl: Duration::from_secs(30),
        oracle: !args.no_oracle,
    })
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_file_fills_missing_flags_and_flags_win() {
        let file: RunArgs = toml::from_str(
            r#"listen = "127.0.0.1:9000"
               model = "models/a.gguf"
               slots = 2
               dev_simulated_tee = true"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let flags = RunArgs {
            slots: Some(8),
            ..Default::default()
        };
        let merged = flags.merge(file);
        assert_eq!(merged.listen, Some(SocketAddr::from(([127, 0, 0, 1], 9000))));
        assert_eq!(merged.model.as_deref(), Some("models/a.gguf"));
        assert_eq!(merged.slots, Some(8));
        assert!(merged.dev_simulated_tee);
    }

    #[test]
    fn prices_parse_and_bad_ones_are_named() {
        let (m, p) = parse_price("smol=10:30").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (m.as_str(), p.input, p.output),
            ("smol", U256::from(10), U256::from(30))
        );
        assert!(parse_price("smol=10").is_err());
        assert!(parse_price("smol=a:1").is_err());
    }

    #[test]
    fn unknown_config_keys_are_refused() {
        let r: Result<RunArgs, _> = toml::from_str("listn = \"x\"");
        assert!(r.is_err());
    }
}
