//! [`NodeSettings`]: everything a node is started with, and the TOML file format of
//! `cloister node run --config node.toml`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use alloy_primitives::{Address, U256};
use cloister_chain::ChainOverrides;
use cloister_chain::alloy::signers::local::PrivateKeySigner;
use serde::{Deserialize, Serialize};

use crate::NodeConfig;
use crate::billing::Price;
use crate::start::{GpuMode, NodeError};

/// Everything [`crate::Node::start`] needs: the engine, the TEE, the HTTP limits and, optionally,
/// the chain. It *is* the settings file format: every field is a TOML key of the same name, every
/// key may be left out (it then takes the value of [`NodeSettings::default`]), and an unknown key
/// is an error.
///
/// ```toml
/// listen = "0.0.0.0:8080"
/// model = "hf:bartowski/SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct-Q4_K_M.gguf"
/// slots = 8
/// chain = "devnet.json"
/// prices = ["SmolLM2-135M-Instruct-Q4_K_M=1000000000:3000000000"]
/// ```
///
/// Read a file with [`NodeSettings::load`]; put command-line flags (or any other serializable
/// layer) over a file with [`NodeSettings::layered`]. The operator key is never read from a
/// file: set [`NodeSettings::operator_key`] in code (the CLI reads `CLOISTER_OPERATOR_KEY`).
///
/// ```
/// use cloister_node::NodeSettings;
/// let settings: NodeSettings = toml::from_str("model = \"a.gguf\"\nslots = 2").unwrap();
/// assert_eq!(settings.slots, Some(2));
/// assert_eq!(settings.settle_threshold, NodeSettings::default().settle_threshold);
/// assert!(toml::from_str::<NodeSettings>("modle = \"a.gguf\"").is_err());
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSettings {
    /// Address to listen on [default: 127.0.0.1:8080].
    pub listen: SocketAddr,

    /// Built-in engine: a local GGUF path, or a Hugging Face file `hf:owner/repo/file.gguf`.
    /// One of `model` and `upstream` is required.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Model id to serve the built-in model as [default: the file name without `.gguf`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
    /// Upstream OpenAI-compatible server instead of the built-in engine (vLLM, SGLang, llama.cpp
    /// server, Ollama), e.g. `http://127.0.0.1:8000/v1`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// Models the upstream serves [default: ask the upstream's `/models`].
    pub upstream_models: Vec<String>,
    /// Bearer key for the upstream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_api_key: Option<Secret>,
    /// Engine threads [default: all cores].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    /// Sequences the built-in engine decodes together [default: the engine's, 4].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slots: Option<usize>,
    /// Context tokens per sequence [default: the engine's, 2048].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ctx_per_slot: Option<u32>,
    /// Layers to offload to a GPU (needs a `cuda` build) [default: the engine's, 0].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_layers: Option<u32>,
    /// Built-in engine: a sentence-embedding GGUF served at `/v1/embeddings` (its id: the file name
    /// without .gguf) [default: none, no embeddings].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding_model: Option<std::path::PathBuf>,
    /// Built-in engine: no prefix cache; every prompt is processed in full (a cached prefix answers
    /// faster, which other clients can time).
    pub no_prefix_cache: bool,
    /// Built-in engine: MiB of host memory for the KV state of prefixes that left their slot (0:
    /// none) [default: the engine's, 256].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_cache_mib: Option<usize>,
    /// Built-in engine: one pool of KV cells for all slots (llama.cpp's unified KV cache): more
    /// throughput under concurrent load, but answers no longer independent of other traffic.
    pub kv_unified: bool,

    /// DEVELOPMENT ONLY: without a TEE, attest with a simulated quote that every verifier refuses
    /// unless told to accept simulated evidence.
    pub dev_simulated_tee: bool,
    /// dstack guest agent socket [default: /var/run/dstack.sock if present].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dstack_socket: Option<PathBuf>,
    /// configfs-tsm report directory [default: /sys/kernel/config/tsm/report].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub configfs_root: Option<PathBuf>,
    /// GPU evidence in reports: `auto` (when a usable source is found), `required` (refuse to
    /// start without one) or `off` [default: auto].
    pub gpu: GpuMode,
    /// DEVELOPMENT ONLY: serve the GPU evidence captured in this file (a report or an
    /// `nvidia_payload`); verifiers accept it only for the nonce it was captured for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dev_gpu_replay: Option<PathBuf>,

    /// Largest accepted request body in bytes [default: 1048576].
    pub body_limit: usize,
    /// Request timeout in seconds, also the upstream's [default: 300].
    pub request_timeout_secs: u64,

    /// Live on chain: a `devnet.json` (from `cloister devnet up`) or a chain config JSON
    /// (`rpc_url`, `chain_id`, contract addresses). The node registers (or reattests) at start,
    /// requires API keys, meters into the ledger and settles vouchers. Resolved with the fields
    /// below by [`cloister_chain::ChainConfig::resolve`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain: Option<PathBuf>,
    /// The JSON-RPC endpoint: instead of `chain` (then with `registry`, `escrow`, `token` and,
    /// unless `no_oracle`, `oracle`), or replacing the chain file's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpc_url: Option<String>,
    /// `NodeRegistry` address (replaces the chain file's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry: Option<Address>,
    /// `Escrow` address (replaces the chain file's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub escrow: Option<Address>,
    /// `InferenceOracle` address (replaces the chain file's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oracle: Option<Address>,
    /// Payment/stake token address (replaces the chain file's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<Address>,
    /// Operator private key. Never read from or written to a settings file [default with a
    /// `devnet.json`: its `operator` dev account].
    #[serde(skip)]
    pub operator_key: Option<PrivateKeySigner>,
    /// Public URL registered for this node [default: `http://<bound listen address>`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Prices of served models, each `MODEL=INPUT:OUTPUT` in token base units per token; a model
    /// not named here costs `default_price`.
    pub prices: Vec<ModelPriceSpec>,
    /// The price of every served model that `prices` does not name, `INPUT:OUTPUT` [default:
    /// 1000000000:3000000000, 1e-9 and 3e-9 of an 18-decimal token].
    pub default_price: PriceSpec,
    /// Stake (token base units) for the first registration [default: the registry's minimum].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stake: Option<U256>,
    /// SQLite ledger of metered vouchers [default: .cloister/ledger.sqlite].
    pub ledger: PathBuf,
    /// Settle waiting vouchers at least this often, in seconds [default: 300].
    pub settle_interval_secs: u64,
    /// Settle at once when this many vouchers wait [default: 100].
    pub settle_threshold: usize,
    /// Do not answer `InferenceOracle` requests.
    pub no_oracle: bool,
}

