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
/// OpenAI legacy text completions (plain or streamed, signed, optionally sealed, like chat).
pub const COMPLETIONS_PATH: &str = "/v1/completions";
/// OpenAI embeddings (signed, optionally sealed, metered on prompt tokens).
pub const EMBEDDINGS_PATH: &str = "/v1/embeddings";
/// OpenAI model list.
pub const MODELS_PATH: &str = "/v1/models";
/// The attestation report (§3).
pub const ATTESTATION_REPORT_PATH: &str = "/v1/attestation/report";
/// Prefix of a stored response signature (§4); see [`signature_path`].
pub const SIGNATURE_PATH_PREFIX: &str = "/v1/signature/";
/// The axum route of a stored response signature.
pub const SIGNATURE_ROUTE: &str = "/v1/signature/{id}";
/// `GET ?nonce=<64 lowercase hex>`: the ACI attestation report (`aci/1` §4; protocol §11).
pub const ACI_ATTESTATION_PATH: &str = "/v1/aci/attestation";
/// `GET`: the signed ACI receipt of one inference (`aci/1` §7), route template.
pub const ACI_RECEIPT_ROUTE: &str = "/v1/aci/receipts/{id}";
/// Prefix of [`ACI_RECEIPT_ROUTE`]; append the receipt id.
pub const ACI_RECEIPTS_PREFIX: &str = "/v1/aci/receipts/";
/// Liveness and identity.
pub const HEALTH_PATH: &str = "/health";
/// Prometheus metrics.
pub const METRICS_PATH: &str = "/metrics";
/// Prometheus metrics under the API prefix (the node serves both; same text as [`METRICS_PATH`]).
pub const METRICS_V1_PATH: &str = "/v1/metrics";

/// Gateway: the verified nodes it routes to, best first (`?model=` narrows them to one model).
pub const GATEWAY_NODES_PATH: &str = "/v1/gateway/nodes";
/// Gateway: the chain it reads (chain id, `NodeRegistry`, `Escrow`) and its counts.
pub const GATEWAY_NETWORK_PATH: &str = "/v1/gateway/network";
/// Gateway: its own attestation report (`?nonce=`), for clients that choose to trust it for routing.
pub const GATEWAY_ATTESTATION_PATH: &str = "/v1/gateway/attestation";
/// Gateway: the explorer page (server-rendered HTML).
pub const EXPLORER_PATH: &str = "/explorer";

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
/// The shape of the report asked for: absent or [`REPORT_FORMAT_FLAT`] for the flat report,
/// [`REPORT_FORMAT_NEAR`] for NEAR AI cloud's wrapper (§3).
pub const QUERY_FORMAT: &str = "format";
/// [`QUERY_FORMAT`] value: the flat report (the default).
pub const REPORT_FORMAT_FLAT: &str = "flat";
/// [`QUERY_FORMAT`] value: `{"model_attestations": [report]}`, as NEAR AI cloud serves it.
pub const REPORT_FORMAT_NEAR: &str = "near";

// ---- response signature headers and events (§4) -----------------------------------------------

/// Plain answers: the EIP-191 signature over the request and response hashes.
pub const SIGNATURE_HEADER: &str = "x-cloister-signature";
/// Plain answers: the address that signed.
pub const SIGNING_ADDRESS_HEADER: &str = "x-cloister-signing-address";
/// Plain answers: the id under which the signature is stored.
pub const SIGNATURE_ID_HEADER: &str = "x-cloister-signature-id";
/// ACI: the protocol version, on every response (`aci/1` §5.2).
pub const ACI_VERSION_HEADER: &str = "x-aci-version";
/// ACI: the serving `workload_keyset_digest`, on every response.
pub const ACI_KEYSET_DIGEST_HEADER: &str = "x-aci-keyset-digest";
/// ACI: the receipt id of an inference answer (`GET` [`ACI_RECEIPT_ROUTE`]).
pub const ACI_RECEIPT_ID_HEADER: &str = "x-receipt-id";

/// Streams: the final SSE event carrying the signature record (after `data: [DONE]`), sent only to
/// a request that carries [`INLINE_SIGNATURE_HEADER`].
pub const SIGNATURE_EVENT: &str = "cloister.signature";
/// Request header asking a stream for the inline [`SIGNATURE_EVENT`] after `data: [DONE]`; its value
/// is [`INLINE_SIGNATURE_ON`] (`1` or `true`, any case). Without it the stream ends at `data: [DONE]`,
/// its bytes hash to the signed text whole, and the signature is at [`SIGNATURE_ROUTE`] (§4).
pub const INLINE_SIGNATURE_HEADER: &str = "x-cloister-inline-signature";
/// The value of [`INLINE_SIGNATURE_HEADER`] that the Cloister client and proxy send.
pub const INLINE_SIGNATURE_ON: &str = "1";
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
/// Request header to a gateway: the signing address (`0x` hex) of the node to forward to. A sealed
/// request can only go to the node it was sealed to, so the client names it.
pub const GATEWAY_NODE_HEADER: &str = "x-cloister-gateway-node";
/// The node (base URL) that answered.
pub const NODE_HEADER: &str = "x-cloister-node";
