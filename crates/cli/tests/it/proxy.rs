//! `cloister proxy` end to end: real OpenAI clients against it, the canary that must never cross the
//! network or reach a log in clear, and its refusals with named reasons.
//!
//! The stack: an in-test zero-work upstream that echoes the prompt (so a canary in the prompt also
//! travels back in the answer) ← a real `cloister node run --upstream .. --dev-simulated-tee`
//! subprocess ← a recording TCP relay the test owns ← a real `cloister proxy` subprocess ← the
//! client under test.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::{cloister, serve_in_thread, workspace_root};

#[path = "../../../client/tests/it/evil_node.rs"]
#[allow(dead_code)]
mod evil_node;

const MODEL: &str = "echo-model";

/// The last user message of an OpenAI chat request.
fn last_user_text(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    v["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// A zero-work OpenAI-compatible upstream that answers `echo: <last user message>`.
fn start_echo_upstream() -> SocketAddr {
    use axum::routing::{get, post};
    let app = axum::Router::new()
        .route(
            "/v1/models",
            get(|| async {
                axum::Json(serde_json::json!({"object":"list","data":[{"id":MODEL,"object":"model","created":0,"owned_by":"test"}]}))
            }),
        )
        .route(
            "/v1/chat/completions",
            post(|body: bytes::Bytes| async move {
                let text = format!("echo: {}", last_user_text(&body));
                let stream = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["stream"].as_bool())
                    .unwrap_or(false);
                if !stream {
                    let answer = serde_json::json!({
                        "id":"up","object":"chat.completion","created":1,"model":MODEL,
                        "choices":[{"index":0,"message":{"role":"assistant","content":text},"finish_reason":"stop"}],
                        "usage":{"prompt_tokens":3,"completion_tokens":3,"total_tokens":6}
                    });
                    return ([("content-type", "application/json")], answer.to_string());
                }
                let mut out = String::new();
                let words: Vec<&str> = text.split_inclusive(' ').collect();
                for w in words {
                    let chunk = serde_json::json!({"id":"up","object":"chat.completion.chunk","created":1,"model":MODEL,
                        "choices":[{"index":0,"delta":{"content":w},"finish_reason":null}]});
                    out.push_str(&format!("data: {chunk}\n\n"));
                }
                let last = serde_json::json!({"id":"up","object":"chat.completion.chunk","created":1,"model":MODEL,
                    "choices":[{"index":0,"delta":{},"finish_reason":"stop"}]});
                out.push_str(&format!("data: {last}\n\ndata: [DONE]\n\n"));
                ([("content-type", "text/event-stream")], out)
            }),
        );
    serve_in_thread(app)
}

/// A `cloister` subprocess with its stdout and stderr (debug logging) in a file; killed on drop.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(args: &[&str], log: PathBuf) -> Self {
        let file = std::fs::File::create(&log).unwrap();
        let child = cloister()
            .args(args)
            .env("RUST_LOG", "debug")
            .env("NO_COLOR", "1")
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap();
        Self { child, log }
    }

    fn log_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_ready(url: &str, proc: &mut Proc) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let http = reqwest::Client::new();
    while Instant::now() < deadline {
        if let Ok(r) = http.get(format!("{url}/health")).send().await
            && r.status().is_success()
        {
            return;
        }
        if let Ok(Some(status)) = proc.child.try_wait() {
            panic!("{url} exited with {status}:\n{}", proc.log_text());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} did not become ready:\n{}", proc.log_text());
}

/// A TCP relay recording every byte in each direction.
struct Relay {
    addr: SocketAddr,
    to_node: Arc<Mutex<Vec<u8>>>,
    from_node: Arc<Mutex<Vec<u8>>>,
}

fn pipe(mut from: TcpStream, mut to: TcpStream, record: Arc<Mutex<Vec<u8>>>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16384];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown(Shutdown::Write);
                    break;
                }
                Ok(n) => {
                    record.lock().unwrap().extend_from_slice(&buf[..n]);
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
    });
}