impl Default for NodeSettings {
    fn default() -> Self {
        let http = NodeConfig::default();
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            model: None,
            model_id: None,
            upstream: None,
            upstream_models: Vec::new(),
            upstream_api_key: None,
            threads: None,
            slots: None,
            ctx_per_slot: None,
            gpu_layers: None,
            embedding_model: None,
            no_prefix_cache: false,
            prompt_cache_mib: None,
            kv_unified: false,
            dev_simulated_tee: false,
            dstack_socket: None,
            configfs_root: None,
            gpu: GpuMode::Auto,
            dev_gpu_replay: None,
            body_limit: http.body_limit,
            request_timeout_secs: http.request_timeout.as_secs(),
            chain: None,
            rpc_url: None,
            registry: None,
            escrow: None,
            oracle: None,
            token: None,
            operator_key: None,
            endpoint: None,
            prices: Vec::new(),
            default_price: PriceSpec(Price {
                input: U256::from(1_000_000_000u64),
                output: U256::from(3_000_000_000u64),
            }),
            stake: None,
            ledger: PathBuf::from(".cloister/ledger.sqlite"),
            settle_interval_secs: 300,
            settle_threshold: 100,
            no_oracle: false,
        }
    }
}

impl NodeSettings {
    /// Reads a settings file (TOML). Keys left out take their defaults; an unknown key is an error
    /// naming the file, the line and the key.
    pub fn load(path: &Path) -> Result<Self, NodeError> {
        Self::layered(Some(path), &())
    }

    /// The settings of `overrides` over those of the `file` (if any) over the defaults.
    ///
    /// `overrides` is any value that serializes to a map whose keys are settings names, such as a
    /// struct of command-line flags; a key that is absent or `null` leaves the layer below as it
    /// is, so an `Option` flag not given (serialized as `null`) never hides the file's value. A key
    /// that is no setting is an error. Nested maps merge key by key.
    ///
    /// ```
    /// # fn main() -> Result<(), cloister_node::NodeError> {
    /// use cloister_node::NodeSettings;
    /// #[derive(serde::Serialize)]
    /// struct Flags { slots: Option<usize>, model: Option<String> }
    /// let flags = Flags { slots: Some(8), model: None };
    /// let settings = NodeSettings::layered(None, &flags)?;
    /// assert_eq!(settings.slots, Some(8));
    /// # Ok(()) }
    /// ```
    pub fn layered(file: Option<&Path>, overrides: &impl Serialize) -> Result<Self, NodeError> {
        let mut value = match file {
            Some(path) => file_value(path)?,
            None => serde_json::Value::Object(serde_json::Map::new()),
        };
        let over = serde_json::to_value(overrides).map_err(NodeError::Overrides)?;
        merge(&mut value, over);
        serde_json::from_value(value).map_err(NodeError::Overrides)
    }

