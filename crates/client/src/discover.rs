//! Registry discovery: the nodes a `NodeRegistry` lists and the measurements its governance allows,
//! read with plain JSON-RPC (`eth_chainId`, `eth_call`, `eth_blockNumber`, `eth_getLogs`) and ABI
//! coding only, so a client needs no Ethereum provider stack.
//!
//! The `MeasurementSet` log scan is bounded the way every Cloister log scan is
//! ([`cloister_types::logscan`]): from the registry's deployment block, in windows no wider than
//! the network's limit, halved when the endpoint refuses a range ([`discover_with_limits`]; a
//! chain configuration gives the limits with `ChainConfig::log_scan_limits`).
//!
//! The RPC endpoint is not trusted to be well-behaved: every answer is size-limited, every count
//! capped, and anything malformed is a [`DiscoverError`] naming the call. What it cannot do is
//! lie about the chain's state: point the client at an RPC endpoint you trust (your own node).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use cloister_client::discover::{RegistryConfig, discover};
//! use cloister_client::{NodePool, Policy};
//!
//! let found = discover(&RegistryConfig {
//!     rpc_url: "http://127.0.0.1:8545".into(),
//!     chain_id: 31337,
//!     registry: "0x5FbDB2315678afecb367f032d93F642f64180aa3".parse()?,
//! })
//! .await?;
//! let mut policy = Policy::default();
//! policy.allowed_measurements = found.allowlist();
//! let pool = NodePool::new(found.active_endpoints(), Arc::new(policy))?;
//! # Ok(()) }
//! ```

pub mod escrow;
mod rpc;

use alloy_primitives::{Address, B256, U256};
use alloy_sol_types::{SolEvent, sol};
use cloister_types::logscan::{LogScanLimits, is_range_refusal};

use crate::MeasurementAllowlist;
use rpc::Rpc;

pub use rpc::{DiscoverError, MAX_ANSWER_BYTES};

sol! {
    /// The `NodeRegistry` views discovery reads (contracts/src/NodeRegistry.sol).
    interface NodeRegistry {
        struct ModelPrice {
            string id;
            uint256 inputPrice;
            uint256 outputPrice;
        }

        struct NodeInfo {
            address operator;
            address signer;
            string endpoint;
            bytes32 measurement;
            uint8 tcbStatus;
            uint64 attestedAt;
            uint256 stake;
            uint64 unbondingEnds;
            bool active;
            ModelPrice[] models;
        }

        event MeasurementSet(bytes32 indexed measurement, bool allowed);

        function measurementAllowed(bytes32 measurement) external view returns (bool);
        function nodeCount() external view returns (uint256);
        function listNodes(uint256 offset, uint256 limit) external view returns (NodeInfo[] memory page);
    }
}

/// Nodes asked for per `listNodes` call (the contract allows up to 100).
const PAGE: u64 = 50;
/// Most nodes a registry may list before discovery refuses it as hostile.
pub const MAX_NODES: u64 = 10_000;
/// Most `MeasurementSet` events discovery replays.
pub const MAX_MEASUREMENT_EVENTS: usize = 10_000;
/// Most `eth_getLogs` calls one scan makes (an endpoint claiming an absurd latest block, or
/// refusing every window but the narrowest, is refused rather than followed forever).
pub const MAX_LOG_CALLS: u64 = 100_000;

/// Where the registry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryConfig {
    /// JSON-RPC endpoint.
    pub rpc_url: String,
    /// The chain id the endpoint must report.
    pub chain_id: u64,
    /// The `NodeRegistry` contract.
    pub registry: Address,
}

/// A node as the registry lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisteredNode {
    /// Operator (registry key, payee).
    pub operator: Address,
    /// Enclave signing address from its registration quote.
    pub signer: Address,
    /// Public API URL.
    pub endpoint: String,
    /// Measurement digest of the attested image.
    pub measurement: B256,
    /// When it last attested (unix seconds).
    pub attested_at: u64,
    /// The registry's `active` flag (cleared at deregistration).
    pub active: bool,
    /// The models it lists.
    pub models: Vec<String>,
    /// Each listed model with its prices, in the order of `models`.
    pub prices: Vec<ModelPrice>,
    /// The stake it holds (token base units).
    pub stake: U256,
}

/// A model's prices as the registry lists them (token base units per token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelPrice {
    /// Model id.
    pub id: String,
    /// Price per prompt token.
    pub input: U256,
    /// Price per generated token.
    pub output: U256,
}

