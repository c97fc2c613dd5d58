//! Timeouts and the signature cache bounds, wired through the HTTP layer.

use std::sync::Arc;
use std::time::Duration;

use axum::http::Response;
use cloister_node::{AppState, NodeConfig};
use cloister_types::wire;
use serde_json::{Value, json};

use crate::common::{assert_openai_error, chat_body, engine, get, oneshot, post_json, split_sse, state};

async fn chat(state: &AppState, model: &str, stream: bool) -> (Response<()>, Vec<u8>) {
    oneshot(
        state,
        post_json(
            wire::CHAT_COMPLETIONS_PATH,
            chat_body(model, "Hi.", stream, json!({})),
        ),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_answer_504_or_end_the_stream_with_an_error_event() {
    let Some(engine) = engine().await else { return };
    let model = engine.model_id().to_owned();

    // No completion takes under a millisecond: the whole request times out.
    let slow = state(
        Arc::new(engine.clone()),
        NodeConfig {
            request_timeout: Duration::from_millis(1),
            ..NodeConfig::default()
        },
    );
    let (resp, body) = chat(&slow, &model, false).await;
    assert_eq!(resp.status(), 504);
    assert_openai_error(&body, "timeout");

    // A stream whose engine pauses longer than the idle timeout between chunks ends with an error
    // event and no signature.
    let idle = state(
        Arc::new(engine.clone()),
        NodeConfig {
            stream_idle_timeout: Duration::from_millis(1),
            ..NodeConfig::default()
        },
    );
    // A long prompt makes the prefill before the first content chunk take many milliseconds even on
    // a fast CPU.
    let long_prompt = "Tell me about the sea. ".repeat(60);
    let request = chat_body(&model, &long_prompt, true, json!({}));
    let (resp, body) = oneshot(&idle, post_json(wire::CHAT_COMPLETIONS_PATH, request)).await;
    assert_eq!(resp.status(), 200);
    let answer = split_sse(&body);
    assert!(answer.signature.is_none(), "a cut stream is never signed");
    assert!(!answer.data.iter().any(|d| d == wire::SSE_DONE));
    let last: Value = serde_json::from_str(answer.data.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "timeout", "{last}");

    let (_, metrics) = oneshot(&idle, get(wire::METRICS_PATH)).await;
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains("cloister_engine_errors_total{kind=\"timeout\"} 1"),
        "{metrics}"
    );

    // The engine is not left busy: a normal node still answers.
    let normal = state(Arc::new(engine), NodeConfig::default());
    let (resp, _) = chat(&normal, &model, false).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signature_cache_honours_count_and_age_bounds() {
    let Some(engine) = engine().await else { return };
    let model = engine.model_id().to_owned();
    let id_of = |resp: &Response<()>| {
        resp.headers()[wire::SIGNATURE_ID_HEADER]
            .to_str()
            .unwrap()
            .to_owned()
    };

    let one = state(
        Arc::new(engine.clone()),
        NodeConfig {
            signature_cache_max: 1,
            ..NodeConfig::default()
        },
    );
    let (first, _) = chat(&one, &model, false).await;
    let (second, _) = chat(&one, &model, true).await;
    let (first, second) = (id_of(&first), id_of(&second));
    let (resp, body) = oneshot(&one, get(&wire::signature_path(&first))).await;
    assert_eq!(resp.status(), 404, "the oldest signature was evicted");
    assert_openai_error(&body, "signature_not_found");
    let (resp, _) = oneshot(&one, get(&wire::signature_path(&second))).await;
    assert_eq!(resp.status(), 200);

    let expired = state(
        Arc::new(engine),
        NodeConfig {
            signature_ttl: Duration::ZERO,
            ..NodeConfig::default()
        },
    );
    let (resp, _) = chat(&expired, &model, false).await;
    assert_eq!(
        resp.status(),
        200,
        "the answer itself still carries its signature"
    );
    assert!(resp.headers().contains_key(wire::SIGNATURE_HEADER));
    let (resp, _) = oneshot(&expired, get(&wire::signature_path(&id_of(&resp)))).await;
    assert_eq!(resp.status(), 404);
}
