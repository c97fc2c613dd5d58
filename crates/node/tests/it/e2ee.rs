//! E2EE (docs/protocol.md §8) against a real node: sealed plain and streamed chats open to the
//! same bytes an unencrypted client would get, signatures cover the plaintext, the report binds
//! the HPKE key, and every malformed, tampered, misdirected, stale or replayed envelope is refused
//! by name without reaching the engine.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use cloister_attest::check::{Outcome, ReportCheck};
use cloister_attest::report::verify_report;
use cloister_attest::verify::Policy;
use cloister_crypto::e2ee::{ClientResponseKeys, E2eeKeyPair, decode_base64, seal_request};
use cloister_node::NodeConfig;
use cloister_types::e2ee::{HEADER_E2EE, HEADER_E2EE_TIMESTAMP, HEADER_MODEL, request_aad};
use cloister_types::wire;
use cloister_types::{AttestationReport, Nonce};
use serde_json::{Value, json};

use crate::common::{TestNode, address, chat_body, engine, signer, split_sse};

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A node over the real engine, and the id of its model. `None`: no model, skip.
async fn node() -> Option<(TestNode, String)> {
    let engine = engine().await?;
    let model = engine.model_id().to_owned();
    Some((
        TestNode::start(Arc::new(engine), NodeConfig::default()).await,
        model,
    ))
}

/// Seals `body` to the node's key and signer for `model` at `ts`; returns the base64 envelope.
fn seal(node: &TestNode, body: &[u8], model: &str, ts: u64) -> (String, ClientResponseKeys) {
    let signer = address(node.state.signing_address());
    let aad = request_aad("POST", wire::CHAT_COMPLETIONS_PATH, ts, model);
    let (sealed, keys) = seal_request(&node.state.e2ee_public_key(), &signer, body, &aad).unwrap();
    (sealed.to_base64(), keys)
}

async fn post(node: &TestNode, envelope: String, model: &str, ts: u64) -> reqwest::Response {
    reqwest::Client::new()
        .post(node.url(wire::CHAT_COMPLETIONS_PATH))
        .header(HEADER_E2EE, "v1")
        .header(HEADER_E2EE_TIMESTAMP, ts.to_string())
        .header(HEADER_MODEL, model)
        .header("content-type", wire::SEALED_CONTENT_TYPE)
        .header(wire::INLINE_SIGNATURE_HEADER, wire::INLINE_SIGNATURE_ON)
        .body(envelope)
        .send()
        .await
        .unwrap()
}

async fn refusal(resp: reqwest::Response) -> String {
    assert_eq!(resp.status(), 400);
    assert!(
        resp.headers().get(HEADER_E2EE).is_none(),
        "refusals are not sealed"
    );
    let body: Value = resp.json().await.unwrap();
    body["error"]["code"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn report_binds_the_hpke_key_to_the_attested_signer() {
    let Some((node, m)) = node().await else { return };
    let nonce = Nonce([7; 32]);
    let report: AttestationReport = reqwest::get(node.url(&format!(
        "{}?{}={}",
        wire::ATTESTATION_REPORT_PATH,
        wire::QUERY_NONCE,
        nonce.to_hex()
    )))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let policy = Policy {
        allow_simulated: true,
        ..Policy::default()
    };
    let verdict = verify_report(&report, &nonce, None, now(), &policy);
    assert!(verdict.passed(), "{:?}", verdict.first_failure());
    let bound = verdict.e2ee.expect("a verified HPKE key");
    assert_eq!(bound.public_key, node.state.e2ee_public_key());
    assert_eq!(bound.models[0].id, m);
    assert!(bound.models[0].sha256.as_deref().is_some_and(|h| h.len() == 64));

    // Another key's binding, or an expired one, fails by name.
    let mut forged = report.clone();
    let other = E2eeKeyPair::generate();
    forged.hpke_public_key = Some(hex::encode(other.public_key_bytes()));
    let v = verify_report(&forged, &nonce, None, now(), &policy);
    assert!(!v.passed());
    assert_eq!(v.first_failure().unwrap().id, ReportCheck::KeyBinding.into());
    assert!(v.e2ee.is_none());
    let expires = report.key_binding.as_ref().unwrap().expires_at;
    let v = verify_report(&report, &nonce, None, expires + 1, &policy);
    let fresh = v.checks.get(ReportCheck::KeyBindingFresh).unwrap();
    assert_eq!(fresh.outcome, Outcome::Fail);
}

#[tokio::test]
async fn sealed_chat_opens_and_the_signature_covers_the_plaintext() {
    let Some((node, m)) = node().await else { return };
    let body = chat_body(&m, "Say hi.", false, json!({}));
    let ts = now();
    let (envelope, keys) = seal(&node, &body, &m, ts);
    let resp = post(&node, envelope, &m, ts).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()[HEADER_E2EE], "v1");
    assert_eq!(resp.headers()["content-type"], wire::SEALED_CONTENT_TYPE);
    let signature = resp.headers()[wire::SIGNATURE_HEADER]
        .to_str()
        .unwrap()
        .to_owned();
    let sealed = decode_base64(&resp.text().await.unwrap()).unwrap();
    let plain = keys.open_body(&sealed).unwrap();
    let completion: Value = serde_json::from_slice(&plain).unwrap();
    assert_eq!(completion["object"], "chat.completion");
    assert_eq!(
        signer(&body, &plain, &signature),
        address(node.state.signing_address()),
        "signed over the plaintext request and response"
    );
}

#[tokio::test]
async fn sealed_stream_opens_to_the_unencrypted_sse_bytes() {
    let Some((node, m)) = node().await else { return };
    let body = chat_body(&m, "Count to three.", true, json!({}));
    let ts = now();
    let (envelope, keys) = seal(&node, &body, &m, ts);
    let resp = post(&node, envelope, &m, ts).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()[HEADER_E2EE], "v1");
    let text = resp.text().await.unwrap();
    let chunks: Vec<Vec<u8>> = text
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| decode_base64(e.strip_prefix("data: ").unwrap()).unwrap())
        .collect();
    assert!(
        !text.contains("chat.completion.chunk"),
        "no plaintext on the wire"
    );

    let plain = keys.open_stream(&chunks).unwrap();
    let answer = split_sse(&plain);
    assert_eq!(answer.data.last().map(String::as_str), Some(wire::SSE_DONE));
    let event = answer.signature.expect("the signature event is sealed too");
    assert_eq!(event["signing_address"], node.state.signing_address());
    assert_eq!(
        signer(&body, &answer.signed, event["signature"].as_str().unwrap()),
        address(node.state.signing_address())
    );
}

