//! `cloister measure` on a real dstack report of the corpus: `--from-report` reproduces its
//! compose hash, MR_CONFIG_ID and digest; `--compose` with the report's app_compose and the OS
//! registers of its quote gives the quote's own measurement digest, before any boot.

use std::ffi::OsStr;
use std::path::Path;

use cloister_attest::measurements::measurement_digest;
use cloister_attest::quote::parse_quote;
use serde_json::Value;

use crate::cloister;
use crate::verify_quote::corpus;

const REPORT: &str =
    "teep/neardirect_qwen3.5-122b_20260629/0001_qwen35-122b.completions.near.ai_v1_attestation_report.body";
const QUOTE: &str = "teep/neardirect_qwen3.5-122b_20260629/derived/model_intel_quote.bin";

fn s(arg: &str) -> &OsStr {
    OsStr::new(arg)
}

/// Runs `cloister measure ARGS`: (exit code, stdout, stdout and stderr).
fn run_split(args: &[&OsStr]) -> (i32, String, String) {
    let out = cloister().arg("measure").args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let all = format!("{stdout}{stderr}");
    (out.status.code().unwrap_or(-1), stdout, all)
}

/// Runs `cloister measure ARGS`: (exit code, stdout and stderr).
fn run(args: &[&OsStr]) -> (i32, String) {
    let (code, _, all) = run_split(args);
    (code, all)
}

fn report(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join(REPORT)).unwrap()).unwrap()
}

#[test]
fn from_report_says_match_for_a_real_capture() {
    let Some(dir) = corpus() else { return };
    let (code, out) = run(&[s("--from-report"), dir.join(REPORT).as_os_str()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("verdict: match"), "{out}");
    assert!(!out.contains("MISMATCH"), "{out}");
    for field in [
        "compose hash (info.tcb_info.compose_hash)",
        "MR_CONFIG_ID (quote)",
        "measurement digest (quote)",
    ] {
        assert!(out.contains(field), "{field} missing: {out}");
    }
}

#[test]
fn from_report_fails_when_app_compose_was_changed() {
    let Some(dir) = corpus() else { return };
    let mut json = report(&dir);
    let compose = json["info"]["tcb_info"]["app_compose"]
        .as_str()
        .unwrap()
        .to_owned();
    json["info"]["tcb_info"]["app_compose"] = Value::String(format!("{compose}\n"));
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("report.json");
    std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
    let (code, stdout, all) = run_split(&[s("--from-report"), path.as_os_str(), s("--json")]);
    assert_eq!(code, 1, "{all}");
    let out: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(out["match"], false);
    let fields = out["attestations"][0]["fields"].as_array().unwrap();
    let mr_config_id = fields.iter().find(|f| f["field"] == "mr_config_id").unwrap();
    assert_eq!(mr_config_id["matches"], false);
}

/// Before boot: the app-compose.json and a reference quote of the same OS image and VM
/// configuration give the digest the node's own quote will have.
#[test]
fn compose_and_reference_quote_give_the_quotes_digest() {
    let Some(dir) = corpus() else { return };
    let json = report(&dir);
    let tmp = tempfile::tempdir().unwrap();
    let compose = tmp.path().join("app-compose.json");
    std::fs::write(
        &compose,
        json["info"]["tcb_info"]["app_compose"].as_str().unwrap(),
    )
    .unwrap();
    let quote = parse_quote(&std::fs::read(dir.join(QUOTE)).unwrap()).unwrap();
    let want = format!("0x{}", hex::encode(measurement_digest(&quote).unwrap()));

    let (code, stdout, out) = run_split(&[
        s("--compose"),
        compose.as_os_str(),
        s("--reference-quote"),
        dir.join(QUOTE).as_os_str(),
        s("--json"),
    ]);
    assert_eq!(code, 0, "{out}");
    let out: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(out["measurement_digest"], want.as_str());
    assert_eq!(
        out["compose_hash"],
        format!("0x{}", json["info"]["tcb_info"]["compose_hash"].as_str().unwrap()).as_str()
    );

    // The report's tcb_info states the same registers: as --os-measurements it gives the same.
    let (code, out) = run(&[
        s("--compose"),
        compose.as_os_str(),
        s("--os-measurements"),
        dir.join(REPORT).as_os_str(),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("measurement digest  {want}")), "{out}");

    // Without OS registers it says what is missing.
    let (code, out) = run(&[s("--compose"), compose.as_os_str()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("needs the OS image's MRTD and RTMR0..2"), "{out}");
}

#[test]
fn bad_inputs_are_refused_with_a_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let compose = tmp.path().join("app-compose.json");
    std::fs::write(&compose, "{}").unwrap();
    let (code, out) = run(&[
        s("--compose"),
        compose.as_os_str(),
        s("--mrtd"),
        s("00"),
        s("--rtmr0"),
        s("00"),
        s("--rtmr1"),
        s("00"),
        s("--rtmr2"),
        s("00"),
    ]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("mrtd") && out.contains("expected 48"), "{out}");
    let (code, out) = run(&[s("--from-report"), compose.as_os_str()]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("no dstack attestation"), "{out}");
}
