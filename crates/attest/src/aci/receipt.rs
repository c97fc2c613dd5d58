//! Inference receipts (§7): a signed per-request event log binding the request bytes the workload
//! received, the bytes it used, and the response bytes it returned. The signature is Ed25519 over
//! the JCS form of the document without its `signature` member, so any encoding verifies.

use serde_json::{Map, Value, json};

use super::{API_VERSION, WorkloadKeyset, jcs, sha256_digest};
use cloister_crypto::ed25519::{Ed25519Key, parse_ed25519_signature, verify_ed25519};

/// Event type: the request body the workload processed (always first).
pub const REQUEST_RECEIVED: &str = "request.received";
/// Event type: the bytes used for inference after any service-side rewrite.
pub const REQUEST_FORWARDED: &str = "request.forwarded";
/// Event type: the response body bytes emitted on the wire (SSE framing included).
pub const RESPONSE_RETURNED: &str = "response.returned";

/// What a service knows when it issues one receipt.
#[derive(Clone, Debug)]
pub struct ReceiptInput<'a> {
    /// The lookup id (`X-Receipt-Id`).
    pub receipt_id: &'a str,
    /// The OpenAI response id, when the body has one.
    pub chat_id: Option<&'a str>,
    /// The model the client asked for.
    pub model: Option<&'a str>,
    /// The serving keyset's digest.
    pub keyset_digest: &'a str,
    /// The API path, e.g. `/v1/chat/completions`.
    pub endpoint: &'a str,
    /// The HTTP method.
    pub method: &'a str,
    /// Unix seconds.
    pub served_at: u64,
    /// `body_hash` of the request bytes as received ([`sha256_digest`]).
    pub request_received: &'a str,
    /// `body_hash` of the bytes used for inference, when they differ from those received;
    /// `None`: the same.
    pub request_forwarded: Option<&'a str>,
    /// `body_hash` of the response bytes as returned (SSE framing included).
    pub response_returned: &'a str,
    /// The receipt key's `key_id` in the keyset.
    pub key_id: &'a str,
}

/// The signed receipt document for `input`, signed by `key`.
pub fn sign_receipt(input: &ReceiptInput<'_>, key: &Ed25519Key) -> Value {
    let received = input.request_received;
    let forwarded = input.request_forwarded.unwrap_or(received);
    let mut doc = json!({
        "api_version": API_VERSION,
        "receipt_id": input.receipt_id,
        "chat_id": input.chat_id,
        "model": input.model,
        "workload_keyset_digest": input.keyset_digest,
        "endpoint": input.endpoint,
        "method": input.method,
        "served_at": input.served_at,
        "event_log": [
            { "type": REQUEST_RECEIVED, "body_hash": received },
            { "type": REQUEST_FORWARDED, "body_hash": forwarded },
            { "type": RESPONSE_RETURNED, "body_hash": input.response_returned },
        ],
        "key_id": input.key_id,
    });
    // Strings, integers and nulls only: the canonical form always exists.
    let signature = jcs::canonical(&doc).map_or_else(|_| [0u8; 64], |bytes| key.sign(&bytes));
    if let Value::Object(map) = &mut doc {
        map.insert("signature".into(), Value::from(hex::encode(signature)));
    }
    doc
}

/// Why a receipt does not verify (§9.3).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    /// The receipt is not a JSON object, or a required member is missing or mistyped.
    #[error("malformed receipt: {0}")]
    Malformed(String),
    /// `api_version` is not `aci/1`.
    #[error("receipt api_version is {0:?}, not aci/1")]
    ApiVersion(String),
    /// The receipt names another keyset than the established one.
    #[error("receipt names keyset {got}, the established keyset is {established}")]
    KeysetDigest {
        /// The receipt's `workload_keyset_digest`.
        got: String,
        /// The established digest.
        established: String,
    },
    /// `key_id` names no `ed25519` receipt key of the keyset.
    #[error("key_id {0:?} names no ed25519 receipt signing key of the keyset")]
    UnknownKey(String),
    /// The signature does not verify over the document's canonical form.
    #[error("receipt signature does not verify")]
    BadSignature,
    /// A body hash does not match the bytes the client holds.
    #[error("{event}.body_hash is {claimed}, the bytes hash to {actual}")]
    BodyMismatch {
        /// The event.
        event: &'static str,
        /// The receipt's hash.
        claimed: String,
        /// The hash of the bytes held.
        actual: String,
    },
}

/// A receipt whose signature and keyset verified (§9.3 steps 1–2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedReceipt {
    /// `receipt_id`.
    pub receipt_id: String,
    /// `served_at` (self-asserted by the service).
    pub served_at: u64,
    /// `request.received.body_hash`.
    pub request_received: String,
    /// `request.forwarded.body_hash`, when present.
    pub request_forwarded: Option<String>,
    /// `response.returned.body_hash`.
    pub response_returned: String,
}

