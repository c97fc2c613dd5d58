//! [`NodePool`]: several nodes serving a model; requests go round-robin and fail over to the next
//! node on a connection error, a 5xx, or a verification failure. Never to an unverified node.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use cloister_types::openai::{Model, ModelList};

use crate::node::{ChatStream, NodeClient, RequestOptions, VerifiedResponse};
use crate::policy::Policy;
use crate::{Error, Result};

/// A set of nodes.
#[derive(Clone, Debug)]
pub struct NodePool {
    nodes: Vec<NodeClient>,
    next: Arc<AtomicUsize>,
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
            nodes,
            next: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The nodes.
    pub fn nodes(&self) -> &[NodeClient] {
        &self.nodes
    }

    /// The nodes in the order to try for the next request (round-robin start).
    fn order(&self) -> impl Iterator<Item = &NodeClient> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.nodes.len();
        (0..n).map(move |i| &self.nodes[(start + i) % n])
    }

    /// Sends a non-streamed chat to the first node that verifies and answers.
    pub async fn chat(&self, body: Bytes, opts: &RequestOptions) -> Result<VerifiedResponse> {
        self.first(|node| node.chat(body.clone(), opts)).await
    }

    /// Opens a streamed chat on the first node that verifies and starts answering. Once a stream
    /// has started, its errors are the stream's (a half-sent answer cannot move to another node).
    pub async fn chat_stream(&self, body: Bytes, opts: &RequestOptions) -> Result<ChatStream> {
        self.first(|node| node.chat_stream(body.clone(), opts)).await
    }

    /// [`NodePool::chat`] for a legacy text completion (`POST /v1/completions`).
    pub async fn completion(&self, body: Bytes, opts: &RequestOptions) -> Result<VerifiedResponse> {
        self.first(|node| node.completion(body.clone(), opts)).await
    }

    /// [`NodePool::chat_stream`] for a streamed legacy text completion (`POST /v1/completions`).
    pub async fn completion_stream(&self, body: Bytes, opts: &RequestOptions) -> Result<ChatStream> {
        self.first(|node| node.completion_stream(body.clone(), opts))
            .await
    }

    /// The first answer of `send` over the nodes in order, failing over on the errors that allow it.
    async fn first<'a, T, F, Fut>(&'a self, send: F) -> Result<T>
    where
        F: Fn(&'a NodeClient) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut errors = Vec::new();
        for node in self.order() {
            match send(node).await {
                Ok(r) => return Ok(r),
                Err(e) if e.is_failover() => {
                    tracing::warn!(node = %node.url(), code = e.code(), "failing over: {e}");
                    errors.push((node.url().to_owned(), e));
                }
                Err(e) => return Err(e),
            }
        }
        Err(collapse(errors))
    }

    /// The union of the models of every node that verifies. Fails only if none does.
    pub async fn models(&self) -> Result<ModelList> {
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

/// One node's error as is; several as [`Error::AllNodesFailed`].
fn collapse(mut errors: Vec<(String, Error)>) -> Error {
    if errors.len() == 1
        && let Some((_, e)) = errors.pop()
    {
        return e;
    }
    Error::AllNodesFailed { errors }
}
