//! `GET /v1/attestation/report?nonce=<64 hex>[&signing_address=0x..][&signing_algo=ecdsa]`.
//!
//! The quote's report_data binds this node's signing address and the nonce
//! ([`ReportData::new`]); a verifier that checks the quote, then the binding, then a response
//! signature, knows the answer came from the attested code.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use cloister_types::e2ee::{BoundModel, KeyBinding, key_binding_text};
use cloister_types::{AttestationReport, Nonce, ReportData, parse_address};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::ApiError;

/// How long a key binding is valid; a client fetches a fresh report after that.
const KEY_BINDING_VALIDITY_SECS: u64 = 3600;

use crate::state::AppState;

/// Query parameters (the vllm-proxy names).
#[derive(Debug, Deserialize)]
pub(super) struct ReportQuery {
    /// 64 hex digits (optional `0x`); absent: the node draws one.
    nonce: Option<String>,
    /// Multi-server convention: a load balancer asks every node and only the one holding this
    /// address answers; the others say 404.
    signing_address: Option<String>,
    /// Only `ecdsa` is offered.
    signing_algo: Option<String>,
}

/// The handler.
pub(super) async fn report(
    State(state): State<AppState>,
    query: Result<Query<ReportQuery>, QueryRejection>,
) -> Result<Json<AttestationReport>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::InvalidQuery(e.body_text()))?;
    if let Some(algo) = &query.signing_algo
        && !algo.eq_ignore_ascii_case("ecdsa")
    {
        return Err(ApiError::UnsupportedSigningAlgo(algo.clone()));
    }
    if let Some(address) = &query.signing_address
        && parse_address(address).ok() != Some(state.key.address())
    {
        return Err(ApiError::SigningAddressNotFound(address.clone()));
    }
    let (nonce, nonce_source) = match &query.nonce {
        Some(hex) => (
            hex.parse::<Nonce>().map_err(|_| ApiError::InvalidNonce)?,
            "client",
        ),
        None => (Nonce(rand::random()), "node"),
    };

    let report_data = ReportData::new(state.key.address(), nonce);
    let limit = state.config.request_timeout;
    let evidence = match tokio::time::timeout(limit, state.attester.evidence(&report_data)).await {
        Err(_) => return Err(ApiError::Timeout(limit)),
        Ok(result) => result.map_err(ApiError::Attestation)?,
    };

    let tee = state.attester.tee();
    let mut info = match evidence.info {
        Value::Object(map) => map,
        Value::Null => Map::new(),
        other => Map::from_iter([("tee_info".to_owned(), other)]),
    };
    let served = state.engine.models();
    let models: Vec<Value> = served
        .iter()
        .map(|m| json!({ "id": m.id, "sha256": m.sha256 }))
        .collect();
    let bound: Vec<BoundModel> = served
        .into_iter()
        .map(|m| BoundModel {
            id: m.id,
            sha256: m.sha256,
        })
        .collect();
    let hpke_public_key = state.e2ee_public_key();
    let expires_at = crate::unix_now().saturating_add(KEY_BINDING_VALIDITY_SECS);
    let key_binding = KeyBinding {
        signature: state
            .key
            .sign_personal_hex(key_binding_text(&hpke_public_key, &bound, expires_at).as_bytes()),
        models: bound,
        expires_at,
    };
    info.insert("models".to_owned(), Value::Array(models));
    info.insert("node_version".to_owned(), Value::from(env!("CARGO_PKG_VERSION")));
    info.insert("tee".to_owned(), Value::from(tee.to_string()));
    info.insert("nonce_source".to_owned(), Value::from(nonce_source));

    Ok(Json(AttestationReport {
        signing_address: state.signing_address().to_owned(),
        signing_algo: "ecdsa".to_owned(),
        request_nonce: nonce.to_hex(),
        intel_quote: hex::encode(&evidence.quote),
        nvidia_payload: None,
        event_log: evidence.event_log,
        info: Value::Object(info),
        tee: Some(tee),
        hpke_public_key: Some(hex::encode(hpke_public_key)),
        key_binding: Some(key_binding),
    }))
}
