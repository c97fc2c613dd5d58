//! The E2EE layer of `POST /v1/chat/completions`, `POST /v1/completions` and `POST /v1/embeddings`
//! (`docs/protocol.md` §8).
//!
//! A request carrying `x-cloister-e2ee: v1` is opened here before the chat handler sees it: the
//! body is the base64 envelope, the AAD binds method, path (the route's own), timestamp and model header, the
//! timestamp must be within [`MAX_CLOCK_SKEW_SECS`] of the node's clock, and an encapsulated key
//! already accepted is refused. The chat handler then runs on the plaintext exactly as for an
//! unencrypted request (so the signature covers the plaintext bodies), and its response is sealed
//! on the way out: a plain body as chunk 0 ‖ end marker, an SSE stream event by event followed by
//! the end marker, each as its own `data:` line.

use std::convert::Infallible;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use cloister_crypto::e2ee::{NodeResponseKeys, SealedRequest, encode_base64, open_request};
use cloister_types::e2ee::{
    E2EE_VERSION, HEADER_E2EE, HEADER_E2EE_TIMESTAMP, HEADER_MODEL, MAX_CLOCK_SKEW_SECS, SEALED_CONTENT_TYPE,
    request_aad,
};
use cloister_types::wire::EVENT_STREAM_CONTENT_TYPE;
use futures::StreamExt as _;
use serde::Deserialize;

use crate::error::{ApiError, E2eeRefusal};
use crate::state::AppState;

/// The entry of every endpoint that takes sealed requests: notes when the request arrived, turns a
/// body that could not be read into its error (413 past the body limit), and runs `handle` on the
/// body, with that arrival time, through [`plain_or_sealed`].
pub(super) async fn serve_sealable<F>(
    state: AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    path: &str,
    handle: F,
) -> Result<Response, ApiError>
where
    F: AsyncFnOnce(AppState, &[u8], Instant) -> Result<Response, ApiError>,
{
    let started = Instant::now();
    let raw = body.map_err(|rejection| body_error(&state, &rejection))?;
    plain_or_sealed(state, headers, &raw, path, async |state, body| {
        handle(state, body, started).await
    })
    .await
}

fn body_error(state: &AppState, rejection: &BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge {
            limit: state.config.body_limit,
        }
    } else {
        ApiError::BodyRead(rejection.body_text())
    }
}

/// Runs `handle` on the request body of the endpoint at `path`: as it is when plain; opened first,
/// and its answer (error answers too) sealed on the way out, when sealed. Shared by every endpoint
/// that takes sealed requests.
pub(super) async fn plain_or_sealed<F>(
    state: AppState,
    headers: &HeaderMap,
    raw: &[u8],
    path: &str,
    handle: F,
) -> Result<Response, ApiError>
where
    F: AsyncFnOnce(AppState, &[u8]) -> Result<Response, ApiError>,
{
    if !is_sealed(headers) {
        return handle(state, raw).await;
    }
    let (plaintext, keys) = open(&state, headers, raw, path)?;
    let response = match handle(state, &plaintext).await {
        Ok(response) => response,
        Err(err) => {
            err.log();
            err.into_response()
        }
    };
    Ok(seal(response, keys).await)
}

/// Whether the request asks for E2EE.
pub(super) fn is_sealed(headers: &HeaderMap) -> bool {
    headers.contains_key(HEADER_E2EE)
}

