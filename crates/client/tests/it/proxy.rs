//! The verifying proxy in process: `proxy::router` in front of `EvilNode`s (honest or misbehaving
//! in one named way), driven with `oneshot`, and `proxy::serve` over a real socket.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode, header};
use bytes::Bytes;
use cloister_client::{MeasurementAllowlist, NodePool, Policy, proxy, wire};
use cloister_testkit::evil_node::{EvilNode, MODEL, Misbehaviour, RECEIPT, simulated_measurement};
use http_body_util::BodyExt;
use tower::ServiceExt;

fn dev_policy() -> Policy {
    Policy::dev_allow_simulated()
}

fn router(nodes: &[&EvilNode], policy: Policy) -> axum::Router {
    let pool = NodePool::new(nodes.iter().map(|n| n.url.as_str()), Arc::new(policy)).unwrap();
    proxy::router(pool)
}

fn chat_request(stream: bool, authorization: Option<&str>) -> Request<Body> {
    let body = serde_json::json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": stream,
    });
    let mut req =
        Request::post(wire::CHAT_COMPLETIONS_PATH).header(header::CONTENT_TYPE, wire::JSON_CONTENT_TYPE);
    if let Some(auth) = authorization {
        req = req.header(header::AUTHORIZATION, auth);
    }
    req.body(Body::from(body.to_string())).unwrap()
}

async fn send(app: &axum::Router, req: Request<Body>) -> (Response<Body>, Bytes) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (Response::from_parts(parts, Body::empty()), bytes)
}

fn header_of<'a>(resp: &'a Response<Body>, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(bytes)))
}

#[tokio::test]
async fn a_verified_answer_carries_its_proof_in_headers_and_forwards_authorization_and_receipt() {
    let node = EvilNode::start(Misbehaviour::Honest).await;
    let app = router(&[&node], dev_policy());
    let (resp, body) = send(
        &app,
        chat_request(false, Some("Bearer spend-authorization-base64")),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header_of(&resp, wire::VERIFIED_HEADER), "true");
    assert_eq!(header_of(&resp, wire::SIGNATURE_VERIFIED_HEADER), "true");
    assert_eq!(header_of(&resp, wire::E2EE_HEADER), "sealed");
    assert_eq!(header_of(&resp, wire::TEE_HEADER), "simulated");
    assert_eq!(header_of(&resp, wire::SIGNER_HEADER), node.signer_hex());
    assert_eq!(
        header_of(&resp, wire::MEASUREMENT_HEADER),
        simulated_measurement()
    );
    assert_eq!(header_of(&resp, wire::NODE_HEADER), node.url);
    assert_eq!(
        header_of(&resp, header::CONTENT_TYPE.as_str()),
        wire::JSON_CONTENT_TYPE
    );
    assert_eq!(header_of(&resp, wire::RECEIPT_HEADER), RECEIPT);
    let record = json(header_of(&resp, wire::SIGNATURE_HEADER).as_bytes());
    assert_eq!(
        record["signing_address"].as_str().map(str::to_ascii_lowercase),
        Some(node.signer_hex())
    );
    assert_eq!(
        json(&body)["choices"][0]["message"]["content"],
        "The sky is blue."
    );
    assert_eq!(
        node.last_authorization().as_deref(),
        Some("Bearer spend-authorization-base64")
    );

    // Streamed: opened events, then `[DONE]` and the signature event carrying the receipt.
    let (resp, body) = send(&app, chat_request(true, None)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        header_of(&resp, header::CONTENT_TYPE.as_str()),
        wire::EVENT_STREAM_CONTENT_TYPE
    );
    assert_eq!(
        header_of(&resp, wire::SIGNATURE_VERIFIED_HEADER),
        wire::SIGNATURE_VERIFIED_AT_END
    );
    assert_eq!(header_of(&resp, wire::VERIFIED_HEADER), "true");
    let text = String::from_utf8_lossy(&body);
    assert_eq!(text.matches("chat.completion.chunk").count(), 4, "{text}");
    let (_, signature_event) = text
        .split_once(&format!(
            "{}event: {}\ndata: ",
            wire::SSE_DONE_EVENT,
            wire::SIGNATURE_EVENT
        ))
        .unwrap_or_else(|| panic!("no [DONE] then signature event: {text}"));
    let event = json(signature_event.trim().as_bytes());
    assert_eq!(event["receipt"]["cumulative_amount"], "42", "{text}");
    assert!(event["signature"].is_string(), "{event}");
}

