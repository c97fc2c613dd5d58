//! `POST /v1/chat/completions`: run the engine and sign exactly the bytes the client receives.
//!
//! The body is taken raw and parsed here, so the signature covers the request bytes as sent, and
//! the response is serialised once and those same bytes are both hashed and sent. The
//! `Content-Type` of the request is not checked: OpenAI SDKs always send JSON, and a body that is
//! not JSON gets a 400 `invalid_json` whatever its label.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::Response;
use cloister_types::openai::{
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, TextCompletion, Usage,
};
use cloister_types::wire::{
    CHAT_COMPLETIONS_PATH, EVENT_STREAM_CONTENT_TYPE, INLINE_SIGNATURE_HEADER, JSON_CONTENT_TYPE,
    RECEIPT_HEADER, SIGNATURE_HEADER, SIGNATURE_ID_HEADER, SIGNING_ADDRESS_HEADER,
};
use cloister_types::{sha256_hex, signature_text};
use futures::StreamExt as _;

use super::e2ee;
use super::sse::{Chunks, Inline, SseStream};
use crate::billing::{Payer, Receipt};
use crate::error::{ApiError, engine_error_kind};
use crate::state::AppState;

/// What a chat handler knows about the exchange it is serving.
pub(super) struct Exchange {
    /// The node's completion id (`chatcmpl-` + 32 hex), the key of `/v1/signature/{id}`.
    pub(super) id: String,
    /// Metrics label of the requested model.
    pub(super) model: String,
    /// The model id as requested (the price key).
    pub(super) requested_model: String,
    /// The route served (`/v1/chat/completions`, `/v1/completions`), named in the ACI receipt.
    pub(super) endpoint: &'static str,
    /// Who pays, when billing is on.
    pub(super) payer: Option<Payer>,
    /// When the request arrived.
    pub(super) started: Instant,
    /// SHA-256 of the request's bearer token: its ACI receipt is served only to that credential.
    pub(super) credential: Option<[u8; 32]>,
}

impl Exchange {
    /// What this exchange's ACI receipt names besides the signed hashes.
    pub(super) fn receipt_meta(&self) -> crate::aci::ReceiptMeta<'_> {
        crate::aci::ReceiptMeta {
            model: &self.requested_model,
            endpoint: self.endpoint,
            credential: self.credential,
        }
    }

    /// Meters `usage` for the payer, durably, before any signature over the answer exists.
    /// `None` when the node is free.
    pub(super) async fn charge(
        &self,
        state: &AppState,
        usage: Option<&Usage>,
    ) -> Result<Option<Receipt>, ApiError> {
        let (Some(billing), Some(payer)) = (&state.billing, &self.payer) else {
            return Ok(None);
        };
        let usage = usage.cloned().unwrap_or_default();
        let receipt = billing
            .charge(payer, &self.requested_model, &usage, &state.key)
            .await?;
        tracing::debug!(id = %self.id, cumulative = %receipt.cumulative_amount, "usage metered");
        Ok(Some(receipt))
    }
}

/// The handler. A sealed request (`x-cloister-e2ee`) is opened first and its answer sealed on the
/// way out (see `super::e2ee`); everything in between runs on the plaintext.
pub(super) async fn chat_completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    e2ee::serve_sealable(
        state,
        &headers,
        body,
        CHAT_COMPLETIONS_PATH,
        async |state, body, started| chat(state, &headers, body, started).await,
    )
    .await
}

async fn chat(
    state: AppState,
    headers: &HeaderMap,
    raw: &[u8],
    started: Instant,
) -> Result<Response, ApiError> {
    let req: ChatCompletionRequest = serde_json::from_slice(raw).map_err(|e| ApiError::from_json(&e))?;
    let exchange = Exchange::open(
        &state,
        headers,
        &req.model,
        req.stream,
        CHAT_COMPLETIONS_PATH,
        started,
    )
    .await?;
    let engine = Arc::clone(&state.engine);
    if req.stream {
        let include_usage = req.stream_options.as_ref().is_some_and(|o| o.include_usage);
        let opened = async move { engine.stream(req).await };
        stream(
            state,
            raw,
            opened,
            include_usage,
            exchange,
            inline_signature(headers),
        )
        .await
    } else {
        complete(state, raw, engine.complete(req), exchange).await
    }
}

