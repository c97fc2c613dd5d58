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

mod error;
mod node;
pub mod policy;
mod pool;
pub mod report;
pub mod signature;
mod sse;

use std::time::{SystemTime, UNIX_EPOCH};

pub use error::{Error, Result};
pub use node::{
    CHAT_PATH, ChatStream, NodeClient, RECEIPT_HEADER, RequestOptions, StreamEvent, StreamProof,
    VerifiedResponse, default_http_client,
};
pub use policy::{CollateralFile, CollateralSource, E2eeMode, MeasurementAllowlist, Policy};
pub use pool::NodePool;
pub use report::{ReportProof, VerifiedNode};

/// Unix seconds now (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

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
