//! Legacy text completions (`POST /v1/completions`) over the real engine: the raw prompt is
//! answered, plain and streamed, signed over the exact bytes by the attested key like chat, sealed
//! under E2EE on the route's own path, and bad bodies are refused with OpenAI-shaped 400s.

use std::sync::Arc;

use cloister_crypto::e2ee::decode_base64;
use cloister_node::NodeConfig;
use cloister_types::e2ee::HEADER_E2EE;
use cloister_types::{AttestationReport, signature_text, wire};
use serde_json::{Value, json};

use crate::common::{
    TestNode, address, assert_openai_error, engine, get_json, nonce, oneshot, post_json, sealed_post, signer,
    split_sse, state,
};

fn text_body(model: &str, prompt: &str, stream: bool, extra: Value) -> Vec<u8> {
    let mut body =
        json!({"model": model, "prompt": prompt, "max_tokens": 12, "temperature": 0, "stream": stream});
    if let (Some(obj), Value::Object(more)) = (body.as_object_mut(), extra) {
        obj.extend(more);
    }
    serde_json::to_vec(&body).unwrap()
}

/// The signer the node's attestation report binds (checked against a fresh nonce).
async fn attested_signer(node: &TestNode) -> cloister_types::Address {
    let n = nonce();
    let url = format!(
        "{}?{}={}",
        wire::ATTESTATION_REPORT_PATH,
        wire::QUERY_NONCE,
        n.to_hex()
    );
    let report: AttestationReport = get_json(&reqwest::Client::new(), node.url(&url)).await;
    assert_eq!(report.request_nonce, n.to_hex());
    address(&report.signing_address)
}

