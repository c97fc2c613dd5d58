//! Reaching nodes through a gateway (`cloister gateway`): the gateway lists the nodes it routes to
//! (`GET /v1/gateway/nodes?model=`), best first, and forwards each request to the node the client
//! names. The client trusts none of it for integrity: each node is verified end to end (nonce,
//! quote, key binding, allowlist) through the gateway, requests are sealed to that node, and a
//! report attesting any node but the one named is refused. The list only decides where to try.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy_primitives::Address;
use cloister_types::gateway::{GatewayNetwork, GatewayNode};
use cloister_types::wire;
use serde::Deserialize as _;

use crate::{Error, NodeClient, Policy, Result, node_base};

/// How long a node list is reused before the gateway is asked again.
const LIST_TTL: Duration = Duration::from_secs(2);
/// How long a node that failed is tried last.
const DEMOTED_FOR: Duration = Duration::from_secs(10);
/// Most nodes taken from one list.
const MAX_CANDIDATES: usize = 64;

/// A node to try: its client (routed through the gateway) and its operator (the payee).
#[derive(Clone, Debug)]
pub struct Candidate {
    /// The client, verifying the node end to end through the gateway.
    pub client: NodeClient,
    /// The node's operator, as the gateway's registry read says (an authorization for a wrong
    /// operator is refused by the node, never paid).
    pub operator: Option<Address>,
}

/// A gateway's node lists and one verifying client per node.
#[derive(Debug)]
pub struct GatewayRoute {
    base: String,
    http: reqwest::Client,
    policy: Arc<Policy>,
    clients: Mutex<HashMap<Address, NodeClient>>,
    lists: Mutex<HashMap<String, CachedList>>,
    turn: std::sync::atomic::AtomicUsize,
    demoted: Mutex<HashMap<Address, Instant>>,
}

/// A node list as fetched: when, and each node's (signer, operator).
type CachedList = (Instant, Vec<Listed>);

/// One listed node: signer, operator, and its input+output price for the model.
#[derive(Clone, Copy, Debug)]
struct Listed {
    signer: Address,
    operator: Address,
    price: alloy_primitives::U256,
}

impl GatewayRoute {
    /// Routes through the gateway at `url`; nodes are verified under `policy`.
    pub fn new(url: &str, policy: Arc<Policy>) -> Result<Self> {
        Ok(Self {
            base: node_base(url),
            http: crate::default_http_client()?,
            policy,
            clients: Mutex::new(HashMap::new()),
            lists: Mutex::new(HashMap::new()),
            turn: std::sync::atomic::AtomicUsize::new(0),
            demoted: Mutex::new(HashMap::new()),
        })
    }

    /// The gateway's base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// `GET /v1/gateway/network`: the chain and escrow the gateway reads.
    pub async fn network(&self) -> Result<GatewayNetwork> {
        self.get_json(wire::GATEWAY_NETWORK_PATH, &[]).await
    }

    /// The candidates for `model`, in the gateway's order (cached for a moment), except that
    /// requests take turns over the leading nodes of equal price: the gateway's load view is as old
    /// as the cached list, so this spreads load between its refreshes.
    pub async fn candidates(&self, model: &str) -> Result<Vec<Candidate>> {
        let cached = lock(&self.lists)
            .get(model)
            .filter(|(at, _)| at.elapsed() < LIST_TTL)
            .map(|(_, list)| list.clone());
        let mut list = match cached {
            Some(list) => list,
            None => {
                let got: RawNodeList = self
                    .get_json(wire::GATEWAY_NODES_PATH, &[(wire::QUERY_MODEL, model)])
                    .await?;
                let list = usable(&got.data, model);
                lock(&self.lists).insert(model.to_owned(), (Instant::now(), list.clone()));
                list
            }
        };
        let tier = list.first().map_or(0, |best| {
            list.iter().take_while(|n| n.price == best.price).count()
        });
        if tier > 1 {
            let turn = self.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            list[..tier].rotate_left(turn % tier);
        }
        // Nodes that just failed go last (stable: the order among the others is kept).
        {
            let mut demoted = lock(&self.demoted);
            demoted.retain(|_, at| at.elapsed() < DEMOTED_FOR);
            if !demoted.is_empty() {
                list.sort_by_key(|n| demoted.contains_key(&n.signer));
            }
        }
        let mut clients = lock(&self.clients);
        let mut out = Vec::with_capacity(list.len());
        for listed in list {
            let client = match clients.get(&listed.signer) {
                Some(c) => c.clone(),
                None => {
                    let c = NodeClient::via_gateway(&self.base, listed.signer, Arc::clone(&self.policy))?;
                    clients.insert(listed.signer, c.clone());
                    c
                }
            };
            out.push(Candidate {
                client,
                operator: Some(listed.operator),
            });
        }
        if out.is_empty() {
            return Err(Error::NoNodeForModel {
                model: model.to_owned(),
            });
        }
        Ok(out)
    }

    /// Tries node `signer` last for a while: it just failed (unreachable, 5xx, 429 or refused).
    pub fn demote(&self, signer: Address) {
        lock(&self.demoted).insert(signer, Instant::now());
    }

    /// Forgets the cached list for `model` (after every candidate failed).
    pub fn forget(&self, model: &str) {
        lock(&self.lists).remove(model);
    }

    /// The gateway's model list, as it is.
    pub async fn models(&self) -> Result<cloister_types::openai::ModelList> {
        self.get_json(wire::MODELS_PATH, &[]).await
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T> {
        let url = format!("{}{path}", self.base);
        let body = crate::body::fetch(self.http.get(&url).query(query), &url)
            .await?
            .0;
        serde_json::from_slice(&body)
            .map_err(|e| Error::MalformedResponse(format!("the gateway's {path} answer: {e}")))
    }
}

/// `GET /v1/gateway/nodes` as sent: each entry is read on its own, so a malformed one costs only
/// itself (the list is untrusted; it only decides where to try).
#[derive(serde::Deserialize)]
struct RawNodeList {
    data: Vec<serde_json::Value>,
}

/// The well-formed entries of a node list that serve `model`, each signer once (its first entry:
/// a gateway listing a node again, say under another operator, does not get it tried twice), at
/// most [`MAX_CANDIDATES`].
fn usable(entries: &[serde_json::Value], model: &str) -> Vec<Listed> {
    let mut seen = std::collections::HashSet::new();
    entries
        .iter()
        .filter_map(|entry| {
            let n = GatewayNode::deserialize(entry).ok()?;
            let m = n.model(model)?;
            let input: alloy_primitives::U256 = m.input_price.parse().ok()?;
            let output: alloy_primitives::U256 = m.output_price.parse().ok()?;
            Some(Listed {
                signer: n.signing_address.parse().ok()?,
                operator: n.operator.parse().ok()?,
                price: input.saturating_add(output),
            })
        })
        .filter(|listed| seen.insert(listed.signer))
        .take(MAX_CANDIDATES)
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
