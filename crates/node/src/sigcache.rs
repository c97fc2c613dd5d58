//! A bounded, expiring store keyed by completion id: response signatures
//! ([`SignatureCache`]) and ACI receipts.
//!
//! A stream's signature is made when it is first asked for (`GET /v1/signature/{id}`), not when
//! the stream ends ([`SignedText`]): RFC 6979 nonces make an ECDSA signature a function of key and
//! text, so the signature made later is byte for byte the one made at once, and a stream whose
//! signature nobody fetches never pays for one.
//!
//! Bounded twice: by age (`ttl`) and by count (`max`). Entries are kept in insertion order, which is
//! also expiry order, so expired entries are dropped from the front on every insert (and lazily on
//! lookup), and a full cache drops its oldest entry first. Memory is O(max) whatever clients do.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use cloister_crypto::EnclaveKey;

/// Signed texts served by `GET /v1/signature/{id}`.
pub(crate) type SignatureCache = ExpiringCache<Arc<SignedText>>;

/// An answer's signed text (`sha256(request):sha256(response)`) and its EIP-191 signature, made
/// at most once, when first needed.
#[derive(Debug)]
pub(crate) struct SignedText {
    text: String,
    signature: OnceLock<String>,
}

impl SignedText {
    /// A text whose signature is made by the first [`Self::signature`] call.
    pub(crate) fn unsigned(text: String) -> Self {
        Self {
            text,
            signature: OnceLock::new(),
        }
    }

    /// The signed text.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// The `0x` signature of the text by `key` (always the same key: the node's), made on the first
    /// call, which also calls `made`; concurrent first calls wait for one signing.
    pub(crate) fn signature(&self, key: &EnclaveKey, made: impl FnOnce()) -> &str {
        self.signature.get_or_init(|| {
            made();
            key.sign_personal_hex(self.text.as_bytes())
        })
    }

    /// Whether the signature has been made.
    #[cfg(test)]
    pub(crate) fn is_signed(&self) -> bool {
        self.signature.get().is_some()
    }
}

#[derive(Debug)]
struct Entry<V> {
    record: V,
    inserted: Instant,
    seq: u64,
}

/// Values by id, bounded by age and count.
///
/// Not synchronised: the node keeps it behind a `std::sync::Mutex` held only for one call.
#[derive(Debug)]
pub(crate) struct ExpiringCache<V> {
    ttl: Duration,
    max: usize,
    entries: HashMap<String, Entry<V>>,
    /// (id, seq) in insertion order; a stale pair (id re-inserted since) is skipped.
    order: VecDeque<(String, u64)>,
    next_seq: u64,
}

impl<V: Clone> ExpiringCache<V> {
    /// An empty cache.
    pub(crate) fn new(ttl: Duration, max: usize) -> Self {
        Self {
            ttl,
            max,
            entries: HashMap::new(),
            order: VecDeque::new(),
            next_seq: 0,
        }
    }

