//! Reading a node's answer with a bound: a hostile node cannot make the client buffer an unbounded
//! body (the read itself is `cloister_attest::http::read_limited`, the one size-limited read).

use bytes::Bytes;
use cloister_attest::http::{ReadError, read_limited};
use cloister_attest::report::Transport;

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

/// Sends `request` (to `endpoint`) and reads its answer: the body of a success, with what the
/// connection proves ([`transport_of`]); a non-success status is [`Error::NodeStatus`].
pub(crate) async fn fetch(request: reqwest::RequestBuilder, endpoint: &str) -> Result<(Bytes, Transport)> {
    let resp = request.send().await.map_err(|source| Error::Unreachable {
        url: endpoint.to_owned(),
        source,
    })?;
    let status = resp.status();
    let transport = transport_of(&resp);
    let body = read_body(resp, endpoint).await?;
    if !status.is_success() {
        return Err(Error::NodeStatus {
            status: status.as_u16(),
            body,
            sealed: false,
        });
    }
    Ok((body, transport))
}

/// What the connection that carried `resp` proves: over TLS, the fingerprint of the certificate
/// the server presented (reqwest records it when the client is built with `tls_info(true)`, as
/// [`crate::default_http_client`] is).
pub(crate) fn transport_of(resp: &reqwest::Response) -> Transport {
    resp.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(reqwest::tls::TlsInfo::peer_certificate)
        .and_then(|der| cloister_attest::tls::spki_sha256(der).ok())
        .map_or(Transport::Unverified, |spki_sha256| Transport::Tls {
            spki_sha256,
        })
}
