//! Pass-through: node B runs `UpstreamEngine` against node A (built-in engine), a real
//! OpenAI-compatible server. B answers with its own ids and signs with its own key over the bytes
//! it sent.

use std::sync::Arc;
use std::time::Duration;

use cloister_engine::upstream::{UpstreamConfig, UpstreamEngine};
use cloister_node::NodeConfig;
use cloister_types::wire;
use serde_json::{Value, json};

use crate::common::{TestNode, address, chat_body, engine, get_json, signer};
use crate::stream::{check_signed_stream, stream_chat};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn front_node_signs_what_it_sends() {
    let Some(engine) = engine().await else { return };
    let model = engine.model_id().to_owned();
    let node_a = TestNode::start(Arc::new(engine), NodeConfig::default()).await;
    let upstream = UpstreamEngine::connect(UpstreamConfig {
        base_url: node_a.url("/v1"),
        api_key: None,
        models: Vec::new(), // asks A's /v1/models
        timeout: Duration::from_secs(60),
    })
    .await
    .unwrap();
    let node_b = TestNode::start(Arc::new(upstream), NodeConfig::default()).await;
    let (a_addr, b_addr) = (node_a.state.signing_address(), node_b.state.signing_address());
    assert_ne!(a_addr, b_addr);
    let http = reqwest::Client::new();

    let models: Value = get_json(&http, node_b.url(wire::MODELS_PATH)).await;
    assert_eq!(models["data"][0]["id"], model.as_str());

    // Plain.
    let request = chat_body(&model, "What is two plus two?", false, json!({}));
    let resp = http
        .post(node_b.url(wire::CHAT_COMPLETIONS_PATH))
        .body(request.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let signature = resp.headers()[wire::SIGNATURE_HEADER]
        .to_str()
        .unwrap()
        .to_owned();
    let id = resp.headers()[wire::SIGNATURE_ID_HEADER]
        .to_str()
        .unwrap()
        .to_owned();
    let body = resp.bytes().await.unwrap().to_vec();
    let completion: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(completion["id"], id.as_str(), "B sets its own id");
    assert!(
        !completion["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    assert_eq!(signer(&request, &body, &signature), address(b_addr));
    // A signed its own exchange with B under another id; B's id is unknown to A.
    let on_a = http
        .get(node_a.url(&wire::signature_path(&id)))
        .send()
        .await
        .unwrap();
    assert_eq!(on_a.status(), 404);

    // Streamed.
    let request = chat_body(
        &model,
        "Name a fruit.",
        true,
        json!({"stream_options": {"include_usage": true}}),
    );
    let (answer, _, headers) = stream_chat(&node_b, &request).await;
    let id = headers[wire::SIGNATURE_ID_HEADER].to_str().unwrap().to_owned();
    check_signed_stream(&answer, &request, &id, b_addr);
    let last = answer.chunks().last().cloned().unwrap();
    assert!(last["usage"]["completion_tokens"].as_u64().unwrap() > 0, "{last}");
}

/// JSON mode (`response_format`) reaches a real llama.cpp `llama-server` through the node, plain and
/// streamed, and the answers come back signed by the node: with it the same greedy prompt answers a
/// JSON object, without it prose. (Skips without llama-server, unless the test command built it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_mode_passes_through_to_a_real_llama_server() {
    let Some(model) = cloister_testkit::models::chat_model() else {
        return;
    };
    let started = tokio::task::spawn_blocking(move || {
        cloister_testkit::models::llama_server(&model, &["--alias", "smol", "-c", "2048"])
    });
    let Some(server) = started.await.unwrap() else {
        return;
    };
    let upstream = UpstreamEngine::connect(UpstreamConfig {
        base_url: server.base_url.clone(),
        api_key: None,
        models: Vec::new(),
        timeout: Duration::from_secs(120),
    })
    .await
    .unwrap();
    let node = TestNode::start(Arc::new(upstream), NodeConfig::default()).await;
    let signing = node.state.signing_address().to_owned();
    let http = reqwest::Client::new();
    let json_mode = json!({"response_format": {"type": "json_object"}, "temperature": 0, "max_tokens": 48});

    let ask = |extra: Value| chat_body("smol", "Describe a cat in one sentence.", false, extra);
    let content = |body: &[u8]| {
        let v: Value = serde_json::from_slice(body).unwrap();
        v["choices"][0]["message"]["content"].as_str().unwrap().to_owned()
    };
    let prose = http
        .post(node.url(wire::CHAT_COMPLETIONS_PATH))
        .body(ask(json!({"temperature": 0, "max_tokens": 48})))
        .send()
        .await
        .unwrap();
    assert_eq!(prose.status(), 200);
    let prose = content(&prose.bytes().await.unwrap());
    assert!(!prose.trim_start().starts_with('{'), "{prose}");

    let request = ask(json_mode.clone());
    let resp = http
        .post(node.url(wire::CHAT_COMPLETIONS_PATH))
        .body(request.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let signature = resp.headers()[wire::SIGNATURE_HEADER]
        .to_str()
        .unwrap()
        .to_owned();
    let body = resp.bytes().await.unwrap().to_vec();
    let answer = content(&body);
    assert!(
        answer.trim_start().starts_with('{'),
        "JSON mode reached llama-server: {answer}"
    );
    assert_eq!(signer(&request, &body, &signature), address(&signing));

    let mut streamed = json_mode;
    streamed["stream"] = json!(true);
    let request = chat_body("smol", "Describe a cat in one sentence.", true, streamed);
    let (answer, _, headers) = stream_chat(&node, &request).await;
    let id = headers[wire::SIGNATURE_ID_HEADER].to_str().unwrap().to_owned();
    check_signed_stream(&answer, &request, &id, &signing);
    assert!(answer.text().trim_start().starts_with('{'), "{}", answer.text());
}
