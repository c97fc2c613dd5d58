//! The SSE body of a streamed completion: forwards chunks as they arrive, hashes every byte sent,
//! and stores the text to sign over them before the last one leaves.
//!
//! Wire format, after the headers:
//!
//! ```text
//! data: {chunk with the node's id}\n\n      (one per engine chunk)
//! data: [DONE]\n\n
//! event: cloister.signature\ndata: {"id", "text", "signature", "signing_address", "signing_algo"}\n\n
//! ```
//!
//! The signed text is `sha256(request body) ":" sha256(every byte up to and including [DONE])`. The
//! last event is sent only to a request with `x-cloister-inline-signature` ([`Inline::Yes`]); by
//! default the body ends at `data: [DONE]`, so its bytes hash whole to the signed text (what NEAR's
//! and Phala's verifiers compute), and the record is fetched from `GET /v1/signature/{id}`, which
//! signs it on the first fetch (RFC 6979: the same bytes as signing at once). Either way the usage
//! is charged and the signed text stored before `[DONE]` is sent. An engine failure, a
//! timeout after the first chunk or a failed charge ends the stream with
//! `data: {"error": {...}}\n\n` instead, with no `[DONE]` and no signature.
//!
//! Writes: each body frame carries one event and every event the engine has already produced behind
//! it (up to [`COALESCE_BYTES`]), and `[DONE]` with them when the stream has ended. An engine that
//! hands over chunks one by one gets them sent one by one, with no added wait; a burst (a fast
//! upstream, a client that reads slowly) leaves in one write instead of one write per chunk.

use std::convert::Infallible;
use std::time::Duration;

use std::pin::Pin;

use axum::body::Bytes;
use cloister_types::openai::Usage;
use cloister_types::wire::{SIGNATURE_EVENT, SSE_DONE_EVENT};
use futures::{FutureExt as _, Stream, StreamExt as _};
use sha2::{Digest, Sha256};

use super::SignatureEvent;
use super::chat::{Answer, Exchange, engine_failed, timed_out};
use crate::error::ApiError;
use crate::state::AppState;

const DONE: &[u8] = SSE_DONE_EVENT.as_bytes();

/// A frame takes no more ready events once it holds this many bytes.
const COALESCE_BYTES: usize = 64 << 10;

/// Whether the client asked for the signature event inside the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Inline {
    /// `x-cloister-inline-signature` was sent: `[DONE]` is followed by the signature event.
    Yes,
    /// The default: the stream ends at `[DONE]`.
    No,
}

enum Phase {
    Chunks,
    /// `[DONE]` was sent; this signature event follows it.
    Signature(Bytes),
    Done,
}

/// An engine's chunks: chat (`chat.completion.chunk`) or text (`text_completion`) ones.
pub(super) type Chunks<C> = Pin<Box<dyn Stream<Item = cloister_engine::Result<C>> + Send>>;

/// The state of one streamed answer.
pub(super) struct SseStream<C> {
    state: AppState,
    chunks: Chunks<C>,
    /// The first chunk, already taken from the engine before the headers went out.
    pending: Option<C>,
    /// What the engine stream returned when polled for a ready chunk and it had none to give: its
    /// end or an error, handled by the next [`Self::next_event`].
    lookahead: Option<Option<cloister_engine::Result<C>>>,
    request_hash: String,
    sent: Sha256,
    include_usage: bool,
    /// Latest usage reported; metered once, when the stream ends however it ends.
    usage: Option<Usage>,
    /// Latest usage reported, kept for billing (charged before the answer is signed).
    billed: Option<Usage>,
    exchange: Exchange,
    inline: Inline,
    phase: Phase,
}

impl<C: Answer> SseStream<C> {
    pub(super) fn new(
        state: AppState,
        chunks: Chunks<C>,
        first: Option<C>,
        request_hash: String,
        include_usage: bool,
        exchange: Exchange,
        inline: Inline,
    ) -> Self {
        Self {
            state,
            chunks,
            pending: first,
            lookahead: None,
            request_hash,
            sent: Sha256::new(),
            include_usage,
            usage: None,
            billed: None,
            exchange,
            inline,
            phase: Phase::Chunks,
        }
    }

