//! Embeddings (`POST /v1/embeddings`) over the real built-in engine with the real embedding model
//! (all-MiniLM-L6-v2 GGUF from `scripts/fetch-embedding-model.sh`): vectors of the model's width,
//! unit length, the same text the same vector; the answer signed over the exact bytes by the attested
//! key, sealed under E2EE on the route's own path, metered on prompt tokens when the node is paid,
//! and bad bodies refused with OpenAI-shaped 400s.
//!
//! The embedding model comes from `CLOISTER_TEST_EMBEDDING_MODEL`, else
//! `<workspace>/models/all-MiniLM-L6-v2.gguf`; without it (or the chat model) the tests print why and
//! pass, unless `CLOISTER_REQUIRE_MODEL=1`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::{Address, U256};
use axum::body::Body;
use axum::http::Request;
use cloister_crypto::e2ee::decode_base64;
use cloister_engine::builtin::{BuiltinConfig, BuiltinEngine};
use cloister_node::NodeConfig;
use cloister_node::billing::{Billing, Ledger, Price};
use cloister_types::e2ee::HEADER_E2EE;
use cloister_types::eip712::escrow_domain;
use cloister_types::{signature_text, wire};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use crate::common::{
    TestNode, address, assert_openai_error, get_json, model_path, oneshot, post_json, sealed_post, signer,
    state,
};
use crate::metering::{FixedDeposits, api_key};

/// all-MiniLM-L6-v2's width.
const DIMENSIONS: usize = 384;

fn embedding_model_path() -> Option<PathBuf> {
    cloister_testkit::models::embedding_model()
}

/// The chat model with the embedding model beside it, loaded once (one small slot: only the
/// embedding model is exercised here). `None`: skip.
async fn engine() -> Option<BuiltinEngine> {
    static ENGINE: OnceCell<Option<BuiltinEngine>> = OnceCell::const_new();
    ENGINE
        .get_or_init(|| async {
            let mut config = BuiltinConfig::new(model_path()?);
            config.slots = 1;
            config.ctx_per_slot = 256;
            config.embedding_model = Some(embedding_model_path()?);
            Some(
                BuiltinEngine::load_async(config)
                    .await
                    .expect("the test models load"),
            )
        })
        .await
        .clone()
}

fn model_of(engine: &BuiltinEngine) -> String {
    engine
        .embedding_model()
        .expect("loaded with an embedding model")
        .0
        .to_owned()
}

fn body(model: &str, input: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({"model": model, "input": input})).unwrap()
}