impl Exchange {
    /// Authorizes the payer (when billing is on), counts the request and names the exchange.
    pub(super) async fn open(
        state: &AppState,
        headers: &HeaderMap,
        requested_model: &str,
        stream: bool,
        endpoint: &'static str,
        started: Instant,
    ) -> Result<Self, ApiError> {
        let payer = match &state.billing {
            Some(billing) => Some(billing.authorize(headers, requested_model).await?),
            None => None,
        };
        let model = state.model_label(requested_model);
        state.metrics().chat_request(&model, stream);
        Ok(Self {
            id: completion_id(endpoint),
            model,
            requested_model: requested_model.to_owned(),
            endpoint,
            payer,
            started,
            credential: bearer_token(headers).map(crate::aci::credential_digest),
        })
    }
}

/// What signing needs of an answer object: a whole completion or one stream chunk, chat or text.
pub(super) trait Answer: serde::Serialize + Send + 'static {
    /// Puts the node's id in place of the engine's.
    fn set_id(&mut self, id: &str);
    /// The usage it carries.
    fn usage(&self) -> Option<Usage>;
    /// Whether it carries any choice (a usage-only stream chunk does not).
    fn has_choices(&self) -> bool;
    /// Drops its usage (a client that did not ask for usage in a stream).
    fn clear_usage(&mut self);
}

macro_rules! answer {
    ($($ty:ty),*) => {$(
        impl Answer for $ty {
            fn set_id(&mut self, id: &str) {
                self.id = id.to_owned();
            }
            fn usage(&self) -> Option<Usage> {
                self.usage
            }
            fn has_choices(&self) -> bool {
                !self.choices.is_empty()
            }
            fn clear_usage(&mut self) {
                self.usage = None;
            }
        }
    )*};
}
answer!(ChatCompletion, ChatCompletionChunk, TextCompletion);

/// The bearer token of `Authorization`, if any.
pub(super) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Whether the request asks for the signature event inside the stream: `x-cloister-inline-signature`
/// set to `1` or `true` (any case). On a sealed request it is read from the outer, clear headers.
pub(super) fn inline_signature(headers: &HeaderMap) -> Inline {
    let on = headers
        .get(INLINE_SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if on { Inline::Yes } else { Inline::No }
}

/// A fresh completion id (`chatcmpl-`, or `cmpl-` for text completions, then 32 hex). The node never
/// reuses an engine's or upstream's id: ids key signatures, so a colliding or attacker-chosen id
/// must not overwrite another answer's signature.
fn completion_id(endpoint: &str) -> String {
    let prefix = if endpoint == CHAT_COMPLETIONS_PATH {
        "chatcmpl"
    } else {
        "cmpl"
    };
    format!("{prefix}-{}", hex::encode(rand::random::<[u8; 16]>()))
}

/// Counts an engine failure and wraps it.
pub(super) fn engine_failed(state: &AppState, err: cloister_engine::Error) -> ApiError {
    state.metrics().engine_error(engine_error_kind(&err));
    ApiError::Engine(err)
}

/// Counts a timeout and wraps it.
pub(super) fn timed_out(state: &AppState, limit: std::time::Duration) -> ApiError {
    state.metrics().engine_error("timeout");
    ApiError::Timeout(limit)
}

fn header_value(value: &str) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(value).map_err(|e| ApiError::Internal(format!("header value: {e}")))
}

fn set_header(response: &mut Response, name: &'static str, value: &str) -> Result<(), ApiError> {
    response
        .headers_mut()
        .insert(HeaderName::from_static(name), header_value(value)?);
    Ok(())
}

