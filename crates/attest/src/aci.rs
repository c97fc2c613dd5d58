//! ACI, Attested Confidential Inference (`aci/1`, Phala's gateway protocol: `spec/aci.md` in
//! Dstack-TEE/private-ai-gateway), both sides' pure parts:
//!
//! - the **workload keyset** (receipt, E2EE and TLS keys) and its digest over the JCS form
//!   ([`keyset_digest`], RFC 8785 in [`jcs`]);
//! - the **attestation statement** `{"keyset_digest","nonce","purpose"}` whose SHA-256 is the
//!   quote's report_data, zero-padded ([`statement`], [`report_data`]);
//! - **receipts**: the signed per-request event log ([`receipt`]);
//! - the §9.1 **verification** of a service's report ([`verify_aci_report`]).
//!
//! A Cloister node serves ACI beside its own report (docs/protocol.md §11): each ACI report has its
//! own fresh quote, because ACI's report_data is the statement digest, not Cloister's
//! `address ‖ nonce`.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use cloister_types::Nonce;

pub mod jcs;
pub mod receipt;
mod verify;

pub use verify::{AciPolicy, AciVerdict, verify_aci_report};

/// The protocol version every ACI artifact names (`api_version`, `X-ACI-Version`).
pub const API_VERSION: &str = "aci/1";
/// The statement's fixed purpose tag (§3.2).
pub const PURPOSE: &str = "aci.report_data.v1";
/// The baseline receipt signature algorithm (Appendix B).
pub const ED25519: &str = "ed25519";
/// `tee_type` of Intel TDX evidence.
pub const TEE_TYPE_TDX: &str = "tdx";

/// A receipt signing or E2EE key of the keyset (§3.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEntry {
    /// Stable id that receipts name (`key_id`).
    pub key_id: String,
    /// Algorithm: `ed25519` for receipt keys; extension-defined for E2EE keys.
    pub algo: String,
    /// The public key, lowercase hex.
    pub public_key: String,
}

/// A TLS key of the keyset: the SHA-256 of a certificate's SubjectPublicKeyInfo (§3.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsKey {
    /// Lowercase hex SHA-256 of the DER SPKI.
    pub spki_sha256: String,
    /// The one public hostname the entry is for, when restricted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

/// The workload keyset (§3.1): the workload's identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadKeyset {
    /// Policy-interpreted name (a dstack app-id URI, a DNS name), or null.
    pub subject: Option<String>,
    /// Unix time after which no verifier accepts the keyset.
    pub not_after: u64,
    /// Keys that sign receipts.
    pub receipt_signing_keys: Vec<KeyEntry>,
    /// Keys of E2EE extensions.
    pub e2ee_public_keys: Vec<KeyEntry>,
    /// TLS keys clients pin.
    pub tls_public_keys: Vec<TlsKey>,
}

impl WorkloadKeyset {
    /// The `ed25519` receipt key named `key_id`, decoded.
    pub fn receipt_key(&self, key_id: &str) -> Option<[u8; 32]> {
        let entry = self
            .receipt_signing_keys
            .iter()
            .find(|k| k.key_id == key_id && k.algo == ED25519)?;
        let mut key = [0u8; 32];
        hex::decode_to_slice(&entry.public_key, &mut key).ok()?;
        Some(key)
    }
}

/// `"sha256:" ‖ hex(SHA-256(bytes))`, ACI's digest encoding (Appendix A).
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// `workload_keyset_digest` (§3.1): the digest of the JCS form of the keyset as parsed, so any
/// encoding of the same keyset gives the same digest.
pub fn keyset_digest(keyset: &serde_json::Value) -> Result<String, jcs::JcsError> {
    Ok(sha256_digest(&jcs::canonical(keyset)?))
}

/// The attestation statement (§3.2), exactly: `nonce` is the request's 64-hex nonce, or the JSON
/// literal `null` for the unchallenged form.
pub fn statement(keyset_digest: &str, nonce: Option<&Nonce>) -> String {
    let nonce = nonce.map_or_else(|| "null".to_owned(), |n| format!("\"{}\"", n.to_hex()));
    format!("{{\"keyset_digest\":\"{keyset_digest}\",\"nonce\":{nonce},\"purpose\":\"{PURPOSE}\"}}")
}

/// `report_data` (§3.2): SHA-256 of the statement.
pub fn report_data(keyset_digest: &str, nonce: Option<&Nonce>) -> [u8; 32] {
    Sha256::digest(statement(keyset_digest, nonce).as_bytes()).into()
}

