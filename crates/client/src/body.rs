//! Reading a node's answer with a bound: a hostile node cannot make the client buffer an unbounded
//! body (the read itself is `cloister_attest::http::read_limited`, the one size-limited read).

use bytes::Bytes;
use cloister_attest::http::{ReadError, read_limited};

use crate::{Error, Result};

/// The largest answer body the client reads: attestation reports (NEAR AI cloud's carry one
/// report per model), model lists, plain chat answers and error bodies.
pub(crate) const MAX_ANSWER_BYTES: usize = 16 << 20;

/// Reads the rest of `resp`'s body (at most [`MAX_ANSWER_BYTES`]); `url` names the node in a
/// transport error.
pub(crate) async fn read_body(mut resp: reqwest::Response, url: &str) -> Result<Bytes> {
    match read_limited(&mut resp, MAX_ANSWER_BYTES).await {
        Ok(body) => Ok(Bytes::from(body)),
        Err(ReadError::Transport(source)) => Err(Error::Unreachable {
            url: url.to_owned(),
            source,
        }),
        Err(e) => Err(Error::MalformedResponse(format!("{url}: {e}"))),
    }
}
