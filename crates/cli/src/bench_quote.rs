//! `cloister bench quote`: quote verification through Cloister's layer
//! ([`cloister_attest::verify::verify_quote`]: decode, parse, policy, named checks) against
//! dcap-qvl's `verify::ring::verify` (the DCAP verification that layer calls) on the same quote and
//! in-memory collateral, interleaved in rounds.
//!
//! The measuring is `cloister-bench`'s ([`cloister_bench::quote`]); this file parses flags and prints.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use cloister_bench::quote::{QUOTE, QuoteBench, corpus_dir};
use cloister_bench::stats::percentile;

/// `cloister bench quote`.
#[derive(Debug, Args)]
pub(crate) struct QuoteArgs {
    /// Attestation corpus (expected_outcomes.json and the dcap-qvl quote)
    /// [default: $CLOISTER_ATTESTATION_TESTDATA, else ../shared/testdata/attestation].
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Verifications per round per path.
    #[arg(long, default_value_t = 1000)]
    pub iterations: usize,
    /// Rounds (the two paths interleaved, order alternating).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
}

pub(crate) fn quote(args: QuoteArgs) -> anyhow::Result<ExitCode> {
    let bench = QuoteBench::load(&corpus_dir(args.corpus))?;
    let at = bench.at;
    let iterations = args.iterations.max(1);
    // Warm-up.
    bench.time_direct(iterations.min(100))?;
    bench.time_ours(iterations.min(100))?;

    let mut all_direct = Vec::new();
    let mut all_ours = Vec::new();
    println!(
        "quote verification: {QUOTE} ({} bytes) at {at}, collateral in memory; {iterations} verifications x {} rounds per path",
        bench.quote.len(),
        args.rounds
    );
    println!("| round | dcap-qvl p50 µs | p99 µs | cloister p50 µs | p99 µs | p50 ratio |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for round in 1..=args.rounds.max(1) {
        // Alternate which path goes first so that drift (heat, a neighbour's load) hits both.
        let (d, o) = if round % 2 == 1 {
            let d = bench.time_direct(iterations)?;
            (d, bench.time_ours(iterations)?)
        } else {
            let o = bench.time_ours(iterations)?;
            (bench.time_direct(iterations)?, o)
        };
        let (d50, d99, o50, o99) = (
            percentile(&d, 0.50),
            percentile(&d, 0.99),
            percentile(&o, 0.50),
            percentile(&o, 0.99),
        );
        println!(
            "| {round} | {d50:.1} | {d99:.1} | {o50:.1} | {o99:.1} | {:.3} |",
            o50 / d50.max(f64::MIN_POSITIVE)
        );
        all_direct.extend(d);
        all_ours.extend(o);
    }
    all_direct.sort_by(|a, b| a.total_cmp(b));
    all_ours.sort_by(|a, b| a.total_cmp(b));
    let (d50, d99) = (percentile(&all_direct, 0.50), percentile(&all_direct, 0.99));
    let (o50, o99) = (percentile(&all_ours, 0.50), percentile(&all_ours, 0.99));
    println!(
        "| all | {d50:.1} | {d99:.1} | {o50:.1} | {o99:.1} | {:.3} |",
        o50 / d50.max(f64::MIN_POSITIVE)
    );
    let added = (o50 / d50.max(f64::MIN_POSITIVE) - 1.0) * 100.0;
    println!(
        "cloister layer / dcap-qvl: p50 {:.3}x ({added:+.1}%), p99 {:.3}x; goal < +5%: {}",
        o50 / d50.max(f64::MIN_POSITIVE),
        o99 / d99.max(f64::MIN_POSITIVE),
        if added < 5.0 { "met" } else { "NOT met" }
    );
    Ok(ExitCode::SUCCESS)
}
