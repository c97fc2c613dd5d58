//! Why a benchmark could not run or measure.

use thiserror::Error;

/// Everything that stops a benchmark. A benchmark only times working code: a failed request or a
/// failed verification during a run is an error, never a fast sample.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// A socket could not be bound or a file could not be read.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// An HTTP request failed on the way.
    #[error("HTTP request failed")]
    Http(#[from] reqwest::Error),
    /// A server answered with an error status or an empty body.
    #[error("{url} answered {status}")]
    Status {
        /// The URL asked.
        url: String,
        /// The status it answered.
        status: reqwest::StatusCode,
    },
    /// The engine under test failed (loading, or a request to it).
    #[error(transparent)]
    Engine(#[from] cloister_engine::Error),
    /// The attester or the quote under test failed.
    #[error(transparent)]
    Attest(#[from] cloister_attest::Error),
    /// The verifying client refused the bench node or an answer.
    #[error(transparent)]
    Client(#[from] cloister_client::Error),
    /// Sealing or opening failed.
    #[error(transparent)]
    Crypto(#[from] cloister_crypto::Error),
    /// A JSON document (a request body, a corpus file, llama-bench's output) did not parse.
    #[error("{context}")]
    Json {
        /// What was being parsed.
        context: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The code to be timed does not do what it should (a round trip that does not give back what
    /// went in, a quote that does not verify, a stream without its proof).
    #[error("{0}")]
    NotWorking(String),
    /// A background task (a blocking engine call) panicked or was cancelled.
    #[error("benchmark task failed")]
    Task(#[from] tokio::task::JoinError),
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn json(context: impl Into<String>, source: serde_json::Error) -> Self {
        Self::Json {
            context: context.into(),
            source,
        }
    }
}
