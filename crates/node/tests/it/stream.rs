//! Streamed chat over a socket: chunks as they come, `[DONE]`, then one signature event over every
//! byte before it.

use std::sync::Arc;

use cloister_node::NodeConfig;
use cloister_types::wire;
use futures::StreamExt as _;
use serde_json::{Value, json};

use crate::common::{SseAnswer, TestNode, address, chat_body, engine, get_text, signer, split_sse};

/// Sends a stream request; returns the answer, the number of body frames read, and the headers.
pub async fn stream_chat(node: &TestNode, request: &[u8]) -> (SseAnswer, usize, reqwest::header::HeaderMap) {
    let resp = reqwest::Client::new()
        .post(node.url(wire::CHAT_COMPLETIONS_PATH))
        .header("content-type", wire::JSON_CONTENT_TYPE)
        .header(wire::INLINE_SIGNATURE_HEADER, wire::INLINE_SIGNATURE_ON)
        .body(request.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let headers = resp.headers().clone();
    let mut body = Vec::new();
    let mut frames = 0;
    let mut bytes = resp.bytes_stream();
    while let Some(frame) = bytes.next().await {
        body.extend_from_slice(&frame.unwrap());
        frames += 1;
    }
    (split_sse(&body), frames, headers)
}

/// Checks the stream shape and signature; returns the signature event.
pub fn check_signed_stream(answer: &SseAnswer, request: &[u8], id: &str, expected_signer: &str) -> Value {
    assert_eq!(answer.data.last().map(String::as_str), Some(wire::SSE_DONE));
    let chunks = answer.chunks();
    assert!(chunks.len() >= 2, "{:?}", answer.data);
    for chunk in &chunks {
        assert_eq!(chunk["id"], id, "every chunk carries the node's id");
        assert_eq!(chunk["object"], "chat.completion.chunk");
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(!answer.text().is_empty());
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"].is_string()),
        "{chunks:?}"
    );

    let event = answer
        .signature
        .clone()
        .expect("a signature event ends the stream");
    assert_eq!(event["id"], id);
    assert_eq!(event["signing_address"], expected_signer);
    assert_eq!(event["signing_algo"], "ecdsa");
    assert_eq!(
        event["text"],
        cloister_types::signature_text(request, &answer.signed).as_str()
    );
    let recovered = signer(request, &answer.signed, event["signature"].as_str().unwrap());
    assert_eq!(recovered, address(expected_signer));
    event
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_is_forwarded_and_signed() {
    let Some(engine) = engine().await else { return };
    let model = engine.model_id().to_owned();
    let node = TestNode::start(Arc::new(engine), NodeConfig::default()).await;
    let request = chat_body(&model, "Name three colours.", true, json!({}));

    let (answer, frames, headers) = stream_chat(&node, &request).await;
    assert_eq!(headers["content-type"], wire::EVENT_STREAM_CONTENT_TYPE);
    let id = headers[wire::SIGNATURE_ID_HEADER].to_str().unwrap().to_owned();
    assert_eq!(
        headers[wire::SIGNING_ADDRESS_HEADER],
        node.state.signing_address()
    );
    assert!(
        frames > 1,
        "chunks arrive as they are produced, not as one buffered body"
    );

    let event = check_signed_stream(&answer, &request, &id, node.state.signing_address());
    // Without include_usage the engine's usage-only chunk is not forwarded.
    for chunk in answer.chunks() {
        assert!(chunk.get("usage").is_none(), "{chunk}");
        assert!(!chunk["choices"].as_array().unwrap().is_empty(), "{chunk}");
    }

    // The same record is served by id.
    let record: Value = reqwest::get(node.url(&wire::signature_path(&id)))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(record, event);

    // Usage was metered even though the client did not ask to see it.
    let metrics = reqwest::get(node.url(wire::METRICS_PATH))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("cloister_tokens_total{{model=\"{model}\",kind=\"completion\"}} ");
    let completion: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap()
        .parse()
        .unwrap();
    assert!(completion > 0, "{metrics}");
    assert!(metrics.contains(&format!(
        "cloister_chat_requests_total{{model=\"{model}\",stream=\"true\"}} 1"
    )));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn include_usage_forwards_the_usage_chunk() {
    let Some(engine) = engine().await else { return };
    let model = engine.model_id().to_owned();
    let node = TestNode::start(Arc::new(engine), NodeConfig::default()).await;
    let request = chat_body(
        &model,
        "Say hello.",
        true,
        json!({"stream_options": {"include_usage": true}}),
    );

    let (answer, _, headers) = stream_chat(&node, &request).await;
    let id = headers[wire::SIGNATURE_ID_HEADER].to_str().unwrap().to_owned();
    check_signed_stream(&answer, &request, &id, node.state.signing_address());
    let chunks = answer.chunks();
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]), "{last}");
    let usage = &last["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 0, "{last}");
    assert!(usage["completion_tokens"].as_u64().unwrap() > 0, "{last}");
    assert_eq!(chunks.iter().filter(|c| c.get("usage").is_some()).count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_going_away_frees_its_slot() {
    let Some(engine) = engine().await else { return };
    let model = engine.model_id().to_owned();
    let node = TestNode::start(
        Arc::new(engine),
        NodeConfig {
            max_concurrent_requests: 1,
            ..NodeConfig::default()
        },
    )
    .await;
    let http = reqwest::Client::new();
    let request = chat_body(&model, "Write a long story.", true, json!({"max_tokens": 200}));
    let resp = http
        .post(node.url(wire::CHAT_COMPLETIONS_PATH))
        .body(request)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut frames = resp.bytes_stream();
    assert!(frames.next().await.is_some());
    drop(frames);

    // The node notices on its next write, drops the engine stream and releases the slot.
    let mut status = 0;
    for _ in 0..100 {
        status = http
            .get(node.url(wire::MODELS_PATH))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "slot released after the client left");
    let metrics = get_text(&http, node.url(wire::METRICS_PATH)).await;
    assert!(metrics.contains("cloister_requests_in_flight 0"), "{metrics}");
    // The stream was cut, not finished: no signature, no completed-request duration.
    assert!(
        metrics.contains("cloister_chat_request_duration_seconds_count 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cloister_signature_cache_entries 0"),
        "{metrics}"
    );
}
