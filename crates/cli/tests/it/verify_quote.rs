//! `cloister verify-quote` on every TDX/SGX case of the real attestation corpus, with its expected
//! verdict (../shared/testdata/attestation/expected_outcomes.json).

use std::path::PathBuf;

use cloister_attest::check::{CheckId, QuoteCheck};
use serde_json::Value;

use crate::{cloister, workspace_root};

/// The attestation corpus (`$CLOISTER_ATTESTATION_TESTDATA`, else
/// `<workspace>/../shared/testdata/attestation`), or None (with the reason on stderr) when it is
/// absent; a panic instead when `CLOISTER_REQUIRE_CORPUS=1` (the test script sets it, so a missing
/// corpus fails the run instead of skipping it). The one corpus helper of this test binary.
pub fn corpus() -> Option<PathBuf> {
    let dir = std::env::var_os("CLOISTER_ATTESTATION_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/testdata/attestation"));
    if dir.join("expected_outcomes.json").is_file() {
        Some(dir)
    } else if std::env::var("CLOISTER_REQUIRE_CORPUS").as_deref() == Ok("1") {
        panic!(
            "attestation corpus not found at {} and CLOISTER_REQUIRE_CORPUS=1",
            dir.display()
        );
    } else {
        eprintln!("skipping: attestation corpus not found at {}", dir.display());
        None
    }
}

/// Runs `verify-quote --json` and returns (exit code, JSON).
fn run(dir: &std::path::Path, quote: &str, collateral: &str, at: u64) -> (i32, Value) {
    let out = cloister()
        .arg("verify-quote")
        .arg(dir.join(quote))
        .arg("--collateral")
        .arg(dir.join(collateral))
        .args(["--at", &at.to_string(), "--json"])
        // The corpus has out-of-date platforms; accept every status so the verdict shows the status.
        .args(["--accept-tcb", "UpToDate,SWHardeningNeeded,ConfigurationNeeded,ConfigurationAndSWHardeningNeeded,OutOfDate,OutOfDateConfigurationNeeded"])
        .output()
        .expect("run cloister");
    let json: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{quote}: not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), json)
}

fn check(id: &str, code: i32, got: &Value, expected: &Value) {
    // Every check in the JSON is named by a `CheckId` (its human name), in the order of a quote
    // verdict: parse first, TCB policy last.
    let ids: Vec<CheckId> = got["checks"]
        .as_array()
        .unwrap_or_else(|| panic!("{id}: no checks in {got:#}"))
        .iter()
        .map(|c| {
            let name = c["name"].as_str().unwrap_or_default();
            name.parse().unwrap_or_else(|e| panic!("{id}: {e}"))
        })
        .collect();
    assert_eq!(ids.first(), Some(&QuoteCheck::QuoteParses.into()), "{id}");
    assert_eq!(ids.last(), Some(&QuoteCheck::TcbAccepted.into()), "{id}");
    if expected["ok"].as_bool() == Some(true) {
        assert_eq!(code, 0, "{id}: expected a verified quote, got {got:#}");
        assert_eq!(got["tcb_status"], expected["status"], "{id}");
        assert_eq!(got["advisory_ids"], expected["advisory_ids"], "{id}");
        assert_eq!(got["qe_status"], expected["qe_status"]["status"], "{id}");
        assert_eq!(
            got["platform_status"], expected["platform_status"]["status"],
            "{id}"
        );
    } else {
        let want = expected["error"].as_str().expect("error text");
        assert_eq!(code, 1, "{id}: expected refusal, got {got:#}");
        let err = got["error"].as_str().unwrap_or_default();
        assert!(
            err.contains(want),
            "{id}: expected error containing {want:?}, got {err:?}"
        );
    }
}

#[test]
fn every_tdx_sgx_case_gets_its_expected_verdict() {
    let Some(dir) = corpus() else { return };
    let expected: Value =
        serde_json::from_slice(&std::fs::read(dir.join("expected_outcomes.json")).unwrap()).unwrap();
    let cases = expected["tdx_sgx_cases"].as_array().expect("cases");
    let mut n = 0;
    for case in cases {
        let id = case["id"].as_str().unwrap();
        let quote = case["quote"].as_str().unwrap();
        let collateral = case["collateral"].as_str().unwrap();
        let at = case["verify_at_unix"].as_u64().unwrap();
        let (code, got) = run(&dir, quote, collateral, at);
        check(id, code, &got, &case["dcap_qvl_0_5_2"]);
        println!(
            "{id}: {} (as expected)",
            got["tcb_status"]
                .as_str()
                .or(got["error"].as_str())
                .unwrap_or("-")
        );
        n += 1;
        if let Some(edges) = case["dcap_qvl_0_5_2_outside_window"].as_object() {
            for (edge, outcome) in edges {
                let at = outcome["verify_at_unix"].as_u64().unwrap();
                let (code, got) = run(&dir, quote, collateral, at);
                check(&format!("{id} {edge}"), code, &got, outcome);
                println!(
                    "{id} {edge}: {} (as expected)",
                    got["error"].as_str().unwrap_or("-")
                );
                n += 1;
            }
        }
    }
    assert!(n >= cases.len());
    println!("{n} verdicts as expected");
}

#[test]
fn default_policy_refuses_out_of_date_tcb() {
    let Some(dir) = corpus() else { return };
    let out = cloister()
        .arg("verify-quote")
        .arg(dir.join("teep/nearcloud_qwen3.5-122b_20260424/derived/gateway_intel_quote.bin"))
        .arg("--collateral")
        .arg(dir.join("teep/nearcloud_qwen3.5-122b_20260424/derived/collateral_b0c06f000000.json"))
        .args(["--at", "1776996365"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("OutOfDate"), "{text}");
    assert!(text.contains("NOT VERIFIED"), "{text}");
}
