//! The gateway's view of the network: what the registry lists, what the gateway's own
//! verification of each node found, and how each node is doing (requests in flight, latency,
//! failures). Rebuilt from the chain at every refresh; only the load figures carry over.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use alloy_primitives::{Address, U256};
use cloister_attest::check::Check;
use cloister_client::discover::{Discovery, RegisteredNode, discover_with_limits};
use cloister_client::{NodeClient, Policy};
use cloister_types::gateway::{GatewayModel, GatewayNode};
use cloister_types::{Nonce, unix_now};

use crate::GatewayConfig;

/// Consecutive forwarding failures after which a node is left out until it verifies again.
const UNHEALTHY_AFTER: u32 = 3;

/// Live figures of one node, kept across refreshes (keyed by signing address).
#[derive(Debug, Default)]
pub struct NodeStats {
    in_flight: AtomicU32,
    /// Smoothed time to first answer byte, microseconds (0: none yet).
    latency_us: AtomicU64,
    failures: AtomicU32,
    forwarded: AtomicU64,
}

impl NodeStats {
    /// Requests being forwarded now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(AtomicOrdering::Relaxed)
    }

    /// Requests forwarded since the gateway started.
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(AtomicOrdering::Relaxed)
    }

    /// Smoothed latency to the first answer byte, when any answer came.
    pub fn latency(&self) -> Option<Duration> {
        match self.latency_us.load(AtomicOrdering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// Takes a slot if fewer than `max` requests are in flight.
    pub(crate) fn try_acquire(self: &Arc<Self>, max: u32) -> Option<InFlight> {
        self.in_flight
            .fetch_update(AtomicOrdering::AcqRel, AtomicOrdering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        self.forwarded.fetch_add(1, AtomicOrdering::Relaxed);
        Some(InFlight(Arc::clone(self)))
    }

    /// An answer started after `elapsed`: the node is healthy.
    pub(crate) fn answered(&self, elapsed: Duration) {
        let sample = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX).max(1);
        let old = self.latency_us.load(AtomicOrdering::Relaxed);
        let new = if old == 0 { sample } else { (old * 7 + sample) / 8 };
        self.latency_us.store(new.max(1), AtomicOrdering::Relaxed);
        self.failures.store(0, AtomicOrdering::Relaxed);
    }

    /// The node could not be reached.
    pub(crate) fn failed(&self) {
        self.failures.fetch_add(1, AtomicOrdering::Relaxed);
    }

    fn healthy(&self) -> bool {
        self.failures.load(AtomicOrdering::Relaxed) < UNHEALTHY_AFTER
    }
}

/// A request slot on one node; released when dropped (at the end of the answer's body).
#[derive(Debug)]
pub(crate) struct InFlight(Arc<NodeStats>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, AtomicOrdering::AcqRel);
    }
}

/// One registered node and the gateway's verdict on it.
#[derive(Debug)]
pub struct NodeEntry {
    /// What the registry lists.
    pub registered: RegisteredNode,
    /// Whether governance allows its registered measurement now.
    pub measurement_allowed: bool,
    /// `Ok`: the gateway's last verification passed, with the measurement it attested; `Err`: the
    /// refusal's code and message.
    pub verdict: Result<Option<String>, String>,
    /// Each named check of the gateway's last verification (the report's, the quote's and the
    /// policy's), passing or refused; empty when no report was read (unreachable, inactive).
    pub checks: Vec<Check>,
    /// When it was verified (unix seconds).
    pub checked_at: u64,
    /// Live figures.
    pub stats: Arc<NodeStats>,
}

impl NodeEntry {
    /// Whether requests may go to it: verified, active, and not failing.
    pub fn usable(&self) -> bool {
        self.verdict.is_ok() && self.registered.active && self.stats.healthy()
    }

    /// Whether it lists `model`.
    pub fn serves(&self, model: &str) -> bool {
        self.registered.models.iter().any(|m| m == model)
    }

    /// Sum of its input and output price for `model` (for ranking; saturating).
    fn price(&self, model: Option<&str>) -> U256 {
        self.registered
            .prices
            .iter()
            .filter(|p| model.is_none_or(|m| m == p.id))
            .map(|p| p.input.saturating_add(p.output))
            .min()
            .unwrap_or(U256::MAX)
    }

