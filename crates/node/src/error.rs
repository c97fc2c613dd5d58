//! [`ApiError`]: every failure the HTTP layer answers, rendered as an OpenAI error body.
//!
//! The `Display` of an `ApiError` is for the node's log and may carry inner detail (an upstream's
//! message, an attester's I/O error); the client only ever sees [`ApiError::to_body`], which is built
//! from a fixed, client-safe message per variant.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cloister_types::openai::{ErrorBody, ErrorResponse};
use thiserror::Error;

/// Longest client-supplied string (model id, path, signature id) echoed in an error message.
const ECHO_MAX: usize = 128;

/// A failed API request.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The body is not JSON, or not a chat-completion request. Holds serde's description.
    #[error("request body is not a valid request: {0}")]
    InvalidJson(String),
    /// The body is larger than the configured limit.
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body could not be read (client went away mid-upload, bad framing).
    #[error("could not read the request body: {0}")]
    BodyRead(String),
    /// `nonce` is not 64 hex digits.
    #[error("nonce must be 64 hex digits (32 bytes)")]
    InvalidNonce,
    /// The query string could not be decoded.
    #[error("invalid query string: {0}")]
    InvalidQuery(String),
    /// A signing algorithm other than `ecdsa` was asked for.
    #[error("signing algorithm `{0}` is not offered")]
    UnsupportedSigningAlgo(String),
    /// `signing_address` names another node (multi-server convention: answer 404).
    #[error("signing address {0} is not this node's")]
    SigningAddressNotFound(String),
    /// No (unexpired) signature under this id.
    #[error("no signature for id `{0}`")]
    SignatureNotFound(String),
    /// No (unexpired) ACI receipt under this id, or the receipt belongs to another credential
    /// (ACI §7.6: both answer the same).
    #[error("no receipt for id `{0}`")]
    AciReceiptNotFound(String),
    /// The ACI receipt is bound to a credential and none was presented (ACI §7.6).
    #[error("this receipt needs the API key that made the request")]
    AciUnauthorized,
    /// No route for this path.
    #[error("no route for {0}")]
    RouteNotFound(String),
    /// The route exists but not with this method.
    #[error("method {0} not allowed")]
    MethodNotAllowed(String),
    /// The node already serves `max_concurrent_requests` requests.
    #[error("node busy: {0} requests in flight")]
    NodeBusy(usize),
    /// The engine (or the attester) did not answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The engine failed.
    #[error("engine: {0}")]
    Engine(#[from] cloister_engine::Error),
    /// The attester could not produce evidence.
    #[error("attestation: {0}")]
    Attestation(#[source] cloister_attest::Error),
    /// A sealed (E2EE) request was refused before its body was read.
    #[error("E2EE request refused: {0}")]
    E2ee(#[from] E2eeRefusal),
    /// A paid request was refused (API key, deposit, budget, ledger).
    #[error("billing: {0}")]
    Billing(#[from] crate::billing::BillingRefusal),
    /// A bug or an impossible state (serialisation of our own types failed, ...).
    #[error("internal error: {0}")]
    Internal(String),
}

/// Why a sealed request was refused (`docs/protocol.md` §8). These answers are never sealed: the
/// node could not (or must not) open the request, so there are no response keys.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum E2eeRefusal {
    /// Missing or bad E2EE headers, or a body that is not an envelope.
    #[error("malformed: {0}")]
    Malformed(&'static str),
    /// The envelope did not open: tampered ciphertext, sealed to another key or signer, or bound
    /// to another method, path, time or model.
    #[error("envelope did not open (tampered, another key, or another AAD)")]
    OpenFailed,
    /// This envelope's encapsulated key was already accepted.
    #[error("replayed envelope")]
    Replayed,
    /// The replay cache is full of unexpired entries.
    #[error("replay cache full")]
    ReplayCacheFull,
    /// The timestamp is further from the node's clock than the allowed skew.
    #[error("timestamp {timestamp} is {skew} s from the node's clock")]
    Stale {
        /// The request's timestamp.
        timestamp: u64,
        /// Its distance from now, in seconds.
        skew: u64,
    },
    /// The sealed body names another model than the `x-cloister-model` header.
    #[error("body model differs from the x-cloister-model header")]
    ModelMismatch,
}

impl E2eeRefusal {
    fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "e2ee_malformed",
            Self::OpenFailed => "e2ee_open_failed",
            Self::Replayed => "e2ee_replayed",
            Self::ReplayCacheFull => "e2ee_busy",
            Self::Stale { .. } => "e2ee_stale",
            Self::ModelMismatch => "e2ee_model_mismatch",
        }
    }
}

/// Result alias for handlers.
pub type Result<T, E = ApiError> = std::result::Result<T, E>;

/// `s` cut to at most `ECHO_MAX` characters, marked when cut.
fn echo(s: &str) -> String {
    if s.chars().count() <= ECHO_MAX {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(ECHO_MAX).collect();
        out.push('…');
        out
    }
}

/// `s` with the content of every `"..."` replaced by `…` (serde quotes body strings that way).
fn redact_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut inside = false;
    for c in s.chars() {
        if c == '"' {
            if inside {
                out.push('…');
            }
            inside = !inside;
            out.push(c);
        } else if !inside {
            out.push(c);
        }
    }
    out
}

