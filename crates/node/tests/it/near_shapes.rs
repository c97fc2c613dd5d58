//! The shapes NEAR AI's and Phala's verifier scripts read, checked by an independent program:
//! `tools/independent_check.py` (hashlib and eth_account only, nothing from Cloister) reads what the
//! real node served and recomputes every offset, hash and signer itself.
//!
//! - report_data binding, in the flat report and in NEAR's `model_attestations` wrapper;
//! - a plain answer: the signed text is sha256(request):sha256(body), and the signature recovers;
//! - a default stream (no `x-cloister-inline-signature`): the whole SSE body hashes to the signed
//!   text fetched from `/v1/signature/{id}`.
//!
//! Each check is also run on one altered input, which it must refuse. The Python checks need the
//! venv of `scripts/setup-test-clients.sh` (or `$CLOISTER_PYTHON`) with eth_account; without it they
//! print why and pass, unless `CLOISTER_REQUIRE_CLIENTS=1`. The inline opt-in is checked in Rust
//! here too: with the header the stream carries the signature event and the Cloister client
//! verifies it; behind a relay that drops the header the client refuses the unsigned stream.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use cloister_client::{E2eeMode, Error as ClientError, NodeClient, Policy, RequestOptions, StreamEvent};
use cloister_node::NodeConfig;
use cloister_types::wire;
use futures::StreamExt as _;
use serde_json::{Value, json};

use crate::common::{TestNode, address, chat_body, engine, get_text, signer, split_sse};

