//! The one size-limited HTTP body read (feature `http`): [`read_limited`] reads a response body up
//! to a bound, so a hostile server cannot make a verifier, a proxy or the node's upstream client
//! buffer an unbounded body. `cloister_attest::http` builds its GETs on it, the client reads node
//! answers with it, and the engine reads OpenAI-compatible upstream answers with it.

/// Why [`read_limited`] stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The connection failed while reading.
    #[error(transparent)]
    Transport(#[from] reqwest::Error),
    /// The body is longer than the bound.
    #[error("body larger than {max} bytes")]
    TooLarge {
        /// The bound.
        max: usize,
    },
}

/// Reads the rest of `resp`'s body, refusing more than `max` bytes (checked against the declared
/// length first, then before each chunk is buffered, so at most `max` bytes are ever held).
///
/// ```no_run
/// # async fn demo(mut resp: reqwest::Response) -> Result<(), cloister_types::http::ReadError> {
/// let body = cloister_types::http::read_limited(&mut resp, 1 << 20).await?;
/// # Ok(()) }
/// ```
pub async fn read_limited(resp: &mut reqwest::Response, max: usize) -> Result<Vec<u8>, ReadError> {
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(ReadError::TooLarge { max });
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > max {
            return Err(ReadError::TooLarge { max });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
