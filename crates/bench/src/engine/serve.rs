//! The built-in engine served by a node against llama.cpp's own `llama-server`, under concurrent
//! closed-loop streamed chats: same GGUF, same threads, the same number of slots (`-np`).
//!
//! Each of `streams` clients sends one streamed chat, reads it to the end, and sends the next, until
//! it has sent `per_stream`. Aggregate tokens/s is every completion token (as the server's `usage`
//! reports it) over the wall time of the whole cell; TTFT is from sending a request to its first
//! chunk with text.
//!
//! ```no_run
//! # async fn demo() -> cloister_bench::Result<()> {
//! use cloister_bench::engine::serve::{ChatLoad, LlamaServer, ServedBuiltin, ServerShape, closed_loop};
//!
//! let shape = ServerShape { model: "models/SmolLM2-135M-Instruct.Q4_1.gguf".into(), threads: 2, slots: 8, ctx_per_slot: 2048, prefix_cache: true, kv_unified: false };
//! let ours = ServedBuiltin::start(&shape).await?;
//! let load = ChatLoad { model_id: ours.model_id.clone(), streams: 4, per_stream: 4, max_tokens: 64 };
//! let figures = closed_loop(&format!("http://{}", ours.addr), &load).await?;
//! println!("{:.0} tok/s, TTFT p50 {:.0} ms", figures.tok_per_s, figures.ttft_p50_ms);
//! if let Some(bin) = LlamaServer::find(None) {
//!     let peer = LlamaServer::start(&bin, &shape).await?;
//!     let theirs = closed_loop(&peer.base_url(), &load).await?;
//!     println!("llama-server: {:.0} tok/s", theirs.tok_per_s);
//! }
//! ours.stop().await;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cloister_engine::builtin::{BuiltinConfig, BuiltinEngine};
use cloister_types::wire::{CHAT_COMPLETIONS_PATH, HEALTH_PATH, JSON_CONTENT_TYPE, SSE_DONE};
use futures::StreamExt;

use crate::stats::percentile;
use crate::{Error, Result};

/// The system prompt every chat shares (a chat template and a system prompt are what real traffic
/// has in common).
const SYSTEM_PROMPT: &str = "You are a helpful assistant. Answer in detail, with examples, in plain English.";
/// User messages, taken in turn. Each makes SmolLM2-135M write past 64 tokens greedily, so both
/// servers generate `max_tokens` every time (the table prints the token counts to show it).
const QUESTIONS: [&str; 3] = [
    "Tell me a long story about a lighthouse keeper and a storm.",
    "Write a detailed essay about the history of the printing press.",
    "Explain in detail how a car engine works, step by step.",
];
/// How long a server may take to load the model and answer its health check.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// What both servers are given: the same model, threads and slots.
#[derive(Debug, Clone)]
pub struct ServerShape {
    /// The GGUF file.
    pub model: PathBuf,
    /// Decode threads.
    pub threads: usize,
    /// Sequences decoded together (`-np` for llama-server).
    pub slots: usize,
    /// Context of one sequence, in tokens (llama-server gets `-c slots * ctx_per_slot`).
    pub ctx_per_slot: u32,
    /// Our engine's prefix cache (llama-server keeps its own prompt cache on either way).
    pub prefix_cache: bool,
    /// Our engine's unified KV cache (`--kv-unified`).
    pub kv_unified: bool,
}

/// The closed-loop load of one cell.
#[derive(Debug, Clone)]
pub struct ChatLoad {
    /// The `model` field of each request.
    pub model_id: String,
    /// Concurrent clients.
    pub streams: usize,
    /// Requests each client sends, one after the other.
    pub per_stream: usize,
    /// `max_tokens` of each request (greedy, so both servers generate the same text).
    pub max_tokens: u32,
}

/// Figures of one closed-loop cell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadFigures {
    /// Requests completed.
    pub requests: usize,
    /// Completion tokens over all requests (from each answer's `usage`).
    pub tokens: u64,
    /// Aggregate completion tokens per second over the cell's wall time.
    pub tok_per_s: f64,
    /// Median time to the first text chunk, milliseconds.
    pub ttft_p50_ms: f64,
    /// 99th-percentile time to the first text chunk, milliseconds.
    pub ttft_p99_ms: f64,
}

