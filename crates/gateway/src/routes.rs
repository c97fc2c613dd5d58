//! The gateway's HTTP surface (`docs/protocol.md` §11).
//!
//! | route | what |
//! |---|---|
//! | `GET /v1/models` | the models the verified nodes serve, with how many serve each |
//! | `GET /v1/gateway/nodes[?model=]` | the verified nodes, best first |
//! | `GET /v1/gateway/network` | chain, registry, escrow, counts, the gateway's signer |
//! | `GET /v1/gateway/attestation?nonce=` | the gateway's own report |
//! | `GET /v1/attestation/report?signing_address=&nonce=` | that node's report for the client's nonce (naming no node: the gateway's own) |
//! | `POST /v1/chat/completions`, `POST /v1/completions` | sealed, to the node in `x-cloister-gateway-node` |
//! | `GET /v1/signature/{id}`, `GET /v1/aci/attestation`, `GET /v1/aci/receipts/{id}` | to the named node |
//! | `GET /explorer` | the explorer page ([`crate::explorer`]) |

use axum::Router;
use axum::extract::{Query, RawQuery, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use cloister_types::gateway::{GatewayNetwork, GatewayNodeList};
use cloister_types::{Nonce, wire};
use serde::Deserialize;
use serde_json::json;

use crate::Gateway;
use crate::forward::{forward, gateway_error, named_node};

/// Largest request body the gateway forwards (a sealed request is base64 of the JSON body).
pub const MAX_BODY_BYTES: usize = 8 << 20;

/// The routes over `gateway`.
pub fn router(gateway: Gateway) -> Router {
    Router::new()
        .route(wire::HEALTH_PATH, get(|| async { "ok" }))
        .route(wire::MODELS_PATH, get(models))
        .route(wire::GATEWAY_NODES_PATH, get(nodes))
        .route(wire::GATEWAY_NETWORK_PATH, get(network))
        .route(wire::GATEWAY_ATTESTATION_PATH, get(own_report))
        .route(wire::ATTESTATION_REPORT_PATH, get(node_report))
        .route(wire::CHAT_COMPLETIONS_PATH, post(sealed))
        .route(wire::COMPLETIONS_PATH, post(sealed))
        .route(wire::SIGNATURE_ROUTE, get(to_named))
        .route(wire::ACI_ATTESTATION_PATH, get(to_named))
        .route(wire::ACI_RECEIPT_ROUTE, get(to_named))
        .merge(crate::explorer::routes())
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(gateway)
}

async fn models(State(gw): State<Gateway>) -> Response {
    let data: Vec<_> = gw
        .directory()
        .models()
        .into_iter()
        .map(|(id, nodes)| json!({"id": id, "object": "model", "created": 0, "owned_by": "cloister", "nodes": nodes}))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

#[derive(Deserialize)]
struct NodesQuery {
    model: Option<String>,
}

async fn nodes(State(gw): State<Gateway>, Query(q): Query<NodesQuery>) -> Response {
    let data = gw
        .directory()
        .ranked(q.model.as_deref())
        .iter()
        .map(|n| n.to_wire())
        .collect();
    axum::Json(GatewayNodeList {
        object: "list".into(),
        data,
    })
    .into_response()
}

async fn network(State(gw): State<Gateway>) -> Response {
    let snap = gw.directory().snapshot();
    let config = gw.config();
    axum::Json(GatewayNetwork {
        chain_id: config.registry.chain_id,
        registry: format!("{:#x}", config.registry.registry),
        escrow: config.escrow.map(|e| format!("{e:#x}")),
        nodes: snap.nodes.iter().filter(|n| n.registered.active).count(),
        verified: snap.nodes.iter().filter(|n| n.verdict.is_ok()).count(),
        gateway_signer: format!("{:#x}", gw.signer()),
    })
    .into_response()
}

#[derive(Deserialize)]
struct NonceQuery {
    nonce: Option<String>,
}

async fn own_report(State(gw): State<Gateway>, Query(q): Query<NonceQuery>) -> Response {
    own_report_for(&gw, q.nonce.as_deref()).await
}

/// The gateway's own report for the client's `nonce` (a fresh random one when absent).
async fn own_report_for(gw: &Gateway, nonce: Option<&str>) -> Response {
    let nonce = match nonce.map(str::parse::<Nonce>) {
        None => Nonce(rand::random()),
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            return gateway_error(
                StatusCode::BAD_REQUEST,
                "invalid_nonce",
                "nonce must be 64 hex digits",
            );
        }
    };
    match crate::attested::report(gw, nonce).await {
        Ok(report) => axum::Json(report).into_response(),
        Err(e @ crate::attested::ReportError::NoAttester) => {
            gateway_error(StatusCode::NOT_FOUND, "no_attestation", &e.to_string())
        }
        Err(e) => gateway_error(StatusCode::BAD_GATEWAY, "attestation_failed", &e.to_string()),
    }
}

#[derive(Deserialize)]
struct ReportQuery {
    signing_address: Option<String>,
    nonce: Option<String>,
}

/// A node's report, fetched with the client's query (nonce included) as it is: the node binds the
/// client's nonce, so a stale or borrowed report fails the client's own check.
async fn node_report(
    State(gw): State<Gateway>,
    Query(q): Query<ReportQuery>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    // Naming no node asks for the gateway's own report: `cloister attest verify http://gateway`
    // checks the gateway itself (it binds no E2EE key, so nothing can be sealed to it).
    if q.signing_address.is_none() && !headers.contains_key(wire::GATEWAY_NODE_HEADER) {
        return own_report_for(&gw, q.nonce.as_deref()).await;
    }
    let node = match named_node(&headers, q.signing_address.as_deref()) {
        Ok(n) => n,
        Err(refusal) => return refusal.into_response(),
    };
    let path = match raw {
        Some(query) => format!("{}?{query}", wire::ATTESTATION_REPORT_PATH),
        None => wire::ATTESTATION_REPORT_PATH.to_owned(),
    };
    forward(&gw, node, Method::GET, &path, &headers, Bytes::new()).await
}

/// Whether the request is sealed (E2EE header with our version).
fn is_sealed(headers: &HeaderMap) -> bool {
    headers
        .get(wire::E2EE_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == wire::E2EE_VERSION)
}

/// A completion request: only sealed, only to the node it names.
async fn sealed(State(gw): State<Gateway>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    if !is_sealed(&parts.headers) {
        return gateway_error(
            StatusCode::BAD_REQUEST,
            "plaintext_refused",
            "the gateway forwards only requests sealed to a node (x-cloister-e2ee); it never carries a prompt in clear",
        );
    }
    let node = match named_node(&parts.headers, None) {
        Ok(n) => n,
        Err(refusal) => return refusal.into_response(),
    };
    let body = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return gateway_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                &format!("request bodies are limited to {MAX_BODY_BYTES} bytes"),
            );
        }
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |p| p.as_str());
    forward(&gw, node, Method::POST, path, &parts.headers, body).await
}

/// A read from the node the request names.
async fn to_named(State(gw): State<Gateway>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let node = match named_node(&parts.headers, None) {
        Ok(n) => n,
        Err(refusal) => return refusal.into_response(),
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |p| p.as_str());
    forward(&gw, node, Method::GET, path, &parts.headers, Bytes::new()).await
}
