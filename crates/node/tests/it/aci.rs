//! The node as an ACI service (`aci/1`), checked with ACI's own fields only: the report verifies
//! under §9.1 (simulated TEE allowed, loudly, as development), every answer's receipt verifies
//! under the attested keyset and commits to exactly the wire bytes (plain and streamed), receipts
//! are bound to the credential that made the request, and every response carries the ACI headers.

use std::sync::Arc;

use cloister_attest::aci::receipt::verify_receipt;
use cloister_attest::aci::{self, AciPolicy};
use cloister_attest::check::{AciCheck, Outcome};
use cloister_attest::report::Transport;
use cloister_attest::verify::Policy;
use cloister_node::NodeConfig;
use cloister_types::wire;
use serde_json::{Value, json};

use crate::common::{TestNode, chat_body, engine, nonce};

async fn aci_report(node: &TestNode, nonce_hex: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(node.url(wire::ACI_ATTESTATION_PATH))
        .query(&[(wire::QUERY_NONCE, nonce_hex)])
        .send()
        .await
        .unwrap()
}

/// POSTs `request` with an optional bearer token; returns the receipt id and the body bytes.
async fn post(node: &TestNode, request: &[u8], bearer: Option<&str>) -> (String, Vec<u8>) {
    let mut req = reqwest::Client::new()
        .post(node.url(wire::CHAT_COMPLETIONS_PATH))
        .header("content-type", wire::JSON_CONTENT_TYPE)
        .body(request.to_vec());
    if let Some(token) = bearer {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()[wire::ACI_VERSION_HEADER], aci::API_VERSION);
    let id = resp.headers()[wire::ACI_RECEIPT_ID_HEADER]
        .to_str()
        .unwrap()
        .to_owned();
    (id, resp.bytes().await.unwrap().to_vec())
}

async fn receipt(node: &TestNode, id: &str, bearer: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new().get(node.url(&format!("{}{id}", wire::ACI_RECEIPTS_PREFIX)));
    if let Some(token) = bearer {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_is_an_aci_service_checked_with_aci_fields_only() {
    let Some(engine) = engine().await else { return };
    let model = engine.model_id().to_owned();
    let node = TestNode::start(Arc::new(engine), NodeConfig::default()).await;

    // §9.1 with a fresh nonce: everything but the (simulated) hardware root holds.
    let n = nonce();
    let resp = aci_report(&node, &n.to_hex()).await;
    assert_eq!(resp.status(), 200);
    let header_digest = resp.headers()[wire::ACI_KEYSET_DIGEST_HEADER]
        .to_str()
        .unwrap()
        .to_owned();
    let report: Value = resp.json().await.unwrap();
    let dev = AciPolicy::new(Policy::dev_allow_simulated(), Vec::new());
    let now = cloister_types::unix_now();
    let v = aci::verify_aci_report(&report, &n, None, now, &dev, &Transport::Unverified);
    assert!(v.passed(), "{:#?}", v.checks);
    for id in [
        AciCheck::KeysetDigest,
        AciCheck::StatementBinding,
        AciCheck::Fresh,
        AciCheck::QuoteBindsReportData,
        AciCheck::NotExpired,
        AciCheck::ReceiptKey,
    ] {
        assert_eq!(v.checks.outcome(id), Some(Outcome::Pass), "{id}: {:#?}", v.checks);
    }
    // Simulated: loud warnings, never a silent pass.
    assert_eq!(v.checks.outcome(AciCheck::MeasuredCustody), Some(Outcome::Warn));
    let digest = v.keyset_digest.clone().unwrap();
    assert_eq!(header_digest, digest);
    let keyset = v.keyset.clone().unwrap();

    // Fail closed: the production policy refuses the simulated TEE; a replayed report does not
    // answer another nonce; the statement without a nonce proves no freshness.
    let strict = AciPolicy::new(Policy::default(), Vec::new());
    assert!(!aci::verify_aci_report(&report, &n, None, now, &strict, &Transport::Unverified).passed());
    let other = nonce();
    let v = aci::verify_aci_report(&report, &other, None, now, &dev, &Transport::Unverified);
    assert_eq!(v.checks.outcome(AciCheck::Fresh), Some(Outcome::Fail));
    let unchallenged: Value = reqwest::get(node.url(wire::ACI_ATTESTATION_PATH))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let v = aci::verify_aci_report(&unchallenged, &n, None, now, &dev, &Transport::Unverified);
    assert_eq!(v.checks.outcome(AciCheck::StatementBinding), Some(Outcome::Pass));
    assert_eq!(v.checks.outcome(AciCheck::Fresh), Some(Outcome::Fail));
    // ACI's nonce rule: exactly 64 lowercase hex.
    assert_eq!(aci_report(&node, &n.to_hex().to_uppercase()).await.status(), 400);

    // A plain and a streamed answer: each receipt verifies under the keyset and commits to the
    // exact wire bytes (the whole SSE body, framing and [DONE] included).
    for stream in [false, true] {
        let request = chat_body(&model, "Say hi.", stream, json!({}));
        let (id, body) = post(&node, &request, None).await;
        let (status, doc) = receipt(&node, &id, None).await;
        assert_eq!(status, 200, "{doc}");
        let verified = verify_receipt(&doc, &keyset, &digest).unwrap();
        verified.check_bodies(&request, &body).unwrap();
        assert!(verified.check_bodies(&request, b"other bytes").is_err());
        assert_eq!(doc["model"], model.as_str());
        assert_eq!(doc["endpoint"], wire::CHAT_COMPLETIONS_PATH);
        let mut tampered = doc.clone();
        tampered["event_log"][2]["body_hash"] = Value::from(aci::sha256_digest(b"x"));
        assert!(verify_receipt(&tampered, &keyset, &digest).is_err());
    }

    // §7.6: a receipt made with a credential needs it; another credential sees nothing.
    let request = chat_body(&model, "Say hi.", false, json!({}));
    let (id, _) = post(&node, &request, Some("sk-first")).await;
    assert_eq!(receipt(&node, &id, None).await.0, 401);
    let (status, error) = receipt(&node, &id, Some("sk-other")).await;
    assert_eq!(status, 404);
    assert_eq!(error["error"]["type"], "not_found");
    assert_eq!(receipt(&node, &id, Some("sk-first")).await.0, 200);
    assert_eq!(receipt(&node, "chatcmpl-unknown", None).await.0, 404);
}