/// The built-in engine behind a node (simulated TEE: attestation is not on the request path), on
/// loopback: the path a client's request takes in production.
#[derive(Debug)]
pub struct ServedBuiltin {
    /// Where the node listens.
    pub addr: SocketAddr,
    /// The id requests must name.
    pub model_id: String,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl ServedBuiltin {
    /// Loads the model with `shape`'s threads and slots and starts a node in front of it.
    pub async fn start(shape: &ServerShape) -> Result<Self> {
        let mut config = BuiltinConfig::new(shape.model.clone());
        config.threads = Some(shape.threads);
        config.slots = shape.slots;
        config.ctx_per_slot = shape.ctx_per_slot;
        config.prefix_cache = shape.prefix_cache;
        config.kv_unified = shape.kv_unified;
        let engine = BuiltinEngine::load_async(config).await?;
        let model_id = engine.model_id().to_owned();
        let crate::node::DevNode { addr, stop, server } =
            crate::node::DevNode::serve(Arc::new(engine), cloister_node::NodeConfig::default()).await?;
        Ok(Self {
            addr,
            model_id,
            stop,
            server,
        })
    }

    /// `http://addr`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the node (the engine's thread ends with its last handle).
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.server.await;
    }
}

/// A running `llama-server` child process, killed when dropped.
#[derive(Debug)]
pub struct LlamaServer {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its stdout and stderr.
    pub log: PathBuf,
}

impl LlamaServer {
    /// `given`, else `tools/llama.cpp/bin/llama-server`, else `llama-server` on `PATH`.
    pub fn find(given: Option<PathBuf>) -> Option<PathBuf> {
        super::find_tool(given, "llama-server")
    }

    /// Starts `bin` on `shape` (`-t`/`-tb` threads, `-np` slots, `-c` their total context) on a free
    /// loopback port, and waits until its health check answers 200.
    pub async fn start(bin: &Path, shape: &ServerShape) -> Result<Self> {
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log = std::env::temp_dir().join(format!("cloister-bench-llama-server-{port}.log"));
        let out =
            std::fs::File::create(&log).map_err(|e| Error::io(format!("creating {}", log.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| Error::io(format!("opening {}", log.display()), e))?;
        let threads = shape.threads.to_string();
        let ctx = (shape.slots as u64 * u64::from(shape.ctx_per_slot)).to_string();
        let child = Command::new(bin)
            .arg("-m")
            .arg(&shape.model)
            .args(["-t", &threads, "-tb", &threads])
            .args(["-np", &shape.slots.to_string(), "-c", &ctx])
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| Error::io(format!("starting {}", bin.display()), e))?;
        let mut server = Self { child, addr, log };
        server.wait_healthy().await?;
        Ok(server)
    }

    /// `http://addr`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn wait_healthy(&mut self) -> Result<()> {
        let http = http_client()?;
        let url = format!("{}{HEALTH_PATH}", self.base_url());
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(Error::NotWorking(format!(
                    "llama-server exited with {status} while starting; see {}",
                    self.log.display()
                )));
            }
            if let Ok(resp) = http.get(&url).send().await
                && resp.status().is_success()
            {
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(Error::NotWorking(format!(
                    "llama-server did not become healthy in {}s; see {}",
                    START_TIMEOUT.as_secs(),
                    self.log.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago (bound, read, released).
fn free_port() -> Result<u16> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io("finding a free port", e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("finding a free port", e))?;
    Ok(addr.port())
}

/// A client that opens a connection per request: llama-server may close a kept-alive connection just
/// as the next request goes out, and a loopback connect costs microseconds against a 64-token answer.
fn http_client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()?)
}

/// The body of request `n`: greedy, streamed, usage asked for.
fn chat_body(load: &ChatLoad, n: usize) -> serde_json::Value {
    serde_json::json!({
        "model": load.model_id,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": QUESTIONS[n % QUESTIONS.len()]},
        ],
        "max_tokens": load.max_tokens,
        "temperature": 0.0,
        "stream": true,
        "stream_options": {"include_usage": true},
    })
}

/// What one streamed answer gave.
struct Answer {
    ttft_ms: f64,
    tokens: u64,
}

/// Sends one streamed chat and reads it to the end.
async fn one_chat(http: &reqwest::Client, url: &str, body: &serde_json::Value) -> Result<Answer> {
    let sent = Instant::now();
    let resp = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, JSON_CONTENT_TYPE)
        .json(body)
        .send()
        .await?;
    let status = resp.status();
    if !status.is_success() {
        return Err(Error::Status {
            url: url.to_owned(),
            status,
        });
    }
    let mut lines = SseLines::default();
    let mut ttft_ms = None;
    let mut tokens = None;
    let mut bytes = resp.bytes_stream();
    while let Some(piece) = bytes.next().await {
        for data in lines.push(&piece?) {
            if data == SSE_DONE {
                continue;
            }
            let Ok(chunk) = serde_json::from_str::<Chunk>(&data) else {
                // Not a chat chunk (the node's signature event, for one).
                continue;
            };
            let has_text = chunk
                .choices
                .iter()
                .any(|c| c.delta.content.as_deref().is_some_and(|t| !t.is_empty()));
            if has_text && ttft_ms.is_none() {
                ttft_ms = Some(sent.elapsed().as_secs_f64() * 1e3);
            }
            if let Some(usage) = chunk.usage {
                tokens = Some(usage.completion_tokens);
            }
        }
    }
    match (ttft_ms, tokens) {
        (Some(ttft_ms), Some(tokens)) => Ok(Answer { ttft_ms, tokens }),
        _ => Err(Error::NotWorking(format!(
            "a streamed answer from {url} had no text or no usage"
        ))),
    }
}

