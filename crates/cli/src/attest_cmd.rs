//! `cloister attest verify <url>` and `cloister verify-quote <file>`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use cloister_attest::measurements::Measurements;
use cloister_attest::verify::{Policy, verify_quote as verify_quote_bytes};
use serde_json::json;

use crate::proof::{NodeProof, VerifyOpts, http_client, verify_endpoint};
use crate::table::render_checks;

/// Attestation commands.
#[derive(Debug, Subcommand)]
pub(crate) enum AttestCommand {
    /// Fetch a node's attestation report with a fresh nonce and verify it: quote, TCB status,
    /// report_data binding of the signing key and the nonce.
    Verify(AttestVerifyArgs),
}

/// `cloister attest verify`.
#[derive(Debug, Args)]
pub(crate) struct AttestVerifyArgs {
    /// Node URL, e.g. http://127.0.0.1:8080
    pub url: String,
    #[command(flatten)]
    pub verify: VerifyOpts,
    /// Model id, sent as the `model` query parameter (NEAR AI cloud needs it).
    #[arg(long)]
    pub model: Option<String>,
    /// Print JSON instead of a table (a list for an answer with several reports).
    #[arg(long)]
    pub json: bool,
    /// Verify the service as an ACI service (`GET /v1/aci/attestation`, aci/1 §9.1) instead of its
    /// Cloister/NEAR report. Fails closed: pass --allowed-measurements (or, for a local simulated
    /// node, --allow-simulated).
    #[arg(long)]
    pub aci: bool,
}

/// `cloister verify-quote`.
#[derive(Debug, Args)]
pub(crate) struct VerifyQuoteArgs {
    /// Quote file: binary, or hex (with or without 0x).
    pub file: PathBuf,
    /// Collateral JSON (dcap-qvl QuoteCollateralV3).
    #[arg(long)]
    pub collateral: Option<PathBuf>,
    /// Verification time in unix seconds (required: collateral validity depends on it).
    #[arg(long)]
    pub at: u64,
    /// TCB statuses to accept (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "UpToDate")]
    pub accept_tcb: Vec<String>,
    /// DEVELOPMENT ONLY: accept a simulated quote.
    #[arg(long)]
    pub allow_simulated: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub(crate) async fn run(cmd: AttestCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AttestCommand::Verify(args) => attest_verify(args).await,
    }
}