impl From<NodeRegistry::NodeInfo> for RegisteredNode {
    fn from(n: NodeRegistry::NodeInfo) -> Self {
        let prices: Vec<ModelPrice> = n
            .models
            .iter()
            .map(|m| ModelPrice {
                id: m.id.clone(),
                input: m.inputPrice,
                output: m.outputPrice,
            })
            .collect();
        Self {
            operator: n.operator,
            signer: n.signer,
            endpoint: n.endpoint,
            measurement: n.measurement,
            attested_at: n.attestedAt,
            active: n.active,
            models: n.models.into_iter().map(|m| m.id).collect(),
            prices,
            stake: n.stake,
        }
    }
}

/// What discovery found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discovery {
    /// The registry read.
    pub registry: Address,
    /// Every listed node, active or not.
    pub nodes: Vec<RegisteredNode>,
    /// The measurement digests governance allows now.
    pub allowed_measurements: Vec<B256>,
}

impl Discovery {
    /// The endpoints of the active nodes.
    pub fn active_endpoints(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.active)
            .map(|n| n.endpoint.clone())
            .collect()
    }

    /// The allowlist governance sets. An empty on-chain list refuses every node: it must never
    /// mean "any measurement" (which an empty [`MeasurementAllowlist`] does).
    pub fn allowlist(&self) -> MeasurementAllowlist {
        if self.allowed_measurements.is_empty() {
            // Not a hex digest, so no quote's measurement can equal it.
            return MeasurementAllowlist::of(["registry-allows-none"]);
        }
        MeasurementAllowlist::of(self.allowed_measurements.iter().map(hex::encode))
    }
}

/// Reads the registry at `config`: its nodes and its allowed measurements (logs scanned from
/// block 0 in windows of the default width; see [`discover_with_limits`]).
pub async fn discover(config: &RegistryConfig) -> Result<Discovery, DiscoverError> {
    discover_with(
        &crate::default_http_client().map_err(|e| DiscoverError::Transport(e.to_string()))?,
        config,
    )
    .await
}

/// [`discover`] with a given HTTP client.
pub async fn discover_with(
    http: &reqwest::Client,
    config: &RegistryConfig,
) -> Result<Discovery, DiscoverError> {
    discover_with_limits(http, config, LogScanLimits::default()).await
}

/// [`discover`] with a given HTTP client, its log scan starting at `limits.from_block` (the
/// registry's deployment block) in windows of at most `limits.max_range` blocks.
pub async fn discover_with_limits(
    http: &reqwest::Client,
    config: &RegistryConfig,
    limits: LogScanLimits,
) -> Result<Discovery, DiscoverError> {
    if config.registry.is_zero() {
        return Err(DiscoverError::NoRegistry);
    }
    let rpc = Rpc::new(http, &config.rpc_url);
    let chain_id = rpc.chain_id().await?;
    if chain_id != config.chain_id {
        return Err(DiscoverError::WrongChain {
            expected: config.chain_id,
            actual: chain_id,
        });
    }
    let registry = config.registry;
    let nodes = list_nodes(&rpc, registry).await?;
    let allowed_measurements = allowed_measurements(&rpc, registry, limits).await?;
    tracing::info!(
        %registry,
        active = nodes.iter().filter(|n| n.active).count(),
        listed = nodes.len(),
        measurements = allowed_measurements.len(),
        "registry read"
    );
    Ok(Discovery {
        registry,
        nodes,
        allowed_measurements,
    })
}

/// Every listed node, page by page.
async fn list_nodes(rpc: &Rpc<'_>, registry: Address) -> Result<Vec<RegisteredNode>, DiscoverError> {
    let count: U256 = rpc.call(registry, &NodeRegistry::nodeCountCall {}).await?;
    let count = u64::try_from(count)
        .ok()
        .filter(|c| *c <= MAX_NODES)
        .ok_or(DiscoverError::TooMany {
            what: "nodes",
            limit: MAX_NODES,
        })?;
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < count {
        let call = NodeRegistry::listNodesCall {
            offset: U256::from(offset),
            limit: U256::from(PAGE),
        };
        let page = rpc.call(registry, &call).await?;
        if page.len() as u64 > PAGE {
            return Err(DiscoverError::Malformed {
                method: "listNodes",
                detail: format!("a page of {} nodes, {PAGE} asked for", page.len()),
            });
        }
        if page.is_empty() {
            break;
        }
        offset += page.len() as u64;
        out.extend(page.into_iter().map(RegisteredNode::from));
    }
    Ok(out)
}

