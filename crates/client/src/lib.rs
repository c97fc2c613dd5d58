//! Cloister client: talk to a confidential inference node only after checking what it proves.
//!
//! A [`NodeClient`] fetches the node's attestation report with a fresh nonce and verifies it
//! (quote, report_data binding, measurement allowlist, simulated evidence only when allowed, the
//! E2EE key binding), caches the verdict for the policy's TTL, seals each request to the node's
//! attested HPKE key (`docs/protocol.md` §8), opens the answer, and checks that its signature
//! covers exactly the plaintext sent and received and comes from the attested signer. A
//! [`NodePool`] spreads requests over several nodes and fails over on errors, never to a node that
//! did not verify. Every refusal is its own [`Error`] variant with a stable [`Error::code`].
//!
//! ```no_run
//! # async fn demo() -> cloister_client::Result<()> {
//! use std::sync::Arc;
//! use cloister_client::{NodeClient, Policy, RequestOptions};
//!
//! let node = NodeClient::new("http://127.0.0.1:8080", Arc::new(Policy::default()))?;
//! let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
//! let answer = node.chat(body.to_vec().into(), &RequestOptions::default()).await?;
//! println!("{} (signed by {})", String::from_utf8_lossy(&answer.body), answer.node.signer_hex);
//! # Ok(()) }
//! ```
//!
//! The same checks behind a plain OpenAI API, for programs that speak only OpenAI: [`proxy`] is
//! the verifying proxy `cloister proxy` runs, as an axum router to embed or serve, and
//! [`discover`] finds the nodes (and the measurements governance allows) in the on-chain
//! `NodeRegistry` with plain JSON-RPC.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use cloister_client::discover::{RegistryConfig, discover};
//! use cloister_client::{NodePool, Policy, proxy};
//!
//! let found = discover(&RegistryConfig {
//!     rpc_url: "http://127.0.0.1:8545".into(),
//!     chain_id: 31337,
//!     registry: "0x5FbDB2315678afecb367f032d93F642f64180aa3".parse()?,
//! })
//! .await?;
//! let mut policy = Policy::default();
//! policy.allowed_measurements = found.allowlist(); // empty on chain: refuses every node
//! let pool = NodePool::new(found.active_endpoints(), Arc::new(policy))?;
//!
//! // Mount it in your own axum app ...
//! let app = axum::Router::new().merge(proxy::router(pool.clone()));
//! # let _ = app;
//! // ... or serve it on loopback until Ctrl-C.
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//! proxy::serve(listener, pool, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

pub mod aci;
mod body;
pub mod discover;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
mod node;
pub mod oracle;
pub mod policy;
mod pool;
pub mod proxy;
pub mod report;
pub mod signature;
mod sse;
pub mod wallet;

pub use error::{Error, Result};
pub use node::{
    ChatStream, NodeClient, ProofObserver, RequestOptions, StreamEvent, StreamProof, VerifiedResponse,
    default_http_client,
};
pub use policy::{CollateralFile, CollateralSource, E2eeMode, MeasurementAllowlist, NrasPolicy, Policy};
pub use pool::NodePool;
pub use report::{ReportProof, VerifiedNode};

pub use cloister_types::{unix_now, wire};

/// `http://host:port`, `http://host:port/`, `http://host:port/v1` → `http://host:port`.
pub fn node_base(url: &str) -> String {
    let url = url.trim_end_matches('/');
    url.strip_suffix("/v1").unwrap_or(url).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_normalisation() {
        assert_eq!(node_base("http://h:1/"), "http://h:1");
        assert_eq!(node_base("http://h:1/v1"), "http://h:1");
        assert_eq!(node_base("http://h:1/v1/"), "http://h:1");
    }
}
