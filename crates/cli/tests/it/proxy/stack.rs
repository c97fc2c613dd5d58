//! The subprocess stack of the `cloister proxy` tests: an in-test echo upstream, a real `cloister
//! node run` subprocess, a recording TCP relay and a real `cloister proxy` subprocess.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cloister_types::wire;

use crate::{cloister, serve_in_thread};

pub(crate) const MODEL: &str = "echo-model";

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
pub(crate) fn start_echo_upstream() -> SocketAddr {
    use axum::routing::{get, post};
    let app = axum::Router::new()
        .route(
            wire::MODELS_PATH,
            get(|| async {
                axum::Json(serde_json::json!({"object":"list","data":[{"id":MODEL,"object":"model","created":0,"owned_by":"test"}]}))
            }),
        )
        .route(wire::COMPLETIONS_PATH, post(echo_text_completion))
        .route(
            wire::CHAT_COMPLETIONS_PATH,
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
                    return ([("content-type", wire::JSON_CONTENT_TYPE)], answer.to_string());
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
                out.push_str(&format!("data: {last}\n\n{}", wire::SSE_DONE_EVENT));
                ([("content-type", wire::EVENT_STREAM_CONTENT_TYPE)], out)
            }),
        );
    serve_in_thread(app)
}

/// The echo upstream's `/v1/completions`: `echo: <prompt>` as a `text_completion`, whole or
/// streamed word by word.
async fn echo_text_completion(body: bytes::Bytes) -> ([(&'static str, &'static str); 1], String) {
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let text = format!("echo: {}", v["prompt"].as_str().unwrap_or_default());
    let chunk = |text: &str, finish: Option<&str>| {
        serde_json::json!({"id":"up","object":"text_completion","created":1,"model":MODEL,
            "choices":[{"index":0,"text":text,"finish_reason":finish}]})
    };
    if !v["stream"].as_bool().unwrap_or(false) {
        let mut answer = chunk(&text, Some("stop"));
        answer["usage"] = serde_json::json!({"prompt_tokens":3,"completion_tokens":3,"total_tokens":6});
        return ([("content-type", wire::JSON_CONTENT_TYPE)], answer.to_string());
    }
    let mut out: String = text
        .split_inclusive(' ')
        .map(|w| format!("data: {}\n\n", chunk(w, None)))
        .collect();
    out.push_str(&format!(
        "data: {}\n\n{}",
        chunk("", Some("stop")),
        wire::SSE_DONE_EVENT
    ));
    ([("content-type", wire::EVENT_STREAM_CONTENT_TYPE)], out)
}

/// A `cloister` subprocess with its stdout and stderr (debug logging) in a file; killed on drop.
pub(crate) struct Proc {
    pub(crate) child: Child,
    pub(super) log: PathBuf,
}

impl Proc {
    pub(crate) fn spawn(args: &[&str], log: PathBuf) -> Self {
        Self::spawn_env(args, &[], log)
    }

    /// [`Proc::spawn`] with extra environment variables.
    pub(crate) fn spawn_env(args: &[&str], env: &[(&str, &str)], log: PathBuf) -> Self {
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = cloister();
        cmd.args(args)
            .env("RUST_LOG", "debug")
            .env("NO_COLOR", "1")
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        Self { child, log }
    }

    pub(crate) fn log_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) async fn wait_ready(url: &str, proc: &mut Proc) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let http = reqwest::Client::new();
    while Instant::now() < deadline {
        if let Ok(r) = http.get(format!("{url}{}", wire::HEALTH_PATH)).send().await
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
pub(crate) struct Relay {
    pub(crate) addr: SocketAddr,
    pub(crate) to_node: Arc<Mutex<Vec<u8>>>,
    pub(crate) from_node: Arc<Mutex<Vec<u8>>>,
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

pub(crate) fn start_relay(target: SocketAddr) -> Relay {
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

pub(super) struct Stack {
    pub(super) dir: tempfile::TempDir,
    pub(super) node: Proc,
    pub(super) node_url: String,
    pub(super) relay: Relay,
    pub(super) proxy: Proc,
    pub(super) proxy_url: String,
}

pub(super) async fn start_node(dir: &tempfile::TempDir) -> (Proc, String) {
    start_node_with(dir, &[]).await
}

/// [`start_node`] with extra `node run` flags.
pub(super) async fn start_node_with(dir: &tempfile::TempDir, extra: &[&str]) -> (Proc, String) {
    start_echo_node(extra, &[], dir.path().join("node.log")).await
}

/// `cloister node run` in upstream mode over a fresh echo upstream (simulated TEE), with `extra`
/// flags and `env`, logging to `log`; ready when this returns.
pub(crate) async fn start_echo_node(extra: &[&str], env: &[(&str, &str)], log: PathBuf) -> (Proc, String) {
    let upstream = start_echo_upstream();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let upstream_url = format!("http://{upstream}/v1");
    let mut args = vec![
        "node",
        "run",
        "--upstream",
        &upstream_url,
        "--upstream-model",
        MODEL,
        "--dev-simulated-tee",
        "--listen",
        &listen,
    ];
    args.extend_from_slice(extra);
    let mut node = Proc::spawn_env(&args, env, log);
    let url = format!("http://{listen}");
    wait_ready(&url, &mut node).await;
    (node, url)
}

/// Starts `cloister proxy --listen <free port> FLAGS..` (logging to `dir/NAME.log`) and waits
/// until it answers.
pub(crate) async fn start_proxy(dir: &tempfile::TempDir, flags: &[&str], name: &str) -> (Proc, String) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["proxy", "--listen", &listen];
    args.extend_from_slice(flags);
    let mut proxy = Proc::spawn(&args, dir.path().join(format!("{name}.log")));
    let url = format!("http://{listen}");
    wait_ready(&url, &mut proxy).await;
    (proxy, url)
}

pub(super) async fn start_stack() -> Stack {
    let dir = tempfile::tempdir().unwrap();
    let (node, node_url) = start_node(&dir).await;
    let relay = start_relay(node_url.trim_start_matches("http://").parse().unwrap());
    let relay_url = format!("http://{}", relay.addr);
    let (proxy, proxy_url) = start_proxy(&dir, &["--node", &relay_url, "--allow-simulated"], "proxy").await;
    Stack {
        dir,
        node,
        node_url,
        relay,
        proxy,
        proxy_url,
    }
}

pub(crate) fn chat_body(content: &str, stream: bool) -> serde_json::Value {
    serde_json::json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 16,
        "stream": stream,
    })
}
