//! `cloister proxy` end to end: real OpenAI clients against it, the canary that must never cross the
//! network or reach a log in clear, and registry discovery on chain. The proxy's refusals, headers
//! and stream handling are tested in process in `crates/client/tests/it/proxy.rs`.
//!
//! The stack: an in-test zero-work upstream that echoes the prompt (so a canary in the prompt also
//! travels back in the answer) ← a real `cloister node run --upstream .. --dev-simulated-tee`
//! subprocess ← a recording TCP relay the test owns ← a real `cloister proxy` subprocess ← the
//! client under test.

mod gpu;
mod onchain;
pub(crate) mod stack;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use cloister_types::wire;
use futures::StreamExt;

use crate::{cloister, workspace_root};
use stack::{MODEL, Stack, chat_body, start_node, start_stack};

/// The interpreter with the OpenAI SDK: `$CLOISTER_PYTHON`, else the venv of
/// `scripts/setup-test-clients.sh`; None (with a printed reason) when neither exists, unless
/// `CLOISTER_REQUIRE_CLIENTS=1`.
pub(crate) fn python() -> Option<PathBuf> {
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

/// Runs `openai_client.py` (the official OpenAI Python SDK) against the proxy at `proxy_url` and
/// checks what every verified, sealed answer must show (chat and legacy completions, plain and
/// streamed); returns its JSON for the caller's own checks
/// (the unknown-model error, the signer). `None` when the SDK is not installed.
pub(crate) async fn openai_sdk_through(proxy_url: &str) -> Option<serde_json::Value> {
    let python = python()?;
    let script = workspace_root().join("crates/cli/tests/it/openai_client.py");
    let mut command = std::process::Command::new(&python);
    command.arg(&script).args([&format!("{proxy_url}/v1"), MODEL]);
    let stdout = crate::stdout_of(command, String::new).await;
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["models"], serde_json::json!([MODEL]), "{v}");
    assert_eq!(v["chat"]["content"], "echo: Say hello.", "{v}");
    assert_eq!(v["chat"]["verified"], "true", "{v}");
    assert_eq!(v["chat"]["signature_verified"], "true", "{v}");
    assert_eq!(v["chat"]["e2ee"], "sealed", "{v}");
    assert_eq!(v["stream"]["content"], "echo: Count to three.", "{v}");
    let completion = &v["completion"];
    assert_eq!(completion["object"], "text_completion", "{v}");
    assert_eq!(completion["text"], "echo: Complete me.", "{v}");
    assert_eq!(completion["finish_reason"], "stop", "{v}");
    assert_eq!(completion["completion_tokens"], 3, "{v}");
    assert_eq!(completion["verified"], "true", "{v}");
    assert_eq!(completion["signature_verified"], "true", "{v}");
    assert_eq!(completion["e2ee"], "sealed", "{v}");
    assert_eq!(completion["signer"], v["chat"]["signer"], "{v}");
    let streamed = &v["completion_stream"];
    assert_eq!(streamed["text"], "echo: Stream me.", "{v}");
    assert_eq!(streamed["finish_reason"], "stop", "{v}");
    // The echo upstream sends no usage: the engine's estimate, one token per text chunk.
    assert_eq!(streamed["completion_tokens"], 3, "{v}");
    Some(v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_sdk_works_through_the_proxy() {
    let stack = start_stack().await;
    let Some(v) = openai_sdk_through(&stack.proxy_url).await else {
        return;
    };
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
async fn end_to_end_a_canary_prompt_never_crosses_the_network_or_a_log_in_clear_and_cannot_be_replayed() {
    let stack = start_stack().await;
    let canary = format!("CANARY-{}", hex::encode(rand::random::<[u8; 12]>()));
    let http = reqwest::Client::new();
    let url = format!("{}{}", stack.proxy_url, wire::CHAT_COMPLETIONS_PATH);

    let resp = http
        .post(&url)
        .json(&chat_body(&format!("repeat {canary}"), false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()[wire::VERIFIED_HEADER], "true");
    assert_eq!(resp.headers()[wire::SIGNATURE_VERIFIED_HEADER], "true");
    assert_eq!(resp.headers()[wire::E2EE_HEADER], "sealed");
    assert_eq!(resp.headers()[wire::TEE_HEADER], "simulated");
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
    assert!(text.contains(wire::SSE_DONE_EVENT), "{text}");
    assert!(text.contains(&canary[..10]), "the answer came back: {text}");

    // Give the processes a moment to flush their logs.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = [
        stack.relay.to_node.lock().unwrap().clone(),
        stack.relay.from_node.lock().unwrap().clone(),
    ]
    .concat();
    assert!(
        seen.windows(wire::E2EE_HEADER.len())
            .any(|w| w == wire::E2EE_HEADER.as_bytes()),
        "the relay saw the sealed exchange"
    );
    let wire_text = String::from_utf8_lossy(&seen);
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

    // The sealed request the relay saw cannot be replayed to the node.
    the_node_refuses_a_request_replayed_from_the_wire(&stack).await;
    drop(stack.dir);
}

/// The first `POST /v1/chat/completions` request in `bytes`, as sent (headers and body).
fn first_chat_request(bytes: &[u8]) -> Vec<u8> {
    let line = format!("POST {}", wire::CHAT_COMPLETIONS_PATH);
    let start = bytes
        .windows(line.len())
        .position(|w| w == line.as_bytes())
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

/// The node refuses a sealed request captured on the wire and sent again.
async fn the_node_refuses_a_request_replayed_from_the_wire(stack: &Stack) {
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

/// `cloister attest verify --aci` against a real node subprocess: every ACI check named, the
/// simulated TEE refused by default and accepted (with warnings) only with the development flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attest_verify_aci_checks_a_node_as_an_aci_service() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, url) = start_node(&dir).await;
    let run = |extra: &'static [&'static str]| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            cloister()
                .args(["attest", "verify", &url, "--aci", "--json"])
                .args(extra)
                .output()
                .unwrap()
        })
    };
    let out = run(&["--allow-simulated"]).await.unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(json["passed"], true, "{json:#}");
    assert_eq!(out.status.code(), Some(0));
    let names: Vec<&str> = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for id in cloister_attest::check::AciCheck::ALL {
        assert!(names.contains(&id.name()), "{id} missing from {names:?}");
    }
    assert!(
        json["workload_keyset_digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );

    let out = run(&[]).await.unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["passed"], false, "{json:#}");
    assert_eq!(out.status.code(), Some(1));
}
