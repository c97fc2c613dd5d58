//! [`NodeClient`]: one node, verified with a fresh nonce, its verdict cached for the policy's TTL;
//! requests sealed to its attested E2EE key; answers opened and their signatures checked.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use cloister_crypto::e2ee::{ClientResponseKeys, ResponseOpener, decode_base64, seal_request};
use cloister_types::e2ee::{
    E2EE_VERSION, HEADER_E2EE, HEADER_E2EE_TIMESTAMP, HEADER_MODEL, SEALED_CONTENT_TYPE, request_aad,
};
use cloister_types::openai::ModelList;
use cloister_types::{Nonce, SignatureRecord};
use futures::{Stream, StreamExt};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap};
use tokio::sync::{Mutex, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use crate::policy::{E2eeMode, Policy};
use crate::report::{ReportProof, VerifiedNode, accept, verify_endpoint};
use crate::signature::{SIGNATURE_ID_HEADER, record_from_headers, recover_signer};
use crate::sse::{SseFramer, parse_event};
use crate::{Error, Result, node_base, unix_now};

/// The chat endpoint's path (bound into the request AAD).
pub const CHAT_PATH: &str = "/v1/chat/completions";
/// Header of a plain answer's metering receipt (docs/protocol.md §9).
pub const RECEIPT_HEADER: &str = "x-cloister-receipt";

/// Per-request options.
#[derive(Clone, Debug, Default)]
pub struct RequestOptions {
    /// `Authorization` header sent to the node unchanged (e.g. a `Bearer` spend authorization).
    pub authorization: Option<String>,
}

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

/// One item of a [`ChatStream`].
#[derive(Clone, Debug)]
pub enum StreamEvent {
    /// One plaintext SSE event (`data: {...}\n\n`), authenticated by the attested E2EE key when
    /// sealed. `[DONE]` and the signature event are not passed on: [`StreamEvent::Done`] stands
    /// for them once everything checked.
    Data(Bytes),
    /// The stream ended with its end marker (when sealed) and a signature from the attested
    /// signer over every byte before it. Always the last item.
    Done(StreamProof),
}

/// The proof that ends a verified stream.
#[derive(Clone, Debug)]
pub struct StreamProof {
    /// The node, as verified (verified again if the signer changed).
    pub node: Arc<VerifiedNode>,
    /// The signature record.
    pub signature: SignatureRecord,
    /// Whether the node sent `data: [DONE]`.
    pub done_seen: bool,
    /// The metering receipt carried in the signature event, when the node bills this request.
    pub receipt: Option<serde_json::Value>,
}

/// A streamed answer: [`StreamEvent::Data`] items as they arrive, then one
/// [`StreamEvent::Done`], or an error item (after which nothing follows).
pub struct ChatStream {
    /// The node the request went to.
    pub node: Arc<VerifiedNode>,
    /// Whether request and answer are sealed.
    pub sealed: bool,
    /// The node's signature id.
    pub signature_id: Option<String>,
    events: ReceiverStream<Result<StreamEvent>>,
}

impl std::fmt::Debug for ChatStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatStream")
            .field("node", &self.node.url)
            .field("sealed", &self.sealed)
            .finish_non_exhaustive()
    }
}

impl Stream for ChatStream {
    type Item = Result<StreamEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.events).poll_next(cx)
    }
}

/// What the client needs from a chat request body.
struct RequestHead {
    model: String,
    stream: bool,
}

fn parse_request(body: &[u8]) -> Result<RequestHead> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| Error::InvalidRequest(format!("the body is not JSON: {e}")))?;
    let model = value
        .get("model")
        .and_then(|m| m.as_str())
        .ok_or_else(|| Error::InvalidRequest("the body has no string `model`".into()))?
        .to_owned();
    let stream = value.get("stream").and_then(|s| s.as_bool()).unwrap_or(false);
    Ok(RequestHead { model, stream })
}

/// A client for one node.
#[derive(Clone, Debug)]
pub struct NodeClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    base: String,
    http: reqwest::Client,
    policy: Arc<Policy>,
    cached: Mutex<Option<Arc<VerifiedNode>>>,
}