    /// Stores `record` under `id` at time `now`, evicting expired and, if full, oldest entries.
    pub(crate) fn insert(&mut self, id: String, record: V, now: Instant) {
        self.purge_expired(now);
        if self.max == 0 {
            return;
        }
        if self.entries.remove(&id).is_some() {
            // Its old slot in `order` is now stale and will be skipped.
            self.compact_if_sparse();
        }
        while self.entries.len() >= self.max {
            if !self.pop_oldest() {
                break;
            }
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.order.push_back((id.clone(), seq));
        self.entries.insert(
            id,
            Entry {
                record,
                inserted: now,
                seq,
            },
        );
    }

    /// The record for `id` if present and younger than the TTL at `now`.
    pub(crate) fn get(&mut self, id: &str, now: Instant) -> Option<V> {
        let expired = match self.entries.get(id) {
            None => return None,
            Some(e) => self.is_expired(e, now),
        };
        if expired {
            self.purge_expired(now);
            self.entries.remove(id);
            return None;
        }
        self.entries.get(id).map(|e| e.record.clone())
    }

    /// Number of entries held (expired ones not yet dropped included).
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    fn is_expired(&self, e: &Entry<V>, now: Instant) -> bool {
        now.saturating_duration_since(e.inserted) >= self.ttl
    }

    /// Drops the oldest live entry; false when there is none.
    fn pop_oldest(&mut self) -> bool {
        while let Some((id, seq)) = self.order.pop_front() {
            if self.entries.get(&id).is_some_and(|e| e.seq == seq) {
                self.entries.remove(&id);
                return true;
            }
        }
        false
    }

    fn purge_expired(&mut self, now: Instant) {
        while let Some((id, seq)) = self.order.front() {
            let live = match self.entries.get(id) {
                Some(e) if e.seq == *seq => Some(self.is_expired(e, now)),
                _ => None,
            };
            match live {
                // Insertion order is expiry order: the first unexpired entry ends the sweep.
                Some(false) => break,
                Some(true) => {
                    let id = id.clone();
                    self.entries.remove(&id);
                    self.order.pop_front();
                }
                None => {
                    self.order.pop_front();
                }
            }
        }
    }

    /// Keeps `order` from growing with stale pairs when ids are re-inserted.
    fn compact_if_sparse(&mut self) {
        if self.order.len() > self.entries.len().saturating_mul(2).saturating_add(16) {
            let entries = &self.entries;
            self.order
                .retain(|(id, seq)| entries.get(id).is_some_and(|e| e.seq == *seq));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloister_types::SignatureRecord;

    type SignatureCache = ExpiringCache<SignatureRecord>;

    #[test]
    fn a_deferred_signature_is_the_one_made_at_once() {
        let key = EnclaveKey::generate();
        let text = format!("{}:{}", "ab".repeat(32), "cd".repeat(32));
        let signed = SignedText::unsigned(text.clone());
        assert!(!signed.is_signed());
        assert_eq!(signed.text(), text);
        let mut made = 0;
        let first = signed.signature(&key, || made += 1).to_owned();
        assert!(signed.is_signed());
        assert_eq!(first, key.sign_personal_hex(text.as_bytes()));
        assert_eq!(
            signed.signature(&key, || made += 1),
            first,
            "made once, then kept"
        );
        assert_eq!(made, 1);
    }

    fn record(n: u32) -> SignatureRecord {
        SignatureRecord {
            text: format!("text-{n}"),
            signature: "0x00".to_owned(),
            signing_address: "0x00".to_owned(),
            signing_algo: "ecdsa".to_owned(),
        }
    }

    #[test]
    fn count_bound_evicts_oldest_first() {
        let now = Instant::now();
        let mut cache = SignatureCache::new(Duration::from_secs(60), 3);
        for i in 0..5 {
            cache.insert(format!("id{i}"), record(i), now);
        }
        assert_eq!(cache.len(), 3);
        assert!(cache.get("id0", now).is_none());
        assert!(cache.get("id1", now).is_none());
        for i in 2..5 {
            assert_eq!(cache.get(&format!("id{i}"), now), Some(record(i)));
        }
    }

    #[test]
    fn ttl_bound_expires_lazily_and_on_insert() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(10);
        let mut cache = SignatureCache::new(ttl, 100);
        cache.insert("a".into(), record(1), t0);
        cache.insert("b".into(), record(2), t0 + Duration::from_secs(5));
        assert!(cache.get("a", t0 + Duration::from_secs(9)).is_some());
        // Lazily on lookup.
        assert!(cache.get("a", t0 + ttl).is_none());
        assert_eq!(cache.len(), 1);
        // On insert: "b" has expired by then and is swept.
        cache.insert("c".into(), record(3), t0 + Duration::from_secs(16));
        assert_eq!(cache.len(), 1);
        assert!(cache.get("c", t0 + Duration::from_secs(16)).is_some());
    }

    #[test]
    fn reinsert_replaces_and_keeps_bounds() {
        let now = Instant::now();
        let mut cache = SignatureCache::new(Duration::from_secs(60), 2);
        for _ in 0..100 {
            cache.insert("same".into(), record(1), now);
        }
        cache.insert("same".into(), record(2), now);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get("same", now), Some(record(2)));
        assert!(cache.order.len() <= 19, "stale slots are compacted");
        cache.insert("x".into(), record(3), now);
        cache.insert("y".into(), record(4), now);
        assert_eq!(cache.len(), 2);
        assert!(cache.get("same", now).is_none());
    }

    #[test]
    fn zero_capacity_stores_nothing() {
        let now = Instant::now();
        let mut cache = SignatureCache::new(Duration::from_secs(60), 0);
        cache.insert("a".into(), record(1), now);
        assert_eq!(cache.len(), 0);
        assert!(cache.get("a", now).is_none());
    }
}