#[tokio::test]
async fn the_model_list_and_health_answer_through_the_proxy() {
    let node = EvilNode::start(Misbehaviour::Honest).await;
    let app = router(&[&node], dev_policy());
    let (resp, body) = send(&app, Request::get(wire::MODELS_PATH).body(Body::empty()).unwrap()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let ids: Vec<_> = json(&body)["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, [MODEL]);
    let (resp, body) = send(&app, Request::get(wire::HEALTH_PATH).body(Body::empty()).unwrap()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(&body[..], b"ok");
}

#[tokio::test]
async fn a_simulated_node_is_refused_without_the_switch_and_an_unapproved_measurement_by_name() {
    let node = EvilNode::start(Misbehaviour::Honest).await;

    let strict = router(&[&node], Policy::default());
    let (resp, body) = send(&strict, chat_request(false, None)).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(header_of(&resp, wire::VERIFIED_HEADER), "false");
    let v = json(&body);
    assert_eq!(v["error"]["code"], "simulated_tee_refused", "{v}");
    assert_eq!(v["error"]["type"], "cloister_verification_error", "{v}");

    // An allowlist file naming another build.
    let dir = std::env::temp_dir().join(format!("cloister-proxy-allow-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let list = dir.join("allowed.txt");
    std::fs::write(&list, format!("# another build\n{}\n", "ab".repeat(32))).unwrap();
    let mut pinned = dev_policy();
    pinned.allowed_measurements = MeasurementAllowlist::load(&list).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let pinned = router(&[&node], pinned);
    let (resp, body) = send(&pinned, chat_request(true, None)).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(header_of(&resp, wire::VERIFIED_HEADER), "false");
    assert_eq!(json(&body)["error"]["code"], "measurement_not_allowed");
    let (resp, _) = send(
        &pinned,
        Request::get(wire::MODELS_PATH).body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);

    // The same node passes once its measurement is allowed.
    let mut allowed = dev_policy();
    allowed.allowed_measurements = MeasurementAllowlist::of([simulated_measurement()]);
    let (resp, _) = send(&router(&[&node], allowed), chat_request(false, None)).await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn tampering_a_foreign_signature_and_a_foreign_key_binding_are_named() {
    for (evil, code) in [
        (Misbehaviour::TamperCiphertext, "e2ee_tampered"),
        (Misbehaviour::SignWithOtherKey, "signature_from_another_key"),
        (Misbehaviour::BindingByOtherKey, "key_binding_invalid"),
        (Misbehaviour::DowngradeToPlaintext, "response_not_sealed"),
        (Misbehaviour::WrongResponseKey, "e2ee_tampered"),
    ] {
        let node = EvilNode::start(evil).await;
        let (resp, body) = send(&router(&[&node], dev_policy()), chat_request(false, None)).await;
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY, "{evil:?}");
        assert_eq!(header_of(&resp, wire::VERIFIED_HEADER), "false", "{evil:?}");
        let v = json(&body);
        assert_eq!(v["error"]["code"], code, "{evil:?}: {v}");
        assert!(v["error"]["param"].is_null(), "{evil:?}: {v}");
    }
}

#[tokio::test]
async fn a_truncated_stream_ends_with_an_error_event_and_no_done() {
    let node = EvilNode::start(Misbehaviour::TruncateStream).await;
    let (resp, body) = send(&router(&[&node], dev_policy()), chat_request(true, None)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains(r#""code":"e2ee_truncated""#), "{text}");
    assert!(!text.contains(wire::SSE_DONE), "{text}");
    assert!(!text.contains(wire::SIGNATURE_EVENT), "{text}");
    // The opened chunks before the cut were passed on as they came.
    assert!(text.contains(" sky"), "{text}");
}

#[tokio::test]
async fn a_tampered_stream_ends_with_an_error_event_and_no_done() {
    let node = EvilNode::start(Misbehaviour::TamperCiphertext).await;
    let (resp, body) = send(&router(&[&node], dev_policy()), chat_request(true, None)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains(r#""code":"e2ee_tampered""#), "{text}");
    assert!(!text.contains(wire::SSE_DONE), "{text}");
}

#[tokio::test]
async fn bad_requests_and_node_errors_come_back_as_openai_errors() {
    let node = EvilNode::start(Misbehaviour::Honest).await;
    let app = router(&[&node], dev_policy());
    let (resp, body) = send(
        &app,
        Request::post(wire::CHAT_COMPLETIONS_PATH)
            .body(Body::from("not json"))
            .unwrap(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(header_of(&resp, wire::VERIFIED_HEADER), "false");
    let v = json(&body);
    assert_eq!(v["error"]["code"], "invalid_json", "{v}");
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");

    let (resp, body) = send(
        &app,
        Request::post(wire::CHAT_COMPLETIONS_PATH)
            .body(Body::from(r#"{"messages":[]}"#))
            .unwrap(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json(&body)["error"]["code"], "invalid_request");

    let (resp, body) = send(
        &app,
        Request::post(wire::CHAT_COMPLETIONS_PATH)
            .body(Body::from(r#"{"model":"no-such-model","messages":[]}"#))
            .unwrap(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(json(&body)["error"]["code"], "model_not_bound");

    // A node's own error status comes back as it is, marked unverified (the body is not signed).
    let busy = EvilNode::start(Misbehaviour::Overloaded).await;
    let (resp, body) = send(&router(&[&busy], dev_policy()), chat_request(false, None)).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header_of(&resp, wire::VERIFIED_HEADER), "false");
    assert_eq!(header_of(&resp, wire::SIGNATURE_VERIFIED_HEADER), "false");
    assert_eq!(&body[..], b"overloaded");
}

#[tokio::test]
async fn the_proxy_fails_over_to_the_node_that_verifies() {
    let liar = EvilNode::start(Misbehaviour::SignWithOtherKey).await;
    let good = EvilNode::start(Misbehaviour::Honest).await;
    let app = router(&[&liar, &good], dev_policy());
    for _ in 0..2 {
        let (resp, _) = send(&app, chat_request(false, None)).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(header_of(&resp, wire::NODE_HEADER), good.url);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_on_a_socket_and_stops_on_shutdown() {
    let node = EvilNode::start(Misbehaviour::Honest).await;
    let pool = NodePool::new([node.url.as_str()], Arc::new(dev_policy())).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(proxy::serve(listener, pool, async {
        let _ = stopped.await;
    }));
    let url = format!("http://{addr}{}", wire::CHAT_COMPLETIONS_PATH);
    let resp = reqwest::Client::new()
        .post(&url)
        .json(&serde_json::json!({"model": MODEL, "messages": [], "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()[wire::VERIFIED_HEADER], "true");
    let text = resp.text().await.unwrap();
    assert!(text.contains(wire::SSE_DONE_EVENT), "{text}");
    stop.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), server)
        .await
        .expect("serve returns after shutdown")
        .unwrap()
        .unwrap();
    assert!(reqwest::Client::new().post(&url).send().await.is_err());
}