/// The HTTP client used when none is given: 10 s to connect, 10 minutes per exchange.
pub fn default_http_client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(600))
        .build()
        .map_err(|e| Error::Config(format!("building the HTTP client: {e}")))
}

impl NodeClient {
    /// A client for the node at `url` (`http://host:port`, with or without `/v1`).
    pub fn new(url: &str, policy: Arc<Policy>) -> Result<Self> {
        Ok(Self::with_http(url, policy, default_http_client()?))
    }

    /// A client sharing an HTTP client (connection pool).
    pub fn with_http(url: &str, policy: Arc<Policy>, http: reqwest::Client) -> Self {
        Self {
            inner: Arc::new(Inner {
                base: node_base(url),
                http,
                policy,
                cached: Mutex::new(None),
            }),
        }
    }

    /// The node's base URL.
    pub fn url(&self) -> &str {
        &self.inner.base
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    fn unreachable(&self, source: reqwest::Error) -> Error {
        Error::Unreachable {
            url: self.inner.base.clone(),
            source,
        }
    }

    /// Fetches and verifies the node's report with `nonce`, without applying the client policy
    /// (for callers that show every check, then call [`Self::adopt`]).
    pub async fn fetch_proof(&self, nonce: Nonce) -> Result<ReportProof> {
        let mut proofs = verify_endpoint(
            &self.inner.http,
            &self.inner.base,
            &self.inner.policy,
            nonce,
            None,
        )
        .await?;
        match proofs.pop() {
            Some(proof) if proofs.is_empty() => Ok(proof),
            _ => Err(Error::BadReport {
                url: self.inner.base.clone(),
                detail: "several attestation reports in one answer; a Cloister node sends one".into(),
            }),
        }
    }

    /// Applies the policy to `proof` and, when it passes, caches the node.
    pub async fn adopt(&self, proof: ReportProof) -> Result<Arc<VerifiedNode>> {
        let mut cached = self.inner.cached.lock().await;
        *cached = None;
        let node = accept(proof, &self.inner.policy)?;
        *cached = Some(Arc::clone(&node));
        Ok(node)
    }

    /// Verifies the node now with a fresh random nonce (replacing the cached verdict).
    pub async fn verify_now(&self) -> Result<Arc<VerifiedNode>> {
        let mut cached = self.inner.cached.lock().await;
        *cached = None;
        let node = self.verify_locked().await?;
        *cached = Some(Arc::clone(&node));
        Ok(node)
    }

    async fn verify_locked(&self) -> Result<Arc<VerifiedNode>> {
        let proof = self.fetch_proof(Nonce(rand::random())).await?;
        let node = accept(proof, &self.inner.policy);
        match &node {
            Ok(n) => tracing::debug!(node = %self.inner.base, signer = %n.signer_hex, "node verified"),
            Err(e) => tracing::warn!(node = %self.inner.base, code = e.code(), "node refused: {e}"),
        }
        node
    }

    /// The cached verdict while it is fresh (TTL, key binding expiry), else a new verification.
    /// Concurrent callers share one verification.
    pub async fn verified(&self) -> Result<Arc<VerifiedNode>> {
        let mut cached = self.inner.cached.lock().await;
        if let Some(node) = cached.as_ref()
            && node.fresh(&self.inner.policy, unix_now())
        {
            return Ok(Arc::clone(node));
        }
        *cached = None;
        let node = self.verify_locked().await?;
        *cached = Some(Arc::clone(&node));
        Ok(node)
    }

    /// Forgets the cached verdict.
    pub async fn invalidate(&self) {
        *self.inner.cached.lock().await = None;
    }

    /// The node's model list (after verifying the node).
    pub async fn models(&self) -> Result<ModelList> {
        self.verified().await?;
        let endpoint = format!("{}/v1/models", self.inner.base);
        let resp = self
            .inner
            .http
            .get(&endpoint)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| self.unreachable(e))?;
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

    /// Sends `body` to the node: sealed to its attested key unless the policy says otherwise.
    async fn send(
        &self,
        node: &VerifiedNode,
        body: &Bytes,
        model: &str,
        opts: &RequestOptions,
    ) -> Result<(reqwest::Response, Option<ClientResponseKeys>)> {
        let endpoint = format!("{}{CHAT_PATH}", self.inner.base);
        let mut req = self.inner.http.post(&endpoint);
        if let Some(auth) = &opts.authorization {
            req = req.header(AUTHORIZATION, auth);
        }
        let keys = match (self.inner.policy.e2ee, &node.e2ee) {
            (E2eeMode::Off, _) | (E2eeMode::Preferred, None) => {
                req = req.header(CONTENT_TYPE, "application/json").body(body.clone());
                None
            }
            (E2eeMode::Required, None) => return Err(Error::E2eeUnavailable),
            (_, Some(key)) => {
                if !node.binds_model(model) {
                    return Err(Error::ModelNotBound {
                        model: model.to_owned(),
                    });
                }
                let model_header = reqwest::header::HeaderValue::from_str(model)
                    .map_err(|_| Error::InvalidRequest("the model id is not a valid header value".into()))?;
                let ts = unix_now();
                let aad = request_aad("POST", CHAT_PATH, ts, model);
                let (sealed, keys) = seal_request(&key.public_key, &node.signer, body, &aad)?;
                req = req
                    .header(HEADER_E2EE, E2EE_VERSION)
                    .header(HEADER_E2EE_TIMESTAMP, ts.to_string())
                    .header(HEADER_MODEL, model_header)
                    .header(CONTENT_TYPE, SEALED_CONTENT_TYPE)
                    .body(sealed.to_base64());
                Some(keys)
            }
        };
        let resp = req.send().await.map_err(|e| self.unreachable(e))?;
        Ok((resp, keys))
    }

    /// Sends a non-streamed chat request (`body` is the exact JSON to send and have signed) and
    /// returns the opened, signature-checked answer. An error status from the node is
    /// [`Error::NodeStatus`] with the opened body.
    pub async fn chat(&self, body: Bytes, opts: &RequestOptions) -> Result<VerifiedResponse> {
        let head = parse_request(&body)?;
        if head.stream {
            return Err(Error::InvalidRequest(
                "a `stream: true` request goes through chat_stream".into(),
            ));
        }
        let mut node = self.verified().await?;
        let mut retried = false;
        loop {
            let (resp, keys) = self.send(&node, &body, &head.model, opts).await?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let raw = resp.bytes().await.map_err(|e| self.unreachable(e))?;
            let sealed = keys.is_some();
            let plaintext = match keys {
                Some(keys) if is_sealed(&headers) => open_sealed_body(keys, &raw)?,
                Some(_) => {
                    let err = unsealed_answer(status, raw);
                    if !retried && node_lost_key(&err) {
                        // The node restarted (new keys) since we verified it: verify again, once.
                        retried = true;
                        node = self.verify_now().await?;
                        continue;
                    }
                    return Err(err);
                }
                None => raw,
            };
            if !status.is_success() {
                return Err(Error::NodeStatus {
                    status: status.as_u16(),
                    body: plaintext,
                    sealed,
                });
            }
            let record = record_from_headers(&headers, &body, &plaintext)?;
            let node = self.check_signer(node, &record, &body, &plaintext).await?;
            return Ok(VerifiedResponse {
                status: status.as_u16(),
                body: plaintext,
                node,
                signature: record,
                signature_id: header_text(&headers, SIGNATURE_ID_HEADER),
                sealed,
                receipt: header_text(&headers, RECEIPT_HEADER),
            });
        }
    }

    /// Sends a `stream: true` chat request and returns the answer as it arrives: opened events,
    /// then the end-of-stream proof (end marker, signature from the attested signer).
    pub async fn chat_stream(&self, body: Bytes, opts: &RequestOptions) -> Result<ChatStream> {
        let head = parse_request(&body)?;
        if !head.stream {
            return Err(Error::InvalidRequest(
                "chat_stream needs a `stream: true` request".into(),
            ));
        }
        let mut node = self.verified().await?;
        let mut retried = false;
        loop {
            let (resp, keys) = self.send(&node, &body, &head.model, opts).await?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let is_sse = headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("text/event-stream"));
            let sealed = keys.is_some();
            if !status.is_success() || !is_sse {
                let raw = resp.bytes().await.map_err(|e| self.unreachable(e))?;
                let err = match keys {
                    Some(keys) if is_sealed(&headers) => Error::NodeStatus {
                        status: status.as_u16(),
                        body: open_sealed_body(keys, &raw)?,
                        sealed,
                    },
                    Some(_) => unsealed_answer(status, raw),
                    None if status.is_success() => {
                        Error::MalformedResponse("a streamed request got no event stream".into())
                    }
                    None => Error::NodeStatus {
                        status: status.as_u16(),
                        body: raw,
                        sealed,
                    },
                };
                if !retried && node_lost_key(&err) {
                    retried = true;
                    node = self.verify_now().await?;
                    continue;
                }
                if matches!(&err, Error::NodeStatus { status, .. } if *status < 400) {
                    return Err(Error::MalformedResponse(
                        "a streamed request got no event stream".into(),
                    ));
                }
                return Err(err);
            }
            if sealed && !is_sealed(&headers) {
                return Err(Error::ResponseNotSealed);
            }
            let (tx, rx) = mpsc::channel(64);
            let reader = StreamReader {
                client: self.clone(),
                node: Arc::clone(&node),
                request: body.clone(),
                opener: keys.map(ClientResponseKeys::opener),
            };
            tokio::spawn(reader.run(resp, tx));
            return Ok(ChatStream {
                node,
                sealed,
                signature_id: header_text(&headers, SIGNATURE_ID_HEADER),
                events: ReceiverStream::new(rx),
            });
        }
    }

