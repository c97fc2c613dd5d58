//! Graceful shutdown: a stream in flight when the signal comes still completes, signed.

use std::sync::Arc;
use std::time::Duration;

use cloister_node::NodeConfig;
use cloister_types::wire;
use futures::StreamExt as _;
use serde_json::json;

use crate::common::{TestNode, address, chat_body, engine, signer, split_sse};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_in_flight_finishes_after_shutdown_signal() {
    let Some(engine) = engine().await else { return };
    let model = engine.model_id().to_owned();
    let mut node = TestNode::start(Arc::new(engine), NodeConfig::default()).await;
    let request = chat_body(&model, "Tell me about the sea.", true, json!({}));

    let resp = reqwest::Client::new()
        .post(node.url(wire::CHAT_COMPLETIONS_PATH))
        .header(wire::INLINE_SIGNATURE_HEADER, wire::INLINE_SIGNATURE_ON)
        .body(request.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut frames = resp.bytes_stream();
    let mut body = frames.next().await.unwrap().unwrap().to_vec();
    assert!(body.starts_with(b"data: "), "first event arrived before shutdown");

    node.trigger_shutdown();
    while let Some(frame) = frames.next().await {
        body.extend_from_slice(&frame.unwrap());
    }
    let answer = split_sse(&body);
    assert_eq!(answer.data.last().map(String::as_str), Some(wire::SSE_DONE));
    let event = answer.signature.expect("the stream completed with its signature");
    let recovered = signer(&request, &answer.signed, event["signature"].as_str().unwrap());
    assert_eq!(recovered, address(node.state.signing_address()));

    // The server then stops, and refuses new connections.
    let task = node.task.take().unwrap();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(reqwest::get(node.url(wire::HEALTH_PATH)).await.is_err());
}
