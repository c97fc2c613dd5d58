//! Size-limited HTTP GETs (feature `fetch`) for collateral downloads ([`crate::collateral`]) and
//! NRAS ([`crate::nras`]), built on the one size-limited body read, [`read_limited`]
//! (`cloister_types::http`, re-exported here), so a hostile server cannot make a verifier buffer
//! an unbounded body.

use std::time::Duration;

use reqwest::header::HeaderMap;

pub use cloister_types::http::{ReadError, read_limited};

use crate::{Error, Result};

/// The most bytes read from one response by default (real collateral and NRAS answers are
/// < 64 KiB).
pub const MAX_BODY_BYTES: usize = 4 << 20;

/// An HTTP client with the 60-second timeout the downloads of this crate use. `url` names the
/// request in the error.
pub fn client(url: &str) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| Error::Http {
            url: url.to_owned(),
            reason: e.to_string(),
        })
}

/// GETs `url`, refusing a non-success status and a body of more than `max` bytes. Returns the
/// response headers and the body.
///
/// ```no_run
/// # async fn demo() -> cloister_attest::Result<()> {
/// use cloister_attest::http::{MAX_BODY_BYTES, client, get_limited};
/// let url = cloister_attest::nras::NRAS_JWKS_URL;
/// let (_headers, jwks) = get_limited(&client(url)?, url, MAX_BODY_BYTES).await?;
/// # Ok(()) }
/// ```
pub async fn get_limited(client: &reqwest::Client, url: &str, max: usize) -> Result<(HeaderMap, Vec<u8>)> {
    send_limited(url, client.get(url), max).await
}

/// Sends `request` (to `url`), refusing a non-success status and a body of more than `max`
/// bytes. Returns the response headers and the body.
pub async fn send_limited(
    url: &str,
    request: reqwest::RequestBuilder,
    max: usize,
) -> Result<(HeaderMap, Vec<u8>)> {
    let http = |e: reqwest::Error| Error::Http {
        url: url.to_owned(),
        reason: e.to_string(),
    };
    let mut resp = request.send().await.map_err(http)?;
    if !resp.status().is_success() {
        return Err(Error::HttpStatus {
            url: url.to_owned(),
            status: resp.status().as_u16(),
        });
    }
    let headers = resp.headers().clone();
    match read_limited(&mut resp, max).await {
        Ok(body) => Ok((headers, body)),
        Err(ReadError::Transport(e)) => Err(http(e)),
        Err(e) => Err(Error::BadCollateralResponse {
            url: url.to_owned(),
            reason: e.to_string(),
        }),
    }
}
