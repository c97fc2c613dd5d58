//! `cloister measure`: the compose hash, MR_CONFIG_ID and registry measurement digest of a dstack
//! app, computed before its node first boots (docs/protocol.md §7), and `--from-report`, which
//! recomputes them from a report's own app_compose and compares them with its quote.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{ArgGroup, Args};
use cloister_attest::measure::report::{Comparison, compare, dstack_attestations, quotes};
use cloister_attest::measure::{Expected, OsMeasurements, expected};
use cloister_attest::quote::{decode_quote_bytes, parse_quote};
use serde_json::{Value, json};

/// `cloister measure`.
#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("os")
        .args(["os_measurements", "mrtd", "reference_quote", "reference_report"])
        .multiple(false)
))]
pub(crate) struct MeasureArgs {
    /// The dstack app-compose.json, exactly as it will be deployed (its bytes are hashed as is).
    #[arg(long, required_unless_present = "from_report", conflicts_with = "from_report")]
    pub compose: Option<PathBuf>,
    /// OS image measurements as JSON: dstack-mr's output (`mrtd`, `rtmr0`, `rtmr1`, `rtmr2`),
    /// or a report's `tcb_info`.
    #[arg(long)]
    pub os_measurements: Option<PathBuf>,
    /// MRTD of the OS image (48 bytes of hex); needs --rtmr0, --rtmr1 and --rtmr2.
    #[arg(long, requires_all = ["rtmr0", "rtmr1", "rtmr2"])]
    pub mrtd: Option<String>,
    /// RTMR0 of the OS image and VM configuration (hex).
    #[arg(long, requires = "mrtd")]
    pub rtmr0: Option<String>,
    /// RTMR1 of the OS image (hex).
    #[arg(long, requires = "mrtd")]
    pub rtmr1: Option<String>,
    /// RTMR2 of the OS image (hex).
    #[arg(long, requires = "mrtd")]
    pub rtmr2: Option<String>,
    /// A TDX quote (binary or hex) of any node on the same OS image and VM configuration.
    #[arg(long)]
    pub reference_quote: Option<PathBuf>,
    /// A report (JSON) of any node on the same OS image and VM configuration; its TDX quotes must
    /// agree on MRTD and RTMR0..2.
    #[arg(long)]
    pub reference_report: Option<PathBuf>,
    /// Recompute compose hash, MR_CONFIG_ID and digest from a dstack report's own
    /// `info.tcb_info.app_compose` and quote, and compare; exits 1 on any mismatch.
    #[arg(long, conflicts_with = "os")]
    pub from_report: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub(crate) fn run(args: MeasureArgs) -> anyhow::Result<ExitCode> {
    if let Some(path) = &args.from_report {
        return from_report(path, args.json);
    }
    let Some(compose_path) = &args.compose else {
        bail!("--compose or --from-report is required");
    };
    let compose = read(compose_path)?;
    let os = os_measurements(&args)?;
    let e = expected(&compose, os.as_ref().map(|(_, os)| os));
    if args.json {
        let mut out = serde_json::to_value(&e)?;
        if let (Some((source, os)), Value::Object(o)) = (&os, &mut out) {
            o.insert("os_measurements".to_owned(), os_json(source, os));
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_expected(compose_path, compose.len(), &e, os.as_ref());
    }
    Ok(ExitCode::SUCCESS)
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    serde_json::from_slice(&read(path)?).with_context(|| format!("{} is not JSON", path.display()))
}

/// The OS registers from whichever source was given, with a description of the source.
fn os_measurements(args: &MeasureArgs) -> anyhow::Result<Option<(String, OsMeasurements)>> {
    if let Some(path) = &args.os_measurements {
        let text =
            String::from_utf8(read(path)?).with_context(|| format!("{} is not UTF-8", path.display()))?;
        let os = OsMeasurements::from_json(&text).with_context(|| format!("{}", path.display()))?;
        return Ok(Some((path.display().to_string(), os)));
    }
    if let (Some(mrtd), Some(r0), Some(r1), Some(r2)) = (&args.mrtd, &args.rtmr0, &args.rtmr1, &args.rtmr2) {
        return Ok(Some((
            "flags".to_owned(),
            OsMeasurements::from_hex(mrtd, r0, r1, r2)?,
        )));
    }
    if let Some(path) = &args.reference_quote {
        let bytes = decode_quote_bytes(&read(path)?)
            .with_context(|| format!("{} is neither a binary nor a hex quote", path.display()))?;
        let quote = parse_quote(&bytes).with_context(|| format!("{}", path.display()))?;
        let os = OsMeasurements::from_quote(&quote)
            .with_context(|| format!("{} is an SGX quote: it has no MRTD or RTMRs", path.display()))?;
        return Ok(Some((format!("quote {}", path.display()), os)));
    }
    if let Some(path) = &args.reference_report {
        let found = quotes(&read_json(path)?).with_context(|| format!("{}", path.display()))?;
        let mut regs = found
            .iter()
            .filter_map(|(at, q)| Some((at, OsMeasurements::from_quote(q)?)));
        let Some((first_at, first)) = regs.next() else {
            bail!("{} holds no TDX quote (intel_quote or quote)", path.display());
        };
        if let Some((other_at, _)) = regs.find(|(_, os)| *os != first) {
            bail!(
                "{}: the quotes at {first_at} and {other_at} run different OS images or VM \
                 configurations; pass the one you mean with --reference-quote",
                path.display()
            );
        }
        return Ok(Some((format!("report {} ({first_at})", path.display()), first)));
    }
    Ok(None)
}

fn os_json(source: &str, os: &OsMeasurements) -> Value {
    json!({
        "source": source,
        "mrtd": hex::encode(os.mrtd),
        "rtmr0": hex::encode(os.rtmr0),
        "rtmr1": hex::encode(os.rtmr1),
        "rtmr2": hex::encode(os.rtmr2),
    })
}

fn print_expected(path: &Path, len: usize, e: &Expected, os: Option<&(String, OsMeasurements)>) {
    println!("compose             {} ({len} bytes)", path.display());
    println!("compose hash        0x{}", hex::encode(e.compose_hash));
    println!("MR_CONFIG_ID        0x{}", hex::encode(e.mr_config_id));
    match (os, e.measurement_digest) {
        (Some((source, os)), Some(digest)) => {
            println!("OS measurements     {source}");
            println!("  MRTD              {}", hex::encode(os.mrtd));
            println!("  RTMR0             {}", hex::encode(os.rtmr0));
            println!("  RTMR1             {}", hex::encode(os.rtmr1));
            println!("  RTMR2             {}", hex::encode(os.rtmr2));
            println!("measurement digest  0x{}", hex::encode(digest));
            println!();
            println!("allowlist the measurement digest (docs/protocol.md §7)");
        }
        _ => {
            println!("measurement digest  needs the OS image's MRTD and RTMR0..2: pass");
            println!("                    --os-measurements FILE (dstack-mr output),");
            println!("                    --mrtd/--rtmr0/--rtmr1/--rtmr2, --reference-quote FILE");
            println!("                    or --reference-report FILE");
        }
    }
}

fn from_report(path: &Path, as_json: bool) -> anyhow::Result<ExitCode> {
    let report = read_json(path)?;
    let comparisons = dstack_attestations(&report)
        .with_context(|| format!("{}", path.display()))?
        .iter()
        .map(compare)
        .collect::<Result<Vec<Comparison>, _>>()
        .with_context(|| format!("{}", path.display()))?;
    let all_match = comparisons.iter().all(Comparison::matches);
    if as_json {
        let out = json!({ "report": path, "match": all_match, "attestations": comparisons });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("report  {}", path.display());
        for c in &comparisons {
            println!();
            println!("attestation {}", c.path);
            for f in &c.fields {
                let verdict = if f.matches { "match" } else { "MISMATCH" };
                let label = format!("{} ({})", f.field, f.reported_in);
                println!("  {label:<26} {verdict}");
                println!("    computed  {}", f.computed);
                if !f.matches {
                    println!("    reported  {}", f.reported);
                }
            }
        }
        println!();
        let n = comparisons.len();
        if all_match {
            println!("verdict: match: all values of {n} attestation(s) reproduced from app_compose");
        } else {
            println!("verdict: MISMATCH: see the fields above");
        }
    }
    Ok(if all_match {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