async fn attest_verify(args: AttestVerifyArgs) -> anyhow::Result<ExitCode> {
    let client = http_client()?;
    if args.aci {
        return aci_verify(&client, &args).await;
    }
    let proofs = verify_endpoint(&client, &args.url, &args.verify, args.model.as_deref()).await?;
    let passed = proofs.iter().all(|p| p.verdict.passed());
    // A NEAR AI cloud answer holds several reports: one labelled table each, and a list in JSON.
    let several = proofs.len() > 1 || proofs.iter().any(|p| p.label != "report");
    if args.json {
        let out: Vec<_> = proofs.iter().map(proof_json).collect();
        let out = match out.as_slice() {
            [one] if !several => one.clone(),
            _ => serde_json::Value::Array(out),
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for proof in &proofs {
            if several {
                println!("== {} ==", proof.label);
            }
            print_proof(proof);
            println!();
        }
        if several {
            let failed: Vec<&str> = proofs
                .iter()
                .filter(|p| !p.verdict.passed())
                .map(|p| p.label.as_str())
                .collect();
            if failed.is_empty() {
                println!("verdict: VERIFIED (all {} attestations)", proofs.len());
            } else {
                println!("verdict: NOT VERIFIED (failed: {})", failed.join(", "));
            }
        } else {
            println!("verdict: {}", if passed { "VERIFIED" } else { "NOT VERIFIED" });
        }
    }
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `attest verify --aci`.
async fn aci_verify(client: &reqwest::Client, args: &AttestVerifyArgs) -> anyhow::Result<ExitCode> {
    let policy = args.verify.client_policy(cloister_client::E2eeMode::Off)?;
    let nonce = args.verify.nonce()?;
    let proof = cloister_client::aci::verify_service(client, &args.url, &policy, nonce).await?;
    let v = &proof.verdict;
    if args.json {
        let out = json!({
            "url": proof.url,
            "nonce": proof.nonce,
            "passed": v.passed(),
            "workload_keyset_digest": v.keyset_digest,
            "workload_keyset": v.keyset,
            "collateral": proof.collateral,
            "tcb_status": v.quote.tcb_status,
            "measurement_digest": v.measurement_digest,
            "source_provenance": proof.report["attestation"]["source_provenance"],
            "checks": v.checks,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("service          {}", proof.url);
        println!("nonce            {}", proof.nonce);
        println!("keyset digest    {}", v.keyset_digest.as_deref().unwrap_or("-"));
        println!("collateral       {}", proof.collateral);
        if let Some(d) = &v.measurement_digest {
            println!("measurement      {d}");
        }
        println!();
        print!("{}", render_checks(&v.checks));
        println!();
        println!(
            "verdict: {}",
            if v.passed() {
                "VERIFIED (aci/1)"
            } else {
                "NOT VERIFIED (aci/1)"
            }
        );
    }
    Ok(if v.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn proof_json(proof: &NodeProof) -> serde_json::Value {
    json!({
        "label": proof.label,
        "url": proof.url,
        "nonce": proof.nonce,
        "passed": proof.verdict.passed(),
        "signing_address": proof.report.signing_address,
        "tee": proof.report.tee,
        "collateral": proof.collateral,
        "tcb_status": proof.verdict.quote.tcb_status,
        "advisory_ids": proof.verdict.quote.advisory_ids,
        "measurement_digest": proof.verdict.measurement_digest,
        "measurements": proof.verdict.quote.quote.as_ref().and_then(Measurements::from_quote),
        "dstack_app": proof.verdict.app,
        "checks": proof.verdict.checks,
    })
}

fn print_proof(proof: &NodeProof) {
    println!("node             {}", proof.url);
    println!("signing address  {}", proof.report.signing_address);
    println!(
        "tee              {}",
        proof
            .report
            .tee
            .map(|t| t.to_string())
            .unwrap_or_else(|| "(not stated)".into())
    );
    println!("nonce            {}", proof.nonce);
    println!("collateral       {}", proof.collateral);
    if let Some(m) = proof
        .verdict
        .quote
        .quote
        .as_ref()
        .and_then(Measurements::from_quote)
    {
        println!("MRTD             {}", hex::encode(m.mrtd));
        for (i, r) in m.rtmr.iter().enumerate() {
            println!("RTMR{i}            {}", hex::encode(r));
        }
        println!("MR_CONFIG_ID     {}", hex::encode(m.mr_config_id));
    }
    if let Some(d) = &proof.verdict.measurement_digest {
        println!("measurement      {d} (registry digest, docs/protocol.md section 7)");
    }
    if let Some(app) = &proof.verdict.app {
        println!("dstack app id    {}", app.app_id);
        println!("compose hash     {}", app.compose_hash);
    }
    println!();
    print!("{}", render_checks(&proof.verdict.checks));
    println!();
    println!(
        "{}: {}",
        proof.label,
        if proof.verdict.passed() {
            "VERIFIED"
        } else {
            "NOT VERIFIED"
        }
    );
}

pub(crate) fn verify_quote(args: VerifyQuoteArgs) -> anyhow::Result<ExitCode> {
    let raw = std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let quote = cloister_attest::quote::decode_quote_bytes(&raw)
        .with_context(|| format!("{} is neither a binary nor a hex quote", args.file.display()))?;
    let collateral = match &args.collateral {
        Some(path) => {
            let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            Some(
                cloister_attest::collateral::load_collateral_json(&bytes)
                    .with_context(|| format!("parsing collateral {}", path.display()))?,
            )
        }
        None => None,
    };
    let policy = Policy {
        accepted_tcb_statuses: args.accept_tcb.clone(),
        allow_simulated: args.allow_simulated,
        ..Policy::default()
    };
    let verdict = verify_quote_bytes(&quote, collateral.as_ref(), args.at, &policy);
    let passed = verdict.passed();
    if args.json {
        let out = json!({
            "file": args.file,
            "at": args.at,
            "passed": passed,
            "tcb_status": verdict.tcb_status,
            "advisory_ids": verdict.advisory_ids,
            "qe_status": verdict.qe_status,
            "platform_status": verdict.platform_status,
            "error": verdict.error,
            "checks": verdict.checks,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("quote  {}", args.file.display());
        println!("at     {}", args.at);
        println!();
        print!("{}", render_checks(&verdict.checks));
        println!();
        let status = verdict.tcb_status.as_deref().unwrap_or("-");
        match &verdict.error {
            Some(e) => println!("verdict: NOT VERIFIED ({e})"),
            None if passed => println!("verdict: VERIFIED, TCB status {status}"),
            None => println!("verdict: NOT VERIFIED, TCB status {status}"),
        }
    }
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