/// The 64-byte TEE report-data slot: [`report_data`] then 32 zero bytes.
pub fn report_data_slot(keyset_digest: &str, nonce: Option<&Nonce>) -> [u8; 64] {
    let mut slot = [0u8; 64];
    slot[..32].copy_from_slice(&report_data(keyset_digest, nonce));
    slot
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The published test vectors (spec/test-vectors.md §1, §2).
    #[test]
    fn keyset_and_statement_vectors() {
        let keyset = WorkloadKeyset {
            subject: Some("dstack-app://example-app".into()),
            not_after: 1_800_000_000,
            receipt_signing_keys: vec![KeyEntry {
                key_id: "receipt-1".into(),
                algo: ED25519.into(),
                public_key: "8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394".into(),
            }],
            e2ee_public_keys: vec![KeyEntry {
                key_id: "e2ee-1".into(),
                algo: "x25519-aes-256-gcm-hkdf-sha256".into(),
                public_key: "5dfedd3b6bd47f6fa28ee15d969d5bb0ea53774d488bdaf9df1c6e0124b3ef22".into(),
            }],
            tls_public_keys: vec![TlsKey {
                spki_sha256: "c0".repeat(32),
                domain: Some("api.example.com".into()),
            }],
        };
        let value = serde_json::to_value(&keyset).unwrap();
        assert_eq!(
            String::from_utf8(jcs::canonical(&value).unwrap()).unwrap(),
            concat!(
                r#"{"e2ee_public_keys":[{"algo":"x25519-aes-256-gcm-hkdf-sha256","key_id":"e2ee-1","public_key":"5dfedd3b6bd47f6fa28ee15d969d5bb0ea53774d488bdaf9df1c6e0124b3ef22"}],"#,
                r#""not_after":1800000000,"receipt_signing_keys":[{"algo":"ed25519","key_id":"receipt-1","public_key":"8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394"}],"#,
                r#""subject":"dstack-app://example-app","tls_public_keys":[{"domain":"api.example.com","spki_sha256":"c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0"}]}"#
            )
        );
        let digest = keyset_digest(&value).unwrap();
        assert_eq!(
            digest,
            "sha256:53a5cd44b30dcc51999754c719f2628a041f174ecbf9662a6f8e898a10cd9371"
        );
        // Any encoding of the same keyset: pretty-printed, members reordered.
        let pretty: serde_json::Value =
            serde_json::from_str(&serde_json::to_string_pretty(&value).unwrap()).unwrap();
        assert_eq!(keyset_digest(&pretty).unwrap(), digest);

        let nonce: Nonce = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
            .parse()
            .unwrap();
        assert_eq!(
            statement(&digest, Some(&nonce)),
            r#"{"keyset_digest":"sha256:53a5cd44b30dcc51999754c719f2628a041f174ecbf9662a6f8e898a10cd9371","nonce":"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f","purpose":"aci.report_data.v1"}"#
        );
        assert_eq!(
            hex::encode(report_data(&digest, Some(&nonce))),
            "df2174d28130852b413646a3786927b93e94c11d770268b65def8bdba45cb49e"
        );
        assert_eq!(
            hex::encode(report_data(&digest, None)),
            "0633919ca3f00e97bafaa3304278eb22420cc3ff0d19f87dfca2d3f7508150bc"
        );
        assert_eq!(
            hex::encode(report_data_slot(&digest, Some(&nonce))),
            format!(
                "df2174d28130852b413646a3786927b93e94c11d770268b65def8bdba45cb49e{}",
                "0".repeat(64)
            )
        );
    }

    /// spec/test-vectors.md §3: a session's id is the SHA-256 of its JCS form.
    #[test]
    fn session_id_vector() {
        let doc: serde_json::Value = serde_json::from_str(
            r#"{"api_version":"aci/1","channel_binding":[{"origin":"https://upstream.example.com","spki_sha256":"d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1","type":"tls_spki_sha256"}],"claims":{"extra":{"gpu_arch":"HOPPER","tcb_status":"UpToDate"},"gpu_attested":{"status":"unknown"},"model_weights_provenance":{"status":"unknown"},"os_known_good":{"status":"unknown"},"serving_software_known_good":{"status":"unknown"},"tcb_up_to_date":{"status":"unknown"},"tee_attested":{"reason":"example quote verified","source":"hardware_proven","status":"asserted"}},"endpoint":"https://upstream.example.com","established_at":1750000000,"evidence":{"data":"data:text/plain;base64,ZXhhbXBsZS1ldmlkZW5jZQ==","digest":"sha256:80d70e44d0ae1e829fd5f37c3ee4a60dfbea8d3aa18407ea3f34cf7ec91da34d"},"expires_at":1750003600,"upstream_name":"demo-upstream","verifier_id":"example/1"}"#,
        )
        .unwrap();
        assert_eq!(
            sha256_digest(b"example-evidence"),
            "sha256:80d70e44d0ae1e829fd5f37c3ee4a60dfbea8d3aa18407ea3f34cf7ec91da34d"
        );
        assert_eq!(
            hex::encode(Sha256::digest(jcs::canonical(&doc).unwrap())),
            "95ad1cb4dd25445808c2e9d116caf420b05703730b506395e8fc1ca6faeae28f"
        );
    }
}