fn start_relay(target: SocketAddr) -> Relay {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let to_node = Arc::new(Mutex::new(Vec::new()));
    let from_node = Arc::new(Mutex::new(Vec::new()));
    let (tn, fnode) = (Arc::clone(&to_node), Arc::clone(&from_node));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(client) = conn else { continue };
            let Ok(server) = TcpStream::connect(target) else {
                continue;
            };
            pipe(
                client.try_clone().unwrap(),
                server.try_clone().unwrap(),
                Arc::clone(&tn),
            );
            pipe(server, client, Arc::clone(&fnode));
        }
    });
    Relay {
        addr,
        to_node,
        from_node,
    }
}

struct Stack {
    dir: tempfile::TempDir,
    node: Proc,
    node_url: String,
    relay: Relay,
    proxy: Proc,
    proxy_url: String,
}

async fn start_node(dir: &tempfile::TempDir) -> (Proc, String) {
    let upstream = start_echo_upstream();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let upstream_url = format!("http://{upstream}/v1");
    let mut node = Proc::spawn(
        &[
            "node",
            "run",
            "--upstream",
            &upstream_url,
            "--upstream-model",
            MODEL,
            "--dev-simulated-tee",
            "--listen",
            &listen,
        ],
        dir.path().join("node.log"),
    );
    let url = format!("http://{listen}");
    wait_ready(&url, &mut node).await;
    (node, url)
}

async fn start_proxy(dir: &tempfile::TempDir, node_url: &str, flags: &[&str], name: &str) -> (Proc, String) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["proxy", "--listen", &listen, "--node", node_url];
    args.extend_from_slice(flags);
    let mut proxy = Proc::spawn(&args, dir.path().join(format!("{name}.log")));
    let url = format!("http://{listen}");
    wait_ready(&url, &mut proxy).await;
    (proxy, url)
}

async fn start_stack() -> Stack {
    let dir = tempfile::tempdir().unwrap();
    let (node, node_url) = start_node(&dir).await;
    let relay = start_relay(node_url.trim_start_matches("http://").parse().unwrap());
    let relay_url = format!("http://{}", relay.addr);
    let (proxy, proxy_url) = start_proxy(&dir, &relay_url, &["--allow-simulated"], "proxy").await;
    Stack {
        dir,
        node,
        node_url,
        relay,
        proxy,
        proxy_url,
    }
}

fn chat_body(content: &str, stream: bool) -> serde_json::Value {
    serde_json::json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 16,
        "stream": stream,
    })
}

