//! `cloister bench`: measured against a peer in the same run, ratios printed. The measuring is
//! `cloister-bench`'s; this file parses flags and prints.
//!
//! - `overhead`: a node in front of a fast loopback OpenAI-compatible upstream, against calling that
//!   upstream directly, interleaved in rounds. Requests/s and p50/p99 latency, and what the node adds.
//! - `engine`: the built-in engine served by a node against llama.cpp's `llama-server` under 1, 4 and 8
//!   concurrent streamed chats (aggregate tokens/s, TTFT), or (`--against llama-bench`) single-stream
//!   decode against `llama-bench`; same GGUF and threads.
//! - `quote`: quote verification through Cloister's layer against dcap-qvl directly (`bench_quote`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use cloister_bench::engine::serve::{Cell, LlamaServer, LoadFigures, ServeBenchOptions, ServerShape};
use cloister_bench::engine::{LlamaBench, decode, load_builtin};
use cloister_bench::overhead::{OverheadOptions, run as run_overhead};
use cloister_bench::stats::{RoundStats, median};

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Node overhead in front of an upstream, against the upstream called directly.
    Overhead(OverheadArgs),
    /// Built-in engine against llama.cpp (llama-server under load, or llama-bench) on the same model
    /// and threads.
    Engine(EngineArgs),
    /// Quote verification through Cloister's layer against dcap-qvl called directly.
    Quote(crate::bench_quote::QuoteArgs),
    /// E2EE cost: crypto per request and per stream chunk, and the latency the sealed path and the
    /// proxy add, against the unencrypted path in the same run.
    E2ee(crate::bench_e2ee::E2eeArgs),
    /// Embeddings: the built-in engine against sentence-transformers on the same sentences, batch
    /// size and threads.
    Embeddings(crate::bench_embeddings::EmbeddingsArgs),
    /// The gateway: three paid nodes behind it against the same clients going straight to them,
    /// then one node killed mid-run.
    Gateway(crate::bench_gateway::GatewayBenchArgs),
    /// Serve the zero-work reference upstream of `overhead` on its own (a test double of an
    /// OpenAI-compatible server), for an external load generator: scripts/profile/node-goals.sh.
    Upstream(UpstreamArgs),
}

/// `cloister bench upstream`.
#[derive(Debug, Args)]
pub(crate) struct UpstreamArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:18400")]
    pub listen: std::net::SocketAddr,
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
    /// The peer: llama-server under concurrent streamed chats, or llama-bench's single-stream decode.
    #[arg(long, value_enum, default_value_t = Peer::LlamaServer)]
    pub against: Peer,
    /// Tokens to generate per request [default: 64 against llama-server, 128 against llama-bench].
    #[arg(long = "gen")]
    pub tokens: Option<u32>,
    /// Rounds (ours and llama.cpp interleaved) [default: 2 against llama-server, 3 against llama-bench].
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Concurrent closed-loop clients, one cell each (llama-server only).
    #[arg(long, value_delimiter = ',', default_value = "1,4,8")]
    pub streams: Vec<usize>,
    /// Requests each client sends per cell (llama-server only).
    #[arg(long, default_value_t = 6)]
    pub per_stream: usize,
    /// Slots of both servers (llama-server's `-np`; llama-server only).
    #[arg(long, default_value_t = 8)]
    pub slots: usize,
    /// Context per slot, in tokens (llama-server gets `-c slots * ctx-per-slot`; llama-server only).
    #[arg(long, default_value_t = 2048)]
    pub ctx_per_slot: u32,
    /// Turn our engine's prefix cache off (llama-server keeps its prompt cache; llama-server only).
    #[arg(long)]
    pub no_prefix_cache: bool,
    /// Our engine with one pool of KV cells for all slots (`cloister node run --kv-unified`;
    /// llama-server only).
    #[arg(long)]
    pub kv_unified: bool,
    /// llama-bench binary [default: tools/llama.cpp/bin/llama-bench, then PATH].
    #[arg(long, env = "LLAMA_BENCH")]
    pub llama_bench: Option<PathBuf>,
    /// llama-server binary [default: tools/llama.cpp/bin/llama-server, then PATH].
    #[arg(long, env = "LLAMA_SERVER")]
    pub llama_server: Option<PathBuf>,
}

/// The llama.cpp tool `cloister bench engine` measures against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Peer {
    /// `llama-server`, served, under concurrent closed-loop streamed chats.
    LlamaServer,
    /// `llama-bench`, single-stream prompt processing and decode.
    LlamaBench,
}

pub(crate) async fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Overhead(args) => overhead(args).await,
        BenchCommand::Engine(args) => match args.against {
            Peer::LlamaServer => engine_served(args).await,
            Peer::LlamaBench => engine(args).await,
        },
        BenchCommand::Quote(args) => crate::bench_quote::quote(args),
        BenchCommand::E2ee(args) => crate::bench_e2ee::e2ee(args).await,
        BenchCommand::Gateway(args) => crate::bench_gateway::gateway(args).await,
        BenchCommand::Embeddings(args) => crate::bench_embeddings::embeddings(args).await,
        BenchCommand::Upstream(args) => upstream(args).await,
    }
}

async fn upstream(args: UpstreamArgs) -> anyhow::Result<ExitCode> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    eprintln!(
        "reference upstream (answers at once, canned) on http://{}/v1; Ctrl-C stops it",
        args.listen
    );
    axum::serve(listener, cloister_bench::upstream::reference_router())
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("serving the reference upstream")?;
    Ok(ExitCode::SUCCESS)
}

