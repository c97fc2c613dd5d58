//! The node as an ACI service (`aci/1`, docs/protocol.md §11): its workload keyset, the receipts
//! it issues for every inference, and what it publishes as source provenance.
//!
//! The keyset lists an Ed25519 receipt key generated inside the node at start, the node's HPKE
//! key (Cloister's E2EE, protocol §8) and no TLS key (the node does not terminate TLS; a TLS
//! front inside the same TEE would add its SPKI). `not_after` rolls forward daily, so the keyset
//! (and its digest) changes at most once a day while the keys live as long as the process.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::HeaderValue;
use cloister_attest::aci::receipt::{ReceiptInput, sign_receipt};
use cloister_attest::aci::{ED25519, KeyEntry, WorkloadKeyset, keyset_digest};
use cloister_crypto::ed25519::Ed25519Key;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::sigcache::ExpiringCache;

/// The E2EE algorithm name the keyset gives the node's HPKE key: Cloister's own envelope
/// (protocol §8), which generic ACI clients ignore as an unrecognized `algo`.
pub(crate) const CLOISTER_E2EE_ALGO: &str = "cloister-e2ee-v1-x25519-hkdf-sha256-chacha20poly1305";
/// `service_capabilities.supported_e2ee_versions`: none of ACI's own E2EE extensions.
const SECONDS_PER_DAY: u64 = 86_400;
/// The keyset expires 7 to 8 days ahead: within any verifier's plausibility bound.
const LIFETIME_DAYS: u64 = 8;

/// What a receipt states, kept from the exchange it is about. The document is built and signed
/// only when someone fetches it (Ed25519 is deterministic, so it is the same document whenever it
/// is signed): an inference pays for a few strings, not for a canonicalization and a signature.
#[derive(Clone, Debug)]
pub(crate) struct StoredReceipt {
    model: String,
    endpoint: &'static str,
    served_at: u64,
    /// The keyset digest when the exchange was served.
    keyset_digest: Arc<str>,
    /// `sha256:` + hex of the request bytes as received.
    request: String,
    /// `sha256:` + hex of the response bytes as returned.
    response: String,
    /// SHA-256 of the bearer token that made the request (ACI §7.6); `None`: public.
    pub(crate) credential: Option<[u8; 32]>,
}

/// What one receipt is about, besides the hashes the signature text already holds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReceiptMeta<'a> {
    /// The model the client asked for.
    pub(crate) model: &'a str,
    /// The API path.
    pub(crate) endpoint: &'static str,
    /// SHA-256 of the request's bearer token, when it had one.
    pub(crate) credential: Option<[u8; 32]>,
}

/// The node's ACI identity and receipt store.
pub(crate) struct AciService {
    receipt_key: Ed25519Key,
    key_id: String,
    e2ee_public_key: [u8; 32],
    receipts: Mutex<ExpiringCache<StoredReceipt>>,
    /// The keyset of the current `not_after` as JSON, and its digest: it changes once a day, while
    /// every response's `X-ACI-Keyset-Digest` and every receipt name it.
    current: Mutex<Option<Arc<CurrentKeyset>>>,
}

/// The keyset for one `not_after`, canonicalized and hashed once.
#[derive(Clone, Debug)]
struct CurrentKeyset {
    not_after: u64,
    json: Value,
    digest: Arc<str>,
    /// `digest` as a header value, ready for every response.
    header: Option<HeaderValue>,
}