impl ApiError {
    /// A parse failure of a request body, described without quoting the body at length.
    pub fn from_json(err: &serde_json::Error) -> Self {
        use serde_json::error::Category;
        let what = match err.classify() {
            Category::Syntax | Category::Eof | Category::Io => "malformed JSON",
            Category::Data => "JSON does not match a chat completion request",
        };
        // serde's message names what it expected and where. Data errors may quote a string from
        // the body (`invalid type: string "..."`): quoted text is blanked so no part of a prompt
        // reaches the log or the error body.
        Self::InvalidJson(format!("{what}: {}", echo(&redact_quoted(&err.to_string()))))
    }

    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        use cloister_engine::Error as E;
        match self {
            Self::InvalidJson(_)
            | Self::BodyRead(_)
            | Self::InvalidNonce
            | Self::InvalidQuery(_)
            | Self::UnsupportedSigningAlgo(_) => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::SigningAddressNotFound(_)
            | Self::SignatureNotFound(_)
            | Self::AciReceiptNotFound(_)
            | Self::RouteNotFound(_) => StatusCode::NOT_FOUND,
            Self::AciUnauthorized => StatusCode::UNAUTHORIZED,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::NodeBusy(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Attestation(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Billing(b) => StatusCode::from_u16(b.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            Self::E2ee(E2eeRefusal::ReplayCacheFull) => StatusCode::SERVICE_UNAVAILABLE,
            Self::E2ee(_) => StatusCode::BAD_REQUEST,
            Self::Engine(e) => match e {
                E::UnknownModel(_) => StatusCode::NOT_FOUND,
                E::InvalidRequest(_) | E::ContextOverflow { .. } => StatusCode::BAD_REQUEST,
                E::Overloaded(_) => StatusCode::TOO_MANY_REQUESTS,
                E::UpstreamUnavailable(_) | E::Upstream { .. } | E::UpstreamProtocol(_) => {
                    StatusCode::BAD_GATEWAY
                }
                E::Load(_) | E::Closed => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }

    /// The client-safe OpenAI error body.
    pub fn to_body(&self) -> ErrorResponse {
        use cloister_engine::Error as E;
        let (kind, code, param, message): (&str, &str, Option<&str>, String) = match self {
            Self::InvalidJson(detail) => (
                "invalid_request_error",
                "invalid_json",
                None,
                format!("Request body is not valid: {detail}"),
            ),
            Self::PayloadTooLarge { limit } => (
                "invalid_request_error",
                "payload_too_large",
                None,
                format!("Request body is larger than the limit of {limit} bytes."),
            ),
            Self::BodyRead(_) => (
                "invalid_request_error",
                "invalid_body",
                None,
                "The request body could not be read.".into(),
            ),
            Self::InvalidNonce => (
                "invalid_request_error",
                "invalid_nonce",
                Some("nonce"),
                "nonce must be 64 hex digits (32 bytes), optionally prefixed with 0x.".into(),
            ),
            Self::InvalidQuery(detail) => (
                "invalid_request_error",
                "invalid_query",
                None,
                format!("Invalid query string: {}", echo(detail)),
            ),
            Self::UnsupportedSigningAlgo(algo) => (
                "invalid_request_error",
                "unsupported_signing_algo",
                Some("signing_algo"),
                format!(
                    "Signing algorithm `{}` is not offered; this node signs with `ecdsa`.",
                    echo(algo)
                ),
            ),
            Self::SigningAddressNotFound(addr) => (
                "invalid_request_error",
                "signing_address_not_found",
                Some("signing_address"),
                format!("Signing address {} is not served by this node.", echo(addr)),
            ),
            Self::SignatureNotFound(id) => (
                "invalid_request_error",
                "signature_not_found",
                None,
                format!(
                    "No signature for id `{}`; it is unknown or has expired.",
                    echo(id)
                ),
            ),
            Self::AciReceiptNotFound(id) => (
                "not_found",
                "receipt_not_found",
                None,
                format!("No receipt for id `{}`; it is unknown or has expired.", echo(id)),
            ),
            Self::AciUnauthorized => (
                "unauthorized",
                "receipt_needs_credential",
                None,
                "This receipt is bound to the API key that made the request; present it.".into(),
            ),
            Self::RouteNotFound(path) => (
                "invalid_request_error",
                "not_found",
                None,
                format!("No route for {}.", echo(path)),
            ),
            Self::MethodNotAllowed(method) => (
                "invalid_request_error",
                "method_not_allowed",
                None,
                format!("Method {} is not allowed on this route.", echo(method)),
            ),
            Self::NodeBusy(_) => (
                "rate_limit_error",
                "overloaded",
                None,
                "The node is serving as many requests as it allows; retry later.".into(),
            ),
            Self::Timeout(limit) => (
                "server_error",
                "timeout",
                None,
                format!("The request did not complete within {} seconds.", limit.as_secs()),
            ),
            Self::Attestation(_) => (
                "server_error",
                "attestation_unavailable",
                None,
                "The TEE could not produce attestation evidence; retry later.".into(),
            ),
            Self::Internal(_) => (
                "server_error",
                "internal_error",
                None,
                "Internal server error.".into(),
            ),
            Self::Billing(b) => (
                match b.status() {
                    401 => "authentication_error",
                    402 => "insufficient_quota",
                    404 => "invalid_request_error",
                    _ => "server_error",
                },
                b.code(),
                None,
                match b {
                    // Ledger detail stays in the log.
                    crate::billing::BillingRefusal::Ledger(_) => {
                        "Metering failed; the answer was not signed.".to_owned()
                    }
                    other => format!("{}.", echo(&other.to_string())),
                },
            ),
            Self::E2ee(refusal) => (
                if matches!(refusal, E2eeRefusal::ReplayCacheFull) {
                    "server_error"
                } else {
                    "invalid_request_error"
                },
                refusal.code(),
                None,
                format!("Encrypted request refused: {refusal}."),
            ),
            Self::Engine(e) => match e {
                E::UnknownModel(model) => (
                    "invalid_request_error",
                    "model_not_found",
                    Some("model"),
                    format!("The model `{}` is not served by this node.", echo(model)),
                ),
                // The engine writes these about the request itself, for the client.
                E::InvalidRequest(msg) => (
                    "invalid_request_error",
                    "invalid_request",
                    None,
                    format!("Invalid request: {}", echo(msg)),
                ),
                E::ContextOverflow { prompt, context } => (
                    "invalid_request_error",
                    "context_length_exceeded",
                    Some("messages"),
                    format!("The prompt has {prompt} tokens; the context window holds {context}."),
                ),
                E::Overloaded(_) => (
                    "rate_limit_error",
                    "overloaded",
                    None,
                    "The model is serving as many requests as it can queue; retry later.".into(),
                ),
                E::UpstreamUnavailable(_) => (
                    "server_error",
                    "upstream_unavailable",
                    None,
                    "The inference server behind this node cannot be reached.".into(),
                ),
                E::Upstream { status, .. } => (
                    "server_error",
                    "upstream_error",
                    None,
                    format!("The inference server behind this node answered {status}."),
                ),
                E::UpstreamProtocol(_) => (
                    "server_error",
                    "upstream_protocol_error",
                    None,
                    "The inference server behind this node sent a malformed answer.".into(),
                ),
                E::Load(_) => (
                    "server_error",
                    "model_unavailable",
                    None,
                    "The model is not loaded.".into(),
                ),
                E::Closed => (
                    "server_error",
                    "engine_closed",
                    None,
                    "The engine is shutting down.".into(),
                ),
                _ => (
                    "server_error",
                    "inference_error",
                    None,
                    "Inference failed.".into(),
                ),
            },
        };
        ErrorResponse {
            error: ErrorBody {
                message,
                kind: kind.to_owned(),
                code: Some(code.to_owned()),
                param: param.map(str::to_owned),
            },
        }
    }

    /// Logs this error with its inner detail: server-side failures at `error`/`warn`, client
    /// mistakes at `debug`.
    pub fn log(&self) {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(status = status.as_u16(), error = %self, "request failed");
        } else if status == StatusCode::TOO_MANY_REQUESTS {
            tracing::warn!(status = status.as_u16(), error = %self, "request refused");
        } else {
            tracing::debug!(status = status.as_u16(), error = %self, "request rejected");
        }
    }
}

/// The metrics label of an engine failure.
pub(crate) fn engine_error_kind(err: &cloister_engine::Error) -> &'static str {
    use cloister_engine::Error as E;
    match err {
        E::UnknownModel(_) => "unknown_model",
        E::InvalidRequest(_) => "invalid_request",
        E::ContextOverflow { .. } => "context_overflow",
        E::Overloaded(_) => "overloaded",
        E::UpstreamUnavailable(_) => "upstream_unavailable",
        E::Upstream { .. } => "upstream",
        E::UpstreamProtocol(_) => "upstream_protocol",
        E::Load(_) => "load",
        E::Inference(_) => "inference",
        E::Closed => "closed",
        _ => "other",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.log();
        let status = self.status();
        let mut response = (status, Json(self.to_body())).into_response();
        if status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloister_engine::Error as E;

    #[test]
    fn engine_errors_map_to_status_and_code() {
        let cases: Vec<(ApiError, u16, &str)> = vec![
            (E::UnknownModel("x".into()).into(), 404, "model_not_found"),
            (E::InvalidRequest("empty".into()).into(), 400, "invalid_request"),
            (
                E::ContextOverflow {
                    prompt: 9,
                    context: 4,
                }
                .into(),
                400,
                "context_length_exceeded",
            ),
            (E::Overloaded(3).into(), 429, "overloaded"),
            (
                E::UpstreamUnavailable("refused".into()).into(),
                502,
                "upstream_unavailable",
            ),
            (
                E::Upstream {
                    status: 418,
                    message: "teapot".into(),
                }
                .into(),
                502,
                "upstream_error",
            ),
            (
                E::UpstreamProtocol("bad sse".into()).into(),
                502,
                "upstream_protocol_error",
            ),
            (E::Load("gone".into()).into(), 503, "model_unavailable"),
            (E::Closed.into(), 503, "engine_closed"),
            (E::Inference("decode".into()).into(), 500, "inference_error"),
            (ApiError::Timeout(Duration::from_secs(3)), 504, "timeout"),
            (ApiError::NodeBusy(2), 429, "overloaded"),
            (ApiError::PayloadTooLarge { limit: 1 }, 413, "payload_too_large"),
        ];
        for (err, status, code) in cases {
            assert_eq!(err.status().as_u16(), status, "{err}");
            let body = err.to_body();
            assert_eq!(body.error.code.as_deref(), Some(code), "{err}");
            assert!(!body.error.message.is_empty());
        }
    }

    #[test]
    fn client_never_sees_inner_detail() {
        let err = ApiError::from(E::UpstreamUnavailable("connect to 10.0.0.7:8000 refused".into()));
        let msg = err.to_body().error.message;
        assert!(!msg.contains("10.0.0.7"), "{msg}");
        let err = ApiError::from(E::Upstream {
            status: 500,
            message: "secret stack trace".into(),
        });
        let msg = err.to_body().error.message;
        assert!(msg.contains("500") && !msg.contains("secret"), "{msg}");
        let long = "m".repeat(10_000);
        let msg = ApiError::from(E::UnknownModel(long)).to_body().error.message;
        assert!(msg.len() < 400, "{}", msg.len());
    }

    #[test]
    fn json_data_errors_do_not_quote_the_body() {
        let body = br#"{"model": "m", "messages": "my secret prompt"}"#;
        let err = serde_json::from_slice::<cloister_types::openai::ChatCompletionRequest>(body).err();
        let api = err.as_ref().map(ApiError::from_json);
        let msg = api
            .map(|e| format!("{e} / {}", e.to_body().error.message))
            .unwrap_or_default();
        assert!(msg.contains("invalid type"), "{msg}");
        assert!(!msg.contains("secret"), "{msg}");
        assert_eq!(redact_quoted(r#"a "b" c "d"#), r#"a "…" c ""#);
    }

    #[test]
    fn json_errors_say_where() {
        let err = serde_json::from_slice::<serde_json::Value>(b"{\"model\": ").err();
        let api = err.as_ref().map(ApiError::from_json);
        let msg = api.map(|e| e.to_body().error.message).unwrap_or_default();
        assert!(msg.contains("line 1"), "{msg}");
    }
}