/// A whole answer: waits for `answer` (within the request timeout), then meters, signs and sends it.
pub(super) async fn complete<A: Answer>(
    state: AppState,
    raw: &[u8],
    answer: impl Future<Output = cloister_engine::Result<A>>,
    exchange: Exchange,
) -> Result<Response, ApiError> {
    let limit = state.config.request_timeout;
    let mut completion = match tokio::time::timeout(limit, answer).await {
        Err(_) => return Err(timed_out(&state, limit)),
        Ok(result) => result.map_err(|e| engine_failed(&state, e))?,
    };
    completion.set_id(&exchange.id);
    let usage = completion.usage();
    if let Some(usage) = &usage {
        state.metrics().usage(&exchange.model, usage);
    }
    // Serialised once: these bytes are hashed, signed and sent, unchanged.
    let body = serde_json::to_vec(&completion)
        .map_err(|e| ApiError::Internal(format!("serialising a completion: {e}")))?;
    let receipt = exchange.charge(&state, usage.as_ref()).await?;
    let record = state.sign_and_store(&exchange.id, signature_text(raw, &body), exchange.receipt_meta());
    state.metrics().chat_duration(exchange.started.elapsed());
    tracing::debug!(id = %exchange.id, bytes = body.len(), "completion signed");

    let mut response = Response::new(Body::from(body));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_CONTENT_TYPE));
    set_header(&mut response, SIGNATURE_HEADER, &record.signature)?;
    set_header(&mut response, SIGNING_ADDRESS_HEADER, &record.signing_address)?;
    set_header(&mut response, SIGNATURE_ID_HEADER, &exchange.id)?;
    if let Some(receipt) = receipt {
        let json = serde_json::to_string(&receipt)
            .map_err(|e| ApiError::Internal(format!("serialising a receipt: {e}")))?;
        set_header(&mut response, RECEIPT_HEADER, &json)?;
    }
    Ok(response)
}

/// A streamed answer: opens the engine's stream (`open`) and answers with its SSE body, hashed and
/// signed as it goes (see `super::sse`).
pub(super) async fn stream<C: Answer>(
    state: AppState,
    raw: &[u8],
    open: impl Future<Output = cloister_engine::Result<Chunks<C>>> + Send + 'static,
    include_usage: bool,
    exchange: Exchange,
    inline: Inline,
) -> Result<Response, ApiError> {
    let limit = state.config.request_timeout;
    // Wait for the first chunk before answering: until then a failure can still be an HTTP
    // status (404 unknown model, 502 upstream down) rather than an error event.
    let opened = tokio::time::timeout(limit, async move {
        let mut chunks = open.await?;
        let first = chunks.next().await.transpose()?;
        Ok::<_, cloister_engine::Error>((chunks, first))
    })
    .await;
    let (chunks, first) = match opened {
        Err(_) => return Err(timed_out(&state, limit)),
        Ok(result) => result.map_err(|e| engine_failed(&state, e))?,
    };

    let id = exchange.id.clone();
    let sse = SseStream::new(
        state.clone(),
        chunks,
        first,
        sha256_hex(raw),
        include_usage,
        exchange,
        inline,
    );
    let mut response = Response::new(Body::from_stream(sse.into_stream()));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(EVENT_STREAM_CONTENT_TYPE),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Reverse proxies (nginx) must not hold chunks back.
    headers.insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    set_header(&mut response, SIGNING_ADDRESS_HEADER, state.signing_address())?;
    set_header(&mut response, SIGNATURE_ID_HEADER, &id)?;
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_fresh_and_well_formed() {
        let a = completion_id(CHAT_COMPLETIONS_PATH);
        let b = completion_id(CHAT_COMPLETIONS_PATH);
        assert!(completion_id(cloister_types::wire::COMPLETIONS_PATH).starts_with("cmpl-"));
        assert_ne!(a, b);
        let hex_part = a.strip_prefix("chatcmpl-").unwrap_or_default();
        assert_eq!(hex_part.len(), 32);
        assert!(hex_part.bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn inline_signature_is_opt_in() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(INLINE_SIGNATURE_HEADER, HeaderValue::from_static(value));
            inline_signature(&headers)
        };
        assert_eq!(inline_signature(&HeaderMap::new()), Inline::No);
        assert_eq!(with(cloister_types::wire::INLINE_SIGNATURE_ON), Inline::Yes);
        assert_eq!(with("TRUE"), Inline::Yes);
        for off in ["0", "false", "yes", ""] {
            assert_eq!(with(off), Inline::No, "{off:?}");
        }
    }
}