#[tokio::test]
async fn bad_envelopes_are_refused_by_name() {
    let Some((node, m)) = node().await else { return };
    let body = chat_body(&m, "hi", false, json!({}));
    let ts = now();

    // Replay: the same envelope twice.
    let (envelope, _) = seal(&node, &body, &m, ts);
    assert_eq!(post(&node, envelope.clone(), &m, ts).await.status(), 200);
    assert_eq!(
        refusal(post(&node, envelope, &m, ts).await).await,
        "e2ee_replayed"
    );

    // Tampered ciphertext: one bit flipped.
    let (envelope, _) = seal(&node, &body, &m, ts);
    let mut bytes = decode_base64(&envelope).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let tampered = cloister_crypto::e2ee::encode_base64(&bytes);
    assert_eq!(
        refusal(post(&node, tampered, &m, ts).await).await,
        "e2ee_open_failed"
    );

    // Wrong key: sealed to another node's HPKE key.
    let other = E2eeKeyPair::generate();
    let signer_addr = address(node.state.signing_address());
    let aad = request_aad("POST", wire::CHAT_COMPLETIONS_PATH, ts, &m);
    let (sealed, _) = seal_request(&other.public_key_bytes(), &signer_addr, &body, &aad).unwrap();
    assert_eq!(
        refusal(post(&node, sealed.to_base64(), &m, ts).await).await,
        "e2ee_open_failed"
    );

    // Sealed for another signer (info binds the address).
    let (sealed, _) = seal_request(
        &node.state.e2ee_public_key(),
        &cloister_types::Address::repeat_byte(9),
        &body,
        &aad,
    )
    .unwrap();
    assert_eq!(
        refusal(post(&node, sealed.to_base64(), &m, ts).await).await,
        "e2ee_open_failed"
    );

    // AAD mismatch: sealed for one time, sent with another that is still fresh.
    let (envelope, _) = seal(&node, &body, &m, ts);
    assert_eq!(
        refusal(post(&node, envelope, &m, ts + 1).await).await,
        "e2ee_open_failed"
    );

    // Stale: a timestamp ten minutes old, AAD consistent.
    let old = ts - 600;
    let (envelope, _) = seal(&node, &body, &m, old);
    assert_eq!(refusal(post(&node, envelope, &m, old).await).await, "e2ee_stale");

    // Header model differs from the sealed body's.
    let (envelope, _) = seal(&node, &body, "other-model", ts);
    assert_eq!(
        refusal(post(&node, envelope, "other-model", ts).await).await,
        "e2ee_model_mismatch"
    );

    // Not an envelope at all, and a missing header.
    assert_eq!(
        refusal(post(&node, "%%%".into(), &m, ts).await).await,
        "e2ee_malformed"
    );
    let resp = reqwest::Client::new()
        .post(node.url(wire::CHAT_COMPLETIONS_PATH))
        .header(HEADER_E2EE, "v1")
        .body("AAAA")
        .send()
        .await
        .unwrap();
    assert_eq!(refusal(resp).await, "e2ee_malformed");

    // The node still serves.
    let (envelope, _) = seal(&node, &body, &m, now());
    assert_eq!(post(&node, envelope, &m, now()).await.status(), 200);
}

#[tokio::test]
async fn errors_after_opening_are_sealed() {
    let Some((node, _)) = node().await else { return };
    let ts = now();
    let body = br#"{"model":"no-such-model","messages":[{"role":"user","content":"x"}]}"#;
    let (envelope, keys) = seal(&node, body, "no-such-model", ts);
    let resp = post(&node, envelope, "no-such-model", ts).await;
    assert_eq!(resp.status(), 404, "status stays in clear");
    assert_eq!(resp.headers()[HEADER_E2EE], "v1");
    let plain = keys
        .open_body(&decode_base64(&resp.text().await.unwrap()).unwrap())
        .unwrap();
    let err: Value = serde_json::from_slice(&plain).unwrap();
    assert_eq!(err["error"]["code"], "model_not_found");
}
