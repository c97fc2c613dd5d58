//! Plain (non-streamed) answers, and the model list.

use std::sync::Arc;

use bytes::Bytes;
use cloister_types::SignatureRecord;
use cloister_types::openai::ModelList;
use cloister_types::wire;

use super::exchange::{Sent, header_text, is_sealed, open_sealed_body, unsealed_answer};
use super::{NodeClient, RequestOptions, parse_request};
use crate::report::VerifiedNode;
use crate::signature::record_from_headers;
use crate::{Error, Result};

/// A verified, non-streamed answer.
#[derive(Clone, Debug)]
pub struct VerifiedResponse {
    /// HTTP status (a success).
    pub status: u16,
    /// The plaintext body: exactly the bytes the signature covers.
    pub body: Bytes,
    /// The node, as verified.
    pub node: Arc<VerifiedNode>,
    /// The signature record, checked against the attested signer.
    pub signature: SignatureRecord,
    /// The node's signature id.
    pub signature_id: Option<String>,
    /// Whether request and answer were sealed.
    pub sealed: bool,
    /// The node's metering receipt (`x-cloister-receipt`, JSON), when it bills this request.
    pub receipt: Option<String>,
}

impl NodeClient {
    /// The node's model list (after verifying the node).
    pub async fn models(&self) -> Result<ModelList> {
        self.verified().await?;
        let endpoint = format!("{}{}", self.inner.base, wire::MODELS_PATH);
        let resp = self
            .inner
            .http
            .get(&endpoint)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = resp.status();
        let body = crate::body::read_body(resp, &self.inner.base).await?;
        if !status.is_success() {
            return Err(Error::NodeStatus {
                status: status.as_u16(),
                body,
                sealed: false,
            });
        }
        serde_json::from_slice(&body)
            .map_err(|e| Error::MalformedResponse(format!("the model list is not a model list: {e}")))
    }

    /// Sends a non-streamed chat request (`body` is the exact JSON to send and have signed) and
    /// returns the opened, signature-checked answer. An error status from the node is
    /// [`Error::NodeStatus`] with the opened body.
    pub async fn chat(&self, body: Bytes, opts: &RequestOptions) -> Result<VerifiedResponse> {
        self.plain(body, opts, wire::CHAT_COMPLETIONS_PATH).await
    }

    /// [`NodeClient::chat`] for a legacy text completion (`POST /v1/completions`), checked the same way.
    pub async fn completion(&self, body: Bytes, opts: &RequestOptions) -> Result<VerifiedResponse> {
        self.plain(body, opts, wire::COMPLETIONS_PATH).await
    }

    pub(super) async fn plain(
        &self,
        body: Bytes,
        opts: &RequestOptions,
        path: &'static str,
    ) -> Result<VerifiedResponse> {
        let head = parse_request(&body, path)?;
        if head.stream {
            return Err(Error::InvalidRequest(
                "a `stream: true` request goes through chat_stream".into(),
            ));
        }
        self.exchange(&head, &body, opts, |sent| self.read_answer(sent, &body))
            .await
    }

    /// Reads, opens and checks a plain answer to `request`.
    async fn read_answer(&self, sent: Sent, request: &Bytes) -> Result<VerifiedResponse> {
        let Sent { node, resp, keys } = sent;
        let status = resp.status();
        let headers = resp.headers().clone();
        let raw = crate::body::read_body(resp, &self.inner.base).await?;
        let sealed = keys.is_some();
        let plaintext = match keys {
            Some(keys) if is_sealed(&headers) => open_sealed_body(keys, &raw)?,
            Some(_) => return Err(unsealed_answer(status, raw)),
            None => raw,
        };
        if !status.is_success() {
            return Err(Error::NodeStatus {
                status: status.as_u16(),
                body: plaintext,
                sealed,
            });
        }
        let record = record_from_headers(&headers, request, &plaintext)?;
        let node = self.check_signer(node, &record, request, &plaintext).await?;
        Ok(VerifiedResponse {
            status: status.as_u16(),
            body: plaintext,
            node,
            signature: record,
            signature_id: header_text(&headers, wire::SIGNATURE_ID_HEADER),
            sealed,
            receipt: header_text(&headers, wire::RECEIPT_HEADER),
        })
    }
}
