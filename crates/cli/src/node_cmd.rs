//! `cloister node run`: flags over a settings file, then [`cloister_node::Node::start`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use cloister_chain::alloy::primitives::{Address, U256};
use cloister_node::{GpuMode, ModelPriceSpec, Node, NodeSettings};
use serde::Serialize;

/// Node commands.
#[derive(Debug, Subcommand)]
pub(crate) enum NodeCommand {
    /// Serve the OpenAI-compatible API with attestation and signed answers.
    Run(Box<RunArgs>),
}

/// `cloister node run` flags. Each one is the [`NodeSettings`] field of the same name (with `_`
/// for `-`; `--upstream-model` and `--price` are the lists `upstream_models` and `prices`), so
/// every flag can also be set in the `--config` TOML file, and a flag given on the command line
/// wins over the file. Defaults are [`NodeSettings::default`]'s.
///
/// A flag not given serializes to nothing (`null`, `false` or an empty list are skipped by
/// [`NodeSettings::layered`]), so it never hides the file's value.
#[derive(Debug, Default, Args, Serialize)]
pub(crate) struct RunArgs {
    /// TOML settings file (keys: the flags' names with `_` for `-`).
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
    #[serde(skip_serializing_if = "Vec::is_empty")]
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
    /// Built-in engine: a sentence-embedding GGUF served at /v1/embeddings (e.g.
    /// models/all-MiniLM-L6-v2.gguf from scripts/fetch-embedding-model.sh) [default: none].
    #[arg(long, conflicts_with = "upstream")]
    pub embedding_model: Option<PathBuf>,
    /// Built-in engine: process every prompt in full instead of keeping each slot's KV cells for the
    /// next prompt with the same prefix. The cache makes a shared prefix answer faster, which other
    /// clients of this node can time; turn it off where that must not be observable.
    #[arg(long, conflicts_with = "upstream")]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub no_prefix_cache: bool,
    /// Built-in engine: MiB of host memory for the KV state of prompt prefixes that left their slot
    /// (another prompt took it), so that they come back without being processed again; 0 keeps
    /// none [default: 256].
    #[arg(long, conflicts_with = "upstream")]
    pub prompt_cache_mib: Option<usize>,
    /// Built-in engine: one pool of KV cells for all slots (llama.cpp's unified KV cache) instead of
    /// one per slot. Any mix of requests decodes in one pass over the weights and concurrent
    /// prompts share a common prefix's cells (more tokens/s under load), but a greedy answer can
    /// then differ in its last bits with the other requests running beside it.
    #[arg(long, conflicts_with = "upstream")]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub kv_unified: bool,
    /// DEVELOPMENT ONLY: without a TEE, attest with a simulated quote that every verifier refuses
    /// unless told to accept simulated evidence.
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dev_simulated_tee: bool,
    /// dstack guest agent socket [default: /var/run/dstack.sock if present].
    #[arg(long)]
    pub dstack_socket: Option<PathBuf>,
    /// configfs-tsm report directory [default: /sys/kernel/config/tsm/report].
    #[arg(long)]
    pub configfs_root: Option<PathBuf>,
    /// GPU evidence in reports: auto (when a usable GPU is found), required (refuse to start
    /// without one, naming what is missing) or off [default: auto].
    #[arg(long)]
    pub gpu: Option<GpuMode>,
    /// DEVELOPMENT ONLY: serve the GPU evidence captured in this file (a report or an
    /// nvidia_payload); verifiers accept it only for the nonce it was captured for.
    #[arg(long)]
    pub dev_gpu_replay: Option<PathBuf>,
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
    pub registry: Option<Address>,
    /// `Escrow` address (with --rpc-url).
    #[arg(long, requires = "rpc_url")]
    pub escrow: Option<Address>,
    /// `InferenceOracle` address (with --rpc-url).
    #[arg(long, requires = "rpc_url")]
    pub oracle: Option<Address>,
    /// Payment/stake token address (with --rpc-url).
    #[arg(long, requires = "rpc_url")]
    pub token: Option<Address>,
    /// Operator private key (also CLOISTER_OPERATOR_KEY; never read from the settings file)
    /// [default with a devnet.json: its `operator` dev account].
    #[arg(long, env = "CLOISTER_OPERATOR_KEY", hide_env_values = true)]
    #[serde(skip)]
    pub operator_key: Option<String>,
    /// Public URL registered for this node [default: http://<listen address>].
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Price of a model, `MODEL=INPUT:OUTPUT` in token base units per token (repeatable)
    /// [default: every served model at the `default_price` setting, 1000000000:3000000000].
    #[arg(long = "price")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub prices: Vec<ModelPriceSpec>,
    /// Stake (token base units) for the first registration [default: the registry's minimum].
    #[arg(long)]
    pub stake: Option<U256>,
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
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub no_oracle: bool,
}

