//! Streamed answers: opened events passed on as they arrive, then the end-of-stream proof (end
//! marker when sealed, signature from the attested signer over every byte before it).
//!
//! Every request asks for the signature inline (`x-cloister-inline-signature`, sent by
//! `exchange.rs`): the node then follows `data: [DONE]` with the `cloister.signature` event. A
//! stream without that event is refused, never completed from `GET /v1/signature/{id}`: the event
//! is what ties this exact stream to its signature, so a node (or anything in between) that drops
//! it gets no benefit of the doubt.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use cloister_crypto::e2ee::{ClientResponseKeys, ResponseOpener, decode_base64};
use cloister_types::SignatureRecord;
use cloister_types::wire;
use futures::{Stream, StreamExt};
use reqwest::header::CONTENT_TYPE;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::exchange::{Sent, header_text, is_sealed, open_sealed_body, unsealed_answer};
use super::{NodeClient, RequestOptions, parse_request};
use crate::report::VerifiedNode;
use crate::sse::{SseFramer, parse_event};
use crate::{Error, Result};

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
    on_proof: Option<ProofObserver>,
}

/// Called with the proof that ends a verified stream (see [`ChatStream::on_proof`]).
pub type ProofObserver = Arc<dyn Fn(&StreamProof) + Send + Sync>;

impl ChatStream {
    /// Calls `observer` with the end-of-stream proof when it arrives (a wallet collects the
    /// stream's metering receipt this way).
    pub fn on_proof(mut self, observer: ProofObserver) -> Self {
        self.on_proof = Some(observer);
        self
    }
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
        let next = Pin::new(&mut self.events).poll_next(cx);
        if let (Poll::Ready(Some(Ok(StreamEvent::Done(proof)))), Some(observer)) = (&next, &self.on_proof) {
            observer(proof);
        }
        next
    }
}

impl NodeClient {
    /// Sends a `stream: true` chat request and returns the answer as it arrives: opened events,
    /// then the end-of-stream proof (end marker, signature from the attested signer).
    pub async fn chat_stream(&self, body: Bytes, opts: &RequestOptions) -> Result<ChatStream> {
        self.open_stream(body, opts, wire::CHAT_COMPLETIONS_PATH).await
    }

    /// [`NodeClient::chat_stream`] for a streamed legacy text completion (`POST /v1/completions`).
    pub async fn completion_stream(&self, body: Bytes, opts: &RequestOptions) -> Result<ChatStream> {
        self.open_stream(body, opts, wire::COMPLETIONS_PATH).await
    }

    async fn open_stream(
        &self,
        body: Bytes,
        opts: &RequestOptions,
        path: &'static str,
    ) -> Result<ChatStream> {
        let head = parse_request(&body, path)?;
        if !head.stream {
            return Err(Error::InvalidRequest(
                "chat_stream needs a `stream: true` request".into(),
            ));
        }
        self.exchange(&head, &body, opts, |sent| self.start_stream(sent, &body))
            .await
    }

    /// Checks the head of a streamed answer and starts reading its events on their own task.
    async fn start_stream(&self, sent: Sent, request: &Bytes) -> Result<ChatStream> {
        let Sent { node, resp, keys } = sent;
        let status = resp.status();
        let headers = resp.headers().clone();
        let is_sse = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with(wire::EVENT_STREAM_CONTENT_TYPE));
        let sealed = keys.is_some();
        if !status.is_success() || !is_sse {
            let raw = crate::body::read_body(resp, &self.inner.base).await?;
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
            request: request.clone(),
            opener: keys.map(ClientResponseKeys::opener),
        };
        tokio::spawn(reader.run(resp, tx));
        Ok(ChatStream {
            node,
            sealed,
            signature_id: header_text(&headers, wire::SIGNATURE_ID_HEADER),
            events: ReceiverStream::new(rx),
            on_proof: None,
        })
    }
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
            // We asked for the event inline. A stream that ended whole (sealed, or at `[DONE]`)
            // without it is unsigned; a plaintext stream that ended before `[DONE]` was cut.
            return Err(if sealed || plain.done_seen {
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
            if name.as_deref() == Some(wire::SIGNATURE_EVENT) {
                let bad = |e: serde_json::Error| Error::SignatureInvalid {
                    detail: format!("the signature event is not a signature record: {e}"),
                };
                let value: serde_json::Value = serde_json::from_str(data.trim()).map_err(bad)?;
                plain.receipt = value.get("receipt").filter(|r| !r.is_null()).cloned();
                plain.record = Some(serde_json::from_value(value).map_err(bad)?);
                continue;
            }
            plain.signed.extend_from_slice(&event);
            if data.trim() == wire::SSE_DONE {
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