fn check_usage(usage: &Value, max_completion: u64) {
    let (p, c, t) = (
        usage["prompt_tokens"].as_u64().unwrap(),
        usage["completion_tokens"].as_u64().unwrap(),
        usage["total_tokens"].as_u64().unwrap(),
    );
    assert!(p > 0 && c > 0 && c <= max_completion && t == p + c, "{usage}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_text_completion_is_signed_by_the_attested_key() {
    let Some(engine) = engine().await else { return };
    let model = engine.model_id().to_owned();
    let node = TestNode::start(Arc::new(engine), NodeConfig::default()).await;
    let http = reqwest::Client::new();
    let mut request = text_body(&model, "The capital of France is", false, json!({}));
    // Odd spacing: the signature covers the bytes as sent.
    request.splice(1..1, b"  ".iter().copied());
    let resp = http
        .post(node.url(wire::COMPLETIONS_PATH))
        .header("content-type", wire::JSON_CONTENT_TYPE)
        .body(request.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], wire::JSON_CONTENT_TYPE);
    let header = |name: &str| resp.headers()[name].to_str().unwrap().to_owned();
    let (signature, signing_address, id) = (
        header(wire::SIGNATURE_HEADER),
        header(wire::SIGNING_ADDRESS_HEADER),
        header(wire::SIGNATURE_ID_HEADER),
    );
    let body = resp.bytes().await.unwrap().to_vec();

    let completion: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(completion["object"], "text_completion");
    assert_eq!(completion["id"], id.as_str());
    assert!(id.strip_prefix("cmpl-").is_some_and(|h| h.len() == 32), "{id}");
    assert_eq!(completion["model"], model.as_str());
    let text = completion["choices"][0]["text"].as_str().unwrap();
    assert!(!text.is_empty(), "{completion}");
    assert!(completion["choices"][0]["finish_reason"].is_string());
    check_usage(&completion["usage"], 12);

    let recovered = signer(&request, &body, &signature);
    assert_eq!(recovered, address(&signing_address));
    assert_eq!(recovered, attested_signer(&node).await);
    let record: Value = get_json(&http, node.url(&wire::signature_path(&id))).await;
    assert_eq!(record["signature"], signature.as_str());
    assert_eq!(record["text"], signature_text(&request, &body).as_str());

    // The raw prompt is not wrapped in the chat template: the same prompt through chat counts
    // more prompt tokens (role markers).
    let chat = json!({"model": model, "messages": [{"role": "user", "content": "The capital of France is"}], "max_tokens": 1});
    let chat: Value = http
        .post(node.url(wire::CHAT_COMPLETIONS_PATH))
        .json(&chat)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        chat["usage"]["prompt_tokens"].as_u64().unwrap()
            > completion["usage"]["prompt_tokens"].as_u64().unwrap(),
        "{chat} vs {completion}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_text_completion_ends_with_the_signature_event() {
    let Some(engine) = engine().await else { return };
    let model = engine.model_id().to_owned();
    let node = TestNode::start(Arc::new(engine), NodeConfig::default()).await;
    let http = reqwest::Client::new();
    let request = text_body(
        &model,
        "Once upon a time",
        true,
        json!({"stream_options": {"include_usage": true}}),
    );
    let resp = http
        .post(node.url(wire::COMPLETIONS_PATH))
        .header(wire::INLINE_SIGNATURE_HEADER, wire::INLINE_SIGNATURE_ON)
        .body(request.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], wire::EVENT_STREAM_CONTENT_TYPE);
    let id = resp.headers()[wire::SIGNATURE_ID_HEADER]
        .to_str()
        .unwrap()
        .to_owned();
    let answer = split_sse(&resp.bytes().await.unwrap());
    assert_eq!(answer.data.last().map(String::as_str), Some(wire::SSE_DONE));
    let chunks = answer.chunks();
    assert!(chunks.len() >= 2, "{:?}", answer.data);
    for chunk in &chunks {
        assert_eq!(chunk["id"], id.as_str());
        assert_eq!(chunk["object"], "text_completion");
    }
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0).and_then(|ch| ch["text"].as_str()))
        .collect();
    assert!(!text.is_empty());
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"].is_string())
    );
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    check_usage(&last["usage"], 12);

    let event = answer
        .signature
        .clone()
        .expect("the signature event ends the stream");
    assert_eq!(event["id"], id.as_str());
    assert_eq!(event["text"], signature_text(&request, &answer.signed).as_str());
    let recovered = signer(&request, &answer.signed, event["signature"].as_str().unwrap());
    assert_eq!(recovered, attested_signer(&node).await);

    // Without the opt-in header the body ends at `[DONE]` and hashes whole to the stored text;
    // without include_usage no usage chunk is sent.
    let request = text_body(&model, "Once upon a time", true, json!({}));
    let resp = http
        .post(node.url(wire::COMPLETIONS_PATH))
        .body(request.clone())
        .send()
        .await
        .unwrap();
    let id = resp.headers()[wire::SIGNATURE_ID_HEADER]
        .to_str()
        .unwrap()
        .to_owned();
    let body = resp.bytes().await.unwrap().to_vec();
    assert!(body.ends_with(wire::SSE_DONE_EVENT.as_bytes()));
    let answer = split_sse(&body);
    assert!(answer.signature.is_none());
    assert!(answer.chunks().iter().all(|c| c.get("usage").is_none()));
    let record: Value = get_json(&http, node.url(&wire::signature_path(&id))).await;
    assert_eq!(record["text"], signature_text(&request, &body).as_str());
    let recovered = signer(&request, &body, record["signature"].as_str().unwrap());
    assert_eq!(recovered, address(node.state.signing_address()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_text_completion_binds_its_own_path() {
    let Some(engine) = engine().await else { return };
    let model = engine.model_id().to_owned();
    let node = TestNode::start(Arc::new(engine), NodeConfig::default()).await;
    let body = text_body(&model, "Hello", false, json!({}));
    let send = |path: &'static str| sealed_post(&node, wire::COMPLETIONS_PATH, path, &model, &body);
    let (req, keys) = send(wire::COMPLETIONS_PATH);
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()[HEADER_E2EE], "v1");
    let signature = resp.headers()[wire::SIGNATURE_HEADER]
        .to_str()
        .unwrap()
        .to_owned();
    let plain = keys
        .open_body(&decode_base64(&resp.text().await.unwrap()).unwrap())
        .unwrap();
    let completion: Value = serde_json::from_slice(&plain).unwrap();
    assert_eq!(completion["object"], "text_completion");
    assert_eq!(
        signer(&body, &plain, &signature),
        address(node.state.signing_address())
    );

    // An envelope sealed for the chat path does not open here.
    let (req, _) = send(wire::CHAT_COMPLETIONS_PATH);
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn bad_bodies_get_openai_400s() {
    let Some(engine) = engine().await else { return };
    let model = engine.model_id().to_owned();
    let state = state(Arc::new(engine), NodeConfig::default());
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"{not json".to_vec(), 400, "invalid_json"),
        (br#"{"model":"x"}"#.to_vec(), 400, "invalid_json"),
        (
            serde_json::to_vec(&json!({"model": model, "prompt": ["a", "b"]})).unwrap(),
            400,
            "invalid_request",
        ),
        (
            serde_json::to_vec(&json!({"model": model, "prompt": [1, 2, 3]})).unwrap(),
            400,
            "invalid_request",
        ),
        (
            serde_json::to_vec(&json!({"model": model, "prompt": "x", "max_tokens": 0})).unwrap(),
            400,
            "invalid_request",
        ),
        (
            serde_json::to_vec(&json!({"model": model, "prompt": "x", "echo": true})).unwrap(),
            400,
            "invalid_request",
        ),
        (
            serde_json::to_vec(&json!({"model": model, "prompt": "x", "temperature": 9})).unwrap(),
            400,
            "invalid_request",
        ),
        (
            serde_json::to_vec(&json!({"model": model, "prompt": "x", "stream": true, "n": 3})).unwrap(),
            400,
            "invalid_request",
        ),
        (
            serde_json::to_vec(&json!({"model": model, "prompt": ""})).unwrap(),
            400,
            "invalid_request",
        ),
        (
            serde_json::to_vec(&json!({"model": "nope", "prompt": "x"})).unwrap(),
            404,
            "model_not_found",
        ),
    ];
    for (body, status, code) in cases {
        let (resp, answer) = oneshot(&state, post_json(wire::COMPLETIONS_PATH, body.clone())).await;
        assert_eq!(
            resp.status().as_u16(),
            status,
            "{}",
            String::from_utf8_lossy(&body)
        );
        assert_openai_error(&answer, code);
    }
}

/// `cloister proxy`'s router in front of the real node: a text completion goes sealed to the
/// attested key and comes back opened with its signature checked, plain and streamed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_completions_pass_through_the_verifying_proxy() {
    let Some(engine) = engine().await else { return };
    let model = engine.model_id().to_owned();
    let node = TestNode::start(Arc::new(engine), NodeConfig::default()).await;
    let policy = Arc::new(cloister_client::Policy::dev_allow_simulated());
    let pool = cloister_client::NodePool::new([node.url("").as_str()], policy).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!(
        "http://{}{}",
        listener.local_addr().unwrap(),
        wire::COMPLETIONS_PATH
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(cloister_client::proxy::serve(listener, pool, async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();

    let resp = http
        .post(&proxy_url)
        .body(text_body(&model, "The sky is", false, json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()[wire::VERIFIED_HEADER], "true");
    assert_eq!(resp.headers()[wire::SIGNATURE_VERIFIED_HEADER], "true");
    assert_eq!(resp.headers()[wire::E2EE_HEADER], "sealed");
    let signer_header = resp.headers()[wire::SIGNER_HEADER].to_str().unwrap().to_owned();
    assert_eq!(address(&signer_header), address(node.state.signing_address()));
    let completion: Value = resp.json().await.unwrap();
    assert_eq!(completion["object"], "text_completion");
    assert!(!completion["choices"][0]["text"].as_str().unwrap().is_empty());
    check_usage(&completion["usage"], 12);

    let request = text_body(&model, "The sky is", true, json!({}));
    let resp = http.post(&proxy_url).body(request.clone()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()[wire::SIGNATURE_VERIFIED_HEADER],
        wire::SIGNATURE_VERIFIED_AT_END
    );
    let body = resp.bytes().await.unwrap();
    let answer = split_sse(&body);
    // The proxy passes the node's signature event on after `[DONE]`, as it does for chat.
    assert_eq!(answer.data.last().map(String::as_str), Some(wire::SSE_DONE));
    let event = answer.signature.clone().expect("the node's signature event");
    let signed_by = signer(&request, &answer.signed, event["signature"].as_str().unwrap());
    assert_eq!(signed_by, address(node.state.signing_address()));
    let text: String = answer
        .chunks()
        .iter()
        .filter_map(|c| c["choices"].get(0).and_then(|ch| ch["text"].as_str()))
        .collect();
    assert!(!text.is_empty());

    // A bad body is the proxy's or the node's 400, never a panic.
    let resp = http.post(&proxy_url).body("{not json").send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let resp = http
        .post(&proxy_url)
        .body(serde_json::to_vec(&json!({"model": model, "prompt": ["a", "b"]})).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let _ = stop.send(());
    served.await.unwrap().unwrap();
}
