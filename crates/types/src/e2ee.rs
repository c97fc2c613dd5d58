//! E2EE wire constants and the key binding (`docs/protocol.md` §8).
//!
//! The HPKE envelope itself lives in `cloister_crypto::e2ee`; this module holds what both sides
//! must agree on around it: header names, the request AAD, and the text the signing key signs to
//! bind the node's HPKE key, its models and an expiry.

use serde::{Deserialize, Serialize};

/// Request and response header marking a sealed body; its value is [`E2EE_VERSION`].
pub const HEADER_E2EE: &str = "x-cloister-e2ee";
/// Request header: Unix seconds when the client sealed the request (bound into the AAD).
pub const HEADER_E2EE_TIMESTAMP: &str = "x-cloister-e2ee-timestamp";
/// Request header: the model id, the only thing a router learns about a sealed request.
pub const HEADER_MODEL: &str = "x-cloister-model";
/// The E2EE protocol version carried in [`HEADER_E2EE`].
pub const E2EE_VERSION: &str = "v1";
/// Content type of a sealed (non-SSE) body: the base64 text of the envelope.
pub const SEALED_CONTENT_TYPE: &str = "application/cloister-e2ee";
/// How far (seconds) a sealed request's timestamp may be from the node's clock.
pub const MAX_CLOCK_SKEW_SECS: u64 = 300;

/// The application AAD of a sealed request: binds the method, path, timestamp and model header, so
/// a router cannot move an envelope to another endpoint, time or model.
///
/// `"cloister/e2ee/v1 request\n" METHOD " " PATH "\n" TIMESTAMP "\n" MODEL`
pub fn request_aad(method: &str, path: &str, timestamp: u64, model: &str) -> Vec<u8> {
    format!("cloister/e2ee/v1 request\n{method} {path}\n{timestamp}\n{model}").into_bytes()
}

/// The first bytes of an `InferenceOracle` input sealed to the designated node: `0xFF` (never in
/// UTF-8 text, so no plain-text input starts so) then `cloister-sealed/1\n`. The envelope
/// (`enc` ‖ ciphertext, `cloister_crypto::e2ee::SealedRequest::to_bytes`) follows.
pub const ORACLE_SEALED_MAGIC: &[u8] = b"\xffcloister-sealed/1\n";

/// The application AAD of an oracle input sealed to a node: binds the chain, the oracle contract,
/// the requester (the oracle's `msg.sender`: the consumer contract when asked through one) and the
/// model, so an envelope copied into another requester's request, another oracle or another chain
/// does not open.
///
/// `"cloister-oracle/1\n" CHAIN_ID "\n" ORACLE "\n" REQUESTER "\n" MODEL`, addresses as `0x` +
/// 40 lower-case hex digits, the chain id in decimal.
pub fn oracle_input_aad(
    chain_id: u64,
    oracle: &alloy_primitives::Address,
    requester: &alloy_primitives::Address,
    model: &str,
) -> Vec<u8> {
    format!(
        "cloister-oracle/1\n{chain_id}\n0x{}\n0x{}\n{model}",
        hex::encode(oracle),
        hex::encode(requester)
    )
    .into_bytes()
}

/// One served model in a key binding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundModel {
    /// The model id clients send.
    pub id: String,
    /// Lower-case hex SHA-256 of the weights file, or `null` when the node cannot know it (an
    /// upstream engine).
    pub sha256: Option<String>,
}

/// The report's `key_binding`: the signing key's EIP-191 signature over
/// [`key_binding_text`]`(hpke_public_key, models, expires_at)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyBinding {
    /// Models this node serves under the bound key.
    pub models: Vec<BoundModel>,
    /// Unix seconds after which a client must not seal to the key without fetching a new report.
    pub expires_at: u64,
    /// `0x` + r‖s‖v, EIP-191 personal_sign by the signing address.
    pub signature: String,
}

/// The text a node signs to bind its HPKE key:
///
/// ```text
/// cloister/key-binding/v1
/// hpke_public_key: <64 lower-case hex>
/// models: <id>=<sha256 hex or ->,<id>=<...>
/// expires_at: <unix seconds>
/// ```
pub fn key_binding_text(hpke_public_key: &[u8; 32], models: &[BoundModel], expires_at: u64) -> String {
    let models = models
        .iter()
        .map(|m| format!("{}={}", m.id, m.sha256.as_deref().unwrap_or("-")))
        .collect::<Vec<_>>()
        .join(",");
    format!(
        "cloister/key-binding/v1\nhpke_public_key: {}\nmodels: {models}\nexpires_at: {expires_at}",
        hex::encode(hpke_public_key)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_text_layout() {
        let models = vec![
            BoundModel {
                id: "a".into(),
                sha256: Some("ab".repeat(32)),
            },
            BoundModel {
                id: "b".into(),
                sha256: None,
            },
        ];
        let t = key_binding_text(&[1; 32], &models, 42);
        assert_eq!(
            t,
            format!(
                "cloister/key-binding/v1\nhpke_public_key: {}\nmodels: a={},b=-\nexpires_at: 42",
                "01".repeat(32),
                "ab".repeat(32)
            )
        );
    }

    #[test]
    fn oracle_aad_binds_every_field() {
        use alloy_primitives::Address;
        let (o, r) = (Address::repeat_byte(0xAB), Address::repeat_byte(0x01));
        let a = oracle_input_aad(8453, &o, &r, "m");
        assert_eq!(
            a,
            format!(
                "cloister-oracle/1\n8453\n0x{}\n0x{}\nm",
                "ab".repeat(20),
                "01".repeat(20)
            )
            .into_bytes()
        );
        assert_ne!(a, oracle_input_aad(1, &o, &r, "m"));
        assert_ne!(a, oracle_input_aad(8453, &r, &r, "m"));
        assert_ne!(a, oracle_input_aad(8453, &o, &o, "m"));
        assert_ne!(a, oracle_input_aad(8453, &o, &r, "n"));
        let magic = ORACLE_SEALED_MAGIC.to_vec();
        assert!(String::from_utf8(magic).is_err(), "no text starts with the magic");
    }

    #[test]
    fn aad_binds_every_field() {
        let a = request_aad("POST", "/v1/chat/completions", 10, "m");
        assert_eq!(a, b"cloister/e2ee/v1 request\nPOST /v1/chat/completions\n10\nm");
        assert_ne!(a, request_aad("POST", "/v1/chat/completions", 11, "m"));
        assert_ne!(a, request_aad("POST", "/v1/completions", 10, "m"));
        assert_ne!(a, request_aad("POST", "/v1/chat/completions", 10, "n"));
    }
}
