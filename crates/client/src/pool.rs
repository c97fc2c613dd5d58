//! [`NodePool`]: several nodes serving a model; requests go round-robin and fail over to the next
//! node on a connection error, a 5xx or 429, a gateway's 404 `node_not_found`, or a verification
//! failure. Never to an unverified node.
//!
//! A pool over a gateway ([`NodePool::via_gateway`]) takes its nodes from the gateway's list for
//! each request's model, in the gateway's order, and verifies each end to end itself; with a
//! [`Wallet`] it pays each node under an authorization signed for that node's operator.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use cloister_types::openai::{Model, ModelList};
use cloister_types::wire;

use crate::gateway::{Candidate, GatewayRoute};
use crate::node::{ChatStream, NodeClient, RequestOptions, VerifiedResponse};
use crate::policy::Policy;
use crate::wallet::Wallet;
use crate::{Error, Result};

/// A set of nodes.
#[derive(Clone, Debug)]
pub struct NodePool {
    nodes: Vec<NodeClient>,
    /// Each node's operator, where known (a wallet pays it).
    operators: Vec<Option<alloy_primitives::Address>>,
    next: Arc<AtomicUsize>,
    gateway: Option<Arc<GatewayRoute>>,
    wallet: Option<Arc<Wallet>>,
}

