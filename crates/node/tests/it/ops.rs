//! `/v1/models`, `/health`, `/metrics`, and the routing fallbacks, through `Router::oneshot`.

use std::sync::Arc;

use cloister_node::NodeConfig;
use cloister_types::wire;
use serde_json::{Value, json};

use crate::common::{assert_openai_error, chat_body, engine, get, oneshot, post_json, state};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_health_and_metrics_move_after_a_chat() {
    let Some(engine) = engine().await else { return };
    let model = engine.model_id().to_owned();
    let sha = engine.sha256().to_owned();
    let state = state(Arc::new(engine), NodeConfig::default());

    let (resp, body) = oneshot(&state, get(wire::MODELS_PATH)).await;
    assert_eq!(resp.status(), 200);
    let models: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], model.as_str());
    assert_eq!(models["data"][0]["object"], "model");
    assert_eq!(models["data"][0]["owned_by"], "cloister");
    assert_eq!(models["data"][0]["sha256"], sha.as_str());
    assert_eq!(sha.len(), 64);

    let (resp, body) = oneshot(&state, get(wire::HEALTH_PATH)).await;
    assert_eq!(resp.status(), 200);
    let health: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["tee"], "simulated");
    assert_eq!(health["signing_address"], state.signing_address());
    assert_eq!(health["models"], json!([model]));

    let (_, before) = oneshot(&state, get(wire::METRICS_PATH)).await;
    let before = String::from_utf8(before).unwrap();
    assert!(
        before.contains("# TYPE cloister_chat_request_duration_seconds histogram"),
        "{before}"
    );
    assert!(!before.contains("cloister_chat_requests_total{"), "{before}");

    let (resp, _) = oneshot(
        &state,
        post_json(
            wire::CHAT_COMPLETIONS_PATH,
            chat_body(&model, "Say hi.", false, json!({})),
        ),
    )
    .await;
    assert_eq!(resp.status(), 200);

    let (resp, text) = oneshot(&state, get(wire::METRICS_PATH)).await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = String::from_utf8(text).unwrap();
    let has = |needle: &str| assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    has(&format!(
        "cloister_chat_requests_total{{model=\"{model}\",stream=\"false\"}} 1"
    ));
    for route in [wire::CHAT_COMPLETIONS_PATH, wire::MODELS_PATH] {
        has(&format!(
            "cloister_http_requests_total{{route=\"{route}\",status=\"200\"}} 1"
        ));
    }
    has("cloister_chat_request_duration_seconds_count 1");
    has("cloister_chat_request_duration_seconds_bucket{le=\"+Inf\"} 1");
    has("cloister_signature_cache_entries 1");
    has("cloister_requests_in_flight 0");
    let tokens = |kind: &str| -> u64 {
        let prefix = format!("cloister_tokens_total{{model=\"{model}\",kind=\"{kind}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    assert!(tokens("prompt") > 0, "{text}");
    assert!(tokens("completion") > 0, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_methods_are_openai_errors() {
    let Some(engine) = engine().await else { return };
    let state = state(Arc::new(engine), NodeConfig::default());

    let (resp, body) = oneshot(&state, get("/v1/nope")).await;
    assert_eq!(resp.status(), 404);
    assert_openai_error(&body, "not_found");

    let (resp, body) = oneshot(&state, get(wire::CHAT_COMPLETIONS_PATH)).await;
    assert_eq!(resp.status(), 405);
    assert_openai_error(&body, "method_not_allowed");

    let (resp, body) = oneshot(&state, post_json(wire::MODELS_PATH, b"{}".to_vec())).await;
    assert_eq!(resp.status(), 405);
    assert_openai_error(&body, "method_not_allowed");

    let (_, text) = oneshot(&state, get(wire::METRICS_PATH)).await;
    let text = String::from_utf8(text).unwrap();
    // Raw paths never become label values.
    assert!(!text.contains("/v1/nope"), "{text}");
    assert!(text.contains("route=\"unmatched\",status=\"404\"} 1"), "{text}");
}