    /// The HTTP layer's limits: these settings over [`NodeConfig::default`].
    pub fn node_config(&self) -> NodeConfig {
        NodeConfig {
            body_limit: self.body_limit,
            request_timeout: Duration::from_secs(self.request_timeout_secs),
            ..NodeConfig::default()
        }
    }

    /// The chain overrides these settings give [`cloister_chain::ChainConfig::resolve`].
    pub fn chain_overrides(&self) -> ChainOverrides {
        ChainOverrides {
            rpc_url: self.rpc_url.clone(),
            token: self.token,
            registry: self.registry,
            escrow: self.escrow,
            oracle: self.oracle,
        }
    }
}

/// A settings file as a JSON value, after checking that the file alone is valid settings (so
/// its errors carry a line and column).
fn file_value(path: &Path) -> Result<serde_json::Value, NodeError> {
    let text = std::fs::read_to_string(path).map_err(|source| NodeError::ReadSettings {
        path: path.to_owned(),
        source,
    })?;
    let parse_error = |source| NodeError::ParseSettings {
        path: path.to_owned(),
        source: Box::new(source),
    };
    toml::from_str::<NodeSettings>(&text).map_err(parse_error)?;
    let table: toml::Table = toml::from_str(&text).map_err(parse_error)?;
    serde_json::to_value(table).map_err(NodeError::Overrides)
}

/// Puts `over` on `base`: objects merge key by key, `null` changes nothing, anything else
/// replaces.
fn merge(base: &mut serde_json::Value, over: serde_json::Value) {
    match (base, over) {
        (_, serde_json::Value::Null) => {}
        (serde_json::Value::Object(base), serde_json::Value::Object(over)) => {
            for (key, value) in over {
                match base.get_mut(&key) {
                    Some(slot) => merge(slot, value),
                    None if value.is_null() => {}
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, over) => *base = over,
    }
}

/// A secret string setting (an API key): read and written as a plain string, never shown by
/// `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// A malformed price setting.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("price `{spec}`: {reason}")]
pub struct InvalidPrice {
    /// The text as given.
    pub spec: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A price as settings write it: `INPUT:OUTPUT`, token base units per prompt and per completion
/// token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PriceSpec(pub Price);

impl FromStr for PriceSpec {
    type Err = InvalidPrice;

    fn from_str(spec: &str) -> Result<Self, InvalidPrice> {
        let invalid = |reason: String| InvalidPrice {
            spec: spec.to_owned(),
            reason,
        };
        let (input, output) = spec
            .split_once(':')
            .ok_or_else(|| invalid("expected INPUT:OUTPUT".to_owned()))?;
        let parse = |v: &str| {
            v.trim()
                .parse::<U256>()
                .map_err(|_| invalid(format!("`{v}` is not a whole number of base units")))
        };
        Ok(Self(Price {
            input: parse(input)?,
            output: parse(output)?,
        }))
    }
}

impl fmt::Display for PriceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.0.input, self.0.output)
    }
}

impl TryFrom<String> for PriceSpec {
    type Error = InvalidPrice;

    fn try_from(spec: String) -> Result<Self, InvalidPrice> {
        spec.parse()
    }
}

impl From<PriceSpec> for String {
    fn from(spec: PriceSpec) -> Self {
        spec.to_string()
    }
}

/// One model's price as settings write it: `MODEL=INPUT:OUTPUT` (the model id may itself contain
/// `=`; the last one separates).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ModelPriceSpec {
    /// The served model id.
    pub model: String,
    /// Its price.
    pub price: Price,
}

impl FromStr for ModelPriceSpec {
    type Err = InvalidPrice;

    fn from_str(spec: &str) -> Result<Self, InvalidPrice> {
        let invalid = |reason: String| InvalidPrice {
            spec: spec.to_owned(),
            reason,
        };
        let (model, price) = spec
            .rsplit_once('=')
            .ok_or_else(|| invalid("expected MODEL=INPUT:OUTPUT".to_owned()))?;
        let PriceSpec(price) = price.parse().map_err(|e: InvalidPrice| {
            let reason = if e.reason.starts_with("expected") {
                "expected MODEL=INPUT:OUTPUT".to_owned()
            } else {
                e.reason
            };
            invalid(reason)
        })?;
        Ok(Self {
            model: model.to_owned(),
            price,
        })
    }
}

impl fmt::Display for ModelPriceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.model, PriceSpec(self.price))
    }
}

impl TryFrom<String> for ModelPriceSpec {
    type Error = InvalidPrice;

