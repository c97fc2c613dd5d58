//! Bad input: each answered with a clear OpenAI error, and the node keeps serving.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use cloister_engine::upstream::{UpstreamConfig, UpstreamEngine};
use cloister_node::NodeConfig;
use cloister_types::wire;
use http_body_util::BodyExt as _;
use serde_json::json;
use tower::ServiceExt as _;

use crate::common::{
    TestNode, assert_openai_error, chat_body, engine, get, get_json, get_text, oneshot, post_json, state,
};

const BODY_LIMIT: usize = 4096;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_openai_errors_and_the_node_keeps_serving() {
    let Some(engine) = engine().await else { return };
    let model = engine.model_id().to_owned();
    let node = TestNode::start(
        Arc::new(engine),
        NodeConfig {
            body_limit: BODY_LIMIT,
            ..NodeConfig::default()
        },
    )
    .await;
    let http = reqwest::Client::new();
    let post = |body: Vec<u8>| {
        let req = http
            .post(node.url(wire::CHAT_COMPLETIONS_PATH))
            .header("content-type", wire::JSON_CONTENT_TYPE)
            .body(body);
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.bytes().await.unwrap().to_vec())
        }
    };

    // Malformed JSON: says where, never echoes the body.
    let (status, body) = post(br#"{"model": "SECRET-PROMPT-TEXT", oops}"#.to_vec()).await;
    assert_eq!(status, 400);
    let message = assert_openai_error(&body, "invalid_json");
    assert!(message.contains("line 1 column"), "{message}");
    assert!(!message.contains("SECRET-PROMPT-TEXT"), "{message}");

    // JSON of the wrong shape.
    let (status, body) = post(br#"{"model": "m"}"#.to_vec()).await;
    assert_eq!(status, 400);
    let message = assert_openai_error(&body, "invalid_json");
    assert!(message.contains("messages"), "{message}");

    // Not JSON at all, labelled as text: still parsed as JSON (documented), so 400 not 415.
    let resp = http
        .post(node.url(wire::CHAT_COMPLETIONS_PATH))
        .header("content-type", "text/plain")
        .body("hi")
        .send();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_openai_error(&resp.bytes().await.unwrap(), "invalid_json");

    // Over the body limit.
    let prompt = "x".repeat(2 * BODY_LIMIT);
    let (status, body) = post(chat_body(&model, &prompt, false, json!({}))).await;
    assert_eq!(status, 413);
    let message = assert_openai_error(&body, "payload_too_large");
    assert!(message.contains(&BODY_LIMIT.to_string()), "{message}");

    // Unknown model, plain and streamed.
    for stream in [false, true] {
        let (status, body) = post(chat_body("no-such-model", "hi", stream, json!({}))).await;
        assert_eq!(status, 404, "stream={stream}");
        assert!(assert_openai_error(&body, "model_not_found").contains("no-such-model"));
    }

    // Bad nonces.
    for bad in ["abc", &"zz".repeat(32), &"00".repeat(33), ""] {
        let resp = http
            .get(node.url(&format!(
                "{}?{}={bad}",
                wire::ATTESTATION_REPORT_PATH,
                wire::QUERY_NONCE
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "nonce {bad:?}");
        assert_openai_error(&resp.bytes().await.unwrap(), "invalid_nonce");
    }

    // Unknown signature id.
    let resp = http
        .get(node.url(&wire::signature_path("chatcmpl-00000000000000000000000000000000")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_openai_error(&resp.bytes().await.unwrap(), "signature_not_found");

    // After all that, a good request is served.
    let (status, body) = post(chat_body(&model, "Say hi.", false, json!({}))).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let metrics = get_text(&http, node.url(wire::METRICS_PATH)).await;
    assert!(
        metrics.contains("cloister_engine_errors_total{kind=\"unknown_model\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "route=\"{}\",status=\"413\"}} 1",
            wire::CHAT_COMPLETIONS_PATH
        )),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_body_without_a_socket_is_413_too() {
    let Some(engine) = engine().await else { return };
    let state = state(
        Arc::new(engine),
        NodeConfig {
            body_limit: BODY_LIMIT,
            ..NodeConfig::default()
        },
    );
    // Declared length over the limit, and a chunked body (no length) over the limit.
    let (resp, body) = oneshot(
        &state,
        post_json(wire::CHAT_COMPLETIONS_PATH, vec![b' '; BODY_LIMIT + 1]),
    )
    .await;
    assert_eq!(resp.status(), 413);
    assert_openai_error(&body, "payload_too_large");
    let chunks = futures::stream::iter((0..8).map(|_| Ok::<_, std::io::Error>(vec![b' '; BODY_LIMIT / 2])));
    let req = Request::post(wire::CHAT_COMPLETIONS_PATH)
        .body(Body::from_stream(chunks))
        .unwrap();
    let resp = cloister_node::router(state.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 413);
    assert_openai_error(
        &resp.into_body().collect().await.unwrap().to_bytes(),
        "payload_too_large",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_is_502_and_the_node_keeps_serving() {
    // A port that was just free: nothing listens there.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let upstream = UpstreamEngine::connect(UpstreamConfig {
        base_url: format!("http://127.0.0.1:{port}/v1"),
        api_key: None,
        models: vec!["ghost".to_owned()],
        timeout: Duration::from_secs(5),
    })
    .await
    .unwrap();
    let node = TestNode::start(Arc::new(upstream), NodeConfig::default()).await;
    let http = reqwest::Client::new();

    for stream in [false, true] {
        let resp = http
            .post(node.url(wire::CHAT_COMPLETIONS_PATH))
            .body(chat_body("ghost", "hi", stream, json!({})))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 502, "stream={stream}");
        let message = assert_openai_error(&resp.bytes().await.unwrap(), "upstream_unavailable");
        assert!(
            !message.contains(&port.to_string()),
            "no internal addresses in client messages: {message}"
        );
    }

    let health = http.get(node.url(wire::HEALTH_PATH)).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let models: serde_json::Value = get_json(&http, node.url(wire::MODELS_PATH)).await;
    assert_eq!(models["data"][0]["id"], "ghost");
    let report = http
        .get(node.url(wire::ATTESTATION_REPORT_PATH))
        .send()
        .await
        .unwrap();
    assert_eq!(report.status(), 200);
    let metrics = get_text(&http, node.url(wire::METRICS_PATH)).await;
    assert!(
        metrics.contains("cloister_engine_errors_total{kind=\"upstream_unavailable\"} 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_concurrent_requests_is_429_but_health_answers() {
    let Some(engine) = engine().await else { return };
    let model = engine.model_id().to_owned();
    let state = state(
        Arc::new(engine),
        NodeConfig {
            max_concurrent_requests: 1,
            ..NodeConfig::default()
        },
    );

    // A stream whose body is not read yet holds the only slot.
    let held = cloister_node::router(state.clone())
        .oneshot(post_json(
            wire::CHAT_COMPLETIONS_PATH,
            chat_body(&model, "Hi.", true, json!({})),
        ))
        .await
        .unwrap();
    assert_eq!(held.status(), 200);

    let (resp, body) = oneshot(&state, get(wire::MODELS_PATH)).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_openai_error(&body, "overloaded");
    let (resp, _) = oneshot(&state, get(wire::HEALTH_PATH)).await;
    assert_eq!(resp.status(), 200);
    let (_, metrics) = oneshot(&state, get(wire::METRICS_PATH)).await;
    assert!(String::from_utf8_lossy(&metrics).contains("cloister_requests_in_flight 1"));

    // Finishing the stream frees the slot.
    let body = held.into_body().collect().await.unwrap().to_bytes();
    assert!(body.ends_with(wire::SSE_DONE_EVENT.as_bytes()));
    let (resp, _) = oneshot(&state, get(wire::MODELS_PATH)).await;
    assert_eq!(resp.status(), 200);
}
