//! `cloister bench quote`: quote verification through Cloister's layer
//! ([`cloister_attest::verify::verify_quote`]: decode, parse, policy, named checks) against
//! dcap-qvl's `verify::ring::verify` (the DCAP verification that layer calls) on the same quote and
//! in-memory collateral, interleaved in rounds.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use cloister_attest::verify::{Policy, verify_quote};
use dcap_qvl::QuoteCollateralV3;

/// The corpus quote measured, and its collateral (paths relative to the corpus).
const QUOTE: &str = "dcap-qvl/tdx_quote";
const COLLATERAL: &str = "dcap-qvl/tdx_quote_collateral.json";

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

fn corpus_dir(given: Option<PathBuf>) -> PathBuf {
    given
        .or_else(|| std::env::var_os("CLOISTER_ATTESTATION_TESTDATA").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("../shared/testdata/attestation"))
}

/// The case's verification time from expected_outcomes.json (its collateral expired long ago).
fn verify_time(dir: &Path) -> anyhow::Result<u64> {
    let path = dir.join("expected_outcomes.json");
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let expected: serde_json::Value =
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    expected["tdx_sgx_cases"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["quote"] == QUOTE && c["collateral"] == COLLATERAL)
        .and_then(|c| c["verify_at_unix"].as_u64())
        .with_context(|| format!("no case for {QUOTE} with {COLLATERAL} in {}", path.display()))
}

/// Latencies of one round, in microseconds, sorted.
fn time_round(iterations: usize, mut f: impl FnMut() -> bool) -> anyhow::Result<Vec<f64>> {
    let mut lat = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let t = Instant::now();
        let ok = black_box(f());
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        if !ok {
            bail!("a verification failed during the benchmark");
        }
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    Ok(lat)
}

pub(crate) fn quote(args: QuoteArgs) -> anyhow::Result<ExitCode> {
    let dir = corpus_dir(args.corpus);
    let quote_path = dir.join(QUOTE);
    let quote = std::fs::read(&quote_path).with_context(|| format!("reading {}", quote_path.display()))?;
    let quote = cloister_attest::quote::decode_quote_bytes(&quote)
        .with_context(|| format!("{} is not a quote", quote_path.display()))?;
    let collateral_path = dir.join(COLLATERAL);
    let collateral: QuoteCollateralV3 = cloister_attest::collateral::load_collateral_json(
        &std::fs::read(&collateral_path).with_context(|| format!("reading {}", collateral_path.display()))?,
    )
    .with_context(|| format!("parsing {}", collateral_path.display()))?;
    let at = verify_time(&dir)?;
    let policy = Policy::default();
    let iterations = args.iterations.max(1);

    let ours = || verify_quote(black_box(&quote), Some(black_box(&collateral)), at, &policy).passed();
    let direct = || dcap_qvl::verify::ring::verify(black_box(&quote), black_box(&collateral), at).is_ok();
    // Both must verify: timing a fast failure would measure nothing.
    let verdict = verify_quote(&quote, Some(&collateral), at, &policy);
    if !verdict.passed() {
        bail!(
            "{QUOTE} does not verify at {at}: {}",
            verdict.error.unwrap_or_default()
        );
    }
    if let Err(e) = dcap_qvl::verify::ring::verify(&quote, &collateral, at) {
        bail!("dcap-qvl refuses {QUOTE} at {at}: {e:#}");
    }
    // Warm-up.
    time_round(iterations.min(100), direct)?;
    time_round(iterations.min(100), ours)?;

    let mut all_direct = Vec::new();
    let mut all_ours = Vec::new();
    println!(
        "quote verification: {QUOTE} ({} bytes) at {at}, collateral in memory; {iterations} verifications x {} rounds per path",
        quote.len(),
        args.rounds
    );
    println!("| round | dcap-qvl p50 µs | p99 µs | cloister p50 µs | p99 µs | p50 ratio |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for round in 1..=args.rounds.max(1) {
        // Alternate which path goes first so that drift (heat, a neighbour's load) hits both.
        let (d, o) = if round % 2 == 1 {
            let d = time_round(iterations, direct)?;
            (d, time_round(iterations, ours)?)
        } else {
            let o = time_round(iterations, ours)?;
            (time_round(iterations, direct)?, o)
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

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}