    /// The wire shape.
    pub fn to_wire(&self) -> GatewayNode {
        let r = &self.registered;
        GatewayNode {
            signing_address: format!("{:#x}", r.signer),
            operator: format!("{:#x}", r.operator),
            endpoint: r.endpoint.clone(),
            measurement: format!("{:#x}", r.measurement),
            measurement_allowed: self.measurement_allowed,
            models: r
                .prices
                .iter()
                .map(|p| GatewayModel {
                    id: p.id.clone(),
                    input_price: p.input.to_string(),
                    output_price: p.output.to_string(),
                })
                .collect(),
            verified: self.verdict.is_ok(),
            refusal: self.verdict.clone().err(),
            in_flight: self.stats.in_flight(),
            latency_ms: self.stats.latency().map(|d| d.as_secs_f64() * 1e3),
            checked_at: self.checked_at,
        }
    }
}

/// What one refresh found.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Every registered node (active or not), keyed by nothing: in registry order.
    pub nodes: Vec<Arc<NodeEntry>>,
    /// Why the last registry read failed, if it did (the previous nodes are kept).
    pub registry_error: Option<String>,
    /// When the registry was last read successfully (unix seconds).
    pub read_at: u64,
}

impl Snapshot {
    /// The node with signing address `signer`.
    pub fn node(&self, signer: &Address) -> Option<&Arc<NodeEntry>> {
        self.nodes.iter().find(|n| &n.registered.signer == signer)
    }
}

/// The directory.
#[derive(Debug)]
pub struct Directory {
    config: GatewayConfig,
    http: reqwest::Client,
    current: RwLock<Arc<Snapshot>>,
}

impl Directory {
    pub(crate) fn new(config: GatewayConfig, http: reqwest::Client) -> Self {
        Self {
            config,
            http,
            current: RwLock::new(Arc::new(Snapshot::default())),
        }
    }

    /// The current view.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        match self.current.read() {
            Ok(g) => Arc::clone(&g),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    fn replace(&self, next: Snapshot) {
        let next = Arc::new(next);
        match self.current.write() {
            Ok(mut g) => *g = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
    }

    pub(crate) async fn refresh_forever(self: Arc<Self>) {
        loop {
            tokio::time::sleep(self.config.refresh).await;
            self.refresh().await;
        }
    }

    /// Reads the registry and verifies every active node again. A failed registry read keeps the
    /// previous view (and says why); it never empties the network.
    pub async fn refresh(&self) {
        let previous = self.snapshot();
        let found = match discover_with_limits(&self.http, &self.config.registry, self.config.log_limits)
            .await
        {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(registry = %self.config.registry.registry, "reading the registry failed: {e}");
                self.replace(Snapshot {
                    nodes: previous.nodes.clone(),
                    registry_error: Some(e.to_string()),
                    read_at: previous.read_at,
                });
                return;
            }
        };
        let policy = Arc::new(self.policy_for(&found));
        let checks = found.nodes.iter().map(|node| {
            let policy = Arc::clone(&policy);
            let stats = previous
                .node(&node.signer)
                .map(|n| Arc::clone(&n.stats))
                .unwrap_or_default();
            self.check(node.clone(), policy, stats, &found)
        });
        let nodes = futures::future::join_all(checks).await;
        let verified = nodes.iter().filter(|n| n.verdict.is_ok()).count();
        tracing::info!(nodes = nodes.len(), verified, "registry read and nodes verified");
        self.replace(Snapshot {
            nodes,
            registry_error: None,
            read_at: unix_now(),
        });
    }

    fn policy_for(&self, found: &Discovery) -> Policy {
        let mut policy = self.config.policy.clone();
        if !self.config.own_allowlist {
            policy.allowed_measurements = found.allowlist();
        }
        policy
    }

    /// Verifies one node with a fresh nonce (inactive nodes are listed, not verified).
    async fn check(
        &self,
        node: RegisteredNode,
        policy: Arc<Policy>,
        stats: Arc<NodeStats>,
        found: &Discovery,
    ) -> Arc<NodeEntry> {
        let measurement_allowed = found.allowed_measurements.contains(&node.measurement);
        let mut checks = Vec::new();
        let verdict = if !node.active {
            Err("inactive: the registry lists it as deregistered".to_owned())
        } else {
            let nonce = policy.dev_fixed_nonce.unwrap_or_else(|| Nonce(rand::random()));
            let client = NodeClient::with_http(&node.endpoint, policy, self.http.clone());
            // The proof is read first so that its named checks are kept whatever the verdict;
            // `adopt` then applies the policy exactly as `verify_now` would.
            let verify = async {
                let proof = client.fetch_proof(nonce).await?;
                checks = proof.verdict.checks.as_slice().to_vec();
                client.adopt(proof).await
            };
            match tokio::time::timeout(self.config.verify_timeout, verify).await {
                Err(_) => Err(format!(
                    "node_unreachable: no verified report within {:?}",
                    self.config.verify_timeout
                )),
                Ok(Err(e)) => Err(format!("{}: {e}", e.code())),
                Ok(Ok(v)) if v.signer.address() != Some(node.signer) => Err(format!(
                    "signer_mismatch: the node attests signer {}, the registry lists {:#x}",
                    v.signer_hex, node.signer
                )),
                Ok(Ok(v)) => {
                    // A node that verifies again is given another chance.
                    stats.failures.store(0, AtomicOrdering::Relaxed);
                    Ok(v.measurement.clone())
                }
            }
        };
        if let Err(why) = &verdict {
            tracing::info!(node = %node.endpoint, signer = %node.signer, "node not verified: {why}");
        }
        Arc::new(NodeEntry {
            registered: node,
            measurement_allowed,
            verdict,
            checks,
            checked_at: unix_now(),
            stats,
        })
    }

