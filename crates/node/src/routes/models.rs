//! `GET /v1/models`.

use axum::Json;
use axum::extract::State;
use cloister_types::openai::{Model, ModelList};
use serde_json::{Map, Value};

use crate::state::AppState;

/// The handler: the engine's models, each with the SHA-256 of its weights where known.
pub(super) async fn list_models(State(state): State<AppState>) -> Json<ModelList> {
    let data = state
        .engine
        .models()
        .into_iter()
        .map(|card| {
            let mut extra = Map::new();
            if let Some(sha256) = card.sha256 {
                extra.insert("sha256".to_owned(), Value::String(sha256));
            }
            Model {
                id: card.id,
                object: "model".to_owned(),
                created: state.shared.started_unix,
                owned_by: card.owned_by,
                extra,
            }
        })
        .collect();
    Json(ModelList {
        object: "list".to_owned(),
        data,
    })
}
