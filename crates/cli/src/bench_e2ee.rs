//! `cloister bench e2ee`: what end-to-end encryption costs, against the unencrypted path measured in
//! the same run.
//!
//! 1. Crypto alone, per request (client seals, node opens, node seals the answer, client opens) and
//!    per stream chunk (seal + open of one SSE event), beside the signature work every request
//!    already pays (hash both bodies, sign, recover).
//! 2. Latency and throughput against a zero-work upstream: client → node unencrypted (the
//!    baseline: a bare POST), the same through `cloister-client` with E2EE off (signature checked),
//!    sealed through `cloister-client`, and client → `cloister proxy` → node sealed (what an OpenAI
//!    SDK sees), interleaved in rounds.
//!
//! The measuring is `cloister-bench`'s ([`cloister_bench::e2ee`]); this file parses flags and prints.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use cloister_bench::e2ee::{CryptoFigures, LatencyOptions, LatencyRound, crypto, latency};
use cloister_bench::stats::{RoundStats, median};
use cloister_bench::upstream::reference_request;

/// `cloister bench e2ee`.
#[derive(Debug, Args)]
pub(crate) struct E2eeArgs {
    /// Requests per round per path.
    #[arg(long, default_value_t = 500)]
    pub requests: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Rounds (paths interleaved).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Iterations of the crypto micro-benchmarks.
    #[arg(long, default_value_t = 5000)]
    pub iterations: usize,
    /// Streamed requests instead of plain ones (latency part).
    #[arg(long)]
    pub stream: bool,
}

fn print_crypto(f: &CryptoFigures) {
    let CryptoFigures {
        iterations: n,
        signing_us: signing,
        per_request_us: per_request,
        per_chunk_us: per_chunk,
        ..
    } = *f;
    println!(
        "E2EE crypto ({n} iterations; request {} B, answer {} B, stream event {} B; node X25519: {})",
        f.request_len,
        f.answer_len,
        f.event_len,
        cloister_crypto::e2ee::x25519_backend()
    );
    println!("| work | µs | ratio to the signature work every request already pays |");
    println!("|---|---:|---:|");
    println!("| signature: hash request + answer, sign, recover (unencrypted path) | {signing:.1} | 1.00x |");
    println!(
        "| E2EE per request: seal + open request, seal + open answer | {per_request:.1} | {:.2}x |",
        per_request / signing.max(f64::MIN_POSITIVE)
    );
    println!(
        "| E2EE per stream chunk: seal + open one SSE event | {per_chunk:.2} | {:.3}x |",
        per_chunk / signing.max(f64::MIN_POSITIVE)
    );
    println!();
    println!("| step, one side at a time | µs |");
    println!("|---|---:|");
    for (step, us) in &f.steps {
        println!("| {step} | {us:.2} |");
    }
    println!();
}

pub(crate) async fn e2ee(args: E2eeArgs) -> anyhow::Result<ExitCode> {
    let body = reference_request(args.stream)?;
    print_crypto(&crypto(args.iterations, &body)?);

    let opts = LatencyOptions {
        requests: args.requests,
        concurrency: args.concurrency,
        rounds: args.rounds,
        stream: args.stream,
    };
    let rounds = latency(opts, |round, r: &LatencyRound| {
        eprintln!(
            "round {round}: unencrypted p50 {:.3} ms | verified, clear {:.3} ms | sealed + verified {:.3} ms | via proxy {:.3} ms",
            r.unencrypted.p50_ms, r.verified_clear.p50_ms, r.sealed.p50_ms, r.via_proxy.p50_ms
        );
    })
    .await
    .context("the E2EE latency benchmark")?;
    let a: Vec<RoundStats> = rounds.iter().map(|r| r.unencrypted).collect();
    let v: Vec<RoundStats> = rounds.iter().map(|r| r.verified_clear).collect();
    let b: Vec<RoundStats> = rounds.iter().map(|r| r.sealed).collect();
    let c: Vec<RoundStats> = rounds.iter().map(|r| r.via_proxy).collect();

    let row = |name: &str, s: &[RoundStats], base: &[RoundStats]| {
        let RoundStats {
            rps,
            p50_ms: p50,
            p99_ms: p99,
        } = RoundStats::median_of(s);
        let b50 = median(base.iter().map(|s| s.p50_ms));
        println!(
            "| {name} | {rps:.0} | {p50:.3} | {p99:.3} | {:.2}x | {:+.3} |",
            p50 / b50.max(f64::MIN_POSITIVE),
            p50 - b50
        );
    };
    println!(
        "E2EE latency against a zero-work upstream ({} requests x {} rounds, concurrency {}, {}; medians over rounds)",
        args.requests,
        args.rounds,
        args.concurrency,
        if args.stream { "streamed" } else { "plain" }
    );
    println!("| path | req/s | p50 ms | p99 ms | p50 ratio to unencrypted | p50 added ms |");
    println!("|---|---:|---:|---:|---:|---:|");
    row("client → node, unencrypted (baseline)", &a, &a);
    row(
        "client → node, in clear, signature verified (cloister-client, E2EE off)",
        &v,
        &a,
    );
    row("client → node, sealed + verified (cloister-client)", &b, &a);
    row("client → cloister proxy → node, sealed + verified", &c, &a);
    Ok(ExitCode::SUCCESS)
}