impl NodePool {
    /// A pool over `urls`, all verified under `policy`, sharing one HTTP client.
    pub fn new<I, S>(urls: I, policy: Arc<Policy>) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let http = crate::node::default_http_client()?;
        let nodes: Vec<NodeClient> = urls
            .into_iter()
            .map(|u| NodeClient::with_http(u.as_ref(), Arc::clone(&policy), http.clone()))
            .collect();
        if nodes.is_empty() {
            return Err(Error::Config("a node pool needs at least one node".into()));
        }
        Ok(Self::from_clients(nodes))
    }

    /// A pool over existing clients.
    pub fn from_clients(nodes: Vec<NodeClient>) -> Self {
        Self {
            operators: vec![None; nodes.len()],
            nodes,
            next: Arc::new(AtomicUsize::new(0)),
            gateway: None,
            wallet: None,
        }
    }

    /// A pool over clients whose operators are known (so a [`Wallet`] can pay them).
    pub fn from_candidates(candidates: Vec<Candidate>) -> Self {
        let (nodes, operators) = candidates.into_iter().map(|c| (c.client, c.operator)).unzip();
        Self {
            nodes,
            operators,
            next: Arc::new(AtomicUsize::new(0)),
            gateway: None,
            wallet: None,
        }
    }

    /// A pool over the nodes the gateway at `url` routes to, each verified under `policy`.
    pub fn via_gateway(url: &str, policy: Arc<Policy>) -> Result<Self> {
        Ok(Self {
            nodes: Vec::new(),
            operators: Vec::new(),
            next: Arc::new(AtomicUsize::new(0)),
            gateway: Some(Arc::new(GatewayRoute::new(url, policy)?)),
            wallet: None,
        })
    }

    /// Pays every node from `wallet`: each request carries the API key the wallet signed for the
    /// node's operator (replacing the caller's `Authorization`), and each receipt is recorded.
    /// Only a pool that knows the operators (through a gateway, or [`NodePool::from_candidates`])
    /// pays this way; a pool of URLs sends the caller's key as it is.
    pub fn with_wallet(mut self, wallet: Arc<Wallet>) -> Self {
        self.wallet = Some(wallet);
        self
    }

    /// The wallet, when the pool pays with one.
    pub fn wallet(&self) -> Option<&Arc<Wallet>> {
        self.wallet.as_ref()
    }

    /// The gateway, when the pool goes through one.
    pub fn gateway(&self) -> Option<&Arc<GatewayRoute>> {
        self.gateway.as_ref()
    }

    /// The nodes given at construction (empty for a gateway pool, whose nodes come per request).
    pub fn nodes(&self) -> &[NodeClient] {
        &self.nodes
    }

    /// The nodes to try for a request for `model`: the gateway's list, or round-robin.
    async fn order(&self, model: &str) -> Result<Vec<Candidate>> {
        if let Some(gw) = &self.gateway {
            return gw.candidates(model).await;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.nodes.len();
        Ok((0..n)
            .map(|i| Candidate {
                client: self.nodes[(start + i) % n].clone(),
                operator: self.operators.get((start + i) % n).copied().flatten(),
            })
            .collect())
    }

    /// The options for `candidate`: the wallet's key for its operator when there is one.
    fn options_for(&self, candidate: &Candidate, opts: &RequestOptions) -> Result<RequestOptions> {
        match (&self.wallet, candidate.operator) {
            (Some(wallet), Some(operator)) => Ok(RequestOptions {
                authorization: Some(format!("Bearer {}", wallet.api_key_for(operator)?)),
            }),
            _ => Ok(opts.clone()),
        }
    }

    /// Sends a non-streamed chat to the first node that verifies and answers.
    pub async fn chat(&self, body: Bytes, opts: &RequestOptions) -> Result<VerifiedResponse> {
        self.plain(body, opts, wire::CHAT_COMPLETIONS_PATH).await
    }

    /// Opens a streamed chat on the first node that verifies and starts answering. Once a stream
    /// has started, its errors are the stream's (a half-sent answer cannot move to another node).
    pub async fn chat_stream(&self, body: Bytes, opts: &RequestOptions) -> Result<ChatStream> {
        self.streamed(body, opts, false).await
    }

    /// [`NodePool::chat`] for a legacy text completion (`POST /v1/completions`).
    pub async fn completion(&self, body: Bytes, opts: &RequestOptions) -> Result<VerifiedResponse> {
        self.plain(body, opts, wire::COMPLETIONS_PATH).await
    }

    /// [`NodePool::chat`] for embeddings (`POST /v1/embeddings`).
    pub async fn embeddings(&self, body: Bytes, opts: &RequestOptions) -> Result<VerifiedResponse> {
        self.plain(body, opts, wire::EMBEDDINGS_PATH).await
    }

    /// [`NodePool::chat_stream`] for a streamed legacy text completion (`POST /v1/completions`).
    pub async fn completion_stream(&self, body: Bytes, opts: &RequestOptions) -> Result<ChatStream> {
        self.streamed(body, opts, true).await
    }

    async fn plain(
        &self,
        body: Bytes,
        opts: &RequestOptions,
        path: &'static str,
    ) -> Result<VerifiedResponse> {
        let answer = self
            .first(&body, opts, |node, opts| {
                let body = body.clone();
                async move {
                    match path {
                        wire::COMPLETIONS_PATH => node.completion(body, &opts).await,
                        wire::EMBEDDINGS_PATH => node.embeddings(body, &opts).await,
                        _ => node.chat(body, &opts).await,
                    }
                }
            })
            .await?;
        if let (Some(wallet), Some(receipt)) = (&self.wallet, &answer.receipt)
            && let Ok(value) = serde_json::from_str::<serde_json::Value>(receipt)
        {
            wallet.record(&value);
        }
        Ok(answer)
    }

    async fn streamed(&self, body: Bytes, opts: &RequestOptions, text: bool) -> Result<ChatStream> {
        let stream = self
            .first(&body, opts, |node, opts| {
                let body = body.clone();
                async move {
                    if text {
                        node.completion_stream(body, &opts).await
                    } else {
                        node.chat_stream(body, &opts).await
                    }
                }
            })
            .await?;
        Ok(match &self.wallet {
            Some(wallet) => {
                let wallet = Arc::clone(wallet);
                stream.on_proof(Arc::new(move |proof| {
                    if let Some(receipt) = &proof.receipt {
                        wallet.record(receipt);
                    }
                }))
            }
            None => stream,
        })
    }

    /// The first answer of `send` over the nodes in order, failing over on the errors that allow it.
    async fn first<T, F, Fut>(&self, body: &Bytes, opts: &RequestOptions, send: F) -> Result<T>
    where
        F: Fn(NodeClient, RequestOptions) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let model = crate::node::model_of(body)?;
        let mut errors = Vec::new();
        for candidate in self.order(&model).await? {
            let attempt = match self.options_for(&candidate, opts) {
                Ok(node_opts) => send(candidate.client.clone(), node_opts).await,
                Err(e) => Err(e),
            };
            match attempt {
                Ok(r) => return Ok(r),
                Err(e) if e.is_failover() => {
                    tracing::warn!(node = %candidate.client.url(), code = e.code(), "failing over: {e}");
                    if let (Some(gw), Some(signer)) = (&self.gateway, candidate.client.routed_to()) {
                        gw.demote(signer);
                    }
                    errors.push((node_label(&candidate.client), e));
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(gw) = &self.gateway {
            gw.forget(&model);
        }
        Err(collapse(errors))
    }

    /// The union of the models of every node that verifies. Fails only if none does. Through a
    /// gateway: the gateway's list.
    pub async fn models(&self) -> Result<ModelList> {
        if let Some(gw) = &self.gateway {
            return gw.models().await;
        }
        let mut by_id: BTreeMap<String, Model> = BTreeMap::new();
        let mut errors = Vec::new();
        let mut any = false;
        for node in &self.nodes {
            match node.models().await {
                Ok(list) => {
                    any = true;
                    for m in list.data {
                        by_id.entry(m.id.clone()).or_insert(m);
                    }
                }
                Err(e) => errors.push((node.url().to_owned(), e)),
            }
        }
        if !any {
            return Err(collapse(errors));
        }
        Ok(ModelList {
            object: "list".into(),
            data: by_id.into_values().collect(),
        })
    }
}

/// How a node is named in errors: its URL, and through a gateway the signer it names.
fn node_label(node: &NodeClient) -> String {
    match node.routed_to() {
        Some(signer) => format!("{} (node {signer:#x})", node.url()),
        None => node.url().to_owned(),
    }
}

/// One node's error as is; several as [`Error::AllNodesFailed`].
fn collapse(mut errors: Vec<(String, Error)>) -> Error {
    if errors.len() == 1
        && let Some((_, e)) = errors.pop()
    {
        return e;
    }
    Error::AllNodesFailed { errors }
}
