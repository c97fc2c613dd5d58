//! Several chats at once over one node (more than the engine's 4 slots: some queue).

use std::sync::Arc;

use cloister_node::NodeConfig;
use cloister_types::wire;
use serde_json::{Value, json};

use crate::common::{TestNode, address, chat_body, engine, signer, split_sse};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_concurrent_chats_all_succeed() {
    let Some(engine) = engine().await else { return };
    let model = engine.model_id().to_owned();
    let node = TestNode::start(Arc::new(engine), NodeConfig::default()).await;
    let http = reqwest::Client::new();
    let node_address = address(node.state.signing_address());

    let prompts = [
        "Say one.",
        "Say two.",
        "Say three.",
        "Say four.",
        "Say five.",
        "Say six.",
    ];
    let requests = prompts.iter().enumerate().map(|(i, prompt)| {
        let stream = i % 2 == 1;
        let request = chat_body(&model, prompt, stream, json!({}));
        let send = http
            .post(node.url(wire::CHAT_COMPLETIONS_PATH))
            .header(wire::INLINE_SIGNATURE_HEADER, wire::INLINE_SIGNATURE_ON)
            .body(request.clone())
            .send();
        async move {
            let resp = send.await.unwrap();
            assert_eq!(resp.status(), 200);
            let id = resp.headers()[wire::SIGNATURE_ID_HEADER]
                .to_str()
                .unwrap()
                .to_owned();
            let header_sig = resp
                .headers()
                .get(wire::SIGNATURE_HEADER)
                .map(|v| v.to_str().unwrap().to_owned());
            let body = resp.bytes().await.unwrap().to_vec();
            let recovered = if stream {
                let answer = split_sse(&body);
                assert!(!answer.text().is_empty());
                let event = answer.signature.unwrap();
                signer(&request, &answer.signed, event["signature"].as_str().unwrap())
            } else {
                let completion: Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(completion["id"], id.as_str());
                signer(&request, &body, &header_sig.unwrap())
            };
            (id, recovered)
        }
    });
    let results = futures::future::join_all(requests).await;
    let mut ids: Vec<&str> = results.iter().map(|(id, _)| id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 6, "distinct ids");
    assert!(results.iter().all(|(_, a)| *a == node_address));
}
