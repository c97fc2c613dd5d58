//! Whole-report verification: a real NEAR AI report (ECDSA binding, 8 H100s), binding failures,
//! and simulated reports.

use cloister_attest::check::{CheckId, EventLogCheck, GpuCheck, Outcome, QuoteCheck, ReportCheck, Scoped};
use cloister_attest::collateral::load_collateral_json;
use cloister_attest::report::{ReportVerdict, verify_report};
use cloister_attest::simulated::simulated_quote;
use cloister_attest::verify::Policy;
use cloister_types::{AttestationReport, Nonce, ReportData, TeeKind, parse_address};

use crate::corpus::{self, corpus_or_skip};

/// Collateral captured on 2026-04-24 for the two FMSPCs of the NEAR AI report, and the time.
const MODEL_COLLATERAL: &str = "teep/nearcloud_qwen3.5-122b_20260424/derived/collateral_90c06f000000.json";
const GATEWAY_COLLATERAL: &str = "teep/nearcloud_qwen3.5-122b_20260424/derived/collateral_b0c06f000000.json";
const MODEL_AT: u64 = 1_776_996_364;
const GATEWAY_AT: u64 = 1_776_996_365;

fn outcome(v: &ReportVerdict, id: impl Into<CheckId>) -> Option<Outcome> {
    v.checks.outcome(id)
}

fn print(label: &str, v: &ReportVerdict) {
    println!("{label}: passed={}", v.passed());
    for c in &v.checks {
        println!("  {c}");
    }
}

fn nearai(dir: &std::path::Path, pointer: &str) -> AttestationReport {
    let doc = corpus::json(dir, corpus::NEARAI_REPORT);
    serde_json::from_value(doc.pointer(pointer).expect(pointer).clone()).unwrap()
}

#[test]
fn nearai_model_report_binds_its_signing_address_and_nonce() {
    let dir = corpus_or_skip!();
    let report = nearai(&dir, "/model_attestations/0");
    let nonce: Nonce = corpus::NEARAI_NONCE.parse().unwrap();
    let collateral = load_collateral_json(&corpus::read(&dir, MODEL_COLLATERAL)).unwrap();
    let v = verify_report(&report, &nonce, Some(&collateral), MODEL_AT, &Policy::default());
    print("nearai model", &v);
    assert!(v.passed(), "{:?}", v.first_failure());
    let address = parse_address(&report.signing_address).unwrap();
    assert_eq!(v.signing_address(), Some(address));
    let rd = ReportData(v.quote.quote.as_ref().unwrap().report_data());
    assert!(rd.binds(address, nonce));
    assert_eq!(outcome(&v, ReportCheck::BindsAddress), Some(Outcome::Pass));
    assert_eq!(outcome(&v, ReportCheck::BindsNonce), Some(Outcome::Pass));
    assert_eq!(outcome(&v, ReportCheck::NonceEcho), Some(Outcome::Pass));
    assert_eq!(outcome(&v, GpuCheck::PayloadNonce), Some(Outcome::Pass));
    assert_eq!(outcome(&v, GpuCheck::NotChecked), Some(Outcome::Warn));
    assert_eq!(
        outcome(&v, Scoped::Quote(QuoteCheck::TcbAccepted)),
        Some(Outcome::Pass)
    );
    assert_eq!(v.quote.tcb_status.as_deref(), Some("UpToDate"));
    // The event log replays into the quote's RTMRs and names the dstack app.
    assert_eq!(
        outcome(&v, Scoped::EventLog(EventLogCheck::Rtmr3Replay)),
        Some(Outcome::Pass)
    );
    assert!(v.app.is_some(), "app identity from the verified event log");
    assert_eq!(v.measurement_digest.as_ref().map(String::len), Some(64));
}

#[test]
fn nearai_model_report_with_a_tampered_event_log_fails() {
    let dir = corpus_or_skip!();
    let mut report = nearai(&dir, "/model_attestations/0");
    let nonce: Nonce = corpus::NEARAI_NONCE.parse().unwrap();
    let collateral = load_collateral_json(&corpus::read(&dir, MODEL_COLLATERAL)).unwrap();
    // The log may be a list or a JSON string holding one: edit the first event's digest either way.
    let mut log: serde_json::Value = match &report.event_log {
        serde_json::Value::String(s) => serde_json::from_str(s).unwrap(),
        other => other.clone(),
    };
    let digest = log[0]["digest"].as_str().unwrap().to_owned();
    let first = if digest.starts_with('0') { "1" } else { "0" };
    let flipped = format!("{first}{}", digest.get(1..).unwrap_or_default());
    log[0]["digest"] = serde_json::Value::String(flipped);
    report.event_log = log;
    let v = verify_report(&report, &nonce, Some(&collateral), MODEL_AT, &Policy::default());
    print("nearai model, tampered event log", &v);
    assert!(!v.passed());
    assert!(
        v.first_failure()
            .is_some_and(|c| matches!(c.id, CheckId::Scoped(Scoped::EventLog(_)))),
        "{:?}",
        v.first_failure()
    );
    assert!(v.app.is_none());
}