    fn try_from(spec: String) -> Result<Self, InvalidPrice> {
        spec.parse()
    }
}

impl From<ModelPriceSpec> for String {
    fn from(spec: ModelPriceSpec) -> Self {
        spec.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        (dir, path)
    }

    /// Flags as the CLI has them: every one optional, a bool given only when true.
    #[derive(Default, Serialize)]
    struct Flags {
        listen: Option<SocketAddr>,
        slots: Option<usize>,
        model: Option<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        prices: Vec<ModelPriceSpec>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        no_oracle: bool,
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let (_dir, path) = temp_file(
            "node.toml",
            r#"listen = "127.0.0.1:9000"
               model = "models/a.gguf"
               slots = 2
               dev_simulated_tee = true
               no_oracle = true
               prices = ["a=1:2"]"#,
        );
        let flags = Flags {
            slots: Some(8),
            ..Flags::default()
        };
        let s = NodeSettings::layered(Some(&path), &flags).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.listen, SocketAddr::from(([127, 0, 0, 1], 9000)));
        assert_eq!(s.model.as_deref(), Some("models/a.gguf"));
        assert_eq!(s.slots, Some(8));
        assert!(s.dev_simulated_tee && s.no_oracle);
        assert_eq!(s.prices.len(), 1);
        assert_eq!(s.settle_threshold, NodeSettings::default().settle_threshold);

        let flags = Flags {
            prices: vec!["b=3:4".parse().unwrap_or_else(|e| panic!("{e}"))],
            model: Some("b.gguf".into()),
            ..Flags::default()
        };
        let s = NodeSettings::layered(Some(&path), &flags).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.model.as_deref(), Some("b.gguf"));
        assert_eq!(s.slots, Some(2));
        assert_eq!(s.prices[0].model, "b");
    }

    #[test]
    fn an_unknown_key_in_the_file_is_a_clear_error() {
        let (_dir, path) = temp_file("node.toml", "listen = \"127.0.0.1:0\"\nmodle = \"x\"\n");
        let err = NodeSettings::load(&path).map(|_| ()).unwrap_err_or_panic();
        let text = format!("{err}: {}", err.source_text());
        assert!(text.contains("node.toml"), "{text}");
        assert!(text.contains("modle"), "{text}");
        // A secret is not a file setting.
        let (_dir, path) = temp_file("node.toml", "operator_key = \"0x01\"\n");
        assert!(NodeSettings::load(&path).is_err());
    }

    #[test]
    fn an_override_that_is_no_setting_is_refused() {
        #[derive(Serialize)]
        struct Bad {
            listn: &'static str,
        }
        assert!(NodeSettings::layered(None, &Bad { listn: "x" }).is_err());
    }

    #[test]
    fn defaults_round_trip_through_toml() {
        let text = toml::to_string(&NodeSettings::default()).unwrap_or_else(|e| panic!("{e}"));
        let back: NodeSettings = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.default_price, NodeSettings::default().default_price);
        assert_eq!(back.ledger, NodeSettings::default().ledger);
        assert_eq!(back.listen, NodeSettings::default().listen);
    }

    #[test]
    fn prices_parse_and_bad_ones_are_named() {
        let p: ModelPriceSpec = "smol=10:30".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (p.model.as_str(), p.price.input, p.price.output),
            ("smol", U256::from(10), U256::from(30))
        );
        assert_eq!(p.to_string(), "smol=10:30");
        for bad in ["smol=10", "smol=a:1", "smol"] {
            let err = bad.parse::<ModelPriceSpec>().map(|_| ()).unwrap_err_or_panic();
            assert!(err.to_string().contains(bad), "{err}");
        }
        assert!(
            "smol=10"
                .parse::<ModelPriceSpec>()
                .is_err_and(|e| e.reason.contains("MODEL=INPUT:OUTPUT"))
        );
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let s = NodeSettings {
            upstream_api_key: Some(Secret::new("sk-very-secret")),
            ..NodeSettings::default()
        };
        assert!(!format!("{s:?}").contains("sk-very-secret"));
    }

    trait UnwrapErr<E> {
        fn unwrap_err_or_panic(self) -> E;
    }
    impl<E> UnwrapErr<E> for Result<(), E> {
        fn unwrap_err_or_panic(self) -> E {
            match self {
                Ok(()) => panic!("expected an error"),
                Err(e) => e,
            }
        }
    }

    trait SourceText {
        fn source_text(&self) -> String;
    }
    impl SourceText for NodeError {
        fn source_text(&self) -> String {
            std::error::Error::source(self)
                .map(ToString::to_string)
                .unwrap_or_default()
        }
    }
}
