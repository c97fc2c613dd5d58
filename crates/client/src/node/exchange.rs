//! One request's way to the node: sealed to the attested key (unless the policy says otherwise),
//! sent, and its answer read by the caller. [`NodeClient::exchange`] is the one place that verifies
//! before sending and, when the node can no longer open what we sealed, verifies again and resends.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use cloister_crypto::e2ee::{ClientResponseKeys, decode_base64, seal_request};
use cloister_types::e2ee::request_aad;
use cloister_types::wire;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};

use super::{NodeClient, RequestHead, RequestOptions};
use crate::policy::E2eeMode;
use crate::report::VerifiedNode;
use crate::{Error, Result, unix_now};

/// The node's answer to one sent request, before it is read.
pub(super) struct Sent {
    /// The node the request was sealed to, as verified.
    pub(super) node: Arc<VerifiedNode>,
    /// The HTTP answer.
    pub(super) resp: reqwest::Response,
    /// The response keys when the request was sealed.
    pub(super) keys: Option<ClientResponseKeys>,
}

impl NodeClient {
    /// Verifies the node (cached verdict while fresh), sends `body` and hands the answer to `read`.
    /// When `read` finds that the node could not open the envelope (`e2ee_open_failed`), the node
    /// restarted with new keys since it was verified: it is verified again and the request resent,
    /// once.
    pub(super) async fn exchange<T, F, Fut>(
        &self,
        head: &RequestHead,
        body: &Bytes,
        opts: &RequestOptions,
        mut read: F,
    ) -> Result<T>
    where
        F: FnMut(Sent) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut node = self.verified().await?;
        let mut retried = false;
        loop {
            let (resp, keys) = self.send(&node, body, head, opts).await?;
            let sent = Sent {
                node: Arc::clone(&node),
                resp,
                keys,
            };
            match read(sent).await {
                Err(err) if !retried && node_lost_key(&err) => {
                    tracing::info!(node = %self.inner.base, "the node could not open the sealed request; verifying it again");
                    retried = true;
                    node = self.verify_now().await?;
                }
                answer => return answer,
            }
        }
    }

    /// Sends `body` to the node: sealed to its attested key unless the policy says otherwise.
    async fn send(
        &self,
        node: &VerifiedNode,
        body: &Bytes,
        head: &RequestHead,
        opts: &RequestOptions,
    ) -> Result<(reqwest::Response, Option<ClientResponseKeys>)> {
        let model = head.model.as_str();
        let endpoint = format!("{}{}", self.inner.base, head.path);
        // Streams: the signature event inline after `[DONE]`, which `stream.rs` requires (the node
        // reads the header only on streams).
        let mut req = self
            .inner
            .http
            .post(&endpoint)
            .header(wire::INLINE_SIGNATURE_HEADER, wire::INLINE_SIGNATURE_ON);
        if let Some(auth) = &opts.authorization {
            req = req.header(AUTHORIZATION, auth);
        }
        let keys = match (self.inner.policy.e2ee, &node.e2ee) {
            (E2eeMode::Off, _) | (E2eeMode::Preferred, None) => {
                req = req
                    .header(CONTENT_TYPE, wire::JSON_CONTENT_TYPE)
                    .body(body.clone());
                None
            }
            (E2eeMode::Required, None) => return Err(Error::E2eeUnavailable),
            (_, Some(key)) => {
                if !node.binds_model(model) {
                    return Err(Error::ModelNotBound {
                        model: model.to_owned(),
                    });
                }
                let model_header = HeaderValue::from_str(model)
                    .map_err(|_| Error::InvalidRequest("the model id is not a valid header value".into()))?;
                let ts = unix_now();
                let aad = request_aad("POST", head.path, ts, model);
                // A bound HPKE key implies an ecdsa signer (the binding is EIP-191 signed).
                let signer = node.signer.address().ok_or(Error::E2eeUnavailable)?;
                let (sealed, keys) = seal_request(&key.public_key, &signer, body, &aad)?;
                req = req
                    .header(wire::E2EE_HEADER, wire::E2EE_VERSION)
                    .header(wire::E2EE_TIMESTAMP_HEADER, ts.to_string())
                    .header(wire::MODEL_HEADER, model_header)
                    .header(CONTENT_TYPE, wire::SEALED_CONTENT_TYPE)
                    .body(sealed.to_base64());
                Some(keys)
            }
        };
        let resp = req.send().await.map_err(|e| self.unreachable(e))?;
        Ok((resp, keys))
    }
}

/// A header's value as text, when it is text.
pub(super) fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// Whether the answer says it is sealed (the E2EE header with our version).
pub(super) fn is_sealed(headers: &HeaderMap) -> bool {
    headers
        .get(wire::E2EE_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == wire::E2EE_VERSION)
}

/// Opens a sealed (base64) body under the request's response keys.
pub(super) fn open_sealed_body(keys: ClientResponseKeys, raw: &[u8]) -> Result<Bytes> {
    let text = std::str::from_utf8(raw)
        .map_err(|_| Error::MalformedResponse("a sealed body is not base64 text".into()))?;
    let sealed =
        decode_base64(text).map_err(|_| Error::MalformedResponse("a sealed body is not base64".into()))?;
    keys.open_body(&sealed)
        .map(Bytes::from)
        .map_err(Error::from_crypto)
}

/// The answer to a sealed request came unsealed: the node's refusal of the envelope (`e2ee_*`), an
/// error from something in front of the node, or a downgrade.
pub(super) fn unsealed_answer(status: reqwest::StatusCode, body: Bytes) -> Error {
    if status.is_success() {
        return Error::ResponseNotSealed;
    }
    let refusal = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            let err = v.get("error")?;
            let code = err.get("code")?.as_str()?.to_owned();
            let message = err
                .get("message")
                .and_then(|m| m.as_str())
                .unwrap_or_default()
                .to_owned();
            code.starts_with("e2ee_").then_some((code, message))
        });
    match refusal {
        Some((code, message)) => Error::E2eeRefusedByNode { code, message },
        None => Error::NodeStatus {
            status: status.as_u16(),
            body,
            sealed: false,
        },
    }
}

/// Whether the node could not open our envelope: it no longer holds the key we sealed to.
fn node_lost_key(err: &Error) -> bool {
    matches!(err, Error::E2eeRefusedByNode { code, .. } if code == "e2ee_open_failed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unsealed_e2ee_refusal_is_named() {
        let body = Bytes::from_static(
            br#"{"error":{"message":"replayed","type":"invalid_request_error","code":"e2ee_replayed"}}"#,
        );
        let err = unsealed_answer(reqwest::StatusCode::BAD_REQUEST, body);
        assert!(matches!(&err, Error::E2eeRefusedByNode { code, .. } if code == "e2ee_replayed"));
        assert!(!node_lost_key(&err));
        assert!(matches!(
            unsealed_answer(reqwest::StatusCode::OK, Bytes::new()),
            Error::ResponseNotSealed
        ));
        let lost = Bytes::from_static(br#"{"error":{"message":"x","code":"e2ee_open_failed"}}"#);
        assert!(node_lost_key(&unsealed_answer(
            reqwest::StatusCode::BAD_REQUEST,
            lost
        )));
    }
}
