//! The explorer's own chain reads, cached: the registry's pending measurement changes and the
//! running settlement figures from the `Escrow`'s `Settled` events.
//!
//! Settlements are tallied incrementally: each refresh scans only the blocks after the last one
//! read (from the deployment block the first time). The figures are for display; a reorg that
//! removes a settlement already tallied is not subtracted until the gateway restarts.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use alloy_primitives::{Address, U256};
use cloister_client::discover::escrow::{self, PendingMeasurement, Settlement};
use cloister_types::logscan::LogScanLimits;
use cloister_types::unix_now;

use crate::Gateway;

/// How many of the latest settlements the page lists.
pub const RECENT: usize = 20;

/// One node's (operator's) settled earnings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Earnings {
    /// Sum of what its settlements paid (token base units).
    pub paid: U256,
    /// How many settlements paid it.
    pub settlements: u64,
}

/// The running settlement figures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// The last block read, when any was.
    pub scanned_to: Option<u64>,
    /// Earnings by operator (the `Settled` event's `node`).
    pub by_node: HashMap<Address, Earnings>,
    /// The latest settlements, newest first, at most [`RECENT`].
    pub recent: VecDeque<Settlement>,
    /// Sum of everything paid.
    pub total_paid: U256,
    /// How many settlements.
    pub count: u64,
}

impl Tally {
    /// Adds the settlements of one scan (in chain order) that ended at block `scanned_to`.
    pub fn add(&mut self, settlements: &[Settlement], scanned_to: u64) {
        for s in settlements {
            let e = self.by_node.entry(s.node).or_default();
            e.paid = e.paid.saturating_add(s.paid);
            e.settlements = e.settlements.saturating_add(1);
            self.total_paid = self.total_paid.saturating_add(s.paid);
            self.count = self.count.saturating_add(1);
            self.recent.push_front(*s);
            self.recent.truncate(RECENT);
        }
        self.scanned_to = Some(scanned_to);
    }
}

/// What the explorer read from the chain, beyond the directory's view.
#[derive(Clone, Debug)]
pub struct ChainView {
    /// The pending measurement changes, or why they could not be read.
    pub pending: Result<Vec<PendingMeasurement>, String>,
    /// The settlement figures (as of the last successful scan).
    pub tally: Tally,
    /// Why the last settlement scan failed, if it did; `None` also when no escrow is known.
    pub settlement_error: Option<String>,
    /// Whether an `Escrow` is known to read.
    pub has_escrow: bool,
    /// When these reads were made (unix seconds; 0: never).
    pub read_at: u64,
    fetched: Option<Instant>,
}

impl ChainView {
    /// Nothing read yet.
    pub fn unread() -> Self {
        Self {
            pending: Ok(Vec::new()),
            tally: Tally::default(),
            settlement_error: None,
            has_escrow: false,
            read_at: 0,
            fetched: None,
        }
    }
}

/// The cache: one refresh at a time, reused for its time to live.
#[derive(Debug)]
pub struct ChainCache {
    ttl: Duration,
    current: RwLock<Arc<ChainView>>,
    /// Held while refreshing; it owns the running tally.
    refreshing: tokio::sync::Mutex<Tally>,
}

impl ChainCache {
    /// An empty cache whose reads live `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            current: RwLock::new(Arc::new(ChainView::unread())),
            refreshing: tokio::sync::Mutex::new(Tally::default()),
        }
    }

    fn current(&self) -> Arc<ChainView> {
        match self.current.read() {
            Ok(g) => Arc::clone(&g),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    fn fresh(&self, view: &ChainView) -> bool {
        view.fetched.is_some_and(|t| t.elapsed() < self.ttl)
    }

    /// The chain view: the cached one while fresh, or while another request refreshes it (the
    /// first load waits for the first read); else read now.
    pub async fn get(&self, gw: &Gateway) -> Arc<ChainView> {
        let cached = self.current();
        if self.fresh(&cached) {
            return cached;
        }
        let mut tally = if cached.fetched.is_none() {
            self.refreshing.lock().await
        } else {
            match self.refreshing.try_lock() {
                Ok(t) => t,
                Err(_) => return cached,
            }
        };
        let cached = self.current();
        if self.fresh(&cached) {
            return cached;
        }
        let view = Arc::new(read(gw, &mut tally).await);
        match self.current.write() {
            Ok(mut g) => *g = Arc::clone(&view),
            Err(poisoned) => *poisoned.into_inner() = Arc::clone(&view),
        }
        view
    }
}

/// Reads the pending changes and the settlements after `tally.scanned_to`, each within the
/// gateway's verification time limit.
async fn read(gw: &Gateway, tally: &mut Tally) -> ChainView {
    let config = gw.config();
    let http = &gw.inner.http;
    let limit = config.verify_timeout;
    let pending =
        match tokio::time::timeout(limit, escrow::pending_measurements(http, &config.registry)).await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {limit:?}")),
        };
    let mut settlement_error = None;
    if let Some(escrow_address) = config.escrow {
        let limits = LogScanLimits {
            from_block: tally
                .scanned_to
                .map_or(config.log_limits.from_block, |b| b.saturating_add(1)),
            max_range: config.log_limits.max_range,
        };
        let scan = escrow::settlements(
            http,
            &config.registry.rpc_url,
            config.registry.chain_id,
            escrow_address,
            limits,
        );
        match tokio::time::timeout(limit, scan).await {
            Ok(Ok(scan)) => tally.add(&scan.settlements, scan.scanned_to),
            Ok(Err(e)) => settlement_error = Some(e.to_string()),
            Err(_) => settlement_error = Some(format!("no answer within {limit:?}")),
        }
        if let Some(e) = &settlement_error {
            tracing::warn!("explorer: reading the settlements failed: {e}");
        }
    }
    ChainView {
        pending,
        tally: tally.clone(),
        settlement_error,
        has_escrow: config.escrow.is_some(),
        read_at: unix_now(),
        fetched: Some(Instant::now()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::B256;

    fn settled(node: u8, paid: u64) -> Settlement {
        Settlement {
            authorization: B256::repeat_byte(node),
            node: Address::repeat_byte(node),
            client: Address::repeat_byte(9),
            cumulative: U256::from(paid),
            paid: U256::from(paid),
        }
    }

    #[test]
    fn the_tally_sums_per_node_and_keeps_the_latest_first() {
        let mut t = Tally::default();
        t.add(&[settled(1, 5), settled(2, 7)], 10);
        t.add(&[], 11);
        t.add(&[settled(1, 3)], 12);
        assert_eq!(t.scanned_to, Some(12));
        assert_eq!(t.count, 3);
        assert_eq!(t.total_paid, U256::from(15));
        assert_eq!(
            t.by_node[&Address::repeat_byte(1)],
            Earnings {
                paid: U256::from(8),
                settlements: 2
            }
        );
        assert_eq!(t.recent.front().map(|s| s.paid), Some(U256::from(3)));
        let many: Vec<Settlement> = (0..(RECENT as u64 + 5)).map(|i| settled(3, i)).collect();
        t.add(&many, 13);
        assert_eq!(t.recent.len(), RECENT);
        assert_eq!(
            t.recent.front().map(|s| s.paid),
            Some(U256::from(RECENT as u64 + 4))
        );
    }
}
