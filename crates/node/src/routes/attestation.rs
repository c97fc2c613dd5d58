//! `GET /v1/attestation/report?nonce=<64 hex>[&signing_address=0x..][&signing_algo=ecdsa][&format=near]`.
//!
//! The quote's report_data binds this node's signing address and the nonce
//! ([`ReportData::new`]); a verifier that checks the quote, then the binding, then a response
//! signature, knows the answer came from the attested code.
//!
//! The flat report is the default; `format=near` wraps the same report the way NEAR AI cloud
//! serves its own (`{"model_attestations": [report]}`, no `gateway_attestation`: a node is its own
//! model server), so NEAR's verifier scripts, which look only inside `model_attestations`, check it.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use cloister_types::e2ee::{BoundModel, KeyBinding, key_binding_text};
use cloister_types::wire::{QUERY_FORMAT, REPORT_FORMAT_FLAT, REPORT_FORMAT_NEAR};
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
    /// The model the report is for (NEAR AI cloud gateways route by it); names the entry of the
    /// wrapped report.
    model: Option<String>,
    /// `flat` (default) or `near`.
    format: Option<String>,
}

/// The shape of the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Flat,
    Near,
}

impl Format {
    fn parse(value: Option<&str>) -> Result<Self, ApiError> {
        match value {
            None => Ok(Self::Flat),
            Some(v) if v.eq_ignore_ascii_case(REPORT_FORMAT_FLAT) => Ok(Self::Flat),
            Some(v) if v.eq_ignore_ascii_case(REPORT_FORMAT_NEAR) => Ok(Self::Near),
            Some(_) => Err(ApiError::InvalidQuery(format!(
                "{QUERY_FORMAT} must be {REPORT_FORMAT_FLAT} or {REPORT_FORMAT_NEAR}"
            ))),
        }
    }
}

/// The handler.
pub(super) async fn report(
    State(state): State<AppState>,
    query: Result<Query<ReportQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::InvalidQuery(e.body_text()))?;
    let format = Format::parse(query.format.as_deref())?;
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

    // The same nonce as report_data's: one nonce ties the quote and every GPU's measurements to
    // this request.
    let nvidia_payload = match &state.gpu {
        None => None,
        Some(gpu) => match tokio::time::timeout(limit, gpu.nvidia_payload(&nonce.0)).await {
            Err(_) => return Err(ApiError::Timeout(limit)),
            Ok(result) => Some(result.map_err(|e| ApiError::Attestation(e.into()))?),
        },
    };

    let tee = state.attester.tee();
    let mut info = match evidence.info {
        Value::Object(map) => map,
        Value::Null => Map::new(),
        other => Map::from_iter([("tee_info".to_owned(), other)]),
    };
    let served = state.engine.models();
    let model_name = match &query.model {
        Some(asked) => served.iter().find(|m| &m.id == asked),
        None if served.len() == 1 => served.first(),
        None => None,
    }
    .map(|m| m.id.clone());
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
    info.insert("gpu".to_owned(), gpu_info(&state));

    let report = AttestationReport {
        signing_address: state.signing_address().to_owned(),
        signing_algo: "ecdsa".to_owned(),
        request_nonce: nonce.to_hex(),
        intel_quote: hex::encode(&evidence.quote),
        nvidia_payload,
        event_log: evidence.event_log,
        info: Value::Object(info),
        tee: Some(tee),
        hpke_public_key: Some(hex::encode(hpke_public_key)),
        key_binding: Some(key_binding),
        signing_public_key: None,
        tls_cert_fingerprint: None,
    };
    let flat = serde_json::to_value(&report)
        .map_err(|e| ApiError::Internal(format!("serialising a report: {e}")))?;
    Ok(Json(match format {
        Format::Flat => flat,
        Format::Near => near_wrapped(flat, model_name),
    }))
}

/// `info.gpu`: the GPU evidence source's summary (count, CC mode and ready state, source), or
/// `{"count": 0}` when reports carry no GPU evidence.
fn gpu_info(state: &AppState) -> Value {
    state
        .gpu
        .as_ref()
        .and_then(|gpu| serde_json::to_value(gpu.summary()).ok())
        .unwrap_or_else(|| json!({ "count": 0 }))
}

/// `{"model_attestations": [report + "model_name"]}`: NEAR AI cloud's shape. The report's fields
/// are unchanged; `model_name` is added when the model is known (asked for, or the only one served).
fn near_wrapped(mut flat: Value, model_name: Option<String>) -> Value {
    if let (Value::Object(map), Some(name)) = (&mut flat, model_name) {
        map.insert("model_name".to_owned(), Value::from(name));
    }
    json!({ "model_attestations": [flat] })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_is_flat_by_default_and_near_on_request() {
        assert_eq!(Format::parse(None).ok(), Some(Format::Flat));
        assert_eq!(Format::parse(Some(REPORT_FORMAT_FLAT)).ok(), Some(Format::Flat));
        assert_eq!(Format::parse(Some("NEAR")).ok(), Some(Format::Near));
        assert!(matches!(
            Format::parse(Some("phala")),
            Err(ApiError::InvalidQuery(_))
        ));
    }

    #[test]
    fn the_near_shape_wraps_the_report_unchanged() {
        let flat = json!({"signing_address": "0xab", "request_nonce": "00"});
        let wrapped = near_wrapped(flat.clone(), Some("m".to_owned()));
        assert_eq!(wrapped.as_object().map(|o| o.len()), Some(1));
        let entry = &wrapped["model_attestations"][0];
        assert_eq!(entry["signing_address"], flat["signing_address"]);
        assert_eq!(entry["request_nonce"], flat["request_nonce"]);
        assert_eq!(entry["model_name"], "m");
        assert!(
            near_wrapped(flat, None)["model_attestations"][0]
                .get("model_name")
                .is_none()
        );
    }
}