impl RunArgs {
    /// The node's settings: these flags over the `--config` file over the defaults, and the
    /// operator key (which no file holds).
    pub(crate) fn settings(&self) -> anyhow::Result<NodeSettings> {
        let mut settings = NodeSettings::layered(self.config.as_deref(), self)?;
        settings.operator_key = self
            .operator_key
            .as_deref()
            .map(cloister_chain::parse_private_key)
            .transpose()
            .context("--operator-key")?;
        Ok(settings)
    }
}

pub(crate) async fn run(cmd: NodeCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        NodeCommand::Run(args) => {
            let node = Node::start(args.settings()?).await?;
            node.wait(crate::shutdown::shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn parse(args: &[&str]) -> RunArgs {
        let argv = std::iter::once("node-run").chain(args.iter().copied());
        Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{e}")).run
    }

    #[test]
    fn config_file_fills_missing_flags_and_flags_win() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            r#"listen = "127.0.0.1:9000"
               model = "models/a.gguf"
               slots = 2
               no_oracle = true
               dev_simulated_tee = true"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let path = path.to_string_lossy().into_owned();
        let settings = parse(&["--config", &path, "--slots", "8", "--price", "a=1:2"])
            .settings()
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(settings.listen, SocketAddr::from(([127, 0, 0, 1], 9000)));
        assert_eq!(settings.model.as_deref(), Some("models/a.gguf"));
        assert_eq!(settings.slots, Some(8));
        assert!(settings.dev_simulated_tee && settings.no_oracle);
        assert_eq!(settings.prices.len(), 1);
        assert_eq!(settings.ledger, NodeSettings::default().ledger);
    }

    /// Every flag is a setting: a flag the settings do not know would fail every run that gives it.
    #[test]
    fn every_flag_is_a_setting() {
        let a = "0x0000000000000000000000000000000000000001";
        let args = parse(&[
            "--listen",
            "127.0.0.1:1",
            "--model",
            "m.gguf",
            "--model-id",
            "m",
            "--upstream-model",
            "u",
            "--upstream-api-key",
            "k",
            "--threads",
            "1",
            "--slots",
            "1",
            "--ctx-per-slot",
            "64",
            "--gpu-layers",
            "1",
            "--no-prefix-cache",
            "--prompt-cache-mib",
            "3",
            "--kv-unified",
            "--dev-simulated-tee",
            "--dstack-socket",
            "/s",
            "--configfs-root",
            "/c",
            "--gpu",
            "required",
            "--dev-gpu-replay",
            "/g.json",
            "--body-limit",
            "10",
            "--request-timeout-secs",
            "5",
            "--rpc-url",
            "http://127.0.0.1:1",
            "--registry",
            a,
            "--escrow",
            a,
            "--oracle",
            a,
            "--token",
            a,
            "--operator-key",
            "0x0000000000000000000000000000000000000000000000000000000000000001",
            "--endpoint",
            "http://e",
            "--price",
            "m=1:2",
            "--stake",
            "7",
            "--ledger",
            "/l",
            "--settle-interval-secs",
            "9",
            "--settle-threshold",
            "3",
            "--no-oracle",
        ]);
        let s = args.settings().unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(s.ctx_per_slot, Some(64));
        assert_eq!(s.stake, Some(U256::from(7)));
        assert_eq!(s.oracle, Some(a.parse().unwrap_or_else(|e| panic!("{e}"))));
        assert_eq!(s.upstream_api_key.as_ref().map(|k| k.expose()), Some("k"));
        assert!(s.operator_key.is_some() && s.no_oracle && s.dev_simulated_tee);
        assert!(s.no_prefix_cache && s.kv_unified);
        assert_eq!(s.prompt_cache_mib, Some(3));
        assert_eq!(s.settle_interval_secs, 9);
        assert_eq!(s.gpu, GpuMode::Required);
        assert_eq!(s.dev_gpu_replay.as_deref(), Some(std::path::Path::new("/g.json")));
        let upstream = parse(&["--upstream", "http://u"]).settings();
        assert!(upstream.is_ok_and(|s| s.upstream.as_deref() == Some("http://u")));
    }

    #[test]
    fn unknown_config_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("node.toml");
        std::fs::write(&path, "listn = \"x\"").unwrap_or_else(|e| panic!("{e}"));
        let path = path.to_string_lossy().into_owned();
        let err = parse(&["--config", &path]).settings().map(|_| ());
        let text = format!("{:#}", err.err().unwrap_or_else(|| panic!("accepted `listn`")));
        assert!(text.contains("node.toml") && text.contains("listn"), "{text}");
    }

    #[test]
    fn a_bad_gpu_mode_is_refused_with_the_choices() {
        let err = Cli::try_parse_from(["node-run", "--gpu", "on"]).map(|_| ());
        let text = err.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            text.contains("--gpu") && text.contains("auto, required or off"),
            "{text}"
        );
    }

    #[test]
    fn bad_prices_are_refused_with_the_flag() {
        let err = Cli::try_parse_from(["node-run", "--price", "smol=10"]).map(|_| ());
        let text = err.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            text.contains("--price") && text.contains("MODEL=INPUT:OUTPUT"),
            "{text}"
        );
    }
}
