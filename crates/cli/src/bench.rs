//! `cloister bench`: measured against a peer in the same run, ratios printed.
//!
//! - `overhead`: a node in front of a fast loopback OpenAI-compatible upstream, against calling that
//!   upstream directly, interleaved in rounds. Requests/s and p50/p99 latency, and what the node adds.
//! - `engine`: built-in engine tokens/s against llama.cpp's `llama-bench` on the same GGUF and threads.
//! - `quote`: quote verification through Cloister's layer against dcap-qvl directly (`bench_quote`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Router;
use axum::routing::{get, post};
use bytes::Bytes;
use clap::{Args, Subcommand};
use cloister_attest::collect::{DetectOptions, detect};
use cloister_engine::upstream::{UpstreamConfig, UpstreamEngine};
use futures::StreamExt;
use futures::stream::FuturesUnordered;

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Node overhead in front of an upstream, against the upstream called directly.
    Overhead(OverheadArgs),
    /// Built-in engine tokens/s against llama.cpp (llama-bench) on the same model and threads.
    Engine(EngineArgs),
    /// Quote verification through Cloister's layer against dcap-qvl called directly.
    Quote(crate::bench_quote::QuoteArgs),
    /// E2EE cost: crypto per request and per stream chunk, and the latency the sealed path and the
    /// proxy add, against the unencrypted path in the same run.
    E2ee(crate::bench_e2ee::E2eeArgs),
}

/// `cloister bench overhead`.
#[derive(Debug, Args)]
pub(crate) struct OverheadArgs {
    /// Requests per round per target.
    #[arg(long, default_value_t = 1000)]
    pub requests: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Rounds (direct and via-node interleaved).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Streamed requests instead of plain ones.
    #[arg(long)]
    pub stream: bool,
}

/// `cloister bench engine`.
#[derive(Debug, Args)]
pub(crate) struct EngineArgs {
    /// GGUF model.
    #[arg(
        long,
        env = "CLOISTER_MODEL",
        default_value = "models/SmolLM2-135M-Instruct.Q4_1.gguf"
    )]
    pub model: PathBuf,
    /// Threads for both engines.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Tokens to generate.
    #[arg(long = "gen", default_value_t = 128)]
    pub tokens: u32,
    /// Rounds (ours and llama.cpp interleaved).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// llama-bench binary [default: tools/llama.cpp/bin/llama-bench, then PATH].
    #[arg(long, env = "LLAMA_BENCH")]
    pub llama_bench: Option<PathBuf>,
}

pub(crate) async fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Overhead(args) => overhead(args).await,
        BenchCommand::Engine(args) => engine(args).await,
        BenchCommand::Quote(args) => crate::bench_quote::quote(args),
        BenchCommand::E2ee(args) => crate::bench_e2ee::e2ee(args).await,
    }
}

// ---------------------------------------------------------------------------------------------
// overhead

pub(crate) const REFERENCE_ANSWER: &str = r#"{"id":"chatcmpl-ref","object":"chat.completion","created":1700000000,"model":"ref-model","choices":[{"index":0,"message":{"role":"assistant","content":"The sky is blue because air scatters short wavelengths of sunlight more than long ones."},"finish_reason":"stop"}],"usage":{"prompt_tokens":24,"completion_tokens":17,"total_tokens":41}}"#;

