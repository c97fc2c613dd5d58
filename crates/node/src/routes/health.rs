//! `GET /health`.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::state::AppState;

/// The handler: liveness plus who this node is (TEE kind, signing address, models).
pub(super) async fn health(State(state): State<AppState>) -> Json<Value> {
    let models: Vec<String> = state.engine.models().into_iter().map(|m| m.id).collect();
    Json(json!({
        "status": "ok",
        "tee": state.attester.tee(),
        "signing_address": state.signing_address(),
        "models": models,
    }))
}