#[test]
fn dstack_report_without_event_log_fails() {
    let rd = ReportData::new(cloister_types::Address::repeat_byte(0x33), Nonce([0x44; 32]));
    let report = AttestationReport {
        signing_address: format!("0x{}", hex::encode([0x33; 20])),
        signing_algo: "ecdsa".into(),
        request_nonce: hex::encode([0x44; 32]),
        intel_quote: hex::encode(simulated_quote(&rd)),
        nvidia_payload: None,
        event_log: serde_json::Value::Null,
        info: serde_json::json!({}),
        tee: Some(TeeKind::Dstack),
        hpke_public_key: None,
        key_binding: None,
        signing_public_key: None,
        tls_cert_fingerprint: None,
    };
    let v = verify_report(
        &report,
        &Nonce([0x44; 32]),
        None,
        1,
        &Policy::dev_allow_simulated(),
    );
    assert_eq!(outcome(&v, ReportCheck::EventLog), Some(Outcome::Fail));
    assert!(!v.passed());
}

#[test]
fn nearai_gateway_report_is_out_of_date() {
    let dir = corpus_or_skip!();
    let report = nearai(&dir, "/gateway_attestation");
    let nonce: Nonce = corpus::NEARAI_NONCE.parse().unwrap();
    let collateral = load_collateral_json(&corpus::read(&dir, GATEWAY_COLLATERAL)).unwrap();
    let strict = verify_report(&report, &nonce, Some(&collateral), GATEWAY_AT, &Policy::default());
    print("nearai gateway (UpToDate only)", &strict);
    assert!(!strict.passed());
    assert_eq!(
        strict.first_failure().map(|c| c.id),
        Some(Scoped::Quote(QuoteCheck::TcbAccepted).into())
    );
    // The binding itself holds; only the platform's TCB is behind.
    assert_eq!(outcome(&strict, ReportCheck::BindsAddress), Some(Outcome::Pass));
    assert_eq!(outcome(&strict, ReportCheck::BindsNonce), Some(Outcome::Pass));
    let lenient = Policy::default().with_accepted_tcb_statuses(["UpToDate", "OutOfDate"]);
    let v = verify_report(&report, &nonce, Some(&collateral), GATEWAY_AT, &lenient);
    assert!(v.passed(), "{:?}", v.first_failure());
    assert_eq!(v.quote.tcb_status.as_deref(), Some("OutOfDate"));
    assert_eq!(outcome(&v, GpuCheck::PayloadNonce), Some(Outcome::Skip));
}

#[test]
fn binding_failures_each_fail_a_named_check() {
    let dir = corpus_or_skip!();
    let report = nearai(&dir, "/model_attestations/0");
    let nonce: Nonce = corpus::NEARAI_NONCE.parse().unwrap();
    let collateral = load_collateral_json(&corpus::read(&dir, MODEL_COLLATERAL)).unwrap();
    let verify = |r: &AttestationReport, n: &Nonce| {
        verify_report(r, n, Some(&collateral), MODEL_AT, &Policy::default())
    };

    // A different nonce than the one the quote binds: a replayed report.
    let other_nonce = Nonce([0x5a; 32]);
    let v = verify(&report, &other_nonce);
    assert!(!v.passed());
    assert_eq!(outcome(&v, ReportCheck::NonceEcho), Some(Outcome::Fail));
    assert_eq!(outcome(&v, ReportCheck::BindsNonce), Some(Outcome::Fail));
    assert_eq!(outcome(&v, GpuCheck::PayloadNonce), Some(Outcome::Fail));
    assert_eq!(outcome(&v, ReportCheck::BindsAddress), Some(Outcome::Pass));

    // Even if the report echoes our nonce, the quote does not bind it.
    let mut echoed = report.clone();
    echoed.request_nonce = other_nonce.to_hex();
    let v = verify(&echoed, &other_nonce);
    assert_eq!(outcome(&v, ReportCheck::NonceEcho), Some(Outcome::Pass));
    assert_eq!(outcome(&v, ReportCheck::BindsNonce), Some(Outcome::Fail));
    assert!(!v.passed());

    // Someone else's signing address.
    let mut other = report.clone();
    other.signing_address = "0x614bc66ff0407dbb70b9c7ca1f5e983e4a02c921".to_owned();
    let v = verify(&other, &nonce);
    assert!(!v.passed());
    assert_eq!(
        v.first_failure().map(|c| c.id),
        Some(ReportCheck::BindsAddress.into())
    );
    assert_eq!(v.signing_address(), None);

    // A scheme no verifier binds.
    let mut algo = report.clone();
    algo.signing_algo = "ed448".to_owned();
    let v = verify(&algo, &nonce);
    assert_eq!(outcome(&v, ReportCheck::SigningAlgo), Some(Outcome::Fail));
    assert_eq!(v.signer, None);

    // The same report read as ed25519: the address is no Ed25519 key, and nothing binds.
    let mut ed = report;
    ed.signing_algo = "ed25519".to_owned();
    let v = verify(&ed, &nonce);
    assert_eq!(outcome(&v, ReportCheck::SigningAlgo), Some(Outcome::Pass));
    assert_eq!(
        v.first_failure().map(|c| c.id),
        Some(ReportCheck::BindsAddress.into())
    );
}