impl std::fmt::Debug for AciService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AciService")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl AciService {
    /// A fresh receipt key; receipts kept for `ttl`, at most `max`.
    pub(crate) fn new(e2ee_public_key: [u8; 32], ttl: Duration, max: usize) -> Self {
        let receipt_key = Ed25519Key::generate();
        let key_id = format!("receipt-{}", &hex::encode(receipt_key.public_key())[..16]);
        Self {
            receipt_key,
            key_id,
            e2ee_public_key,
            receipts: Mutex::new(ExpiringCache::new(ttl, max)),
            current: Mutex::new(None),
        }
    }

    /// The keyset valid at `now_unix`.
    pub(crate) fn keyset(&self, now_unix: u64) -> WorkloadKeyset {
        WorkloadKeyset {
            subject: None,
            not_after: not_after(now_unix),
            receipt_signing_keys: vec![KeyEntry {
                key_id: self.key_id.clone(),
                algo: ED25519.to_owned(),
                public_key: hex::encode(self.receipt_key.public_key()),
            }],
            e2ee_public_keys: vec![KeyEntry {
                key_id: "cloister-hpke".to_owned(),
                algo: CLOISTER_E2EE_ALGO.to_owned(),
                public_key: hex::encode(self.e2ee_public_key),
            }],
            tls_public_keys: Vec::new(),
        }
    }

    /// The keyset at `now_unix` as JSON, and its digest.
    pub(crate) fn keyset_json(&self, now_unix: u64) -> (Value, String) {
        let current = self.current(now_unix);
        (current.json.clone(), current.digest.to_string())
    }

    /// The keyset digest at `now_unix` (`X-ACI-Keyset-Digest`).
    pub(crate) fn keyset_digest(&self, now_unix: u64) -> Arc<str> {
        Arc::clone(&self.current(now_unix).digest)
    }

    /// [`Self::keyset_digest`] as a header value (`None` only if it were not header-safe).
    pub(crate) fn keyset_digest_header(&self, now_unix: u64) -> Option<HeaderValue> {
        self.current(now_unix).header.clone()
    }

    /// The keyset of `now_unix`'s `not_after`, built and hashed only when that day's is not held.
    fn current(&self, now_unix: u64) -> Arc<CurrentKeyset> {
        let mut held = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(current) = held.as_ref().filter(|c| c.not_after == not_after(now_unix)) {
            return Arc::clone(current);
        }
        let keyset = self.keyset(now_unix);
        let not_after = keyset.not_after;
        let json = serde_json::to_value(keyset).unwrap_or(Value::Null);
        // Strings and integers only: the canonical form exists.
        let digest: Arc<str> = keyset_digest(&json).unwrap_or_default().into();
        let current = Arc::new(CurrentKeyset {
            not_after,
            json,
            header: HeaderValue::from_str(&digest).ok(),
            digest,
        });
        *held = Some(Arc::clone(&current));
        current
    }

    /// Records the receipt for exchange `id` whose signature text (`sha256(request) ":"
    /// sha256(response)`, hex) is `text`: the receipt commits to the same bytes the node's
    /// signature does. It is signed when fetched ([`Self::document`]).
    pub(crate) fn issue(&self, id: &str, text: &str, meta: ReceiptMeta<'_>) {
        let Some((request, response)) = text.split_once(':') else {
            tracing::warn!(id, "no receipt: the signature text is not two hashes");
            return;
        };
        let now = crate::unix_now();
        let stored = StoredReceipt {
            model: meta.model.to_owned(),
            endpoint: meta.endpoint,
            served_at: now,
            keyset_digest: self.keyset_digest(now),
            request: format!("sha256:{request}"),
            response: format!("sha256:{response}"),
            credential: meta.credential,
        };
        self.store().insert(id.to_owned(), stored, Instant::now());
    }

    /// The receipt `id`, if still held.
    pub(crate) fn receipt(&self, id: &str) -> Option<StoredReceipt> {
        self.store().get(id, Instant::now())
    }

    /// The signed receipt document of exchange `id` (§7).
    pub(crate) fn document(&self, id: &str, stored: &StoredReceipt) -> Value {
        sign_receipt(
            &ReceiptInput {
                receipt_id: id,
                chat_id: Some(id),
                model: Some(&stored.model),
                keyset_digest: &stored.keyset_digest,
                endpoint: stored.endpoint,
                method: "POST",
                served_at: stored.served_at,
                request_received: &stored.request,
                request_forwarded: None,
                response_returned: &stored.response,
                key_id: &self.key_id,
            },
            &self.receipt_key,
        )
    }

    fn store(&self) -> std::sync::MutexGuard<'_, ExpiringCache<StoredReceipt>> {
        self.receipts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The keyset's expiry at `now_unix`: midnight UTC, 7 to 8 days ahead.
fn not_after(now_unix: u64) -> u64 {
    (now_unix / SECONDS_PER_DAY + LIFETIME_DAYS) * SECONDS_PER_DAY
}

/// SHA-256 of a bearer token, the form a receipt's credential binding is kept in (§7.6).
pub(crate) fn credential_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Source provenance from the build (§4.1): set `CLOISTER_SOURCE_REPO`, `CLOISTER_SOURCE_COMMIT`
/// and `CLOISTER_IMAGE_DIGEST` when building a release image (deploy/); each is `null` when unknown.
pub(crate) fn source_provenance() -> Value {
    json!({
        "repo_url": option_env!("CLOISTER_SOURCE_REPO"),
        "repo_commit": option_env!("CLOISTER_SOURCE_COMMIT"),
        "image_digest": option_env!("CLOISTER_IMAGE_DIGEST"),
        "image_provenance": Value::Null,
    })
}
