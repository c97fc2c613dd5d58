//! Reaching nodes through a gateway (`cloister gateway`): the gateway lists the nodes it routes to
//! (`GET /v1/gateway/nodes?model=`), best first, and forwards each request to the node the client
//! names. The client trusts none of it for integrity: each node is verified end to end (nonce,
//! quote, key binding, allowlist) through the gateway, requests are sealed to that node, and a
//! report attesting any node but the one named is refused. The list only decides where to try.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy_primitives::Address;
use cloister_types::gateway::{GatewayNetwork, GatewayNodeList};
use cloister_types::wire;

use crate::{Error, NodeClient, Policy, Result, node_base};

/// How long a node list is reused before the gateway is asked again.
const LIST_TTL: Duration = Duration::from_secs(2);
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
}

/// A node list as fetched: when, and each node's (signer, operator).
type CachedList = (Instant, Vec<(Address, Address)>);

impl GatewayRoute {
    /// Routes through the gateway at `url`; nodes are verified under `policy`.
    pub fn new(url: &str, policy: Arc<Policy>) -> Result<Self> {
        Ok(Self {
            base: node_base(url),
            http: crate::default_http_client()?,
            policy,
            clients: Mutex::new(HashMap::new()),
            lists: Mutex::new(HashMap::new()),
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

    /// The candidates for `model`, in the gateway's order (cached for a moment).
    pub async fn candidates(&self, model: &str) -> Result<Vec<Candidate>> {
        let cached = lock(&self.lists)
            .get(model)
            .filter(|(at, _)| at.elapsed() < LIST_TTL)
            .map(|(_, list)| list.clone());
        let list = match cached {
            Some(list) => list,
            None => {
                let got: GatewayNodeList = self
                    .get_json(wire::GATEWAY_NODES_PATH, &[(wire::QUERY_MODEL, model)])
                    .await?;
                let list: Vec<(Address, Address)> = got
                    .data
                    .iter()
                    .take(MAX_CANDIDATES)
                    .filter_map(|n| Some((n.signing_address.parse().ok()?, n.operator.parse().ok()?)))
                    .collect();
                lock(&self.lists).insert(model.to_owned(), (Instant::now(), list.clone()));
                list
            }
        };
        let mut clients = lock(&self.clients);
        let mut out = Vec::with_capacity(list.len());
        for (signer, operator) in list {
            let client = match clients.get(&signer) {
                Some(c) => c.clone(),
                None => {
                    let c = NodeClient::via_gateway(&self.base, signer, Arc::clone(&self.policy))?;
                    clients.insert(signer, c.clone());
                    c
                }
            };
            out.push(Candidate {
                client,
                operator: Some(operator),
            });
        }
        if out.is_empty() {
            return Err(Error::NoNodeForModel {
                model: model.to_owned(),
            });
        }
        Ok(out)
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
