//! Forwarding a request to the node it names, byte for byte: the body goes out as it came, the
//! answer comes back as the node sent it (status, headers, body, stream), and nothing of either is
//! read, parsed or logged. The gateway counts the request against the node's slots and times the
//! answer's first byte.

use std::time::Instant;

use alloy_primitives::Address;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use cloister_types::wire;
use futures::StreamExt;

use crate::Gateway;

/// Headers that belong to one connection, not to the request or answer (RFC 9110 §7.6.1), and
/// the ones the gateway itself sets or consumes.
fn passes(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "host"
            | "content-length"
    ) && name.as_str() != wire::GATEWAY_NODE_HEADER
}

/// An OpenAI-shaped error from the gateway itself (never from a node: a node's own answers pass
/// through untouched).
pub(crate) fn gateway_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "error": { "message": message, "type": "gateway_error", "code": code }
    });
    let mut resp = (status, axum::Json(body)).into_response();
    if matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    ) {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

/// A request the gateway refuses before forwarding it.
#[derive(Debug)]
pub(crate) struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        gateway_error(self.status, self.code, &self.message)
    }
}

/// The node a request names: the [`wire::GATEWAY_NODE_HEADER`], else `fallback` (a
/// `signing_address` query parameter).
pub(crate) fn named_node(headers: &HeaderMap, fallback: Option<&str>) -> Result<Address, Refusal> {
    let named = headers
        .get(wire::GATEWAY_NODE_HEADER)
        .and_then(|v| v.to_str().ok())
        .or(fallback);
    let Some(text) = named else {
        return Err(Refusal {
            status: StatusCode::BAD_REQUEST,
            code: "node_not_named",
            message: format!(
                "name the node: the {} header (or {}= on a report) with its signing address; GET {} lists them",
                wire::GATEWAY_NODE_HEADER,
                wire::QUERY_SIGNING_ADDRESS,
                wire::GATEWAY_NODES_PATH
            ),
        });
    };
    cloister_types::parse_address(text.trim()).map_err(|_| Refusal {
        status: StatusCode::BAD_REQUEST,
        code: "invalid_node",
        message: "the named node is not a 0x-prefixed 20-byte address".to_owned(),
    })
}

/// Forwards one request to node `signer`.
pub(crate) async fn forward(
    gw: &Gateway,
    signer: Address,
    method: Method,
    path_and_query: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let snapshot = gw.directory().snapshot();
    let Some(node) = snapshot.node(&signer) else {
        return gateway_error(
            StatusCode::NOT_FOUND,
            cloister_types::gateway::NODE_NOT_FOUND,
            &format!("no registered node has signing address {signer:#x}"),
        );
    };
    if !node.usable() {
        let why = match &node.verdict {
            Err(why) => why.clone(),
            Ok(_) => "it failed to answer several times in a row".to_owned(),
        };
        return gateway_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "node_unavailable",
            &format!("node {signer:#x} is not available: {why}; seal to another node"),
        );
    }
    let Some(slot) = node.stats.try_acquire(gw.inner.config.max_in_flight) else {
        return gateway_error(
            StatusCode::TOO_MANY_REQUESTS,
            "node_busy",
            &format!(
                "node {signer:#x} has {} requests in flight through this gateway; retry or seal to another node",
                gw.inner.config.max_in_flight
            ),
        );
    };
    let url = format!(
        "{}{path_and_query}",
        cloister_client::node_base(&node.registered.endpoint)
    );
    let model = headers
        .get(wire::MODEL_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let sent = body.len();
    let mut req = gw.inner.http.request(method, &url).body(body);
    for (name, value) in headers {
        if passes(name) {
            req = req.header(name, value);
        }
    }
    let started = Instant::now();
    let resp = match req.send().await {
        Ok(resp) => resp,
        Err(e) => {
            node.stats.failed();
            tracing::warn!(node = %signer, "forwarding failed: {e}");
            return gateway_error(
                StatusCode::BAD_GATEWAY,
                "node_unreachable",
                &format!("node {signer:#x} did not answer; seal to another node"),
            );
        }
    };
    let first_byte = started.elapsed();
    node.stats.answered(first_byte);
    // What the gateway sees, and all it logs: model, node, sizes, status, timing.
    tracing::debug!(
        node = %signer, %model, request_bytes = sent, status = resp.status().as_u16(),
        first_byte_ms = first_byte.as_secs_f64() * 1e3, "forwarded"
    );
    let mut out = Response::builder().status(resp.status().as_u16());
    if let Some(h) = out.headers_mut() {
        for (name, value) in resp.headers() {
            if passes(name) {
                h.append(name.clone(), value.clone());
            }
        }
    }
    // The slot is held until the node's answer has been passed on in full (or the client left).
    let stream = resp.bytes_stream().map(move |chunk| {
        let _held = &slot;
        chunk
    });
    out.body(Body::from_stream(stream)).unwrap_or_else(|e| {
        gateway_error(
            StatusCode::BAD_GATEWAY,
            "bad_node_answer",
            &format!("the node's answer could not be passed on: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_headers_and_the_route_header_stay_behind() {
        for h in [
            "connection",
            "host",
            "content-length",
            "transfer-encoding",
            wire::GATEWAY_NODE_HEADER,
        ] {
            assert!(!passes(&HeaderName::from_static(h)), "{h}");
        }
        for h in [
            "authorization",
            "content-type",
            wire::E2EE_HEADER,
            wire::MODEL_HEADER,
            wire::SIGNATURE_HEADER,
        ] {
            assert!(passes(&HeaderName::from_static(h)), "{h}");
        }
    }

    #[test]
    fn a_node_is_named_by_header_or_query() {
        let mut h = HeaderMap::new();
        assert!(named_node(&h, None).is_err());
        let addr = "0x00000000000000000000000000000000000000aa";
        assert_eq!(
            named_node(&h, Some(addr)).ok(),
            Some(Address::with_last_byte(0xaa))
        );
        h.insert(wire::GATEWAY_NODE_HEADER, HeaderValue::from_static("nope"));
        assert!(
            named_node(&h, Some(addr)).is_err(),
            "the header wins and must parse"
        );
    }
}
