//! Several RPC endpoints behind one transport: each request goes to the endpoint that last
//! answered, and to the next one (in the configured order, wrapping around) when that fails at the
//! transport level: connection refused, timeout, HTTP 5xx or 429, a body that is not JSON-RPC. A
//! JSON-RPC error answer (a revert, a nonce too low) is an answer and is returned as is, never
//! asked again elsewhere.
//!
//! Repeating a request elsewhere is safe for reads, and for `eth_sendRawTransaction`: the same
//! signed bytes carry the same hash, so a transaction that reached both endpoints is one
//! transaction.
//!
//! alloy's `FallbackService` queries several endpoints in parallel and ranks them by latency; it is
//! not used because a send must not race, and an operator expects the order they configured.
//!
//! The transport also carries the connection's [`SendPolicy`] (fee caps, stuck-transaction
//! replacement), which [`crate::send`] reads back from the provider it is given.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use alloy::rpc::client::RpcClient;
use alloy::rpc::json_rpc::{RequestPacket, ResponsePacket};
use alloy::transports::http::{Http, reqwest};
use alloy::transports::{TransportError, TransportErrorKind, TransportFut};

use crate::error::{ChainError, Result};
use crate::fees::SendPolicy;

/// How long a connection attempt may take before the next endpoint is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a whole request may take before the next endpoint is tried.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// One endpoint: its HTTP transport and a name for logs (scheme, host and port only: a provider's
/// URL often carries an API key in its path).
#[derive(Clone, Debug)]
struct Endpoint {
    http: Http<reqwest::Client>,
    name: String,
}

/// See the module docs. Cheap to clone; clones share the sticky endpoint.
#[derive(Clone, Debug)]
pub struct Failover {
    endpoints: Arc<[Endpoint]>,
    current: Arc<AtomicUsize>,
    policy: SendPolicy,
}

impl Failover {
    /// A transport over `urls` (tried in this order; at least one) sending under `policy`.
    pub fn new<S: AsRef<str>>(urls: &[S], policy: SendPolicy) -> Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| ChainError::Rpc(TransportErrorKind::custom(e)))?;
        let endpoints = urls
            .iter()
            .map(|url| {
                let url = url.as_ref();
                let parsed: reqwest::Url = url.parse().map_err(|_| ChainError::BadRpcUrl(url.to_owned()))?;
                let name = format!(
                    "{}://{}:{}",
                    parsed.scheme(),
                    parsed.host_str().unwrap_or_default(),
                    parsed.port_or_known_default().unwrap_or_default()
                );
                Ok(Endpoint {
                    http: Http::with_client(client.clone(), parsed),
                    name,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if endpoints.is_empty() {
            return Err(ChainError::BadRpcUrl(String::new()));
        }
        Ok(Self {
            endpoints: endpoints.into(),
            current: Arc::new(AtomicUsize::new(0)),
            policy,
        })
    }

    /// The RPC client alloy's providers are built on.
    pub fn into_client(self) -> RpcClient {
        let local = self
            .endpoints
            .iter()
            .all(|e| alloy::transports::utils::guess_local_url(&e.name));
        RpcClient::new(self, local)
    }

    /// The policy [`crate::send`] follows on this connection.
    pub fn policy(&self) -> &SendPolicy {
        &self.policy
    }

    /// The endpoint requests go to first now (0: the primary).
    pub fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed) % self.endpoints.len()
    }

    async fn dispatch(self, request: RequestPacket) -> Result<ResponsePacket, TransportError> {
        let count = self.endpoints.len();
        let first = self.current();
        let mut last_error = None;
        for step in 0..count {
            let index = (first + step) % count;
            let endpoint = &self.endpoints[index];
            let mut http = endpoint.http.clone();
            match tower::Service::call(&mut http, request.clone()).await {
                Ok(response) => {
                    if step > 0 {
                        self.current.store(index, Ordering::Relaxed);
                    }
                    return Ok(response);
                }
                Err(error) => {
                    if count > 1 {
                        let next = &self.endpoints[(index + 1) % count].name;
                        tracing::warn!(
                            endpoint = %endpoint.name,
                            %next,
                            %error,
                            "RPC endpoint failed; failing over"
                        );
                    }
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| TransportErrorKind::custom_str("no RPC endpoint")))
    }
}

impl tower::Service<RequestPacket> for Failover {
    type Response = ResponsePacket;
    type Error = TransportError;
    type Future = TransportFut<'static>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: RequestPacket) -> Self::Future {
        Box::pin(self.clone().dispatch(request))
    }
}

/// The [`Failover`] under `provider`, when it was built on one (by this crate's constructors).
pub(crate) fn failover_of<P: alloy::providers::Provider>(provider: &P) -> Option<Failover> {
    provider
        .client()
        .transport()
        .as_any()
        .downcast_ref::<Failover>()
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_names_hide_paths_and_an_empty_list_is_refused() {
        let f = Failover::new(
            &["https://rpc.example/v2/SECRETKEY", "http://127.0.0.1:8545"],
            SendPolicy::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.endpoints[0].name, "https://rpc.example:443");
        assert!(!f.endpoints.iter().any(|e| e.name.contains("SECRET")));
        assert_eq!(f.current(), 0);
        let none: [&str; 0] = [];
        assert!(Failover::new(&none, SendPolicy::default()).is_err());
        assert!(matches!(
            Failover::new(&["not a url"], SendPolicy::default()),
            Err(ChainError::BadRpcUrl(_))
        ));
    }
}
