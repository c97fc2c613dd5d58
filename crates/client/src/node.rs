//! [`NodeClient`]: one node, verified with a fresh nonce, its verdict cached for the policy's TTL;
//! requests sealed to its attested E2EE key; answers opened and their signatures checked.
//!
//! The rooms: [`cache`] (the verdict and when to verify again), [`exchange`] (sealing, sending and
//! the one verify-send-retry loop every request goes through), [`chat`] (plain answers) and
//! [`stream`] (streamed answers).

mod cache;
mod chat;
mod embeddings;
mod exchange;
mod stream;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

pub use chat::VerifiedResponse;
pub use stream::{ChatStream, ProofObserver, StreamEvent, StreamProof};

use crate::policy::Policy;
use crate::report::VerifiedNode;
use crate::{Error, Result, node_base};

/// Per-request options.
#[derive(Clone, Debug, Default)]
pub struct RequestOptions {
    /// `Authorization` header sent to the node unchanged (e.g. a `Bearer` spend authorization).
    pub authorization: Option<String>,
}

/// What the client needs from a request body, and the node path it goes to.
struct RequestHead {
    model: String,
    stream: bool,
    /// `wire::CHAT_COMPLETIONS_PATH` or `wire::COMPLETIONS_PATH`: the path posted to and bound in
    /// the E2EE AAD.
    path: &'static str,
}

fn parse_request(body: &[u8], path: &'static str) -> Result<RequestHead> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| Error::InvalidRequest(format!("the body is not JSON: {e}")))?;
    let model = value
        .get("model")
        .and_then(|m| m.as_str())
        .ok_or_else(|| Error::InvalidRequest("the body has no string `model`".into()))?
        .to_owned();
    let stream = value.get("stream").and_then(|s| s.as_bool()).unwrap_or(false);
    Ok(RequestHead { model, stream, path })
}

/// The `model` of a request body (the pool routes by it).
pub(crate) fn model_of(body: &[u8]) -> Result<String> {
    // The path is irrelevant here: only the model is read.
    parse_request(body, cloister_types::wire::CHAT_COMPLETIONS_PATH).map(|h| h.model)
}

/// A client for one node.
#[derive(Clone, Debug)]
pub struct NodeClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    base: String,
    http: reqwest::Client,
    policy: Arc<Policy>,
    cached: Mutex<Option<Arc<VerifiedNode>>>,
    /// Through a gateway: the signing address named in every request (the gateway routes by it),
    /// which the verified report must attest.
    routed_to: Option<alloy_primitives::Address>,
}

/// The HTTP client used when none is given: 10 s to connect, 10 minutes per exchange.
pub fn default_http_client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(600))
        // The certificate each HTTPS answer came with: reports that bind a TLS key are checked
        // against it.
        .tls_info(true)
        .build()
        .map_err(|e| Error::Config(format!("building the HTTP client: {e}")))
}

impl NodeClient {
    /// A client for the node at `url` (`http://host:port`, with or without `/v1`).
    pub fn new(url: &str, policy: Arc<Policy>) -> Result<Self> {
        Ok(Self::with_http(url, policy, default_http_client()?))
    }

    /// A client sharing an HTTP client (connection pool).
    pub fn with_http(url: &str, policy: Arc<Policy>, http: reqwest::Client) -> Self {
        Self {
            inner: Arc::new(Inner {
                base: node_base(url),
                http,
                policy,
                cached: Mutex::new(None),
                routed_to: None,
            }),
        }
    }

    /// A client for the node with signing address `signer`, reached through the gateway at
    /// `gateway_url`: every request names the node in [`wire::GATEWAY_NODE_HEADER`], and the node
    /// is verified end to end as if it were reached directly (the gateway sees sealed bytes only).
    /// A report attesting any other signer is refused ([`Error::GatewayMisrouted`]).
    ///
    /// [`wire::GATEWAY_NODE_HEADER`]: cloister_types::wire::GATEWAY_NODE_HEADER
    pub fn via_gateway(
        gateway_url: &str,
        signer: alloy_primitives::Address,
        policy: Arc<Policy>,
    ) -> Result<Self> {
        let named = reqwest::header::HeaderValue::from_str(&format!("{signer:#x}"))
            .map_err(|e| Error::Config(format!("a signing address as a header: {e}")))?;
        let headers = reqwest::header::HeaderMap::from_iter([(
            reqwest::header::HeaderName::from_static(cloister_types::wire::GATEWAY_NODE_HEADER),
            named,
        )]);
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(600))
            .tls_info(true)
            .default_headers(headers)
            .build()
            .map_err(|e| Error::Config(format!("building the HTTP client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                base: node_base(gateway_url),
                http,
                policy,
                cached: Mutex::new(None),
                routed_to: Some(signer),
            }),
        })
    }

    /// The signing address this client names to a gateway, when it goes through one.
    pub fn routed_to(&self) -> Option<alloy_primitives::Address> {
        self.inner.routed_to
    }

    /// The node's base URL.
    pub fn url(&self) -> &str {
        &self.inner.base
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    fn unreachable(&self, source: reqwest::Error) -> Error {
        Error::Unreachable {
            url: self.inner.base.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_head() {
        let path = cloister_types::wire::CHAT_COMPLETIONS_PATH;
        let h = parse_request(br#"{"model":"m","stream":true}"#, path).ok();
        assert_eq!(h.map(|h| (h.model, h.stream)), Some(("m".to_owned(), true)));
        assert!(parse_request(b"{}", path).is_err());
        assert!(parse_request(b"nope", path).is_err());
    }
}