fn simulated_report(rd: ReportData, addr: cloister_types::Address, nonce: Nonce) -> AttestationReport {
    AttestationReport {
        signing_address: format!("0x{}", hex::encode(addr)),
        signing_algo: "ecdsa".to_owned(),
        request_nonce: nonce.to_hex(),
        intel_quote: hex::encode(simulated_quote(&rd)),
        nvidia_payload: None,
        event_log: serde_json::json!([]),
        info: serde_json::json!({}),
        tee: Some(TeeKind::Simulated),
        hpke_public_key: None,
        key_binding: None,
        signing_public_key: None,
        tls_cert_fingerprint: None,
    }
}

#[test]
fn nonzero_padding_fails_the_address_binding() {
    let (addr, nonce) = (cloister_types::Address::repeat_byte(0x11), Nonce([0x22; 32]));
    let mut rd = ReportData::new(addr, nonce);
    rd.0[25] = 1;
    let v = verify_report(
        &simulated_report(rd, addr, nonce),
        &nonce,
        None,
        0,
        &Policy::dev_allow_simulated(),
    );
    assert!(!v.passed());
    let failure = v.first_failure().unwrap();
    assert_eq!(failure.id, ReportCheck::BindsAddress.into());
    assert!(failure.detail.contains("20..32"), "{}", failure.detail);
    assert_eq!(outcome(&v, ReportCheck::BindsNonce), Some(Outcome::Pass));
}

#[test]
fn simulated_reports_are_refused_without_the_dev_flag() {
    let (addr, nonce) = (cloister_types::Address::repeat_byte(0x11), Nonce([0x22; 32]));
    let report = simulated_report(ReportData::new(addr, nonce), addr, nonce);
    let v = verify_report(&report, &nonce, None, 0, &Policy::default());
    assert!(!v.passed());
    assert_eq!(
        outcome(&v, Scoped::Quote(QuoteCheck::NotSimulated)),
        Some(Outcome::Fail)
    );
    assert_eq!(outcome(&v, ReportCheck::TeeNotSimulated), Some(Outcome::Fail));
    let detail = &v
        .checks
        .get(Scoped::Quote(QuoteCheck::NotSimulated))
        .unwrap()
        .detail;
    assert!(detail.contains("development quote"), "{detail}");

    let v = verify_report(&report, &nonce, None, 0, &Policy::dev_allow_simulated());
    print("simulated, dev policy", &v);
    assert!(v.passed(), "{:?}", v.first_failure());
    assert_eq!(
        outcome(&v, Scoped::Quote(QuoteCheck::NotSimulated)),
        Some(Outcome::Warn)
    );
    assert_eq!(v.signing_address(), Some(addr));

    // A simulated quote in a report that claims real TDX is still refused by name.
    let mut disguised = report;
    disguised.tee = Some(TeeKind::Tdx);
    let v = verify_report(&disguised, &nonce, None, 0, &Policy::default());
    assert!(!v.passed());
    assert_eq!(
        outcome(&v, Scoped::Quote(QuoteCheck::NotSimulated)),
        Some(Outcome::Fail)
    );
}

#[test]
fn report_verdict_serialises() {
    let (addr, nonce) = (cloister_types::Address::repeat_byte(0x11), Nonce([0x22; 32]));
    let report = simulated_report(ReportData::new(addr, nonce), addr, nonce);
    let v = verify_report(&report, &nonce, None, 0, &Policy::dev_allow_simulated());
    let json = serde_json::to_value(&v).unwrap();
    assert_eq!(json["signer"], format!("0x{}", hex::encode(addr)));
    assert_eq!(json["tee"], "simulated");
    assert!(
        json["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["outcome"] == "warn")
    );
}