    /// Checks `record` over `request`/`response` against the attested signer. When it recovers to
    /// another address, the node may have restarted with a new key: it is verified again, and the
    /// signature is accepted only if the new attestation names that signer.
    async fn check_signer(
        &self,
        node: Arc<VerifiedNode>,
        record: &SignatureRecord,
        request: &[u8],
        response: &[u8],
    ) -> Result<Arc<VerifiedNode>> {
        let recovered = recover_signer(record, request, response)?;
        if recovered == node.signer {
            return Ok(node);
        }
        tracing::info!(node = %self.inner.base, "answer signed by another key than the cached signer; verifying the node again");
        let fresh = self.verify_now().await?;
        if recovered == fresh.signer {
            return Ok(fresh);
        }
        Err(Error::SignatureFromAnotherKey {
            attested: fresh.signer_hex.clone(),
            recovered: cloister_crypto::format_address(&recovered),
        })
    }
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn is_sealed(headers: &HeaderMap) -> bool {
    headers
        .get(HEADER_E2EE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == E2EE_VERSION)
}

fn open_sealed_body(keys: ClientResponseKeys, raw: &[u8]) -> Result<Bytes> {
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
fn unsealed_answer(status: reqwest::StatusCode, body: Bytes) -> Error {
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

/// Reads an answer stream on its own task, passing on checked events.
struct StreamReader {
    client: NodeClient,
    node: Arc<VerifiedNode>,
    request: Bytes,
    opener: Option<ResponseOpener>,
}

/// The state of the plaintext stream.
#[derive(Default)]
struct Plain {
    framer: SseFramer,
    /// Every plaintext byte before the signature event: what the signature covers.
    signed: Vec<u8>,
    record: Option<SignatureRecord>,
    receipt: Option<serde_json::Value>,
    done_seen: bool,
}

impl StreamReader {
    async fn run(mut self, resp: reqwest::Response, tx: mpsc::Sender<Result<StreamEvent>>) {
        let result = self.read(resp, &tx).await;
        let item = result.map(StreamEvent::Done);
        if let Err(e) = &item {
            tracing::warn!(node = %self.client.url(), code = e.code(), "stream refused: {e}");
        }
        let _ = tx.send(item).await;
    }

    async fn read(
        &mut self,
        resp: reqwest::Response,
        tx: &mpsc::Sender<Result<StreamEvent>>,
    ) -> Result<StreamProof> {
        let sealed = self.opener.is_some();
        let mut outer = SseFramer::default();
        let mut plain = Plain::default();
        let mut ended = false;
        let mut bytes = resp.bytes_stream();
        while let Some(chunk) = bytes.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                // A connection cut mid-answer: what arrived lacks its end.
                Err(e) => {
                    tracing::debug!("stream read failed: {e}");
                    return Err(Error::ResponseTruncated);
                }
            };
            let frames = match &mut self.opener {
                None => {
                    self.plaintext(&mut plain, &chunk, tx).await?;
                    continue;
                }
                Some(_) => outer.push(&chunk)?,
            };
            for frame in frames {
                let (_, data) = parse_event(&frame)?;
                if data.trim().is_empty() {
                    continue;
                }
                if ended {
                    return Err(Error::MalformedResponse("data after the end marker".into()));
                }
                let ct = decode_base64(&data)
                    .map_err(|_| Error::MalformedResponse("a sealed event is not base64".into()))?;
                let Some(opener) = self.opener.as_mut() else {
                    break;
                };
                if opener.is_end(&ct) {
                    ended = true;
                    continue;
                }
                let pt = opener.open_chunk(&ct).map_err(Error::from_crypto)?;
                self.plaintext(&mut plain, &pt, tx).await?;
            }
        }
        if sealed && !ended {
            return Err(Error::ResponseTruncated);
        }
        if plain.framer.has_partial_event() || outer.has_partial_event() {
            return Err(if sealed {
                Error::MalformedResponse("an unterminated event".into())
            } else {
                Error::ResponseTruncated
            });
        }
        let Some(record) = plain.record else {
            return Err(if sealed {
                Error::SignatureMissing
            } else {
                Error::ResponseTruncated
            });
        };
        let node = self
            .client
            .check_signer(Arc::clone(&self.node), &record, &self.request, &plain.signed)
            .await?;
        Ok(StreamProof {
            node,
            signature: record,
            done_seen: plain.done_seen,
            receipt: plain.receipt,
        })
    }

    /// Feeds plaintext bytes; passes on every completed data event.
    async fn plaintext(
        &self,
        plain: &mut Plain,
        bytes: &[u8],
        tx: &mpsc::Sender<Result<StreamEvent>>,
    ) -> Result<()> {
        for event in plain.framer.push(bytes)? {
            let (name, data) = parse_event(&event)?;
            if plain.record.is_some() {
                if data.trim().is_empty() {
                    continue;
                }
                return Err(Error::MalformedResponse("an event after the signature".into()));
            }
            if name.as_deref() == Some("cloister.signature") {
                let bad = |e: serde_json::Error| Error::SignatureInvalid {
                    detail: format!("the signature event is not a signature record: {e}"),
                };
                let value: serde_json::Value = serde_json::from_str(data.trim()).map_err(bad)?;
                plain.receipt = value.get("receipt").filter(|r| !r.is_null()).cloned();
                plain.record = Some(serde_json::from_value(value).map_err(bad)?);
                continue;
            }
            plain.signed.extend_from_slice(&event);
            if data.trim() == "[DONE]" {
                plain.done_seen = true;
                continue;
            }
            if tx.send(Ok(StreamEvent::Data(Bytes::from(event)))).await.is_err() {
                // The reader went away; stop reading.
                return Err(Error::MalformedResponse("the stream's reader went away".into()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_head() {
        let h = parse_request(br#"{"model":"m","stream":true}"#).ok();
        assert_eq!(h.map(|h| (h.model, h.stream)), Some(("m".to_owned(), true)));
        assert!(parse_request(b"{}").is_err());
        assert!(parse_request(b"nope").is_err());
    }

    #[test]
    fn an_unsealed_e2ee_refusal_is_named() {
        let body = Bytes::from_static(
            br#"{"error":{"message":"replayed","type":"invalid_request_error","code":"e2ee_replayed"}}"#,
        );
        let err = unsealed_answer(reqwest::StatusCode::BAD_REQUEST, body);
        assert!(matches!(&err, Error::E2eeRefusedByNode { code, .. } if code == "e2ee_replayed"));
        assert!(matches!(
            unsealed_answer(reqwest::StatusCode::OK, Bytes::new()),
            Error::ResponseNotSealed
        ));
    }
}
