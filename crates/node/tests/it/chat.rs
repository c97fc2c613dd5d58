//! Plain chat end to end over a socket: the signature covers the exact bytes, and the attested
//! quote binds the signer.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use cloister_attest::quote::parse_quote;
use cloister_attest::report::verify_report;
use cloister_attest::verify::Policy;
use cloister_node::NodeConfig;
use cloister_types::wire;
use cloister_types::{AttestationReport, ReportData};
use serde_json::{Value, json};

use crate::common::{TestNode, address, chat_body, engine, get_json, nonce, signer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_answer_is_signed_by_the_attested_key() {
    let Some(engine) = engine().await else { return };
    let model = engine.model_id().to_owned();
    let node = TestNode::start(Arc::new(engine), NodeConfig::default()).await;
    let http = reqwest::Client::new();

    // Odd spacing on purpose: the signature covers the bytes as sent, not a re-encoding.
    let mut request = chat_body(&model, "What is the capital of France?", false, json!({}));
    request.splice(1..1, b"  ".iter().copied());
    let resp = http
        .post(node.url(wire::CHAT_COMPLETIONS_PATH))
        .header("content-type", wire::JSON_CONTENT_TYPE)
        .body(request.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], wire::JSON_CONTENT_TYPE);
    let header = |name: &str| resp.headers()[name].to_str().unwrap().to_owned();
    let (signature, header_address, id) = (
        header(wire::SIGNATURE_HEADER),
        header(wire::SIGNING_ADDRESS_HEADER),
        header(wire::SIGNATURE_ID_HEADER),
    );
    let body = resp.bytes().await.unwrap().to_vec();

    let completion: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(completion["id"], id.as_str());
    let hex_id = id.strip_prefix("chatcmpl-").unwrap();
    assert!(
        hex_id.len() == 32 && hex_id.bytes().all(|c| c.is_ascii_hexdigit()),
        "{id}"
    );
    assert_eq!(completion["object"], "chat.completion");
    let answer = completion["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!answer.is_empty());
    assert!(completion["usage"]["completion_tokens"].as_u64().unwrap() > 0);

    // 1. The signature recovers to the advertised address.
    let recovered = signer(&request, &body, &signature);
    assert_eq!(recovered, address(&header_address));
    assert_eq!(header_address, node.state.signing_address());

    // 2. A fresh report binds that address and our nonce.
    let n = nonce();
    let report: AttestationReport = get_json(
        &http,
        node.url(&format!(
            "{}?{}={}",
            wire::ATTESTATION_REPORT_PATH,
            wire::QUERY_NONCE,
            n.to_hex()
        )),
    )
    .await;
    assert_eq!(report.request_nonce, n.to_hex());
    assert_eq!(report.signing_algo, "ecdsa");
    assert_eq!(report.tee, Some(cloister_types::TeeKind::Simulated));
    assert!(report.nvidia_payload.is_none());
    assert_eq!(report.info["nonce_source"], "client");
    assert_eq!(report.info["tee"], "simulated");
    assert_eq!(report.info["node_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(report.info["models"][0]["id"], model.as_str());
    assert_eq!(
        report.info["models"][0]["sha256"].as_str().map(str::len),
        Some(64)
    );
    let quote = parse_quote(&hex::decode(&report.intel_quote).unwrap()).unwrap();
    let attested = address(&report.signing_address);
    assert_eq!(
        quote.report_data(),
        ReportData::new(attested, n).0,
        "report_data binds address and nonce"
    );
    assert_eq!(recovered, attested, "the answer's signer is the attested key");

    // 3. The simulated quote is refused by default and accepted only with the dev flag.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let strict = verify_report(&report, &n, None, now, &Policy::default());
    assert!(
        !strict.passed(),
        "simulated evidence must be refused without the dev flag"
    );
    let dev = verify_report(&report, &n, None, now, &Policy::dev_allow_simulated());
    assert!(dev.passed(), "{:?}", dev.first_failure());
    assert_eq!(dev.signing_address(), Some(attested));
    // A report for another nonce does not pass as ours.
    assert!(!verify_report(&report, &nonce(), None, now, &Policy::dev_allow_simulated()).passed());

    // 4. /v1/signature/{id} serves the same record.
    let record: Value = get_json(&http, node.url(&wire::signature_path(&id))).await;
    assert_eq!(record["id"], id.as_str());
    assert_eq!(record["signature"], signature.as_str());
    assert_eq!(record["signing_address"], header_address.as_str());
    assert_eq!(record["signing_algo"], "ecdsa");
    assert_eq!(
        record["text"],
        cloister_types::signature_text(&request, &body).as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_query_variants() {
    let Some(engine) = engine().await else { return };
    let node = TestNode::start(Arc::new(engine), NodeConfig::default()).await;
    let http = reqwest::Client::new();
    let get = |q: String| {
        let http = http.clone();
        let url = node.url(&format!("{}{q}", wire::ATTESTATION_REPORT_PATH));
        async move { http.get(url).send().await.unwrap() }
    };

    // No nonce: the node draws one and says so; the quote still binds it.
    let resp = get(String::new()).await;
    assert_eq!(resp.status(), 200);
    let report: AttestationReport = resp.json().await.unwrap();
    assert_eq!(report.info["nonce_source"], "node");
    let drawn: cloister_types::Nonce = report.request_nonce.parse().unwrap();
    let quote = parse_quote(&hex::decode(&report.intel_quote).unwrap()).unwrap();
    assert_eq!(
        quote.report_data(),
        ReportData::new(address(&report.signing_address), drawn).0
    );

    // 0x prefix accepted; our own address and ecdsa accepted.
    let n = nonce();
    let own = node.state.signing_address().to_lowercase();
    let resp = get(format!(
        "?{}=0x{}&{}={own}&{}=ecdsa",
        wire::QUERY_NONCE,
        n.to_hex(),
        wire::QUERY_SIGNING_ADDRESS,
        wire::QUERY_SIGNING_ALGO
    ))
    .await;
    assert_eq!(resp.status(), 200);
    let report: AttestationReport = resp.json().await.unwrap();
    assert_eq!(report.request_nonce, n.to_hex());

    // Another node's address: 404 (multi-server convention).
    let other = format!("0x{}", "11".repeat(20));
    let resp = get(format!(
        "?{}={}&{}={other}",
        wire::QUERY_NONCE,
        n.to_hex(),
        wire::QUERY_SIGNING_ADDRESS
    ))
    .await;
    assert_eq!(resp.status(), 404);
    let body = resp.bytes().await.unwrap();
    crate::common::assert_openai_error(&body, "signing_address_not_found");

    let resp = get(format!(
        "?{}={}&{}=ed25519",
        wire::QUERY_NONCE,
        n.to_hex(),
        wire::QUERY_SIGNING_ALGO
    ))
    .await;
    assert_eq!(resp.status(), 400);
    crate::common::assert_openai_error(&resp.bytes().await.unwrap(), "unsupported_signing_algo");
}
