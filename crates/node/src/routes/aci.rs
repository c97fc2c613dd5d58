//! ACI (`aci/1`) endpoints: `GET /v1/aci/attestation?nonce=…` (the keyset, bound into a fresh quote
//! through the statement digest) and `GET /v1/aci/receipts/{id}` (the signed receipt of one
//! inference), plus the `X-ACI-*` headers every response carries.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use cloister_attest::aci::{API_VERSION, TEE_TYPE_TDX, report_data_slot};
use cloister_types::wire::{
    ACI_KEYSET_DIGEST_HEADER, ACI_RECEIPT_ID_HEADER, ACI_VERSION_HEADER, SIGNATURE_ID_HEADER,
};
use cloister_types::{Nonce, ReportData};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::state::AppState;

/// Query of the attestation report.
#[derive(Debug, Deserialize)]
pub(super) struct AciQuery {
    /// Exactly 64 lowercase hex characters (§3.2); absent: the unchallenged report.
    nonce: Option<String>,
}

/// ACI's nonce rule (§3.2): exactly 64 lowercase hex characters, nothing else.
fn parse_nonce(s: &str) -> Result<Nonce, ApiError> {
    let strict = s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !strict {
        return Err(ApiError::InvalidNonce);
    }
    s.parse().map_err(|_| ApiError::InvalidNonce)
}

/// `GET /v1/aci/attestation`.
pub(super) async fn attestation(
    State(state): State<AppState>,
    query: Result<Query<AciQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::InvalidQuery(e.body_text()))?;
    let nonce = query.nonce.as_deref().map(parse_nonce).transpose()?;
    let (keyset, digest) = state.aci.keyset_json(crate::unix_now());
    let slot = report_data_slot(&digest, nonce.as_ref());
    let limit = state.config.request_timeout;
    let evidence = match tokio::time::timeout(limit, state.attester.evidence(&ReportData(slot))).await {
        Err(_) => return Err(ApiError::Timeout(limit)),
        Ok(result) => result.map_err(ApiError::Attestation)?,
    };
    Ok(Json(json!({
        "api_version": API_VERSION,
        "workload_keyset_digest": digest,
        "attestation": {
            "tee_type": TEE_TYPE_TDX,
            "workload_keyset": keyset,
            "report_data": hex::encode(&slot[..32]),
            "source_provenance": crate::aci::source_provenance(),
            "evidence": {
                "quote": hex::encode(&evidence.quote),
                "quote_report_data": hex::encode(slot),
                "event_log": evidence.event_log,
                // dstack: tcb_info (app_compose, the compose hash's preimage), vm_config, app id.
                "info": evidence.info,
                "tee": state.attester.tee(),
                // The node's Cloister identity, for clients holding one of the two (protocol §11).
                "cloister_signing_address": state.signing_address(),
            },
        },
        "service_capabilities": {
            "supported_e2ee_versions": [],
            "serving": "direct",
        },
    })))
}

/// `GET /v1/aci/receipts/{id}`: a receipt bound to a credential needs that credential (§7.6):
/// none is `unauthorized`, another is `not_found`, exactly as an unknown id.
pub(super) async fn receipt(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let stored = state
        .aci
        .receipt(&id)
        .ok_or_else(|| ApiError::AciReceiptNotFound(id.clone()))?;
    if let Some(bound) = stored.credential {
        let presented = super::chat::bearer_token(&headers).ok_or(ApiError::AciUnauthorized)?;
        if crate::aci::credential_digest(presented) != bound {
            return Err(ApiError::AciReceiptNotFound(id));
        }
    }
    Ok(Json(state.aci.document(&id, &stored)))
}

/// Adds `X-ACI-Version` and `X-ACI-Keyset-Digest` to every response, and `X-Receipt-Id` to every
/// inference answer (the completion id, which names its receipt).
pub(super) async fn headers(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let digest = state.aci.keyset_digest_header(crate::unix_now());
    let h = response.headers_mut();
    h.insert(ACI_VERSION_HEADER, HeaderValue::from_static(API_VERSION));
    if let Some(v) = digest {
        h.insert(ACI_KEYSET_DIGEST_HEADER, v);
    }
    if let Some(id) = h.get(SIGNATURE_ID_HEADER).cloned() {
        h.insert(ACI_RECEIPT_ID_HEADER, id);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aci_nonces_are_exactly_64_lowercase_hex() {
        let ok = "0a".repeat(32);
        assert!(parse_nonce(&ok).is_ok());
        for bad in [
            ok.to_uppercase(),
            format!("0x{}", &ok[2..]),
            ok[..62].to_owned(),
            format!("{ok}00"),
        ] {
            assert!(matches!(parse_nonce(&bad), Err(ApiError::InvalidNonce)), "{bad}");
        }
    }
}