/// Opens a sealed chat request: checks headers and time, opens the envelope, records its `enc`
/// against replay, and checks the body's model against the header.
pub(super) fn open(
    state: &AppState,
    headers: &HeaderMap,
    raw: &[u8],
    path: &str,
) -> Result<(Bytes, NodeResponseKeys), ApiError> {
    let version = header_str(headers, HEADER_E2EE)?;
    if version != E2EE_VERSION {
        return Err(E2eeRefusal::Malformed("unsupported x-cloister-e2ee version").into());
    }
    let timestamp: u64 = header_str(headers, HEADER_E2EE_TIMESTAMP)?
        .parse()
        .map_err(|_| E2eeRefusal::Malformed("x-cloister-e2ee-timestamp is not unix seconds"))?;
    let model = header_str(headers, HEADER_MODEL)?;
    let now = crate::unix_now();
    let skew = now.abs_diff(timestamp);
    if skew > MAX_CLOCK_SKEW_SECS {
        return Err(E2eeRefusal::Stale { timestamp, skew }.into());
    }
    let text = std::str::from_utf8(raw).map_err(|_| E2eeRefusal::Malformed("body is not base64 text"))?;
    let sealed =
        SealedRequest::from_base64(text).map_err(|_| E2eeRefusal::Malformed("body is not an envelope"))?;
    let aad = request_aad("POST", path, timestamp, model);
    let address = state.key.address();
    let (plaintext, keys) = open_request(&state.e2ee, &address, &sealed, &aad).map_err(|e| match e {
        cloister_crypto::Error::MalformedEnvelope(what) => E2eeRefusal::Malformed(what),
        _ => E2eeRefusal::OpenFailed,
    })?;
    state.check_replay(&sealed.enc)?;
    // A body that is not JSON is the chat handler's (sealed) `invalid_json`; only a readable model
    // that differs from the header is refused here.
    #[derive(Deserialize)]
    struct ModelOnly {
        model: String,
    }
    if let Ok(ModelOnly { model: body_model }) = serde_json::from_slice(&plaintext)
        && body_model != model
    {
        return Err(E2eeRefusal::ModelMismatch.into());
    }
    state.metrics().e2ee_request();
    Ok((Bytes::from(plaintext), keys))
}

fn header_str<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, E2eeRefusal> {
    headers
        .get(name)
        .ok_or(E2eeRefusal::Malformed(match name {
            HEADER_E2EE_TIMESTAMP => "missing x-cloister-e2ee-timestamp",
            HEADER_MODEL => "missing x-cloister-model",
            _ => "missing x-cloister-e2ee",
        }))?
        .to_str()
        .map_err(|_| E2eeRefusal::Malformed("E2EE header is not ASCII"))
}

/// Seals `response` (the chat handler's answer, success or error) under `keys`. Status and
/// signature headers stay in clear; the body does not.
pub(super) async fn seal(response: Response, keys: NodeResponseKeys) -> Response {
    let (mut parts, body) = response.into_parts();
    let is_sse = parts
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(EVENT_STREAM_CONTENT_TYPE.as_bytes()));
    parts.headers.insert(
        HeaderName::from_static(HEADER_E2EE),
        HeaderValue::from_static(E2EE_VERSION),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    if is_sse {
        let inner = body.into_data_stream();
        let sealed =
            futures::stream::unfold((inner, Some(keys.sealer())), |(mut inner, sealer)| async move {
                let mut sealer = sealer?;
                match inner.next().await {
                    Some(Ok(event)) => {
                        let line = sse_line(&sealer.seal_chunk(&event));
                        Some((Ok::<_, Infallible>(line), (inner, Some(sealer))))
                    }
                    // The inner SSE body is infallible; were it not, ending without the end
                    // marker is right: the client reads the cut as `Truncated`.
                    Some(Err(err)) => {
                        tracing::warn!(%err, "response stream failed; sealed stream cut");
                        None
                    }
                    None => Some((Ok(sse_line(&sealer.finish())), (inner, None))),
                }
            });
        return Response::from_parts(parts, Body::from_stream(sealed));
    }
    let plain = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        Err(err) => {
            tracing::error!(%err, "reading a response body to seal");
            Bytes::new()
        }
    };
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(SEALED_CONTENT_TYPE),
    );
    Response::from_parts(parts, Body::from(encode_base64(&keys.seal_body(&plain))))
}

/// `data: <base64>\n\n`.
fn sse_line(sealed: &[u8]) -> Bytes {
    Bytes::from(format!("data: {}\n\n", encode_base64(sealed)))
}
