//! What a gateway says about the network (`docs/protocol.md` §11): the nodes it routes to and the
//! chain it reads. None of it is trusted for integrity: a client verifies every node itself and
//! uses these lists only to choose where to go.

use serde::{Deserialize, Serialize};

/// `error.code` of a gateway's 404 for a node it does not (or no longer) know: a client that took the
/// node from the gateway's own list tries the next one.
pub const NODE_NOT_FOUND: &str = "node_not_found";

/// One model a node lists, with its prices (token base units per token, decimal strings since
/// they are `uint256`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayModel {
    /// Model id.
    pub id: String,
    /// Price per prompt token.
    pub input_price: String,
    /// Price per generated token.
    pub output_price: String,
}

/// A node as the gateway sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GatewayNode {
    /// The attested enclave signing address (`0x` hex): what a client names in
    /// [`GATEWAY_NODE_HEADER`](crate::wire::GATEWAY_NODE_HEADER).
    pub signing_address: String,
    /// The operator (registry key, payee of the node's spend authorizations).
    pub operator: String,
    /// The node's own public URL, as registered.
    pub endpoint: String,
    /// The registered measurement digest (`0x` hex).
    pub measurement: String,
    /// Whether governance allows that measurement now.
    pub measurement_allowed: bool,
    /// The models and their prices.
    pub models: Vec<GatewayModel>,
    /// Whether the gateway's own last verification passed.
    pub verified: bool,
    /// The failed check or error of the last verification (`None` when it passed).
    pub refusal: Option<String>,
    /// Requests the gateway is forwarding to it now.
    pub in_flight: u32,
    /// Smoothed time to the first answer byte, in milliseconds (`None` before any answer).
    pub latency_ms: Option<f64>,
    /// When the gateway last verified it (unix seconds).
    pub checked_at: u64,
}

impl GatewayNode {
    /// The prices of `model`, when the node lists it.
    pub fn model(&self, model: &str) -> Option<&GatewayModel> {
        self.models.iter().find(|m| m.id == model)
    }
}

/// `GET /v1/gateway/nodes`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GatewayNodeList {
    /// Always `list`.
    pub object: String,
    /// The nodes, in the gateway's order of preference.
    pub data: Vec<GatewayNode>,
}

/// `GET /v1/gateway/network`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayNetwork {
    /// Chain id of the registry's chain.
    pub chain_id: u64,
    /// `NodeRegistry` address (`0x` hex).
    pub registry: String,
    /// `Escrow` address (`0x` hex), when the gateway was told it.
    pub escrow: Option<String>,
    /// Nodes the registry lists as active.
    pub nodes: usize,
    /// Of those, the ones the gateway verified.
    pub verified: usize,
    /// The gateway's own signing address (its attestation report binds it).
    pub gateway_signer: String,
}