    /// The body stream. Dropping it (client gone) drops the engine stream, which cancels decoding.
    pub(super) fn into_stream(self) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
        futures::stream::unfold(self, |mut sse| async move {
            let first = sse.next_event().await?;
            Some((Ok(sse.coalesce(first).await), sse))
        })
    }

    /// `first` and the events that are ready behind it, in one frame: chunks the engine has already
    /// produced, and once the engine stream has ended, the end of the answer (`[DONE]`, which may
    /// wait for the charge, as it would in a frame of its own).
    async fn coalesce(&mut self, mut first: Bytes) -> Bytes {
        let mut frame: Option<Vec<u8>> = None;
        loop {
            let len = frame.as_ref().map_or(first.len(), Vec::len);
            if len >= COALESCE_BYTES {
                break;
            }
            let next = if self.lookahead.is_some() || matches!(self.phase, Phase::Signature(_)) {
                self.next_event().await
            } else if matches!(self.phase, Phase::Chunks) {
                self.ready_event()
            } else {
                None
            };
            let Some(next) = next else {
                break;
            };
            frame
                .get_or_insert_with(|| Vec::from(std::mem::take(&mut first)))
                .extend_from_slice(&next);
        }
        frame.map_or(first, Bytes::from)
    }

    /// The event of a chunk the engine already has, without waiting; `None` when it has none, or
    /// when its stream ended or failed (kept in `lookahead` for [`Self::next_event`]).
    fn ready_event(&mut self) -> Option<Bytes> {
        loop {
            match self.chunks.next().now_or_never() {
                None => return None,
                Some(Some(Ok(chunk))) => {
                    if let Some(event) = self.chunk_event(chunk) {
                        return Some(event);
                    }
                }
                Some(other) => {
                    self.lookahead = Some(other);
                    return None;
                }
            }
        }
    }

    async fn next_event(&mut self) -> Option<Bytes> {
        loop {
            match std::mem::replace(&mut self.phase, Phase::Done) {
                Phase::Done => return None,
                Phase::Signature(event) => return Some(event),
                Phase::Chunks => self.phase = Phase::Chunks,
            }
            let chunk = match self.pending.take() {
                Some(chunk) => chunk,
                None => match self.next_chunk().await {
                    Ok(Some(chunk)) => chunk,
                    Ok(None) => {
                        self.meter_usage();
                        return Some(self.finish().await);
                    }
                    Err(err) => {
                        self.phase = Phase::Done;
                        return Some(error_event(&err));
                    }
                },
            };
            if let Some(event) = self.chunk_event(chunk) {
                return Some(event);
            }
        }
    }

    async fn next_chunk(&mut self) -> Result<Option<C>, ApiError> {
        let next = match self.lookahead.take() {
            Some(next) => next,
            None => {
                let idle: Duration = self.state.config.stream_idle_timeout;
                match tokio::time::timeout(idle, self.chunks.next()).await {
                    Err(_) => return Err(timed_out(&self.state, idle)),
                    Ok(next) => next,
                }
            }
        };
        match next {
            None => Ok(None),
            Some(Err(e)) => Err(engine_failed(&self.state, e)),
            Some(Ok(chunk)) => Ok(Some(chunk)),
        }
    }

    /// The event for one chunk, or `None` for a usage-only chunk the client did not ask for.
    fn chunk_event(&mut self, mut chunk: C) -> Option<Bytes> {
        chunk.set_id(&self.exchange.id);
        if let Some(usage) = chunk.usage() {
            self.usage = Some(usage);
            self.billed = Some(usage);
            if !self.include_usage {
                if !chunk.has_choices() {
                    return None;
                }
                chunk.clear_usage();
            }
        }
        let mut event = Vec::with_capacity(256);
        event.extend_from_slice(b"data: ");
        match serde_json::to_writer(&mut event, &chunk) {
            Ok(()) => {
                event.extend_from_slice(b"\n\n");
                Some(self.emit(Bytes::from(event)))
            }
            Err(e) => {
                self.phase = Phase::Done;
                Some(error_event(&ApiError::Internal(format!(
                    "serialising a chunk: {e}"
                ))))
            }
        }
    }

    /// Hashes bytes on their way out.
    fn emit(&mut self, bytes: Bytes) -> Bytes {
        self.sent.update(&bytes);
        bytes
    }

    /// The end of a complete answer: charges the usage (durably, before any signature exists),
    /// signs every byte up to and including `[DONE]` and stores the record, then returns `[DONE]`,
    /// with the signature event queued after it when the client asked for it inline. A failed
    /// charge or serialisation returns an error event instead, and nothing is signed or follows.
    async fn finish(&mut self) -> Bytes {
        self.phase = Phase::Done;
        let receipt = match self.exchange.charge(&self.state, self.billed.as_ref()).await {
            Ok(receipt) => receipt,
            Err(err) => return error_event(&err),
        };
        let mut sent = std::mem::take(&mut self.sent);
        sent.update(DONE);
        let text = format!("{}:{}", self.request_hash, hex::encode(sent.finalize()));
        if self.inline == Inline::No {
            // Signed when `GET /v1/signature/{id}` first asks: the same bytes (RFC 6979), and a
            // stream nobody verifies costs no signature.
            self.state
                .store_for_signing(&self.exchange.id, text, self.exchange.receipt_meta());
        } else {
            let record = self
                .state
                .sign_and_store(&self.exchange.id, text, self.exchange.receipt_meta());
            let event = SignatureEvent {
                id: &self.exchange.id,
                record: &record,
                receipt: receipt.as_ref(),
            };
            match serde_json::to_string(&event) {
                Ok(json) => {
                    let event = format!("event: {SIGNATURE_EVENT}\ndata: {json}\n\n");
                    self.phase = Phase::Signature(Bytes::from(event));
                }
                Err(e) => {
                    return error_event(&ApiError::Internal(format!("serialising a signature: {e}")));
                }
            }
        }
        self.state
            .metrics()
            .chat_duration(self.exchange.started.elapsed());
        Bytes::from_static(DONE)
    }
}

