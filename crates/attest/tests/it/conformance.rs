//! Every TDX/SGX case of `expected_outcomes.json` through `verify_quote`, including the
//! collateral-window edge checks: same status, advisories, QE and platform status, or the same
//! dcap-qvl error text.

use cloister_attest::check::{CheckId, Outcome, QuoteCheck};
use cloister_attest::verify::{Policy, QuoteVerdict, verify_quote};
use serde_json::Value;

use crate::corpus::{self, corpus_or_skip};

/// One row to check: a case, or one of its window-edge variants.
struct Row<'a> {
    label: String,
    case: &'a Value,
    at: u64,
    expected: &'a Value,
}

fn all_statuses() -> Policy {
    Policy::default().with_accepted_tcb_statuses([
        "UpToDate",
        "SWHardeningNeeded",
        "ConfigurationNeeded",
        "ConfigurationAndSWHardeningNeeded",
        "OutOfDate",
        "OutOfDateConfigurationNeeded",
    ])
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

fn outcome(v: &QuoteVerdict, id: QuoteCheck) -> Option<Outcome> {
    v.checks.outcome(id)
}

/// The first failing check's id.
fn first_failure(v: &QuoteVerdict) -> Option<CheckId> {
    v.first_failure().map(|c| c.id)
}

/// True when every DCAP check held (advisories may warn).
fn dcap_passed(v: &QuoteVerdict) -> bool {
    QuoteCheck::DCAP
        .iter()
        .all(|id| matches!(outcome(v, *id), Some(Outcome::Pass | Outcome::Warn)))
}

/// The named check each dcap-qvl error of the corpus belongs to.
pub(crate) fn check_for_error(error: &str) -> QuoteCheck {
    if error.starts_with("TCBInfo") {
        QuoteCheck::TcbInfo
    } else if error.starts_with("QE Identity") {
        QuoteCheck::QeIdentity
    } else if error.starts_with("No matching TCB level") {
        QuoteCheck::TcbLevel
    } else if error.starts_with("Failed to verify certificate chain") {
        QuoteCheck::PckChain
    } else {
        panic!("no expectation for dcap-qvl error {error:?}")
    }
}

/// Compares a verdict with the expectation; returns the mismatches.
fn compare(v: &QuoteVerdict, expected: &Value) -> Vec<String> {
    let mut bad = Vec::new();
    let ok = expected["ok"].as_bool().unwrap_or(false);
    if ok {
        if v.error.is_some() || !dcap_passed(v) {
            bad.push(format!("expected success, got error {:?}", v.error));
            return bad;
        }
        let want = |k: &str| expected[k].as_str().map(str::to_owned);
        if v.tcb_status != want("status") {
            bad.push(format!("status {:?} != {:?}", v.tcb_status, want("status")));
        }
        if v.advisory_ids != strings(&expected["advisory_ids"]) {
            bad.push(format!(
                "advisories {:?} != {:?}",
                v.advisory_ids, expected["advisory_ids"]
            ));
        }
        let qe = expected["qe_status"]["status"].as_str().map(str::to_owned);
        if v.qe_status != qe {
            bad.push(format!("qe_status {:?} != {qe:?}", v.qe_status));
        }
        let platform = expected["platform_status"]["status"].as_str().map(str::to_owned);
        if v.platform_status != platform {
            bad.push(format!("platform_status {:?} != {platform:?}", v.platform_status));
        }
        // The per-part advisories are in the TCB check's detail.
        let detail = v.checks.get(QuoteCheck::TcbAccepted).map(|c| c.detail.clone());
        for id in strings(&expected["platform_status"]["advisory_ids"]) {
            if !detail.as_deref().unwrap_or("").contains(&id) {
                bad.push(format!("TCB check detail lacks platform advisory {id}"));
            }
        }
        if !v.passed() {
            bad.push(format!(
                "verdict did not pass under an all-statuses policy: {:?}",
                v.first_failure()
            ));
        }
    } else {
        let want = expected["error"].as_str().unwrap_or("<no error in expectation>");
        match &v.error {
            Some(got) if got.contains(want) => {}
            got => bad.push(format!("error {got:?} does not contain {want:?}")),
        }
        let named = CheckId::from(check_for_error(want));
        let failed: Vec<CheckId> = v
            .checks
            .iter()
            .filter(|c| c.outcome == Outcome::Fail)
            .map(|c| c.id)
            .collect();
        if failed != [named] {
            bad.push(format!("failed checks {failed:?}, expected only {named:?}"));
        }
        // What dcap-qvl never reached is skipped, not passed.
        if outcome(v, QuoteCheck::Advisories) != Some(Outcome::Skip) {
            bad.push("advisories not skipped after a DCAP failure".to_owned());
        }
        if v.passed() {
            bad.push("verdict passed".to_owned());
        }
    }
    bad
}

#[test]
fn every_tdx_sgx_case_matches_dcap_qvl_0_5_2() {
    let dir = corpus_or_skip!();
    let outcomes = corpus::json(&dir, "expected_outcomes.json");
    let cases = outcomes["tdx_sgx_cases"].as_array().expect("tdx_sgx_cases");
    assert!(!cases.is_empty());

    let mut rows = Vec::new();
    for case in cases {
        let id = case["id"].as_str().expect("id");
        rows.push(Row {
            label: id.to_owned(),
            case,
            at: case["verify_at_unix"].as_u64().expect("verify_at_unix"),
            expected: &case["dcap_qvl_0_5_2"],
        });
        if let Some(edges) = case["dcap_qvl_0_5_2_outside_window"].as_object() {
            for (edge, expected) in edges {
                rows.push(Row {
                    label: format!("{id} ({edge})"),
                    case,
                    at: expected["verify_at_unix"].as_u64().expect("edge verify_at_unix"),
                    expected,
                });
            }
        }
    }

    let (all, strict) = (all_statuses(), Policy::default());
    let mut failures = Vec::new();
    for row in &rows {
        let quote = corpus::read(&dir, row.case["quote"].as_str().expect("quote"));
        let collateral = corpus::collateral(&dir, row.case["collateral"].as_str().expect("collateral"));
        let v = verify_quote(&quote, Some(&collateral), row.at, &all);
        let mut bad = compare(&v, row.expected);

        // Under the default policy only UpToDate passes, and for the same reason.
        let v_strict = verify_quote(&quote, Some(&collateral), row.at, &strict);
        let up_to_date = v.tcb_status.as_deref() == Some("UpToDate");
        if v_strict.passed() != up_to_date {
            bad.push(format!(
                "default policy passed={} for status {:?}",
                v_strict.passed(),
                v.tcb_status
            ));
        }

        let result = match (&v.tcb_status, &v.error) {
            (Some(s), None) => format!("{s} {:?}", v.advisory_ids),
            (_, e) => format!("error: {}", e.as_deref().unwrap_or("?")),
        };
        let mark = if bad.is_empty() { "ok  " } else { "FAIL" };
        println!("{mark} {} @{}: {result}", row.label, row.at);
        for b in &bad {
            println!("       {b}");
        }
        if !bad.is_empty() {
            failures.push(format!("{}: {}", row.label, bad.join("; ")));
        }
    }
    println!(
        "{} of {} conformance rows match",
        rows.len() - failures.len(),
        rows.len()
    );
    assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
}

#[test]
fn collateral_is_required_and_time_is_explicit() {
    let dir = corpus_or_skip!();
    let quote = corpus::read(&dir, "dcap-qvl/tdx_quote");
    let v = verify_quote(&quote, None, 1_752_919_234, &Policy::default());
    assert!(!v.passed());
    assert_eq!(first_failure(&v), Some(QuoteCheck::CollateralPresent.into()));

    // The same quote and collateral pass at one time and fail a day after nextUpdate.
    let collateral = corpus::collateral(&dir, "dcap-qvl/tdx_quote_collateral.json");
    assert!(verify_quote(&quote, Some(&collateral), 1_752_919_234, &Policy::default()).passed());
    let late = verify_quote(&quote, Some(&collateral), 1_753_005_635, &Policy::default());
    assert!(!late.passed());
    assert_eq!(late.error.as_deref(), Some("TCBInfo expired"));
}

#[test]
fn tampered_collateral_fails_with_a_signature_error() {
    let dir = corpus_or_skip!();
    let quote = corpus::read(&dir, "go-tdx-guest/quote_v5_sample.dat");
    let mut collateral = corpus::collateral(&dir, "dcap-qvl/tdx_quote_outdated_collateral.json");
    collateral.tcb_info_signature[10] ^= 1;
    let v = verify_quote(&quote, Some(&collateral), 1_772_323_200, &Policy::default());
    assert!(!v.passed());
    assert_eq!(first_failure(&v), Some(QuoteCheck::TcbInfo.into()));
    // The CRLs and the TCB info chain were checked first; what comes after was not reached.
    assert_eq!(outcome(&v, QuoteCheck::PckChain), Some(Outcome::Skip));
    assert_eq!(outcome(&v, QuoteCheck::QuoteSignature), Some(Outcome::Skip));
    let error = v.error.unwrap_or_default();
    assert!(error.contains("Signature is invalid for tcb_info"), "{error}");
}