async fn overhead(args: OverheadArgs) -> anyhow::Result<ExitCode> {
    let opts = OverheadOptions {
        requests: args.requests,
        concurrency: args.concurrency,
        rounds: args.rounds,
        stream: args.stream,
    };
    let report = run_overhead(opts, |round, d, n| {
        eprintln!(
            "round {round}: direct {:.0} req/s p50 {:.3} ms p99 {:.3} ms | via node {:.0} req/s p50 {:.3} ms p99 {:.3} ms",
            d.rps, d.p50_ms, d.p99_ms, n.rps, n.p50_ms, n.p99_ms
        );
    })
    .await?;
    let RoundStats {
        rps: d_rps,
        p50_ms: d50,
        p99_ms: d99,
    } = RoundStats::median_of(&report.direct);
    let RoundStats {
        rps: n_rps,
        p50_ms: n50,
        p99_ms: n99,
    } = RoundStats::median_of(&report.via_node);
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

async fn engine_served(args: EngineArgs) -> anyhow::Result<ExitCode> {
    let opts = ServeBenchOptions {
        shape: ServerShape {
            model: args.model.clone(),
            threads: args.threads,
            slots: args.slots,
            ctx_per_slot: args.ctx_per_slot,
            prefix_cache: !args.no_prefix_cache,
            kv_unified: args.kv_unified,
        },
        streams: args.streams.clone(),
        per_stream: args.per_stream,
        max_tokens: args.tokens.unwrap_or(64),
        rounds: args.rounds.unwrap_or(2),
    };
    let peer = LlamaServer::find(args.llama_server.clone());
    if peer.is_none() {
        eprintln!(
            "llama-server not found (run scripts/build-llama-cpp.sh, or pass --llama-server): measuring ours only"
        );
    }
    let cells = cloister_bench::engine::serve::run(&opts, peer.as_deref(), |round, streams, name, f| {
        eprintln!(
            "round {round}: {streams} streams, {name}: {:.1} tok/s ({} requests, {} tokens), TTFT p50 {:.1} ms p99 {:.1} ms",
            f.tok_per_s, f.requests, f.tokens, f.ttft_p50_ms, f.ttft_p99_ms
        );
    })
    .await
    .with_context(|| format!("serving {}", args.model.display()))?;
    println!(
        "engine under load ({}, {} threads, {} slots / -np {}, closed-loop streamed chats of {} tokens, {} per stream; our prefix cache {}, KV {}; medians of {} rounds)",
        args.model.display(),
        args.threads,
        args.slots,
        args.slots,
        opts.max_tokens,
        opts.per_stream,
        if args.no_prefix_cache {
            "off".to_owned()
        } else {
            format!(
                "on, {} MiB in host memory",
                cloister_engine::builtin::DEFAULT_PROMPT_CACHE_MIB
            )
        },
        if args.kv_unified { "unified" } else { "per slot" },
        opts.rounds
    );
    println!(
        "| streams | cloister tok/s | llama-server tok/s | ratio | TTFT p50 cloister | TTFT p50 llama-server | TTFT p50 ratio | TTFT p99 cloister | TTFT p99 llama-server |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for cell in &cells {
        print_cell(cell);
    }
    Ok(ExitCode::SUCCESS)
}

/// One table row: medians over rounds, ratios cloister / llama-server.
fn print_cell(cell: &Cell) {
    let med = |v: &[LoadFigures], f: fn(&LoadFigures) -> f64| median(v.iter().map(f));
    let (tps, p50, p99) = (
        med(&cell.ours, |f| f.tok_per_s),
        med(&cell.ours, |f| f.ttft_p50_ms),
        med(&cell.ours, |f| f.ttft_p99_ms),
    );
    if cell.theirs.is_empty() {
        println!(
            "| {} | {tps:.1} | - | - | {p50:.1} ms | - | - | {p99:.1} ms | - |",
            cell.streams
        );
        return;
    }
    let (peer_tps, peer_p50, peer_p99) = (
        med(&cell.theirs, |f| f.tok_per_s),
        med(&cell.theirs, |f| f.ttft_p50_ms),
        med(&cell.theirs, |f| f.ttft_p99_ms),
    );
    println!(
        "| {} | {tps:.1} | {peer_tps:.1} | {:.2}x | {p50:.1} ms | {peer_p50:.1} ms | {:.2}x | {p99:.1} ms | {peer_p99:.1} ms |",
        cell.streams,
        tps / peer_tps.max(f64::MIN_POSITIVE),
        p50 / peer_p50.max(f64::MIN_POSITIVE),
    );
}

async fn engine(args: EngineArgs) -> anyhow::Result<ExitCode> {
    let (tokens, rounds) = (args.tokens.unwrap_or(128), args.rounds.unwrap_or(3));
    let engine = load_builtin(args.model.clone(), args.threads)
        .await
        .with_context(|| format!("loading {}", args.model.display()))?;
    let peer = LlamaBench::find(args.llama_bench.clone());
    if peer.is_none() {
        eprintln!(
            "llama-bench not found (run scripts/build-llama-cpp.sh, or pass --llama-bench): measuring ours only"
        );
    }
    let prompt = "Explain in a few sentences why the sky is blue.";
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for round in 1..=rounds {
        let figures = decode(&engine, prompt, tokens).await?;
        eprintln!(
            "round {round}: cloister pp{} {:.1} tok/s, tg{} {:.1} tok/s",
            figures.prompt_tokens, figures.prompt_tok_per_s, figures.gen_tokens, figures.gen_tok_per_s
        );
        if let Some(bin) = &peer {
            let (pp, tg) = bin.run(&args.model, args.threads, figures.prompt_tokens as u32, tokens)?;
            eprintln!(
                "round {round}: llama.cpp pp{} {pp:.1} tok/s, tg{} {tg:.1} tok/s",
                figures.prompt_tokens, tokens
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
        tokens,
        rounds
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
