//! `cloister bench gateway`: three paid nodes behind the gateway, against the same clients going
//! straight to the nodes, in one run; then one node killed mid-run. The measuring is
//! `cloister_bench::gateway`'s; this file parses flags and prints.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use cloister_bench::gateway::{GatewayBenchOptions, run};
use cloister_bench::stats::RoundStats;

/// `cloister bench gateway`.
#[derive(Debug, Args)]
pub(crate) struct GatewayBenchArgs {
    /// Requests per round per path (and in the fault run).
    #[arg(long, default_value_t = 2000)]
    pub requests: usize,
    /// Requests in flight at once (the clients).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Rounds (direct and via the gateway interleaved).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Streamed requests instead of plain ones.
    #[arg(long)]
    pub stream: bool,
}

pub(crate) async fn gateway(args: GatewayBenchArgs) -> anyhow::Result<ExitCode> {
    let cloister = std::env::current_exe().context("finding the cloister binary for the nodes")?;
    let opts = GatewayBenchOptions {
        cloister,
        requests: args.requests,
        concurrency: args.concurrency,
        rounds: args.rounds,
        stream: args.stream,
    };
    eprintln!("starting anvil, 3 paid nodes, a gateway and two proxies ...");
    let (rounds, fault) = run(opts, |round, r| {
        eprintln!(
            "round {round}: direct {:.0} req/s p50 {:.3} ms p99 {:.3} ms | via gateway {:.0} req/s p50 {:.3} ms p99 {:.3} ms",
            r.direct.rps, r.direct.p50_ms, r.direct.p99_ms, r.via_gateway.rps, r.via_gateway.p50_ms, r.via_gateway.p99_ms
        );
    })
    .await?;
    let direct = RoundStats::median_of(&rounds.iter().map(|r| r.direct).collect::<Vec<_>>());
    let via = RoundStats::median_of(&rounds.iter().map(|r| r.via_gateway).collect::<Vec<_>>());
    println!(
        "gateway ({} requests x {} rounds, {} clients in flight, {}, paid and sealed; medians over rounds)",
        args.requests,
        args.rounds,
        args.concurrency,
        if args.stream { "streamed" } else { "plain" }
    );
    println!("| path | req/s | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|");
    println!(
        "| proxy -> 3 nodes | {:.0} | {:.3} | {:.3} |",
        direct.rps, direct.p50_ms, direct.p99_ms
    );
    println!(
        "| proxy -> gateway -> 3 nodes | {:.0} | {:.3} | {:.3} |",
        via.rps, via.p50_ms, via.p99_ms
    );
    println!(
        "ratio gateway/direct throughput {:.2}x; the gateway adds p50 {:+.3} ms, p99 {:+.3} ms",
        via.rps / direct.rps.max(f64::MIN_POSITIVE),
        via.p50_ms - direct.p50_ms,
        via.p99_ms - direct.p99_ms
    );
    println!(
        "fault: node {} killed (SIGKILL) after {} of {} requests; it had {} in flight through the gateway \
         ({} forwarded to it before); client-visible errors {}, verified answers {} ({:.0} req/s, p50 {:.3} ms, p99 {:.3} ms)",
        fault.killed,
        fault.requests / 3,
        fault.requests,
        fault.in_flight_at_kill,
        fault.served_before_kill,
        fault.errors,
        fault.ok,
        fault.stats.rps,
        fault.stats.p50_ms,
        fault.stats.p99_ms
    );
    Ok(ExitCode::SUCCESS)
}
