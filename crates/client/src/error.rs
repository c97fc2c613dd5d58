//! Every reason a client refuses a node or an answer, each with its own variant and a stable
//! [`Error::code`] (the proxy sends it as the OpenAI `error.code`).

use thiserror::Error;

/// Why a node, a report or an answer was refused.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The node could not be reached, or the connection broke.
    #[error("cannot reach {url}: {source}")]
    Unreachable {
        /// The URL asked.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The node answered with an HTTP error status (the body is opened when it was sealed).
    #[error("node answered {status}: {}", String::from_utf8_lossy(body))]
    NodeStatus {
        /// The HTTP status.
        status: u16,
        /// The (opened) body.
        body: bytes::Bytes,
        /// Whether the body came sealed under the request's response key.
        sealed: bool,
    },
    /// The node refused our sealed request (its `error.code` is one of `e2ee_*`).
    #[error("node refused the sealed request ({code}): {message}")]
    E2eeRefusedByNode {
        /// The node's `error.code`.
        code: String,
        /// The node's message.
        message: String,
    },
    /// The attestation report is not a report (not JSON, several reports, wrong shape).
    #[error("bad attestation report from {url}: {detail}")]
    BadReport {
        /// The node.
        url: String,
        /// What was wrong.
        detail: String,
    },
    /// The node's evidence is simulated and the policy does not allow it.
    #[error("the node's TEE is simulated (development only); refused without allow_simulated")]
    SimulatedRefused,
    /// An attestation check failed.
    #[error("attestation refused: {check}: {detail}")]
    AttestationRefused {
        /// The failed check (its `Display` is the check's human name).
        check: cloister_attest::check::CheckId,
        /// Its detail.
        detail: String,
    },
    /// The quote verified but its measurement digest is not in the allowlist.
    #[error("measurement {} is not in the allowed list", digest.as_deref().unwrap_or("(unreadable)"))]
    MeasurementNotAllowed {
        /// The quote's measurement digest (hex), when it could be read.
        digest: Option<String>,
    },
    /// The report has no E2EE key, and E2EE is required.
    #[error("the node offers no E2EE key (no hpke_public_key/key_binding) and E2EE is required")]
    E2eeUnavailable,
    /// The key binding does not recover to the attested signer, or has expired.
    #[error("key binding refused: {detail}")]
    KeyBindingInvalid {
        /// The failed check's detail.
        detail: String,
    },
    /// The node's key binding does not name the requested model.
    #[error("the node's key binding does not name model {model:?}")]
    ModelNotBound {
        /// The requested model.
        model: String,
    },
    /// A sealed request got a success answer that was not sealed: a downgrade.
    #[error("the answer to a sealed request was not sealed")]
    ResponseNotSealed,
    /// A response chunk did not authenticate under the request's response key.
    #[error("encrypted answer tampered with (or sealed under another key)")]
    ResponseTampered,
    /// The encrypted answer ended without its authenticated end marker.
    #[error("encrypted answer truncated: end marker missing")]
    ResponseTruncated,
    /// A response chunk authenticated at another position.
    #[error("encrypted answer out of order: expected chunk {expected}, got {found}")]
    ResponseOutOfOrder {
        /// Expected counter.
        expected: u64,
        /// Counter the chunk was sealed under.
        found: u64,
    },
    /// The answer's framing is malformed (bad base64, bad SSE, data after the end).
    #[error("malformed answer: {0}")]
    MalformedResponse(String),
    /// The answer carries no signature.
    #[error("the answer carries no signature")]
    SignatureMissing,
    /// The signature does not cover the bytes we sent and received, or does not parse.
    #[error("signature invalid: {detail}")]
    SignatureInvalid {
        /// What is wrong.
        detail: String,
    },
    /// The signature recovers to a key other than the attested signer (also after verifying the
    /// node again).
    #[error("signature from another key: recovered {recovered}, attested signer {attested}")]
    SignatureFromAnotherKey {
        /// The attested signer.
        attested: String,
        /// The address the signature recovers to.
        recovered: String,
    },
    /// The request body is not a chat request we can seal (not JSON, no `model`).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// No configured node serves the model.
    #[error("no node serves model {model:?}")]
    NoNodeForModel {
        /// The model.
        model: String,
    },
    /// Every node was tried and refused or failed.
    #[error("all {} nodes failed: {}", errors.len(), errors.iter().map(|(u, e)| format!("{u}: {e}")).collect::<Vec<_>>().join("; "))]
    AllNodesFailed {
        /// Per node, why.
        errors: Vec<(String, Error)>,
    },
    /// A configuration file (allowlist, collateral) could not be used.
    #[error("configuration: {0}")]
    Config(String),
    /// Through a gateway, the node that answered the report is not the node the client named.
    #[error("the gateway routed to {attested} instead of the named node {named}")]
    GatewayMisrouted {
        /// The signing address the client named.
        named: String,
        /// The one the report attests.
        attested: String,
    },
    /// Paying a new node would take the spend authorizations past the wallet's budget.
    #[error("budget exhausted: {allocated} of {budget} already authorized to nodes")]
    BudgetExhausted {
        /// The overall budget (token base units).
        budget: String,
        /// What the authorizations signed so far allow in total.
        allocated: String,
    },
    /// An encryption error that fits no other variant.
    #[error("E2EE: {0}")]
    Crypto(#[from] cloister_crypto::Error),
}

impl Error {
    /// A stable machine-readable name for this refusal.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unreachable { .. } => "node_unreachable",
            Self::NodeStatus { .. } => "node_error",
            Self::E2eeRefusedByNode { .. } => "e2ee_refused_by_node",
            Self::BadReport { .. } => "bad_attestation_report",
            Self::SimulatedRefused => "simulated_tee_refused",
            Self::AttestationRefused { .. } => "attestation_refused",
            Self::MeasurementNotAllowed { .. } => "measurement_not_allowed",
            Self::E2eeUnavailable => "e2ee_unavailable",
            Self::KeyBindingInvalid { .. } => "key_binding_invalid",
            Self::ModelNotBound { .. } => "model_not_bound",
            Self::ResponseNotSealed => "response_not_sealed",
            Self::ResponseTampered => "e2ee_tampered",
            Self::ResponseTruncated => "e2ee_truncated",
            Self::ResponseOutOfOrder { .. } => "e2ee_out_of_order",
            Self::MalformedResponse(_) => "malformed_response",
            Self::SignatureMissing => "signature_missing",
            Self::SignatureInvalid { .. } => "signature_invalid",
            Self::SignatureFromAnotherKey { .. } => "signature_from_another_key",
            Self::InvalidRequest(_) => "invalid_request",
            Self::NoNodeForModel { .. } => "no_node_for_model",
            Self::AllNodesFailed { errors } => errors.last().map_or("all_nodes_failed", |(_, e)| e.code()),
            Self::Config(_) => "config",
            Self::GatewayMisrouted { .. } => "gateway_misrouted",
            Self::BudgetExhausted { .. } => "budget_exhausted",
            Self::Crypto(_) => "e2ee_error",
        }
    }

    /// Whether a pool should try the next node: the node is down, failing (5xx) or failed
    /// verification. A client error (4xx) would fail on every node and is returned as is, except a
    /// gateway's 404 `node_not_found`: its list named a node it no longer routes to.
    pub fn is_failover(&self) -> bool {
        match self {
            // 429: the node (or the gateway in front of it) is busy; another node may not be.
            Self::NodeStatus { status, .. } if *status >= 500 || *status == 429 => true,
            Self::NodeStatus {
                status: 404,
                body,
                sealed: false,
            } => error_code(body).as_deref() == Some(cloister_types::gateway::NODE_NOT_FOUND),
            Self::NodeStatus { .. } => false,
            Self::InvalidRequest(_) | Self::Config(_) | Self::NoNodeForModel { .. } => false,
            _ => true,
        }
    }

    /// Whether this refusal is about verification (attestation, encryption, signature), as
    /// opposed to transport or the node's own error answers.
    pub fn is_verification_failure(&self) -> bool {
        !matches!(
            self,
            Self::Unreachable { .. }
                | Self::NodeStatus { .. }
                | Self::InvalidRequest(_)
                | Self::Config(_)
                | Self::NoNodeForModel { .. }
                | Self::BudgetExhausted { .. }
        )
    }

    pub(crate) fn from_crypto(e: cloister_crypto::Error) -> Self {
        match e {
            cloister_crypto::Error::Tampered => Self::ResponseTampered,
            cloister_crypto::Error::Truncated => Self::ResponseTruncated,
            cloister_crypto::Error::OutOfOrder { expected, found } => {
                Self::ResponseOutOfOrder { expected, found }
            }
            cloister_crypto::Error::MalformedEnvelope(what) => Self::MalformedResponse(what.to_owned()),
            other => Self::Crypto(other),
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `error.code` of an OpenAI-style error body, if it has one.
fn error_code(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value.pointer("/error/code")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16, body: &str, sealed: bool) -> Error {
        Error::NodeStatus {
            status,
            body: bytes::Bytes::from(body.to_owned()),
            sealed,
        }
    }

    #[test]
    fn a_gateways_node_not_found_fails_over_and_other_client_errors_do_not() {
        let not_found =
            r#"{"error":{"message":"no registered node has signing address 0x..","code":"node_not_found"}}"#;
        assert!(status(404, not_found, false).is_failover());
        assert!(status(502, "", false).is_failover());
        assert!(status(429, "", false).is_failover());
        // A node's own 404 (unknown model), a sealed body, or garbage: returned as is.
        assert!(!status(404, r#"{"error":{"code":"model_not_found"}}"#, false).is_failover());
        assert!(!status(404, not_found, true).is_failover());
        assert!(!status(404, "not json", false).is_failover());
        assert!(!status(400, not_found, false).is_failover());
    }
}
