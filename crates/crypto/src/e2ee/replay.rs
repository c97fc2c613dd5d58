//! Refusing a replayed request by its encapsulated key.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use super::ENC_LEN;
use crate::{Error, Result};

/// The `enc` values of requests opened in the last `ttl`, at most `capacity` of them.
///
/// Each request has a fresh ephemeral key, so a second request with the same `enc` is a replay.
/// The guard forgets an `enc` after `ttl`: the caller must also refuse requests older than `ttl`
/// (a timestamp inside the sealed body or its AAD), or a replay after `ttl` would pass. When full of
/// unexpired entries it refuses with [`Error::ReplayCacheFull`] rather than forget one early.
/// Replays across a node restart need no guard: the node's E2EE key is new, so they do not open.
#[derive(Debug)]
pub struct ReplayGuard {
    ttl: Duration,
    capacity: usize,
    seen: HashSet<[u8; ENC_LEN]>,
    /// Insertion order, oldest first, for expiry.
    order: VecDeque<(Instant, [u8; ENC_LEN])>,
}

impl ReplayGuard {
    /// A guard remembering each `enc` for `ttl`, and at most `capacity` at once.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity,
            seen: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    /// Records `enc`, or returns [`Error::Replayed`] if it was seen within the TTL. Call it only
    /// after the request has opened, so forged envelopes cannot fill the cache.
    pub fn check_and_insert(&mut self, enc: &[u8; ENC_LEN]) -> Result<()> {
        self.check_and_insert_at(enc, Instant::now())
    }

    /// [`Self::check_and_insert`] at a given time (for tests and callers with their own clock).
    pub fn check_and_insert_at(&mut self, enc: &[u8; ENC_LEN], now: Instant) -> Result<()> {
        self.expire(now);
        if self.seen.contains(enc) {
            return Err(Error::Replayed);
        }
        if self.seen.len() >= self.capacity {
            return Err(Error::ReplayCacheFull);
        }
        self.seen.insert(*enc);
        self.order.push_back((now, *enc));
        Ok(())
    }

    /// How many `enc` values are remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, enc)) = self.order.front() {
            if now.saturating_duration_since(*at) < self.ttl {
                break;
            }
            self.seen.remove(enc);
            self.order.pop_front();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn replay_refused_until_ttl_then_forgotten() {
        let t0 = Instant::now();
        let mut guard = ReplayGuard::new(Duration::from_secs(60), 8);
        guard.check_and_insert_at(&[1; 32], t0).unwrap();
        assert!(matches!(
            guard.check_and_insert_at(&[1; 32], t0),
            Err(Error::Replayed)
        ));
        guard
            .check_and_insert_at(&[2; 32], t0 + Duration::from_secs(30))
            .unwrap();
        assert!(matches!(
            guard.check_and_insert_at(&[1; 32], t0 + Duration::from_secs(59)),
            Err(Error::Replayed)
        ));
        guard
            .check_and_insert_at(&[1; 32], t0 + Duration::from_secs(61))
            .unwrap();
        assert_eq!(guard.len(), 2);
    }

    #[test]
    fn full_cache_fails_closed() {
        let t0 = Instant::now();
        let mut guard = ReplayGuard::new(Duration::from_secs(60), 2);
        guard.check_and_insert_at(&[1; 32], t0).unwrap();
        guard.check_and_insert_at(&[2; 32], t0).unwrap();
        assert!(matches!(
            guard.check_and_insert_at(&[3; 32], t0),
            Err(Error::ReplayCacheFull)
        ));
        assert!(matches!(
            guard.check_and_insert_at(&[1; 32], t0),
            Err(Error::Replayed)
        ));
        guard
            .check_and_insert_at(&[3; 32], t0 + Duration::from_secs(60))
            .unwrap();
    }
}