/// Runs one closed-loop cell against the OpenAI-compatible server at `base_url`.
pub async fn closed_loop(base_url: &str, load: &ChatLoad) -> Result<LoadFigures> {
    let http = http_client()?;
    let url = format!("{base_url}{CHAT_COMPLETIONS_PATH}");
    let started = Instant::now();
    let clients = (0..load.streams).map(|s| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let mut answers = Vec::with_capacity(load.per_stream);
            for i in 0..load.per_stream {
                let body = chat_body(load, s * load.per_stream + i);
                answers.push(one_chat(&http, &url, &body).await?);
            }
            Ok::<_, Error>(answers)
        }
    });
    let per_client = futures::future::try_join_all(clients).await?;
    let secs = started.elapsed().as_secs_f64();
    let answers: Vec<Answer> = per_client.into_iter().flatten().collect();
    let tokens: u64 = answers.iter().map(|a| a.tokens).sum();
    let mut ttft: Vec<f64> = answers.iter().map(|a| a.ttft_ms).collect();
    ttft.sort_by(f64::total_cmp);
    Ok(LoadFigures {
        requests: answers.len(),
        tokens,
        tok_per_s: tokens as f64 / secs.max(f64::MIN_POSITIVE),
        ttft_p50_ms: percentile(&ttft, 0.50),
        ttft_p99_ms: percentile(&ttft, 0.99),
    })
}

/// The fields of a chat chunk this benchmark reads (both servers add others).
#[derive(serde::Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    usage: Option<ChunkUsage>,
}

#[derive(serde::Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: ChunkDelta,
}

#[derive(Default, serde::Deserialize)]
struct ChunkDelta {
    content: Option<String>,
}

#[derive(serde::Deserialize)]
struct ChunkUsage {
    completion_tokens: u64,
}

/// The `data:` lines of an event stream, split across reads at any byte.
#[derive(Default)]
struct SseLines {
    buf: Vec<u8>,
}

impl SseLines {
    fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(at) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let line = &self.buf[start..start + at];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let Some(data) = line.strip_prefix(b"data:") {
                let data = data.strip_prefix(b" ").unwrap_or(data);
                out.push(String::from_utf8_lossy(data).into_owned());
            }
            start += at + 1;
        }
        self.buf.drain(..start);
        out
    }
}

/// One cell of the report: both servers at one concurrency, every round.
#[derive(Debug, Clone)]
pub struct Cell {
    /// Concurrent clients.
    pub streams: usize,
    /// The built-in engine behind the node, one entry per round.
    pub ours: Vec<LoadFigures>,
    /// llama-server, one entry per round (empty without the peer).
    pub theirs: Vec<LoadFigures>,
}

