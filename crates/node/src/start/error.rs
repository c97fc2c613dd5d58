//! [`NodeError`]: why a node could not be set up, started or stopped.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why [`crate::Node::start`] (or reading [`crate::NodeSettings`]) failed. The `Display` says what
/// was being done; the cause is the [`std::error::Error::source`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// A settings file could not be read.
    #[error("reading {}", path.display())]
    ReadSettings {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A settings file is not valid TOML settings (an unknown key, a wrong type).
    #[error("parsing {}", path.display())]
    ParseSettings {
        /// The file.
        path: PathBuf,
        /// What is wrong, with its line and column.
        source: Box<toml::de::Error>,
    },
    /// The settings layered over the file (flags) name no setting, or have the wrong type.
    #[error("applying settings over the file")]
    Overrides(#[source] serde_json::Error),
    /// No TEE evidence source was found (and simulation was not asked for), or it failed.
    #[error("choosing the TEE evidence source")]
    Attester(#[source] cloister_attest::Error),
    /// `gpu = required` and no usable GPU evidence source (the source names what is missing: no
    /// driver, no GPU, CC off, not ready), or a `dev_gpu_replay` file that cannot be used.
    #[error("GPU evidence (--gpu / setting `gpu`)")]
    Gpu(#[source] cloister_attest::collect::gpu::GpuError),
    /// Neither `model` nor `upstream` is set.
    #[error(
        "no engine: give --model <gguf path | hf:owner/repo/file.gguf> or --upstream <url> \
         (settings `model` or `upstream`)"
    )]
    NoEngine,
    /// `model` and `upstream` are both set.
    #[error("give either --model or --upstream (settings `model` or `upstream`), not both")]
    TwoEngines,
    /// The built-in engine's model could not be found, fetched or loaded.
    #[error("model `{spec}`")]
    Model {
        /// The `model` setting.
        spec: String,
        /// What went wrong.
        source: cloister_engine::Error,
    },
    /// The upstream server could not be reached or listed no model.
    #[error("connecting to upstream {url}")]
    Upstream {
        /// The `upstream` setting.
        url: String,
        /// What went wrong.
        source: cloister_engine::Error,
    },
    /// The listen address could not be bound.
    #[error("binding {addr}")]
    Bind {
        /// The `listen` setting.
        addr: SocketAddr,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The chain could not be resolved from `chain`, `rpc_url` and the addresses.
    #[error("resolving the chain (--chain / --rpc-url)")]
    Chain(#[source] cloister_chain::ChainError),
    /// On chain, but no operator key was given and the chain file has no `operator` dev account.
    #[error("no operator key: give --operator-key (or CLOISTER_OPERATOR_KEY)")]
    NoOperatorKey,
    /// `prices` names a model this node does not serve.
    #[error("--price names `{model}`, which this node does not serve ({served:?})")]
    UnservedPrice {
        /// The model the price names.
        model: String,
        /// The models the engine serves.
        served: Vec<String>,
    },
    /// Registration (or reattestation) or the start of settlement failed.
    #[error("starting the node's on-chain life (registration)")]
    OnChain(#[source] crate::onchain::OnChainError),
    /// The HTTP server failed.
    #[error("serving HTTP")]
    Serve(#[source] std::io::Error),
    /// A task the node runs (model loading, the HTTP server) panicked or was cancelled.
    #[error("node task failed")]
    Task(#[source] tokio::task::JoinError),
}