/// An interpreter with eth_account: `$CLOISTER_PYTHON`, else the test-clients venv. None (with a
/// reason on stderr) when neither has it, unless `CLOISTER_REQUIRE_CLIENTS=1`.
fn python() -> Option<PathBuf> {
    let path = std::env::var_os("CLOISTER_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("tools/pyclients/venv/bin/python"));
    let has_eth_account = path.is_file()
        && std::process::Command::new(&path)
            .args(["-c", "import eth_account"])
            .output()
            .is_ok_and(|o| o.status.success());
    if has_eth_account {
        return Some(path);
    }
    let why = format!(
        "no Python with eth_account at {}; run scripts/setup-test-clients.sh",
        path.display()
    );
    if std::env::var("CLOISTER_REQUIRE_CLIENTS").as_deref() == Ok("1") {
        panic!("{why} (CLOISTER_REQUIRE_CLIENTS=1)");
    }
    eprintln!("skipping: {why}");
    None
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs the independent check with `args`; returns its exit code and its JSON verdict.
fn independent_check(python: &Path, args: &[&str]) -> (i32, Value) {
    let script = workspace_root().join("tools/independent_check.py");
    let out = std::process::Command::new(python)
        .arg(&script)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let verdict = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "no JSON verdict ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), verdict)
}

/// Asserts the check passed: exit 0 and every named check true.
fn assert_passes(python: &Path, args: &[&str]) -> Value {
    let (code, verdict) = independent_check(python, args);
    assert_eq!(code, 0, "{verdict:#}");
    assert_eq!(verdict["ok"], true, "{verdict:#}");
    let checks = verdict["checks"].as_object().unwrap();
    assert!(
        checks.len() >= 2 && checks.values().all(|v| *v == true),
        "{verdict:#}"
    );
    verdict
}

/// Asserts the check refused: exit 1 and the named check false.
fn assert_refuses(python: &Path, args: &[&str], check: &str) {
    let (code, verdict) = independent_check(python, args);
    assert_eq!(code, 1, "{verdict:#}");
    assert_eq!(verdict["checks"][check], false, "{verdict:#}");
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.to_str().unwrap().to_owned()
}

fn fresh_nonce() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// POST a chat body as is (optionally with the inline opt-in); returns headers and body bytes.
async fn post_chat(node: &TestNode, request: &[u8], inline: bool) -> (reqwest::header::HeaderMap, Vec<u8>) {
    let mut req = reqwest::Client::new()
        .post(node.url(wire::CHAT_COMPLETIONS_PATH))
        .header("content-type", wire::JSON_CONTENT_TYPE)
        .body(request.to_vec());
    if inline {
        req = req.header(wire::INLINE_SIGNATURE_HEADER, wire::INLINE_SIGNATURE_ON);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let headers = resp.headers().clone();
    (headers, resp.bytes().await.unwrap().to_vec())
}

/// The node's `cloister_signatures_total`.
async fn signatures_made(node: &TestNode) -> u64 {
    let metrics = get_text(&reqwest::Client::new(), node.url(wire::METRICS_PATH)).await;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("cloister_signatures_total "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no cloister_signatures_total in {metrics}"))
}

/// GET /v1/signature/{id}, raw bytes.
async fn fetch_signature(node: &TestNode, id: &str) -> Vec<u8> {
    let resp = reqwest::get(node.url(&wire::signature_path(id))).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_report_shapes_bind_address_and_nonce_independently() {
    let Some(engine) = engine().await else { return };
    let Some(python) = python() else { return };
    let model = engine.model_id().to_owned();
    let node = TestNode::start(Arc::new(engine), NodeConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();

    let report_url = |nonce: &str, format: Option<&str>| {
        let mut url = format!(
            "{}?{}={nonce}",
            node.url(wire::ATTESTATION_REPORT_PATH),
            wire::QUERY_NONCE
        );
        if let Some(f) = format {
            url.push_str(&format!(
                "&{}={f}&{}={model}",
                wire::QUERY_FORMAT,
                wire::QUERY_MODEL
            ));
        }
        url
    };

    let flat_nonce = fresh_nonce();
    let flat: Value = crate::common::get_json(&http, report_url(&flat_nonce, None)).await;
    assert!(
        flat.get("model_attestations").is_none(),
        "the flat report stays the default"
    );
    assert_eq!(flat["signing_address"], node.state.signing_address());
    let flat_path = write(dir.path(), "flat.json", &serde_json::to_vec(&flat).unwrap());
    let verdict = assert_passes(&python, &["report-data", &flat_path, &flat_nonce]);
    assert_eq!(verdict["shape"], "flat");

    let near_nonce = fresh_nonce();
    let near: Value =
        crate::common::get_json(&http, report_url(&near_nonce, Some(wire::REPORT_FORMAT_NEAR))).await;
    let entries = near["model_attestations"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{near}");
    assert!(near.get("gateway_attestation").is_none());
    assert_eq!(entries[0]["model_name"], model.as_str());
    assert_eq!(entries[0]["signing_address"], node.state.signing_address());
    let near_path = write(dir.path(), "near.json", &serde_json::to_vec(&near).unwrap());
    let verdict = assert_passes(&python, &["report-data", &near_path, &near_nonce]);
    assert_eq!(verdict["shape"], "near");
    let report_data = verdict["report_data"][0].as_str().unwrap();
    assert!(report_data.ends_with(&near_nonce), "{report_data}");

    // The checks can fail: another nonce, or another address in the report, is refused.
    assert_refuses(
        &python,
        &["report-data", &near_path, &flat_nonce],
        "[0] report_data[32..64] = nonce",
    );
    let mut forged = flat.clone();
    forged["signing_address"] = json!(format!("0x{}", "11".repeat(20)));
    let forged_path = write(dir.path(), "forged.json", &serde_json::to_vec(&forged).unwrap());
    assert_refuses(
        &python,
        &["report-data", &forged_path, &flat_nonce],
        "[0] report_data[0..32] = padded signing address",
    );

    // An unknown shape is a 400, not a silent flat report.
    let resp = http
        .get(report_url(&fresh_nonce(), Some("phala")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_answer_signature_checks_independently() {
    let Some(engine) = engine().await else { return };
    let Some(python) = python() else { return };
    let model = engine.model_id().to_owned();
    let node = TestNode::start(Arc::new(engine), NodeConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();

    let request = chat_body(&model, "Say hello.", false, json!({}));
    let (headers, body) = post_chat(&node, &request, false).await;
    let id = headers[wire::SIGNATURE_ID_HEADER].to_str().unwrap().to_owned();
    let record = fetch_signature(&node, &id).await;
    let fetched: Value = serde_json::from_slice(&record).unwrap();
    assert_eq!(
        fetched["signature"],
        headers[wire::SIGNATURE_HEADER].to_str().unwrap()
    );

    let req_path = write(dir.path(), "request.json", &request);
    let resp_path = write(dir.path(), "response.json", &body);
    let sig_path = write(dir.path(), "signature.json", &record);
    let attested = node.state.signing_address().to_owned();
    assert_passes(
        &python,
        &["answer", &req_path, &resp_path, &sig_path, "--address", &attested],
    );

    // One byte more in the body, or another attested address, is refused.
    let mut altered = body.clone();
    altered.push(b' ');
    let altered_path = write(dir.path(), "altered.json", &altered);
    assert_refuses(
        &python,
        &["answer", &req_path, &altered_path, &sig_path],
        "signed text = sha256(request):sha256(response)",
    );
    let other = format!("0x{}", "22".repeat(20));
    assert_refuses(
        &python,
        &["answer", &req_path, &resp_path, &sig_path, "--address", &other],
        "signature recovers to the attested address",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_stream_hashes_whole_to_the_signed_text() {
    let Some(engine) = engine().await else { return };
    let model = engine.model_id().to_owned();
    let node = TestNode::start(Arc::new(engine), NodeConfig::default()).await;

    let request = chat_body(&model, "Name three colours.", true, json!({}));
    let (headers, body) = post_chat(&node, &request, false).await;
    assert_eq!(headers["content-type"], wire::EVENT_STREAM_CONTENT_TYPE);
    let id = headers[wire::SIGNATURE_ID_HEADER].to_str().unwrap().to_owned();
    let text = String::from_utf8(body.clone()).unwrap();
    assert!(text.ends_with(wire::SSE_DONE_EVENT), "{text}");
    assert!(
        !text.contains(wire::SIGNATURE_EVENT),
        "no inline event unless asked: {text}"
    );
    assert!(split_sse(&body).chunks().len() >= 2, "{text}");

    // Its text is stored before the body ends, its signature made on the first fetch (and only
    // then: a stream nobody verifies costs no signature).
    assert_eq!(signatures_made(&node).await, 0);
    let record = fetch_signature(&node, &id).await;
    let fetched: Value = serde_json::from_slice(&record).unwrap();
    assert_eq!(
        fetched["text"],
        cloister_types::signature_text(&request, &body).as_str()
    );
    assert_eq!(fetched["signing_address"], node.state.signing_address());
    let signature = fetched["signature"].as_str().unwrap();
    assert_eq!(
        signer(&request, &body, signature),
        address(node.state.signing_address()),
        "the deferred signature recovers to the attested key"
    );
    assert_eq!(signatures_made(&node).await, 1);
    assert_eq!(
        fetch_signature(&node, &id).await,
        record,
        "a second fetch serves the same signature, not a new one"
    );
    assert_eq!(signatures_made(&node).await, 1);

    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let req_path = write(dir.path(), "request.json", &request);
    let resp_path = write(dir.path(), "stream.sse", &body);
    let sig_path = write(dir.path(), "signature.json", &record);
    let attested = node.state.signing_address().to_owned();
    assert_passes(
        &python,
        &[
            "answer",
            &req_path,
            &resp_path,
            &sig_path,
            "--address",
            &attested,
            "--sse",
        ],
    );

    // The old shape (signature event after [DONE], outside the hash) is what these verifiers
    // refuse: the same check on an opted-in stream fails on the body hash.
    let (headers, inline_body) = post_chat(&node, &request, true).await;
    let inline_id = headers[wire::SIGNATURE_ID_HEADER].to_str().unwrap().to_owned();
    let inline_record = fetch_signature(&node, &inline_id).await;
    let inline_path = write(dir.path(), "inline.sse", &inline_body);
    let inline_sig = write(dir.path(), "inline-signature.json", &inline_record);
    assert_refuses(
        &python,
        &["answer", &req_path, &inline_path, &inline_sig, "--sse"],
        "signed text = sha256(request):sha256(response)",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opted_in_stream_carries_the_event_and_the_client_verifies_it() {
    let Some(engine) = engine().await else { return };
    let model = engine.model_id().to_owned();
    let node = TestNode::start(Arc::new(engine), NodeConfig::default()).await;

    // Raw: the event follows [DONE] and signs every byte before it.
    let request = chat_body(&model, "Say hi.", true, json!({}));
    let (_, body) = post_chat(&node, &request, true).await;
    let answer = split_sse(&body);
    assert!(answer.signed.ends_with(wire::SSE_DONE_EVENT.as_bytes()));
    let event = answer.signature.expect("the opted-in stream carries the event");
    assert_eq!(
        event["text"],
        cloister_types::signature_text(&request, &answer.signed).as_str()
    );

    // The Cloister client asks for it, sealed and in the clear, and verifies it.
    let url = format!("http://{}", node.addr);
    for e2ee in [E2eeMode::Required, E2eeMode::Off] {
        let mut policy = Policy::dev_allow_simulated();
        policy.e2ee = e2ee;
        let client = NodeClient::new(&url, Arc::new(policy)).unwrap();
        let proof = read_stream(&client, &request).await.unwrap();
        assert!(proof.done_seen);
        assert_eq!(
            proof.signature.signing_address.to_ascii_lowercase(),
            node.state.signing_address().to_ascii_lowercase()
        );
    }

    // Behind a relay that drops the opt-in header (a test double), the node sends no event and
    // the client, which asked for one, refuses the stream instead of trusting it.
    let relay = strip_inline_relay(url.clone()).await;
    for e2ee in [E2eeMode::Required, E2eeMode::Off] {
        let mut policy = Policy::dev_allow_simulated();
        policy.e2ee = e2ee;
        let client = NodeClient::new(&relay, Arc::new(policy)).unwrap();
        let err = read_stream(&client, &request).await.unwrap_err();
        assert!(matches!(err, ClientError::SignatureMissing), "{e2ee:?}: {err}");
        assert_eq!(err.code(), "signature_missing");
    }
}

/// Reads a client stream to its end: the proof, or the error that ended it.
async fn read_stream(
    client: &NodeClient,
    request: &[u8],
) -> Result<cloister_client::StreamProof, ClientError> {
    let mut stream = client
        .chat_stream(
            axum::body::Bytes::copy_from_slice(request),
            &RequestOptions::default(),
        )
        .await?;
    let mut events = 0;
    while let Some(item) = stream.next().await {
        match item? {
            StreamEvent::Data(_) => events += 1,
            StreamEvent::Done(proof) => {
                assert!(events > 0);
                return Ok(proof);
            }
        }
    }
    panic!("the stream ended without its proof or an error");
}

/// TEST DOUBLE: a relay in front of `target` that forwards every request without the inline
/// opt-in header (as a proxy that drops unknown headers would) and streams the answer back.
async fn strip_inline_relay(target: String) -> String {
    async fn forward(State(target): State<String>, req: Request) -> Response {
        let (parts, body) = req.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut out = reqwest::Client::new()
            .request(parts.method, format!("{target}{path}"))
            .body(body);
        for (name, value) in &parts.headers {
            if name != wire::INLINE_SIGNATURE_HEADER && name != "host" && name != "content-length" {
                out = out.header(name, value);
            }
        }
        let resp = out.send().await.unwrap();
        let mut back = Response::builder().status(resp.status());
        for (name, value) in resp.headers() {
            if name != "content-length" && name != "transfer-encoding" {
                back = back.header(name, value);
            }
        }
        back.body(Body::from_stream(resp.bytes_stream())).unwrap()
    }
    let router = axum::Router::new().fallback(forward).with_state(target);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}