impl<C> SseStream<C> {
    fn meter_usage(&mut self) {
        if let Some(usage) = self.usage.take() {
            self.state.metrics().usage(&self.exchange.model, &usage);
        }
    }
}

impl<C> Drop for SseStream<C> {
    /// A stream cut short (client gone, engine error) still meters what the engine reported.
    fn drop(&mut self) {
        self.meter_usage();
    }
}

/// `data: {"error": {...}}\n\n`, logged on the way.
fn error_event(err: &ApiError) -> Bytes {
    err.log();
    let json = serde_json::to_string(&err.to_body()).unwrap_or_else(|_| {
        r#"{"error":{"message":"Internal server error.","type":"server_error","code":"internal_error","param":null}}"#
            .to_owned()
    });
    Bytes::from(format!("data: {json}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloister_types::{sha256_hex, signature_text};

    #[test]
    fn incremental_hash_matches_signature_text() {
        let events: [&[u8]; 3] = [b"data: {\"a\":1}\n\n", b"data: {\"b\":2}\n\n", DONE];
        let mut hasher = Sha256::new();
        let mut all = Vec::new();
        for e in events {
            hasher.update(e);
            all.extend_from_slice(e);
        }
        let text = format!("{}:{}", sha256_hex(b"req"), hex::encode(hasher.finalize()));
        assert_eq!(text, signature_text(b"req", &all));
    }

    #[test]
    fn error_event_is_openai_shaped() {
        let event = error_event(&ApiError::Engine(cloister_engine::Error::Inference("x".into())));
        let text = String::from_utf8_lossy(&event);
        let json = text
            .strip_prefix("data: ")
            .and_then(|s| s.strip_suffix("\n\n"))
            .unwrap_or_default();
        let value: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
        assert_eq!(value["error"]["code"], "inference_error");
    }
}