    /// The usable nodes serving `model` (any model when `None`), best first: fewest requests in
    /// flight, then cheapest, then fastest.
    pub fn ranked(&self, model: Option<&str>) -> Vec<Arc<NodeEntry>> {
        let snap = self.snapshot();
        let mut nodes: Vec<Arc<NodeEntry>> = snap
            .nodes
            .iter()
            .filter(|n| n.usable() && model.is_none_or(|m| n.serves(m)))
            .cloned()
            .collect();
        nodes.sort_by(|a, b| rank(a, b, model));
        nodes
    }

    /// The model ids the usable nodes serve, with how many serve each.
    pub fn models(&self) -> Vec<(String, usize)> {
        let mut by_id: HashMap<String, usize> = HashMap::new();
        for node in self.snapshot().nodes.iter().filter(|n| n.usable()) {
            for m in &node.registered.models {
                *by_id.entry(m.clone()).or_default() += 1;
            }
        }
        let mut models: Vec<(String, usize)> = by_id.into_iter().collect();
        models.sort();
        models
    }
}

fn rank(a: &NodeEntry, b: &NodeEntry, model: Option<&str>) -> Ordering {
    let latency = |n: &NodeEntry| n.stats.latency().unwrap_or(Duration::ZERO);
    a.stats
        .in_flight()
        .cmp(&b.stats.in_flight())
        .then_with(|| a.price(model).cmp(&b.price(model)))
        .then_with(|| latency(a).cmp(&latency(b)))
        .then_with(|| a.registered.signer.cmp(&b.registered.signer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::B256;
    use cloister_client::discover::ModelPrice;

    fn entry(signer: u8, price: u64, in_flight: u32, verified: bool) -> NodeEntry {
        let stats = NodeStats::default();
        stats.in_flight.store(in_flight, AtomicOrdering::Relaxed);
        NodeEntry {
            registered: RegisteredNode {
                operator: Address::repeat_byte(signer),
                signer: Address::repeat_byte(signer),
                endpoint: format!("http://n{signer}"),
                measurement: B256::ZERO,
                attested_at: 1,
                active: true,
                models: vec!["m".into()],
                prices: vec![ModelPrice {
                    id: "m".into(),
                    input: U256::from(price),
                    output: U256::from(price),
                }],
                stake: U256::ZERO,
            },
            measurement_allowed: true,
            verdict: if verified { Ok(None) } else { Err("x".into()) },
            checks: Vec::new(),
            checked_at: 0,
            stats: Arc::new(stats),
        }
    }

    #[test]
    fn load_comes_before_price_and_price_before_address() {
        let cheap_busy = entry(1, 1, 2, true);
        let dear_idle = entry(2, 9, 0, true);
        let cheap_idle = entry(3, 1, 0, true);
        assert_eq!(rank(&dear_idle, &cheap_busy, Some("m")), Ordering::Less);
        assert_eq!(rank(&cheap_idle, &dear_idle, Some("m")), Ordering::Less);
        assert_eq!(rank(&cheap_idle, &cheap_idle, Some("m")), Ordering::Equal);
    }

    #[test]
    fn failing_or_unverified_nodes_are_not_usable() {
        assert!(entry(1, 1, 0, true).usable());
        assert!(!entry(1, 1, 0, false).usable());
        let e = entry(1, 1, 0, true);
        for _ in 0..UNHEALTHY_AFTER {
            e.stats.failed();
        }
        assert!(!e.usable());
        e.stats.answered(Duration::from_millis(2));
        assert!(e.usable());
    }

    #[test]
    fn slots_are_bounded_and_released() {
        let stats = Arc::new(NodeStats::default());
        let a = stats.try_acquire(2);
        let b = stats.try_acquire(2);
        assert!(a.is_some() && b.is_some());
        assert!(stats.try_acquire(2).is_none());
        drop(a);
        assert_eq!(stats.in_flight(), 1);
        assert!(stats.try_acquire(2).is_some());
        assert_eq!(stats.forwarded(), 3);
    }
}
