//! `DstackAttester` against a fake dstack guest agent: the agent's HTTP API (`POST /GetQuote`,
//! `/Info`, `/GetKey`, JSON bodies) served by axum on a Unix socket in a temporary directory.

use std::path::Path;

use axum::routing::post;
use axum::{Json, Router};
use cloister_attest::collect::dstack::{DstackAttester, SIGNING_KEY_PATH, SIGNING_KEY_PURPOSE};
use cloister_attest::collect::{Attester, DetectOptions, detect};
use cloister_attest::quote::parse_quote;
use cloister_attest::simulated::simulated_quote;
use cloister_crypto::EnclaveKey;
use cloister_types::{ReportData, TeeKind};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const EVENT_LOG: &str =
    r#"[{"imr":3,"event_type":134217729,"digest":"00","event":"compose-hash","event_payload":"ab"}]"#;

async fn get_quote(Json(req): Json<Value>) -> Json<Value> {
    let hex_rd = req["report_data"].as_str().unwrap_or_default();
    let mut rd = [0u8; 64];
    let bytes = hex::decode(hex_rd).unwrap_or_default();
    rd[..bytes.len().min(64)].copy_from_slice(&bytes[..bytes.len().min(64)]);
    Json(json!({
        "quote": hex::encode(simulated_quote(&ReportData(rd))),
        "event_log": EVENT_LOG,
        "report_data": hex::encode(rd),
        "vm_config": "{}",
    }))
}

async fn info() -> Json<Value> {
    let tcb_info = json!({
        "mrtd": "11", "rtmr0": "22", "rtmr1": "33", "rtmr2": "44", "rtmr3": "55",
        "os_image_hash": "", "compose_hash": "66", "device_id": "77",
        "app_compose": "{}", "event_log": [],
    });
    Json(json!({
        "app_id": "fake-app", "instance_id": "fake-instance", "app_cert": "", "app_name": "cloister",
        "device_id": "77", "mr_aggregated": "", "os_image_hash": "", "key_provider_info": "",
        "compose_hash": "66", "vm_config": "",
        // The real agent sends tcb_info as JSON text.
        "tcb_info": tcb_info.to_string(),
    }))
}

/// Derives the key like a KMS would: deterministically from the app and the request.
async fn get_key(Json(req): Json<Value>) -> Json<Value> {
    let mut h = Sha256::new();
    h.update(b"fake-kms/fake-app/");
    h.update(req["path"].as_str().unwrap_or_default());
    h.update(b"/");
    h.update(req["purpose"].as_str().unwrap_or_default());
    h.update(b"/");
    h.update(req["algorithm"].as_str().unwrap_or_default());
    Json(json!({ "key": hex::encode(h.finalize()), "signature_chain": [] }))
}

/// Starts the fake agent on `socket`; it serves until the test's runtime ends.
fn start_fake_agent(socket: &Path) {
    let app = Router::new()
        .route("/GetQuote", post(get_quote))
        .route("/Info", post(info))
        .route("/GetKey", post(get_key));
    let listener = tokio::net::UnixListener::bind(socket).unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
}

#[tokio::test]
async fn evidence_and_key_from_the_guest_agent() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("dstack.sock");
    start_fake_agent(&socket);

    let agent = DstackAttester::new(&socket);
    assert_eq!(agent.tee(), TeeKind::Dstack);
    let rd = ReportData([0x3c; 64]);
    let ev = agent.evidence(&rd).await.unwrap();
    assert_eq!(parse_quote(&ev.quote).unwrap().report_data(), rd.0);
    assert_eq!(
        ev.event_log[0]["event"], "compose-hash",
        "event_log is parsed JSON: {}",
        ev.event_log
    );
    assert_eq!(ev.info["app_id"], "fake-app");
    assert_eq!(ev.info["tcb_info"]["compose_hash"], "66");

    let key = agent
        .derived_signing_key()
        .await
        .unwrap()
        .expect("dstack derives a key");
    let again = agent
        .derived_signing_key()
        .await
        .unwrap()
        .expect("dstack derives a key");
    assert_eq!(key.address(), again.address(), "the derived key is stable");
    let mut h = Sha256::new();
    h.update(format!(
        "fake-kms/fake-app/{SIGNING_KEY_PATH}/{SIGNING_KEY_PURPOSE}/secp256k1"
    ));
    let expected = EnclaveKey::from_secret_bytes(&h.finalize()).unwrap();
    assert_eq!(
        key.address(),
        expected.address(),
        "path and purpose reach the agent"
    );
}

#[tokio::test]
async fn detect_prefers_the_dstack_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("dstack.sock");
    start_fake_agent(&socket);
    std::fs::create_dir(dir.path().join("tsm")).unwrap();
    let opts = DetectOptions {
        dev_simulated: true,
        dstack_socket: Some(socket.clone()),
        configfs_root: Some(dir.path().join("tsm")),
    };
    let attester = detect(&opts).await.unwrap();
    assert_eq!(attester.tee(), TeeKind::Dstack);
    let rd = ReportData([0x44; 64]);
    assert_eq!(
        parse_quote(&attester.evidence(&rd).await.unwrap().quote)
            .unwrap()
            .report_data(),
        rd.0
    );
}

#[tokio::test]
async fn an_absent_agent_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let agent = DstackAttester::new(dir.path().join("nobody.sock"));
    let err = agent.evidence(&ReportData([0; 64])).await.unwrap_err();
    assert!(matches!(err, cloister_attest::Error::Dstack(_)), "{err}");
}