/// Options of [`run`].
#[derive(Debug, Clone)]
pub struct ServeBenchOptions {
    /// Model, threads and slots of both servers.
    pub shape: ServerShape,
    /// Concurrencies to measure, e.g. 1, 4, 8.
    pub streams: Vec<usize>,
    /// Requests per client per cell.
    pub per_stream: usize,
    /// Tokens per request.
    pub max_tokens: u32,
    /// Rounds; ours and the peer alternate who goes first.
    pub rounds: usize,
}

/// Measures every concurrency in `opts.streams` for `opts.rounds` rounds, against `peer` (a
/// llama-server binary) when given. `progress(round, streams, name, figures)` sees each cell.
pub async fn run(
    opts: &ServeBenchOptions,
    peer: Option<&Path>,
    mut progress: impl FnMut(usize, usize, &str, &LoadFigures),
) -> Result<Vec<Cell>> {
    let ours = ServedBuiltin::start(&opts.shape).await?;
    let theirs = match peer {
        Some(bin) => Some(LlamaServer::start(bin, &opts.shape).await?),
        None => None,
    };
    let load = |streams, per_stream| ChatLoad {
        model_id: ours.model_id.clone(),
        streams,
        per_stream,
        max_tokens: opts.max_tokens,
    };
    // Warm-up: first requests page weights in and size buffers; nothing of them is counted.
    let warm = load(opts.streams.iter().copied().max().unwrap_or(1), 1);
    closed_loop(&ours.base_url(), &warm).await?;
    if let Some(peer) = &theirs {
        closed_loop(&peer.base_url(), &warm).await?;
    }
    let mut cells: Vec<Cell> = opts
        .streams
        .iter()
        .map(|&streams| Cell {
            streams,
            ours: Vec::new(),
            theirs: Vec::new(),
        })
        .collect();
    for round in 1..=opts.rounds {
        for cell in &mut cells {
            let load = load(cell.streams, opts.per_stream);
            let peer_first = round % 2 == 0;
            if peer_first && let Some(peer) = &theirs {
                let f = closed_loop(&peer.base_url(), &load).await?;
                progress(round, cell.streams, "llama-server", &f);
                cell.theirs.push(f);
            }
            let f = closed_loop(&ours.base_url(), &load).await?;
            progress(round, cell.streams, "cloister", &f);
            cell.ours.push(f);
            if !peer_first && let Some(peer) = &theirs {
                let f = closed_loop(&peer.base_url(), &load).await?;
                progress(round, cell.streams, "llama-server", &f);
                cell.theirs.push(f);
            }
        }
    }
    drop(theirs);
    ours.stop().await;
    Ok(cells)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn sse_lines_survive_any_split() {
        let stream = b"data: {\"a\":1}\r\n\nevent: cloister.signature\ndata: x\n\ndata: [DONE]\n\n";
        for cut in 0..stream.len() {
            let mut lines = SseLines::default();
            let mut got = lines.push(&stream[..cut]);
            got.extend(lines.push(&stream[cut..]));
            assert_eq!(got, ["{\"a\":1}", "x", "[DONE]"], "cut at {cut}");
        }
    }

    #[test]
    fn chunks_of_both_servers_parse() {
        let ours = r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#;
        let theirs_usage = r#"{"choices":[],"created":1,"id":"c","model":"m","object":"chat.completion.chunk","usage":{"completion_tokens":64,"prompt_tokens":30,"total_tokens":94},"timings":{"predicted_n":64}}"#;
        let role_only =
            r#"{"choices":[{"finish_reason":null,"index":0,"delta":{"role":"assistant","content":null}}]}"#;
        let c: Chunk = serde_json::from_str(ours).unwrap();
        assert_eq!(c.choices[0].delta.content.as_deref(), Some("Hi"));
        let c: Chunk = serde_json::from_str(theirs_usage).unwrap();
        assert_eq!(c.usage.map(|u| u.completion_tokens), Some(64));
        let c: Chunk = serde_json::from_str(role_only).unwrap();
        assert_eq!(c.choices[0].delta.content, None);
    }
}