/// The measurement digests governance allows: the `MeasurementSet` events replayed in order (the
/// mapping itself cannot be listed), each then confirmed with `measurementAllowed`.
async fn allowed_measurements(
    rpc: &Rpc<'_>,
    registry: Address,
    limits: LogScanLimits,
) -> Result<Vec<B256>, DiscoverError> {
    let logs = scan_logs(
        rpc,
        registry,
        NodeRegistry::MeasurementSet::SIGNATURE_HASH,
        limits,
        (MAX_MEASUREMENT_EVENTS, "MeasurementSet events"),
    )
    .await?;
    let mut allowed: Vec<B256> = Vec::new();
    for (topics, data) in logs {
        let event = NodeRegistry::MeasurementSet::decode_raw_log(topics, &data).map_err(|e| {
            DiscoverError::Malformed {
                method: "eth_getLogs",
                detail: format!("a MeasurementSet event does not decode: {e}"),
            }
        })?;
        allowed.retain(|m| *m != event.measurement);
        if event.allowed {
            allowed.push(event.measurement);
        }
    }
    let mut confirmed = Vec::with_capacity(allowed.len());
    for measurement in allowed {
        let call = NodeRegistry::measurementAllowedCall { measurement };
        if rpc.call(registry, &call).await? {
            confirmed.push(measurement);
        }
    }
    Ok(confirmed)
}

/// Every `topic0` log of `address` from `limits.from_block` to the latest block, in bounded
/// windows: a window the endpoint refuses as too wide is halved and asked again. More than
/// `max.0` logs (`max.1` names them) is an error.
async fn scan_logs(
    rpc: &Rpc<'_>,
    address: Address,
    topic0: B256,
    limits: LogScanLimits,
    max: (usize, &'static str),
) -> Result<Vec<rpc::RawLog>, DiscoverError> {
    let latest = rpc.block_number().await?;
    scan_logs_to(rpc, address, topic0, limits, latest, max).await
}

/// [`scan_logs`] up to block `latest`.
async fn scan_logs_to(
    rpc: &Rpc<'_>,
    address: Address,
    topic0: B256,
    limits: LogScanLimits,
    latest: u64,
    (max_events, what): (usize, &'static str),
) -> Result<Vec<rpc::RawLog>, DiscoverError> {
    let mut plan = limits.plan();
    let mut out = Vec::new();
    let mut calls = 0u64;
    while let Some(range) = plan.next_range(latest) {
        calls += 1;
        if calls > MAX_LOG_CALLS {
            return Err(DiscoverError::TooMany {
                what: "eth_getLogs calls",
                limit: MAX_LOG_CALLS,
            });
        }
        match rpc.logs(address, topic0, range).await {
            Ok(logs) => {
                plan.answered(range);
                out.extend(logs);
                if out.len() > max_events {
                    return Err(DiscoverError::TooMany {
                        what,
                        limit: max_events as u64,
                    });
                }
            }
            Err(DiscoverError::Rpc {
                method,
                code,
                message,
            }) if is_range_refusal(code, &message) => {
                tracing::debug!(from = range.from, to = range.to, %message, "eth_getLogs range refused; halving the window");
                if plan.refused(range).is_err() {
                    return Err(DiscoverError::Rpc {
                        method,
                        code,
                        message,
                    });
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod scan_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn discovery(measurements: Vec<B256>) -> Discovery {
        let node = |endpoint: &str, active| RegisteredNode {
            operator: Address::repeat_byte(1),
            signer: Address::repeat_byte(2),
            endpoint: endpoint.into(),
            measurement: B256::repeat_byte(3),
            attested_at: 1,
            active,
            models: vec!["m".into()],
            prices: Vec::new(),
            stake: U256::ZERO,
        };
        Discovery {
            registry: Address::repeat_byte(9),
            nodes: vec![node("http://a:1", true), node("http://b:2", false)],
            allowed_measurements: measurements,
        }
    }

    #[test]
    fn only_active_nodes_are_used() {
        assert_eq!(discovery(vec![]).active_endpoints(), ["http://a:1"]);
    }

    #[test]
    fn an_empty_onchain_list_refuses_every_measurement() {
        let none = discovery(vec![]).allowlist();
        assert!(!none.is_any());
        assert!(!none.allows(Some(&hex::encode(B256::repeat_byte(3)))));
        assert!(!none.allows(None));
        let one = discovery(vec![B256::repeat_byte(3)]).allowlist();
        assert!(one.allows(Some(&hex::encode(B256::repeat_byte(3)))));
        assert!(!one.allows(Some(&hex::encode(B256::repeat_byte(4)))));
    }
}
