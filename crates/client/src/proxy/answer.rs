//! What the proxy answers: OpenAI-shaped errors, the `x-cloister-*` headers of a verified answer,
//! and the re-emitted events of a verified stream.

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use cloister_types::wire;

use crate::{Error, Result, StreamEvent, VerifiedNode};

/// OpenAI's error shape, marked unverified.
pub(super) fn openai_error(status: StatusCode, kind: &str, code: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "error": { "message": message, "type": kind, "code": code, "param": null }
    });
    let mut resp = (status, axum::Json(body)).into_response();
    resp.headers_mut()
        .insert(wire::VERIFIED_HEADER, HeaderValue::from_static("false"));
    resp
}

/// The proxy's answer to a refusal: the node's own error status when it answered one (opened when
/// sealed), else 502 naming the reason.
pub(super) fn error_response(e: &Error) -> Response {
    tracing::warn!(code = e.code(), "request refused: {e}");
    match e {
        Error::NodeStatus { status, body, sealed } => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY);
            let mut resp = (status, body.clone()).into_response();
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(wire::JSON_CONTENT_TYPE),
            );
            // The node was verified before the request; the error body is authenticated only
            // when it came sealed, and error bodies are not signed.
            h.insert(
                wire::VERIFIED_HEADER,
                HeaderValue::from_static(if *sealed { "true" } else { "false" }),
            );
            h.insert(wire::SIGNATURE_VERIFIED_HEADER, HeaderValue::from_static("false"));
            resp
        }
        Error::InvalidRequest(m) => {
            openai_error(StatusCode::BAD_REQUEST, "invalid_request_error", e.code(), m)
        }
        Error::NoNodeForModel { .. } => openai_error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            e.code(),
            &e.to_string(),
        ),
        Error::BudgetExhausted { .. } => openai_error(
            StatusCode::PAYMENT_REQUIRED,
            "insufficient_quota",
            e.code(),
            &e.to_string(),
        ),
        _ => openai_error(
            StatusCode::BAD_GATEWAY,
            "cloister_verification_error",
            e.code(),
            &e.to_string(),
        ),
    }
}

/// The headers that say who answered and what was checked.
pub(super) fn verified_headers(headers: &mut HeaderMap, node: &VerifiedNode, sealed: bool, signature: &str) {
    let mut set = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    };
    set(wire::VERIFIED_HEADER, "true");
    set(wire::SIGNER_HEADER, &node.signer_hex);
    set(wire::TEE_HEADER, &node.tee_name());
    set(
        wire::MEASUREMENT_HEADER,
        node.measurement.as_deref().unwrap_or("unknown"),
    );
    set(wire::SIGNATURE_VERIFIED_HEADER, signature);
    set(wire::E2EE_HEADER, if sealed { "sealed" } else { "off" });
    set(wire::NODE_HEADER, &node.url);
}

/// One item of a verified stream as the proxy re-emits it: an opened event as is; the proof as
/// `data: [DONE]` and the signature event (with the receipt); a refusal as an OpenAI error event.
pub(super) fn stream_item(item: Result<StreamEvent>, sealed: bool) -> Bytes {
    match item {
        Ok(StreamEvent::Data(event)) => event,
        Ok(StreamEvent::Done(proof)) => {
            tracing::debug!(node = %proof.node.url, sealed, "stream verified");
            let mut record = serde_json::to_value(&proof.signature).unwrap_or_default();
            if let (Some(obj), Some(receipt)) = (record.as_object_mut(), proof.receipt) {
                obj.insert("receipt".to_owned(), receipt);
            }
            Bytes::from(format!(
                "{}event: {}\ndata: {record}\n\n",
                wire::SSE_DONE_EVENT,
                wire::SIGNATURE_EVENT
            ))
        }
        Err(e) => {
            tracing::warn!(code = e.code(), "stream refused: {e}");
            let body = serde_json::json!({
                "error": {
                    "message": format!("the answer stream failed verification: {e}"),
                    "type": "cloister_verification_error",
                    "code": e.code(),
                    "param": null,
                }
            });
            Bytes::from(format!("data: {body}\n\n"))
        }
    }
}