/// The interpreter with the OpenAI SDK: `$CLOISTER_PYTHON`, else the venv of
/// `scripts/setup-test-clients.sh`; None (with a printed reason) when neither exists, unless
/// `CLOISTER_REQUIRE_CLIENTS=1`.
fn python() -> Option<PathBuf> {
    let path = std::env::var_os("CLOISTER_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("tools/pyclients/venv/bin/python"));
    if path.is_file() {
        return Some(path);
    }
    if std::env::var("CLOISTER_REQUIRE_CLIENTS").as_deref() == Ok("1") {
        panic!(
            "no Python with the OpenAI SDK at {} and CLOISTER_REQUIRE_CLIENTS=1; run scripts/setup-test-clients.sh",
            path.display()
        );
    }
    eprintln!(
        "skipping: no Python with the OpenAI SDK at {}; run scripts/setup-test-clients.sh",
        path.display()
    );
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_sdk_works_through_the_proxy() {
    let Some(python) = python() else { return };
    let stack = start_stack().await;
    let script = workspace_root().join("crates/cli/tests/it/openai_client.py");
    let proxy_v1 = format!("{}/v1", stack.proxy_url);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&python)
            .arg(&script)
            .args([proxy_v1.as_str(), MODEL])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}\nproxy log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        stack.proxy.log_text()
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["models"], serde_json::json!([MODEL]), "{v}");
    assert_eq!(v["chat"]["content"], "echo: Say hello.", "{v}");
    assert_eq!(v["chat"]["verified"], "true", "{v}");
    assert_eq!(v["chat"]["signature_verified"], "true", "{v}");
    assert_eq!(v["chat"]["e2ee"], "sealed", "{v}");
    assert_eq!(v["stream"]["content"], "echo: Count to three.", "{v}");
    assert_eq!(v["error"]["status"], 502, "{v}");
    assert_eq!(v["error"]["code"], "model_not_bound", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_openai_works_through_the_proxy() {
    use async_openai::Client;
    use async_openai::config::OpenAIConfig;
    use async_openai::types::chat::{ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequestArgs};

    let stack = start_stack().await;
    // No retries: a refusal (502) must surface at once.
    let no_retry = backoff::ExponentialBackoffBuilder::new()
        .with_max_elapsed_time(Some(Duration::ZERO))
        .build();
    let client = Client::with_config(
        OpenAIConfig::new()
            .with_api_base(format!("{}/v1", stack.proxy_url))
            .with_api_key("sk-test"),
    )
    .with_backoff(no_retry);
    let models = client.models().list().await.unwrap();
    assert_eq!(
        models.data.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        [MODEL]
    );

    let request = |model: &str, stream: bool| {
        CreateChatCompletionRequestArgs::default()
            .model(model)
            .max_completion_tokens(16u32)
            .stream(stream)
            .messages([ChatCompletionRequestUserMessageArgs::default()
                .content("hello from rust")
                .build()
                .unwrap()
                .into()])
            .build()
            .unwrap()
    };
    let answer = client.chat().create(request(MODEL, false)).await.unwrap();
    assert_eq!(
        answer.choices[0].message.content.as_deref(),
        Some("echo: hello from rust")
    );

    let mut stream = client.chat().create_stream(request(MODEL, true)).await.unwrap();
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        for choice in chunk.unwrap().choices {
            text.push_str(choice.delta.content.as_deref().unwrap_or_default());
        }
    }
    assert_eq!(text, "echo: hello from rust");

    let err = client
        .chat()
        .create(request("no-such-model", false))
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("model_not_bound"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_prompt_never_crosses_the_network_or_a_log_in_clear() {
    let stack = start_stack().await;
    let canary = format!("CANARY-{}", hex::encode(rand::random::<[u8; 12]>()));
    let http = reqwest::Client::new();
    let url = format!("{}/v1/chat/completions", stack.proxy_url);

    let resp = http
        .post(&url)
        .json(&chat_body(&format!("repeat {canary}"), false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-cloister-verified"], "true");
    assert_eq!(resp.headers()["x-cloister-signature-verified"], "true");
    assert_eq!(resp.headers()["x-cloister-e2ee"], "sealed");
    assert_eq!(resp.headers()["x-cloister-tee"], "simulated");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        format!("echo: repeat {canary}")
    );

    let resp = http
        .post(&url)
        .json(&chat_body(&format!("stream {canary}"), true))
        .send()
        .await
        .unwrap();
    let text = resp.text().await.unwrap();
    assert!(text.contains("data: [DONE]"), "{text}");
    assert!(text.contains(&canary[..10]), "the answer came back: {text}");

    // Give the processes a moment to flush their logs.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let wire = [
        stack.relay.to_node.lock().unwrap().clone(),
        stack.relay.from_node.lock().unwrap().clone(),
    ]
    .concat();
    assert!(
        wire.windows(b"x-cloister-e2ee".len())
            .any(|w| w == b"x-cloister-e2ee"),
        "the relay saw the sealed exchange"
    );
    let wire_text = String::from_utf8_lossy(&wire);
    assert!(
        !wire_text.contains(&canary),
        "the canary crossed the relay in clear"
    );
    let (node_log, proxy_log) = (stack.node.log_text(), stack.proxy.log_text());
    assert!(node_log.contains("DEBUG"), "the node logged at debug level");
    assert!(proxy_log.contains("DEBUG"), "the proxy logged at debug level");
    assert!(
        !node_log.contains(&canary),
        "the canary is in the node's log:\n{node_log}"
    );
    assert!(
        !proxy_log.contains(&canary),
        "the canary is in the proxy's log:\n{proxy_log}"
    );
    drop(stack.dir);
}

/// The first `POST /v1/chat/completions` request in `bytes`, as sent (headers and body).
fn first_chat_request(bytes: &[u8]) -> Vec<u8> {
    let start = bytes
        .windows(24)
        .position(|w| w == b"POST /v1/chat/completion")
        .expect("a chat request crossed the relay");
    let rest = &bytes[start..];
    let head_end = rest.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&rest[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    rest[..head_end + len].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_refuses_a_request_replayed_from_the_wire() {
    let stack = start_stack().await;
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", stack.proxy_url))
        .json(&chat_body("replay me", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let captured = stack.relay.to_node.lock().unwrap().clone();
    let request = first_chat_request(&captured);
    let node_addr = stack.node_url.trim_start_matches("http://").to_owned();
    let answer = tokio::task::spawn_blocking(move || {
        // The captured bytes, with `connection: close` so the node ends the answer by closing.
        let line_end = request.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
        let mut replay = request[..line_end].to_vec();
        replay.extend_from_slice(b"connection: close\r\n");
        replay.extend_from_slice(&request[line_end..]);
        let mut conn = TcpStream::connect(node_addr).unwrap();
        conn.write_all(&replay).unwrap();
        let mut out = Vec::new();
        let _ = conn.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("\"e2ee_replayed\""), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_refuses_a_simulated_node_without_the_switch_and_an_unapproved_measurement() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, node_url) = start_node(&dir).await;
    let http = reqwest::Client::new();

    let (_strict, strict_url) = start_proxy(&dir, &node_url, &[], "strict").await;
    let resp = http
        .post(format!("{strict_url}/v1/chat/completions"))
        .json(&chat_body("hi", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["x-cloister-verified"], "false");
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "simulated_tee_refused", "{v}");

    let list = dir.path().join("allowed.txt");
    std::fs::write(&list, format!("# another build\n{}\n", "ab".repeat(32))).unwrap();
    let list = list.to_string_lossy().into_owned();
    let (_pinned, pinned_url) = start_proxy(
        &dir,
        &node_url,
        &["--allow-simulated", "--allowed-measurements", &list],
        "pinned",
    )
    .await;
    let resp = http
        .post(format!("{pinned_url}/v1/chat/completions"))
        .json(&chat_body("hi", true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "measurement_not_allowed", "{v}");
    let resp = http.get(format!("{pinned_url}/v1/models")).send().await.unwrap();
    assert_eq!(resp.status(), 502);
}

/// A proxy in front of an `EvilNode` misbehaving as told.
async fn proxy_to_evil(
    evil: evil_node::Misbehaviour,
) -> (evil_node::EvilNode, Proc, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let node = evil_node::EvilNode::start(evil).await;
    let (proxy, url) = start_proxy(&dir, &node.url, &["--allow-simulated"], "proxy").await;
    (node, proxy, url, dir)
}

fn evil_body(stream: bool) -> serde_json::Value {
    serde_json::json!({
        "model": evil_node::MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": stream,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_ends_a_truncated_stream_with_an_error_event_and_no_done() {
    let (_node, _proxy, url, _dir) = proxy_to_evil(evil_node::Misbehaviour::TruncateStream).await;
    let resp = reqwest::Client::new()
        .post(format!("{url}/v1/chat/completions"))
        .json(&evil_body(true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(text.contains(r#""code":"e2ee_truncated""#), "{text}");
    assert!(!text.contains("[DONE]"), "{text}");
    // The opened chunks before the cut were passed on as they came.
    assert!(text.contains(" sky"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_names_tampering_and_a_signature_from_another_key() {
    for (evil, code) in [
        (evil_node::Misbehaviour::TamperCiphertext, "e2ee_tampered"),
        (
            evil_node::Misbehaviour::SignWithOtherKey,
            "signature_from_another_key",
        ),
        (evil_node::Misbehaviour::BindingByOtherKey, "key_binding_invalid"),
    ] {
        let (_node, _proxy, url, _dir) = proxy_to_evil(evil).await;
        let resp = reqwest::Client::new()
            .post(format!("{url}/v1/chat/completions"))
            .json(&evil_body(false))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 502, "{evil:?}");
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], code, "{evil:?}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloister_chat_seals_by_default_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, node_url) = start_node(&dir).await;
    let run = |extra: &'static [&'static str]| {
        let node_url = node_url.clone();
        tokio::task::spawn_blocking(move || {
            cloister()
                .args(["chat", &node_url, "hello there", "--allow-simulated"])
                .args(extra)
                .output()
                .unwrap()
        })
    };
    let sealed = run(&[]).await.unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&sealed.stdout),
        String::from_utf8_lossy(&sealed.stderr),
    );
    assert!(sealed.status.success(), "{out}\n{err}");
    assert!(
        err.contains("prompt sealed to the node's attested E2EE key"),
        "{err}"
    );
    assert!(out.contains("echo: hello there"), "{out}");
    assert!(
        out.contains("e2ee              prompt and answer sealed"),
        "{out}"
    );
    assert!(
        out.contains("signature         valid, from the attested signer"),
        "{out}"
    );

    let clear = run(&["--no-e2ee", "--stream"]).await.unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&clear.stdout),
        String::from_utf8_lossy(&clear.stderr),
    );
    assert!(clear.status.success(), "{out}\n{err}");
    assert!(err.contains("--no-e2ee"), "{err}");
    assert!(out.contains("e2ee              OFF"), "{out}");

    let strict = {
        let node_url = node_url.clone();
        tokio::task::spawn_blocking(move || {
            cloister()
                .args(["chat", &node_url, "hello there"])
                .output()
                .unwrap()
        })
        .await
        .unwrap()
    };
    let err = String::from_utf8_lossy(&strict.stderr);
    assert!(!strict.status.success());
    assert!(err.contains("simulated_tee_refused"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_forwards_authorization_and_receipts_unchanged() {
    let (node, _proxy, url, _dir) = proxy_to_evil(evil_node::Misbehaviour::Honest).await;
    let resp = reqwest::Client::new()
        .post(format!("{url}/v1/chat/completions"))
        .header("authorization", "Bearer spend-authorization-base64")
        .json(&evil_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-cloister-signer"], node.signer_hex().as_str());
    assert_eq!(resp.headers()["x-cloister-receipt"], evil_node::RECEIPT);
    assert_eq!(
        node.last_authorization().as_deref(),
        Some("Bearer spend-authorization-base64")
    );
    let text = reqwest::Client::new()
        .post(format!("{url}/v1/chat/completions"))
        .json(&evil_body(true))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (_, signature_event) = text
        .split_once("data: [DONE]\n\nevent: cloister.signature\ndata: ")
        .unwrap();
    let event: serde_json::Value = serde_json::from_str(signature_event.trim()).unwrap();
    assert_eq!(event["receipt"]["cumulative_amount"], "42", "{text}");
}

/// The whole client path on chain: a paid node registered on a devnet, a proxy that finds it in the
/// `NodeRegistry` and takes its measurement allowlist from there, and an OpenAI-style client whose
/// API key is a signed spend authorization.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_discovers_paid_nodes_on_chain_and_follows_the_registry_allowlist() {
    use cloister_chain::alloy::primitives::{Address, B256};
    use cloister_chain::devnet::{self, DeployParams, Devnet, DevnetOptions, TOKEN};
    use cloister_chain::{Chain, parse_private_key};
    use cloister_types::eip712::{ApiKey, SpendAuthorization, authorization_id, escrow_domain};

    if devnet::find_anvil().is_none() {
        assert!(
            std::env::var("CLOISTER_REQUIRE_ANVIL").as_deref() != Ok("1"),
            "anvil not found and CLOISTER_REQUIRE_ANVIL=1"
        );
        eprintln!("SKIP: anvil not found (run `npm ci --prefix contracts`)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let anvil = Devnet::spawn(DevnetOptions::default()).await.unwrap();
    let file = devnet::deploy_devnet(anvil.rpc_url(), &DeployParams::default())
        .await
        .unwrap();
    let devnet_json = dir.path().join("devnet.json");
    file.save(&devnet_json).unwrap();
    let devnet_arg = devnet_json.to_str().unwrap();

    // A paid node: registers at start (before it serves), meters into its ledger.
    let upstream = start_echo_upstream();
    let listen = format!("127.0.0.1:{}", free_port());
    let node_url = format!("http://{listen}");
    let ledger = dir.path().join("ledger.sqlite");
    let mut node = Proc::spawn(
        &[
            "node",
            "run",
            "--upstream",
            &format!("http://{upstream}/v1"),
            "--upstream-model",
            MODEL,
            "--dev-simulated-tee",
            "--listen",
            &listen,
            "--chain",
            devnet_arg,
            "--ledger",
            ledger.to_str().unwrap(),
            "--price",
            &format!("{MODEL}=1000:2000"),
        ],
        dir.path().join("node.log"),
    );
    wait_ready(&node_url, &mut node).await;

    // The client deposits and signs a spend authorization for the operator: its API key.
    let key_hex = file.account("client").unwrap().private_key.clone();
    let client = Chain::connect(file.chain_config(), Some(parse_private_key(&key_hex).unwrap()))
        .await
        .unwrap();
    client.escrow().unwrap().deposit(TOKEN).await.unwrap();
    let signer = cloister_crypto::EnclaveKey::from_secret_bytes(
        &hex::decode(key_hex.trim_start_matches("0x")).unwrap(),
    )
    .unwrap();
    let auth = SpendAuthorization {
        client: Address::from(signer.address()),
        node: file.account("operator").unwrap().address,
        maxAmount: TOKEN,
        expiry: 4_000_000_000,
        salt: B256::repeat_byte(3),
    };
    let id = authorization_id(&escrow_domain(file.chain_id, file.contracts.escrow), &auth);
    let api_key = ApiKey::new(auth, signer.sign_prehash(&id.0)).encode();

    // The proxy is given the chain only.
    let proxy_listen = format!("127.0.0.1:{}", free_port());
    let proxy_url = format!("http://{proxy_listen}");
    let mut proxy = Proc::spawn(
        &[
            "proxy",
            "--listen",
            &proxy_listen,
            "--chain",
            devnet_arg,
            "--allow-simulated",
        ],
        dir.path().join("proxy.log"),
    );
    wait_ready(&proxy_url, &mut proxy).await;
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{proxy_url}/v1/chat/completions"))
        .bearer_auth(&api_key)
        .json(&chat_body("paid hello", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", proxy.log_text());
    assert_eq!(resp.headers()["x-cloister-verified"], "true");
    let receipt: serde_json::Value =
        serde_json::from_str(resp.headers()["x-cloister-receipt"].to_str().unwrap()).unwrap();
    assert_eq!(
        receipt["cumulative_amount"], "9000",
        "3 prompt x 1000 + 3 completion x 2000"
    );
    assert_eq!(receipt["authorization"], format!("{id:#x}"));

    // Without a key the paid node's own refusal comes back through the proxy.
    let resp = http
        .post(format!("{proxy_url}/v1/chat/completions"))
        .json(&chat_body("free hello", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "missing_api_key");

    // Governance withdraws the measurement: a proxy started now refuses the node by name.
    let gov = Chain::connect(
        file.chain_config(),
        Some(parse_private_key(&file.account("governance").unwrap().private_key).unwrap()),
    )
    .await
    .unwrap();
    gov.registry()
        .unwrap()
        .set_measurement(devnet::simulated_measurement().unwrap(), false)
        .await
        .unwrap();
    let strict_listen = format!("127.0.0.1:{}", free_port());
    let strict_url = format!("http://{strict_listen}");
    let mut strict = Proc::spawn(
        &[
            "proxy",
            "--listen",
            &strict_listen,
            "--chain",
            devnet_arg,
            "--allow-simulated",
        ],
        dir.path().join("strict.log"),
    );
    wait_ready(&strict_url, &mut strict).await;
    let resp = http
        .post(format!("{strict_url}/v1/chat/completions"))
        .bearer_auth(&api_key)
        .json(&chat_body("hello again", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "measurement_not_allowed", "{body}");
}