pub(crate) fn reference_stream() -> String {
    let words = [
        "The",
        " sky",
        " is",
        " blue",
        " because",
        " air",
        " scatters",
        " blue",
        " light",
        ".",
    ];
    let mut out = String::new();
    for (i, w) in words.iter().enumerate() {
        let role = if i == 0 { r#""role":"assistant","# } else { "" };
        out.push_str(&format!(
            "data: {{\"id\":\"chatcmpl-ref\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"ref-model\",\"choices\":[{{\"index\":0,\"delta\":{{{role}\"content\":\"{w}\"}},\"finish_reason\":null}}]}}\n\n"
        ));
    }
    out.push_str("data: {\"id\":\"chatcmpl-ref\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"ref-model\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n");
    out.push_str("data: {\"id\":\"chatcmpl-ref\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"ref-model\",\"choices\":[],\"usage\":{\"prompt_tokens\":24,\"completion_tokens\":10,\"total_tokens\":34}}\n\n");
    out.push_str("data: [DONE]\n\n");
    out
}

/// A minimal OpenAI-compatible upstream on loopback that answers instantly: the fastest possible
/// upstream, so the comparison isolates what the node itself adds.
pub(crate) async fn start_reference_upstream() -> anyhow::Result<SocketAddr> {
    let stream_body = Bytes::from(reference_stream());
    let app = Router::new()
        .route(
            "/v1/models",
            get(|| async {
                ([("content-type", "application/json")], r#"{"object":"list","data":[{"id":"ref-model","object":"model","created":0,"owned_by":"bench"}]}"#)
            }),
        )
        .route(
            "/v1/chat/completions",
            post(move |body: Bytes| {
                let stream_body = stream_body.clone();
                async move {
                    let wants_stream = serde_json::from_slice::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v.get("stream").and_then(|s| s.as_bool()))
                        .unwrap_or(false);
                    if wants_stream {
                        ([("content-type", "text/event-stream")], stream_body)
                    } else {
                        ([("content-type", "application/json")], Bytes::from_static(REFERENCE_ANSWER.as_bytes()))
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Throughput and latency of one load round.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RoundStats {
    pub(crate) rps: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
}

/// Runs `requests` calls of `one` with `concurrency` in flight.
pub(crate) async fn load_round<F, Fut>(
    requests: usize,
    concurrency: usize,
    one: F,
) -> anyhow::Result<RoundStats>
where
    F: Fn() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let timed = |fut: Fut| async move {
        let t = Instant::now();
        fut.await?;
        Ok::<f64, anyhow::Error>(t.elapsed().as_secs_f64() * 1000.0)
    };
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(requests);
    let mut inflight = FuturesUnordered::new();
    let mut sent = 0;
    while sent < requests.min(concurrency) {
        inflight.push(timed(one()));
        sent += 1;
    }
    while let Some(r) = inflight.next().await {
        latencies.push(r?);
        if sent < requests {
            inflight.push(timed(one()));
            sent += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(|a, b| a.total_cmp(b));
    Ok(RoundStats {
        rps: requests as f64 / elapsed,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
    })
}

pub(crate) fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

/// A node (simulated TEE: the benchmark machine has none; attestation is not on the request path)
/// in front of the zero-work reference upstream, on loopback.
pub(crate) struct BenchNode {
    /// The reference upstream.
    pub(crate) upstream: std::net::SocketAddr,
    /// The node.
    pub(crate) node: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl BenchNode {
    /// Starts the upstream and the node, admitting at least `concurrency` requests at once.
    pub(crate) async fn start(concurrency: usize) -> anyhow::Result<Self> {
        let upstream = start_reference_upstream().await?;
        let engine = UpstreamEngine::connect(UpstreamConfig {
            base_url: format!("http://{upstream}/v1"),
            api_key: None,
            models: vec!["ref-model".into()],
            timeout: Duration::from_secs(30),
        })
        .await
        .context("connecting the node to the reference upstream")?;
        let attester = detect(&DetectOptions {
            dev_simulated: true,
            ..Default::default()
        })
        .await?;
        let key = Arc::new(cloister_node::start_key(attester.as_ref()).await);
        let mut config = cloister_node::NodeConfig::default();
        config.max_concurrent_requests = config.max_concurrent_requests.max(concurrency);
        let state = cloister_node::AppState::new(Arc::new(engine), attester, key, config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let node = listener.local_addr()?;
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(cloister_node::serve(listener, state, async move {
            let _ = stop_rx.await;
        }));
        Ok(Self {
            upstream,
            node,
            stop,
            server,
        })
    }

    /// Stops the node (the upstream stops with the process).
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.server.await;
    }
}

async fn overhead(args: OverheadArgs) -> anyhow::Result<ExitCode> {
    let bench = BenchNode::start(args.concurrency * 2).await?;
    let upstream_url = format!("http://{}/v1", bench.upstream);
    let node = bench.node;

    let body = Bytes::from(serde_json::to_vec(&serde_json::json!({
        "model": "ref-model",
        "messages": [{"role": "user", "content": "Why is the sky blue?"}],
        "max_tokens": 32,
        "stream": args.stream,
    }))?);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency * 2)
        .build()?;
    let direct_url = format!("{upstream_url}/chat/completions");
    let node_url = format!("http://{node}/v1/chat/completions");
    // Warm up both paths (connection pools, first-request allocations).
    let to_upstream = || post_json(client.clone(), direct_url.clone(), body.clone());
    let through_node = || post_json(client.clone(), node_url.clone(), body.clone());
    load_round(50, args.concurrency, to_upstream).await?;
    load_round(50, args.concurrency, through_node).await?;

    let mut direct = Vec::new();
    let mut via_node = Vec::new();
    for round in 1..=args.rounds {
        let d = load_round(args.requests, args.concurrency, to_upstream).await?;
        let n = load_round(args.requests, args.concurrency, through_node).await?;
        eprintln!(
            "round {round}: direct {:.0} req/s p50 {:.3} ms p99 {:.3} ms | via node {:.0} req/s p50 {:.3} ms p99 {:.3} ms",
            d.rps, d.p50_ms, d.p99_ms, n.rps, n.p50_ms, n.p99_ms
        );
        direct.push(d);
        via_node.push(n);
    }
    bench.stop().await;

    let d_rps = median(direct.iter().map(|s| s.rps));
    let n_rps = median(via_node.iter().map(|s| s.rps));
    let d50 = median(direct.iter().map(|s| s.p50_ms));
    let n50 = median(via_node.iter().map(|s| s.p50_ms));
    let d99 = median(direct.iter().map(|s| s.p99_ms));
    let n99 = median(via_node.iter().map(|s| s.p99_ms));
    println!(
        "node overhead ({} requests x {} rounds, concurrency {}, {}; medians over rounds)",
        args.requests,
        args.rounds,
        args.concurrency,
        if args.stream { "streamed" } else { "plain" }
    );
    println!("| path | req/s | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|");
    println!("| upstream direct | {d_rps:.0} | {d50:.3} | {d99:.3} |");
    println!(
        "| through node (second HTTP hop, parse, re-serialise, hash, sign) | {n_rps:.0} | {n50:.3} | {n99:.3} |"
    );
    println!(
        "ratio node/direct throughput {:.2}x; added latency p50 {:+.3} ms, p99 {:+.3} ms",
        n_rps / d_rps.max(f64::MIN_POSITIVE),
        n50 - d50,
        n99 - d99
    );
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------------
// engine

#[derive(Debug, serde::Deserialize)]
struct LlamaBenchRow {
    n_prompt: u32,
    n_gen: u32,
    avg_ts: f64,
}

fn find_llama_bench(given: Option<PathBuf>) -> Option<PathBuf> {
    if let Some(p) = given {
        return Some(p);
    }
    let local = PathBuf::from("tools/llama.cpp/bin/llama-bench");
    if local.is_file() {
        return Some(local);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("llama-bench"))
            .find(|p| p.is_file())
    })
}

fn run_llama_bench(bin: &std::path::Path, args: &EngineArgs, n_prompt: u32) -> anyhow::Result<(f64, f64)> {
    let out = std::process::Command::new(bin)
        .args(["-m"])
        .arg(&args.model)
        .args([
            "-t",
            &args.threads.to_string(),
            "-p",
            &n_prompt.to_string(),
            "-n",
            &args.tokens.to_string(),
        ])
        .args(["-r", "1", "-o", "json"])
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!("llama-bench failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let rows: Vec<LlamaBenchRow> =
        serde_json::from_slice(&out.stdout).context("llama-bench -o json output")?;
    let pp = rows
        .iter()
        .find(|r| r.n_prompt > 0 && r.n_gen == 0)
        .map(|r| r.avg_ts)
        .unwrap_or(0.0);
    let tg = rows
        .iter()
        .find(|r| r.n_gen > 0 && r.n_prompt == 0)
        .map(|r| r.avg_ts)
        .unwrap_or(0.0);
    Ok((pp, tg))
}

async fn engine(args: EngineArgs) -> anyhow::Result<ExitCode> {
    use cloister_engine::builtin::{BuiltinConfig, BuiltinEngine};
    let mut config = BuiltinConfig::new(args.model.clone());
    config.threads = Some(args.threads);
    config.slots = 1;
    let engine = tokio::task::spawn_blocking(move || BuiltinEngine::load(config))
        .await
        .context("load task")?
        .with_context(|| format!("loading {}", args.model.display()))?;
    let engine = Arc::new(engine);
    let peer = find_llama_bench(args.llama_bench.clone());
    if peer.is_none() {
        eprintln!(
            "llama-bench not found (run scripts/build-llama-cpp.sh, or pass --llama-bench): measuring ours only"
        );
    }
    let prompt = "Explain in a few sentences why the sky is blue.";
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for round in 1..=args.rounds {
        let e = engine.clone();
        let n_gen = args.tokens;
        let figures = tokio::task::spawn_blocking(move || e.bench_decode(prompt, n_gen))
            .await
            .context("bench task")??;
        eprintln!(
            "round {round}: cloister pp{} {:.1} tok/s, tg{} {:.1} tok/s",
            figures.prompt_tokens, figures.prompt_tok_per_s, figures.gen_tokens, figures.gen_tok_per_s
        );
        if let Some(bin) = &peer {
            let (pp, tg) = run_llama_bench(bin, &args, figures.prompt_tokens as u32)?;
            eprintln!(
                "round {round}: llama.cpp pp{} {pp:.1} tok/s, tg{} {tg:.1} tok/s",
                figures.prompt_tokens, args.tokens
            );
            theirs.push((pp, tg));
        }
        ours.push(figures);
    }
    let our_pp = median(ours.iter().map(|f| f.prompt_tok_per_s));
    let our_tg = median(ours.iter().map(|f| f.gen_tok_per_s));
    let n_prompt = ours.first().map(|f| f.prompt_tokens).unwrap_or(0);
    println!(
        "engine throughput ({}, {} threads, prompt {} tokens, {} generated; medians of {} rounds)",
        args.model.display(),
        args.threads,
        n_prompt,
        args.tokens,
        args.rounds
    );
    println!("| engine | prompt tok/s | generation tok/s |");
    println!("|---|---:|---:|");
    println!("| cloister built-in (llama-cpp-2) | {our_pp:.1} | {our_tg:.1} |");
    if !theirs.is_empty() {
        let pp = median(theirs.iter().map(|t| t.0));
        let tg = median(theirs.iter().map(|t| t.1));
        println!("| llama.cpp llama-bench | {pp:.1} | {tg:.1} |");
        println!(
            "ratio cloister/llama.cpp: prompt {:.2}x, generation {:.2}x",
            our_pp / pp.max(f64::MIN_POSITIVE),
            our_tg / tg.max(f64::MIN_POSITIVE)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A plain JSON POST whose whole answer is read; a failed or empty answer is an error.
pub(crate) async fn post_json(client: reqwest::Client, url: String, body: Bytes) -> anyhow::Result<()> {
    let resp = client
        .post(&url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    let status = resp.status();
    let bytes = resp.bytes().await?;
    if !status.is_success() || bytes.is_empty() {
        bail!("{url} answered {status}");
    }
    Ok(())
}
