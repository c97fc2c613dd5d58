//! Node limits and timeouts.

use std::time::Duration;

/// Limits and timeouts of the HTTP layer.
///
/// Build it with struct-update syntax so new fields keep their defaults:
///
/// ```
/// use std::time::Duration;
/// use cloister_node::NodeConfig;
/// let config = NodeConfig { request_timeout: Duration::from_secs(60), ..NodeConfig::default() };
/// assert_eq!(config.body_limit, 1024 * 1024);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// Largest accepted request body in bytes; larger bodies get 413.
    pub body_limit: usize,
    /// A whole non-streamed completion must finish within this; a stream must produce its first
    /// chunk within this. Past it the client gets 504 (or an error event on a started stream).
    pub request_timeout: Duration,
    /// Longest pause allowed between two chunks of a started stream.
    pub stream_idle_timeout: Duration,
    /// How long `GET /v1/signature/{id}` keeps serving a signature.
    pub signature_ttl: Duration,
    /// Most signatures kept; the oldest goes first when full.
    pub signature_cache_max: usize,
    /// Most API requests (streams included, until their last byte) served at once; more get 429.
    /// `/health` and `/metrics` are not counted, so monitoring works under load.
    pub max_concurrent_requests: usize,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            body_limit: 1024 * 1024,
            request_timeout: Duration::from_secs(300),
            stream_idle_timeout: Duration::from_secs(120),
            signature_ttl: Duration::from_secs(1200),
            signature_cache_max: 10_000,
            max_concurrent_requests: 256,
        }
    }
}
