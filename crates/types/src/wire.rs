//! Every name that crosses the wire between a client, a proxy, a gateway and a node: paths, query
//! parameters, headers, SSE events and content types (`docs/protocol.md`). Defined once here and
//! imported everywhere, tests included, so a rename is one edit and a typo is a compile error.
//!
//! ```
//! use cloister_types::wire;
//! let url = format!("http://node:8080{}?{}={}", wire::ATTESTATION_REPORT_PATH, wire::QUERY_NONCE, "ab".repeat(32));
//! assert!(url.ends_with(&"ab".repeat(32)));
//! assert_eq!(wire::signature_path("chatcmpl-1"), "/v1/signature/chatcmpl-1");
//! ```

// ---- paths (§5) -------------------------------------------------------------------------------

/// The prefix of every OpenAI API path below; an OpenAI-compatible base URL ends with it
/// (`http://host:8000/v1`), so a path under such a base is the path without it (see [`api_url`]).
pub const API_PREFIX: &str = "/v1";
/// OpenAI chat completions (plain or streamed, signed, optionally sealed).
pub const CHAT_COMPLETIONS_PATH: &str = "/v1/chat/completions";
/// OpenAI legacy completions (served by some upstreams; not by the node).
pub const COMPLETIONS_PATH: &str = "/v1/completions";
/// OpenAI model list.
pub const MODELS_PATH: &str = "/v1/models";
/// The attestation report (§3).
pub const ATTESTATION_REPORT_PATH: &str = "/v1/attestation/report";
/// Prefix of a stored response signature (§4); see [`signature_path`].
pub const SIGNATURE_PATH_PREFIX: &str = "/v1/signature/";
/// The axum route of a stored response signature.
pub const SIGNATURE_ROUTE: &str = "/v1/signature/{id}";
/// Liveness and identity.
pub const HEALTH_PATH: &str = "/health";
/// Prometheus metrics.
pub const METRICS_PATH: &str = "/metrics";
/// Prometheus metrics under the API prefix (the node serves both; same text as [`METRICS_PATH`]).
pub const METRICS_V1_PATH: &str = "/v1/metrics";

/// `GET` path of the stored signature of response `id`.
pub fn signature_path(id: &str) -> String {
    format!("{SIGNATURE_PATH_PREFIX}{id}")
}

/// The URL of API `path` (one of the `/v1/...` paths above) under an OpenAI-compatible `base`
/// URL that already ends with [`API_PREFIX`] and no trailing slash.
///
/// ```
/// use cloister_types::wire;
/// assert_eq!(wire::api_url("http://h:8000/v1", wire::MODELS_PATH), "http://h:8000/v1/models");
/// ```
pub fn api_url(base: &str, path: &str) -> String {
    format!("{base}{}", path.strip_prefix(API_PREFIX).unwrap_or(path))
}

// ---- query parameters (§3) --------------------------------------------------------------------

/// The verifier's 32-byte nonce, 64 hex digits (optional `0x`).
pub const QUERY_NONCE: &str = "nonce";
/// The model whose report is asked for (NEAR AI cloud gateways).
pub const QUERY_MODEL: &str = "model";
/// The signing address whose report is asked for (gateways route by it).
pub const QUERY_SIGNING_ADDRESS: &str = "signing_address";
/// The signing algorithm asked for (`ecdsa` | `ed25519`; NEAR AI).
pub const QUERY_SIGNING_ALGO: &str = "signing_algo";

// ---- response signature headers and events (§4) -----------------------------------------------

/// Plain answers: the EIP-191 signature over the request and response hashes.
pub const SIGNATURE_HEADER: &str = "x-cloister-signature";
/// Plain answers: the address that signed.
pub const SIGNING_ADDRESS_HEADER: &str = "x-cloister-signing-address";
/// Plain answers: the id under which the signature is stored.
pub const SIGNATURE_ID_HEADER: &str = "x-cloister-signature-id";
/// Streams: the final SSE event carrying the signature record (after `data: [DONE]`).
pub const SIGNATURE_EVENT: &str = "cloister.signature";
/// SSE event a proxy sends when a stream fails its checks (and then no `[DONE]`).
pub const ERROR_EVENT: &str = "error";
/// The `data:` payload that ends an OpenAI stream.
pub const SSE_DONE: &str = "[DONE]";
/// The complete OpenAI end-of-stream event.
pub const SSE_DONE_EVENT: &str = "data: [DONE]\n\n";
/// Content type of a server-sent event stream.
pub const EVENT_STREAM_CONTENT_TYPE: &str = "text/event-stream";
/// Content type of a JSON body.
pub const JSON_CONTENT_TYPE: &str = "application/json";

// ---- metering (§9) ----------------------------------------------------------------------------

/// Plain answers: the metering receipt (on streams it is `receipt` in the signature event).
pub const RECEIPT_HEADER: &str = "x-cloister-receipt";

// ---- end-to-end encryption (§8) ---------------------------------------------------------------

pub use crate::e2ee::{
    E2EE_VERSION, HEADER_E2EE as E2EE_HEADER, HEADER_E2EE_TIMESTAMP as E2EE_TIMESTAMP_HEADER,
    HEADER_MODEL as MODEL_HEADER, SEALED_CONTENT_TYPE,
};

// ---- the verifying proxy's answer headers (§10) -----------------------------------------------

/// `true`: the proxy verified the node that answered.
pub const VERIFIED_HEADER: &str = "x-cloister-verified";
/// The attested signer of the node that answered.
pub const SIGNER_HEADER: &str = "x-cloister-signer";
/// The TEE the node's report states.
pub const TEE_HEADER: &str = "x-cloister-tee";
/// The node's measurement digest (§7).
pub const MEASUREMENT_HEADER: &str = "x-cloister-measurement";
/// `true` on plain answers, [`SIGNATURE_VERIFIED_AT_END`] on streams.
pub const SIGNATURE_VERIFIED_HEADER: &str = "x-cloister-signature-verified";
/// Value of [`SIGNATURE_VERIFIED_HEADER`] on streams (checked when the stream ends).
pub const SIGNATURE_VERIFIED_AT_END: &str = "at-end-of-stream";
/// The node (base URL) that answered.
pub const NODE_HEADER: &str = "x-cloister-node";
