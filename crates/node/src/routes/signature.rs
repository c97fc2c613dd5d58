//! `GET /v1/signature/{id}`: the signature of a recent answer.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use cloister_types::SignatureRecord;
use serde::Serialize;

use crate::error::ApiError;
use crate::state::AppState;

/// A [`SignatureRecord`] with the completion id it belongs to: the body of this route and of the
/// final `cloister.signature` SSE event.
#[derive(Debug, Serialize)]
pub(crate) struct SignatureEvent<'a> {
    /// The completion id.
    pub(crate) id: &'a str,
    /// The record.
    #[serde(flatten)]
    pub(crate) record: &'a SignatureRecord,
    /// The metering receipt of a paid stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) receipt: Option<&'a crate::billing::Receipt>,
}

/// The handler.
pub(super) async fn get_signature(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Path(id) = id.map_err(|e| ApiError::InvalidQuery(e.body_text()))?;
    let record = state
        .signature(&id)
        .ok_or_else(|| ApiError::SignatureNotFound(id.clone()))?;
    let value = serde_json::to_value(SignatureEvent {
        id: &id,
        record: &record,
        receipt: None,
    })
    .map_err(|e| ApiError::Internal(format!("serialising a signature: {e}")))?;
    Ok(Json(value))
}
