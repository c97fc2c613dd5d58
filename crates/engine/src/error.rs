use thiserror::Error;

/// Engine failures. The node maps each to an HTTP status and a client-safe message.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The request names a model this engine does not serve.
    #[error("model `{0}` is not served here")]
    UnknownModel(String),
    /// The request is well-formed JSON but cannot be served (empty messages, bad sampling values, ...).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The prompt does not fit the context window.
    #[error("prompt of {prompt} tokens does not fit the context window of {context} tokens")]
    ContextOverflow {
        /// Prompt tokens.
        prompt: usize,
        /// Context size.
        context: usize,
    },
    /// Too many requests are queued.
    #[error("engine overloaded: {0} requests queued")]
    Overloaded(usize),
    /// The upstream server cannot be reached.
    #[error("upstream unavailable: {0}")]
    UpstreamUnavailable(String),
    /// The upstream server answered with an error status.
    #[error("upstream answered {status}: {message}")]
    Upstream {
        /// HTTP status from upstream.
        status: u16,
        /// Upstream's error message (may be shown to the client).
        message: String,
    },
    /// The upstream answer was not valid OpenAI JSON/SSE.
    #[error("upstream sent a malformed answer: {0}")]
    UpstreamProtocol(String),
    /// The engine configuration is unusable (zero slots, a URL that is not http(s), ...).
    #[error("invalid engine configuration: {0}")]
    Config(String),
    /// The model could not be found, downloaded or loaded.
    #[error("model load failed: {0}")]
    Load(String),
    /// Decoding failed inside the engine.
    #[error("inference failed: {0}")]
    Inference(String),
    /// The engine has shut down.
    #[error("engine is shut down")]
    Closed,
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