fn vectors(answer: &Value) -> Vec<Vec<f64>> {
    answer["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            assert_eq!(d["object"], "embedding");
            d["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_embeddings_are_signed_by_the_attested_key() {
    let Some(engine) = engine().await else { return };
    let model = model_of(&engine);
    let node = TestNode::start(Arc::new(engine), NodeConfig::default()).await;
    let http = reqwest::Client::new();
    let mut request = body(
        &model,
        json!([
            "The cat sat on the mat.",
            "A cat was sitting on a mat.",
            "Stock markets fell sharply today.",
            "The cat sat on the mat."
        ]),
    );
    // Odd spacing: the signature covers the bytes as sent.
    request.splice(1..1, b"  ".iter().copied());
    let resp = http
        .post(node.url(wire::EMBEDDINGS_PATH))
        .header("content-type", wire::JSON_CONTENT_TYPE)
        .body(request.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let header = |name: &str| resp.headers()[name].to_str().unwrap().to_owned();
    let (signature, signing_address, id) = (
        header(wire::SIGNATURE_HEADER),
        header(wire::SIGNING_ADDRESS_HEADER),
        header(wire::SIGNATURE_ID_HEADER),
    );
    let bytes = resp.bytes().await.unwrap().to_vec();
    let answer: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(answer["object"], "list");
    assert_eq!(answer["model"], model.as_str());
    assert_eq!(answer["id"], id.as_str());
    let v = vectors(&answer);
    assert_eq!(v.len(), 4);
    for (i, (d, vector)) in answer["data"].as_array().unwrap().iter().zip(&v).enumerate() {
        assert_eq!(d["index"], i);
        assert_eq!(vector.len(), DIMENSIONS);
        let norm = vector.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "normalised: {norm}");
    }
    assert!(cosine(&v[0], &v[3]) > 0.9999, "same text, same vector");
    let (close, far) = (cosine(&v[0], &v[1]), cosine(&v[0], &v[2]));
    assert!(close < 0.99 && far < close, "paraphrase {close}, unrelated {far}");
    let usage = &answer["usage"];
    let prompt = usage["prompt_tokens"].as_u64().unwrap();
    assert!(prompt >= 4 * 3, "{usage}");
    assert_eq!(usage["total_tokens"].as_u64(), Some(prompt));

    let recovered = signer(&request, &bytes, &signature);
    assert_eq!(recovered, address(&signing_address));
    assert_eq!(recovered, address(node.state.signing_address()));
    let record: Value = get_json(&http, node.url(&wire::signature_path(&id))).await;
    assert_eq!(record["text"], signature_text(&request, &bytes).as_str());

    // base64 (the OpenAI Python SDK's default) carries the same floats, little-endian f32.
    let request = serde_json::to_vec(
        &json!({"model": model, "input": "The cat sat on the mat.", "encoding_format": "base64"}),
    )
    .unwrap();
    let answer: Value = http
        .post(node.url(wire::EMBEDDINGS_PATH))
        .body(request)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let raw = decode_base64(answer["data"][0]["embedding"].as_str().unwrap()).unwrap();
    let floats: Vec<f64> = raw
        .chunks_exact(4)
        .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
        .collect();
    assert_eq!(floats.len(), DIMENSIONS);
    assert!(cosine(&floats, &v[0]) > 0.9999);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_embeddings_bind_their_own_path() {
    let Some(engine) = engine().await else { return };
    let model = model_of(&engine);
    let node = TestNode::start(Arc::new(engine), NodeConfig::default()).await;
    let request = body(&model, json!("sealed text"));
    let send = |path: &'static str| sealed_post(&node, wire::EMBEDDINGS_PATH, path, &model, &request);
    let (req, keys) = send(wire::EMBEDDINGS_PATH);
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()[HEADER_E2EE], "v1");
    let signature = resp.headers()[wire::SIGNATURE_HEADER]
        .to_str()
        .unwrap()
        .to_owned();
    let sealed_body = resp.text().await.unwrap();
    assert!(!sealed_body.contains("embedding"), "the answer is sealed");
    let plain = keys.open_body(&decode_base64(&sealed_body).unwrap()).unwrap();
    let answer: Value = serde_json::from_slice(&plain).unwrap();
    assert_eq!(vectors(&answer)[0].len(), DIMENSIONS);
    assert_eq!(
        signer(&request, &plain, &signature),
        address(node.state.signing_address())
    );

    // An envelope sealed for another path does not open here.
    let (req, _) = send(wire::COMPLETIONS_PATH);
    assert_eq!(req.send().await.unwrap().status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paid_embeddings_are_metered_on_prompt_tokens() {
    let Some(engine) = engine().await else { return };
    let model = model_of(&engine);
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Ledger::open(&dir.path().join("ledger.sqlite")).unwrap());
    let domain = escrow_domain(31337, Address::repeat_byte(0xee));
    let operator = Address::repeat_byte(0x0b);
    let price = Price {
        input: U256::from(1_000u64),
        output: U256::from(3_000u64),
    };
    let billing = Arc::new(Billing::new(
        Arc::clone(&ledger),
        domain.clone(),
        operator,
        HashMap::from([(model.clone(), price)]),
        Arc::new(FixedDeposits(U256::from(1u64))),
        Duration::from_secs(60),
    ));
    let state = state(Arc::new(engine), NodeConfig::default()).with_billing(billing);
    let (key, id) = api_key(&domain, operator);
    let request = |authorized: bool| {
        let mut req = Request::post(wire::EMBEDDINGS_PATH);
        if authorized {
            req = req.header("authorization", format!("Bearer {}", key.encode()));
        }
        req.body(Body::from(body(&model, json!(["one input", "and another"]))))
            .unwrap()
    };

    let (resp, bytes) = oneshot(&state, request(false)).await;
    assert_eq!(resp.status(), 401, "{}", String::from_utf8_lossy(&bytes));

    let mut expected = U256::ZERO;
    for _ in 0..2 {
        let (resp, bytes) = oneshot(&state, request(true)).await;
        assert_eq!(resp.status(), 200, "{}", String::from_utf8_lossy(&bytes));
        let answer: Value = serde_json::from_slice(&bytes).unwrap();
        let prompt = answer["usage"]["prompt_tokens"].as_u64().unwrap();
        assert!(prompt > 0);
        expected += U256::from(prompt * 1_000);
        let receipt: Value =
            serde_json::from_str(resp.headers()[wire::RECEIPT_HEADER].to_str().unwrap()).unwrap();
        let total: U256 = receipt["cumulative_amount"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            total, expected,
            "prompt tokens at the input price, nothing for output"
        );
    }
    assert_eq!(ledger.cumulative(id).await.unwrap(), expected);
}

#[tokio::test]
async fn bad_embedding_bodies_get_openai_errors() {
    let Some(engine) = engine().await else { return };
    let model = model_of(&engine);
    let chat_model = engine.model_id().to_owned();
    let state = state(Arc::new(engine), NodeConfig::default());
    let long = "word ".repeat(2000);
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"{not json".to_vec(), 400, "invalid_json"),
        (br#"{"model":"x"}"#.to_vec(), 400, "invalid_json"),
        (body(&model, json!([])), 400, "invalid_request"),
        (body(&model, json!([1, 2, 3])), 400, "invalid_request"),
        (body(&model, json!(long)), 400, "context_length_exceeded"),
        (
            serde_json::to_vec(&json!({"model": model, "input": "x", "dimensions": 7})).unwrap(),
            400,
            "invalid_request",
        ),
        (
            serde_json::to_vec(&json!({"model": model, "input": "x", "encoding_format": "hex"})).unwrap(),
            400,
            "invalid_request",
        ),
        (body(&chat_model, json!("x")), 400, "invalid_request"),
        (body("nope", json!("x")), 404, "model_not_found"),
    ];
    for (request, status, code) in cases {
        let (resp, answer) = oneshot(&state, post_json(wire::EMBEDDINGS_PATH, request.clone())).await;
        assert_eq!(
            resp.status().as_u16(),
            status,
            "{}",
            String::from_utf8_lossy(&request[..request.len().min(200)])
        );
        assert_openai_error(&answer, code);
    }
}

/// `cloister proxy`'s router in front of the real node: embeddings go sealed to the attested key
/// and come back opened with their signature checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_pass_through_the_verifying_proxy() {
    let Some(engine) = engine().await else { return };
    let model = model_of(&engine);
    let node = TestNode::start(Arc::new(engine), NodeConfig::default()).await;
    let policy = Arc::new(cloister_client::Policy::dev_allow_simulated());
    let pool = cloister_client::NodePool::new([node.url("").as_str()], policy).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!(
        "http://{}{}",
        listener.local_addr().unwrap(),
        wire::EMBEDDINGS_PATH
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(cloister_client::proxy::serve(listener, pool, async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let resp = http
        .post(&proxy_url)
        .body(body(&model, json!("through the proxy")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()[wire::SIGNATURE_VERIFIED_HEADER], "true");
    assert_eq!(resp.headers()[wire::E2EE_HEADER], "sealed");
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(vectors(&answer)[0].len(), DIMENSIONS);
    let resp = http
        .post(&proxy_url)
        .body(body(&model, json!([])))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let _ = stop.send(());
    served.await.unwrap().unwrap();
}