impl VerifiedReceipt {
    /// §9.3 steps 3–4: the receipt commits to exactly `request` (the wire body sent) and
    /// `response` (the bytes received, SSE framing included).
    pub fn check_bodies(&self, request: &[u8], response: &[u8]) -> Result<(), ReceiptError> {
        for (event, claimed, bytes) in [
            (REQUEST_RECEIVED, &self.request_received, request),
            (RESPONSE_RETURNED, &self.response_returned, response),
        ] {
            let actual = sha256_digest(bytes);
            if *claimed != actual {
                return Err(ReceiptError::BodyMismatch {
                    event,
                    claimed: claimed.clone(),
                    actual,
                });
            }
        }
        Ok(())
    }

    /// Whether the service used other bytes than it received (a rewrite, §9.3).
    pub fn rewritten(&self) -> bool {
        self.request_forwarded
            .as_ref()
            .is_some_and(|f| *f != self.request_received)
    }
}

/// §9.3 steps 1–2: `receipt`'s signature verifies under the key its `key_id` names in `keyset`,
/// its `api_version` is `aci/1`, and it names `keyset_digest`.
pub fn verify_receipt(
    receipt: &Value,
    keyset: &WorkloadKeyset,
    keyset_digest: &str,
) -> Result<VerifiedReceipt, ReceiptError> {
    let malformed = |what: &str| ReceiptError::Malformed(what.to_owned());
    let Value::Object(map) = receipt else {
        return Err(malformed("not a JSON object"));
    };
    let text = |name: &str| map.get(name).and_then(Value::as_str);
    let version = text("api_version").ok_or_else(|| malformed("no api_version"))?;
    if version != API_VERSION {
        return Err(ReceiptError::ApiVersion(version.chars().take(40).collect()));
    }
    let digest = text("workload_keyset_digest").ok_or_else(|| malformed("no workload_keyset_digest"))?;
    if digest != keyset_digest {
        return Err(ReceiptError::KeysetDigest {
            got: digest.chars().take(80).collect(),
            established: keyset_digest.to_owned(),
        });
    }
    let key_id = text("key_id").ok_or_else(|| malformed("no key_id"))?;
    let key = keyset
        .receipt_key(key_id)
        .ok_or_else(|| ReceiptError::UnknownKey(key_id.chars().take(80).collect()))?;
    let signature = text("signature")
        .and_then(|s| parse_ed25519_signature(s).ok())
        .ok_or_else(|| malformed("no 64-byte hex signature"))?;
    let mut unsigned: Map<String, Value> = map.clone();
    unsigned.remove("signature");
    let input =
        jcs::canonical(&Value::Object(unsigned)).map_err(|e| ReceiptError::Malformed(e.to_string()))?;
    verify_ed25519(&key, &input, &signature).map_err(|_| ReceiptError::BadSignature)?;

    let events = map
        .get("event_log")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed("no event_log list"))?;
    let hash_of = |event: &Value| event.get("body_hash").and_then(Value::as_str).map(str::to_owned);
    let find = |ty: &str| {
        events
            .iter()
            .find(|e| e.get("type").and_then(Value::as_str) == Some(ty))
    };
    let first_is_received = events
        .first()
        .is_some_and(|e| e.get("type").and_then(Value::as_str) == Some(REQUEST_RECEIVED));
    if !first_is_received {
        return Err(malformed("the first event is not request.received"));
    }
    let request_received = find(REQUEST_RECEIVED)
        .and_then(hash_of)
        .ok_or_else(|| malformed("request.received has no body_hash"))?;
    let response_returned = find(RESPONSE_RETURNED)
        .and_then(hash_of)
        .ok_or_else(|| malformed("no response.returned body_hash"))?;
    Ok(VerifiedReceipt {
        receipt_id: text("receipt_id").unwrap_or_default().to_owned(),
        served_at: map.get("served_at").and_then(Value::as_u64).unwrap_or_default(),
        request_received,
        request_forwarded: find(REQUEST_FORWARDED).and_then(hash_of),
        response_returned,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::aci::{ED25519, KeyEntry};

    const DIGEST: &str = "sha256:53a5cd44b30dcc51999754c719f2628a041f174ecbf9662a6f8e898a10cd9371";
    const REQUEST: &[u8] = br#"{"messages":[{"content":"hi","role":"user"}],"model":"demo-model"}"#;
    const RESPONSE: &[u8] = br#"{"choices":[],"id":"chatcmpl-123"}"#;

    fn keyset() -> WorkloadKeyset {
        WorkloadKeyset {
            subject: None,
            not_after: 1_800_000_000,
            receipt_signing_keys: vec![KeyEntry {
                key_id: "receipt-1".into(),
                algo: ED25519.into(),
                public_key: "8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394".into(),
            }],
            e2ee_public_keys: vec![],
            tls_public_keys: vec![],
        }
    }

    /// spec/test-vectors.md §4, byte for byte: the body hashes, the signing input's digest and the
    /// Ed25519 signature by `receipt-1` (seed 32 × 0x02, RFC 8032 signatures are deterministic).
    #[test]
    fn receipt_vector() {
        assert_eq!(
            sha256_digest(REQUEST),
            "sha256:94d809bf47380d8a2eab0eb6e126d4dda9364b0b4725cdf7ead52dd70b2aa87b"
        );
        assert_eq!(
            sha256_digest(RESPONSE),
            "sha256:dedfffe5b14d031b8e2c01996d021a15293cb7c63b56be7e4be9e89b6f0a5f61"
        );
        let served: Value = serde_json::from_str(concat!(
            r#"{"api_version":"aci/1","chat_id":"chatcmpl-123","endpoint":"/v1/chat/completions","event_log":["#,
            r#"{"body_hash":"sha256:94d809bf47380d8a2eab0eb6e126d4dda9364b0b4725cdf7ead52dd70b2aa87b","type":"request.received"},"#,
            r#"{"body_hash":"sha256:94d809bf47380d8a2eab0eb6e126d4dda9364b0b4725cdf7ead52dd70b2aa87b","type":"request.forwarded"},"#,
            r#"{"model_id":"demo-model","required":true,"result":"verified","session_id":"95ad1cb4dd25445808c2e9d116caf420b05703730b506395e8fc1ca6faeae28f","type":"upstream.verified"},"#,
            r#"{"body_hash":"sha256:dedfffe5b14d031b8e2c01996d021a15293cb7c63b56be7e4be9e89b6f0a5f61","type":"response.returned"}],"#,
            r#""key_id":"receipt-1","method":"POST","model":"demo-model","receipt_id":"rcpt-0001","served_at":1750000000,"#,
            r#""signature":"d5b005e093bde3b577faf270b7184b09e169cacb0ecb206b103bd2581f997db03da616175454b063323a23ac1dc68f1ce506c2a6eba8aa0561d5e724f0b80c03","#,
            r#""workload_keyset_digest":"sha256:53a5cd44b30dcc51999754c719f2628a041f174ecbf9662a6f8e898a10cd9371"}"#
        ))
        .unwrap();
        let mut unsigned = served.clone();
        unsigned.as_object_mut().unwrap().remove("signature");
        let input = jcs::canonical(&unsigned).unwrap();
        assert_eq!(
            sha256_digest(&input),
            "sha256:1bd328e6880a5a12b3915af95ea32111310e04ab9e21ac3d71ce268e33b965c9"
        );
        let key = Ed25519Key::from_seed(&[2; 32]);
        assert_eq!(
            hex::encode(key.sign(&input)),
            served["signature"].as_str().unwrap()
        );

        let v = verify_receipt(&served, &keyset(), DIGEST).unwrap();
        v.check_bodies(REQUEST, RESPONSE).unwrap();
        assert!(!v.rewritten());
        assert!(matches!(
            v.check_bodies(REQUEST, b"{}"),
            Err(ReceiptError::BodyMismatch {
                event: RESPONSE_RETURNED,
                ..
            })
        ));
        // Pretty-printed, the same document verifies; any changed member does not.
        let pretty: Value = serde_json::from_str(&serde_json::to_string_pretty(&served).unwrap()).unwrap();
        assert!(verify_receipt(&pretty, &keyset(), DIGEST).is_ok());
        let mut tampered = served.clone();
        tampered["served_at"] = Value::from(1_750_000_001u64);
        assert_eq!(
            verify_receipt(&tampered, &keyset(), DIGEST),
            Err(ReceiptError::BadSignature)
        );
        assert!(matches!(
            verify_receipt(&served, &keyset(), "sha256:00"),
            Err(ReceiptError::KeysetDigest { .. })
        ));
        let mut other_key = served;
        other_key["key_id"] = Value::from("receipt-2");
        assert!(matches!(
            verify_receipt(&other_key, &keyset(), DIGEST),
            Err(ReceiptError::UnknownKey(_))
        ));
    }

    #[test]
    fn signed_receipts_round_trip() {
        let key = Ed25519Key::generate();
        let mut ks = keyset();
        ks.receipt_signing_keys[0].public_key = hex::encode(key.public_key());
        let (sealed, plain, answer) = (
            sha256_digest(b"sealed"),
            sha256_digest(b"plain"),
            sha256_digest(b"answer"),
        );
        let input = ReceiptInput {
            receipt_id: "r1",
            chat_id: Some("chatcmpl-1"),
            model: Some("m"),
            keyset_digest: DIGEST,
            endpoint: "/v1/chat/completions",
            method: "POST",
            served_at: 1,
            request_received: &sealed,
            request_forwarded: Some(&plain),
            response_returned: &answer,
            key_id: "receipt-1",
        };
        let doc = sign_receipt(&input, &key);
        let v = verify_receipt(&doc, &ks, DIGEST).unwrap();
        v.check_bodies(b"sealed", b"answer").unwrap();
        assert!(v.rewritten());
        assert!(verify_receipt(&Value::from("x"), &ks, DIGEST).is_err());
    }
}
