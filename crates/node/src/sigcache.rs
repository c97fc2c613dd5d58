//! A bounded, expiring store keyed by completion id: response signatures
//! ([`SignatureCache`]) and ACI receipts.
//!
//! Bounded twice: by age (`ttl`) and by count (`max`). Entries are kept in insertion order, which is
//! also expiry order, so expired entries are dropped from the front on every insert (and lazily on
//! lookup), and a full cache drops its oldest entry first. Memory is O(max) whatever clients do.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use cloister_types::SignatureRecord;

/// Signatures served by `GET /v1/signature/{id}`.
pub(crate) type SignatureCache = ExpiringCache<SignatureRecord>;

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
