//! `cloister_attest::measure` against every dstack report in the corpus that carries
//! `info.tcb_info.app_compose`: the compose hash computed from it equals the one the report
//! states, `0x01 ‖ compose_hash ‖ 0^15` equals the quote's MR_CONFIG_ID, and the digest computed
//! from the quote's own MRTD/RTMR0..2 equals `measurements`' digest of that quote.

use std::path::{Path, PathBuf};

use cloister_attest::eventlog::verify_event_log;
use cloister_attest::measure::report::{MeasureField, compare, dstack_attestations};
use cloister_attest::measure::{OsMeasurements, compose_hash, expected, mr_config_id};
use cloister_attest::measurements::{Measurements, measurement_digest};
use cloister_attest::quote::{decode_quote_bytes, parse_quote};
use serde_json::Value;

use crate::corpus::{self, NEARAI_REPORT, corpus_or_skip};

/// The reports known to carry app_compose; the scan below must find each of them.
const KNOWN: [&str; 3] = [
    NEARAI_REPORT,
    "teep/nearcloud_qwen3.5-122b_20260424/0001_cloud-api.near.ai_v1_attestation_report.body",
    "teep/neardirect_qwen3.5-122b_20260629/0001_qwen35-122b.completions.near.ai_v1_attestation_report.body",
];

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Every corpus file that holds a dstack attestation with app_compose, by relative path.
fn reports_with_app_compose(dir: &Path) -> Vec<(String, Value)> {
    let mut all = Vec::new();
    files(dir, &mut all);
    all.sort();
    all.into_iter()
        .filter_map(|path| {
            let bytes = std::fs::read(&path).ok()?;
            if !bytes.windows(13).any(|w| w == b"\"app_compose\"") {
                return None;
            }
            let json: Value = serde_json::from_slice(&bytes).ok()?;
            dstack_attestations(&json).ok()?;
            let rel = path.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            Some((rel, json))
        })
        .collect()
}

#[test]
fn every_corpus_report_reproduces_compose_hash_mr_config_id_and_digest() {
    let dir = corpus_or_skip!();
    let reports = reports_with_app_compose(&dir);
    for known in KNOWN {
        assert!(
            reports.iter().any(|(rel, _)| rel == known),
            "{known} not found among {:?}",
            reports.iter().map(|(r, _)| r).collect::<Vec<_>>()
        );
    }
    let mut attestations = 0;
    for (rel, report) in &reports {
        for att in dstack_attestations(report).unwrap() {
            let at = format!("{rel} {}", att.path);
            attestations += 1;
            let c = compare(&att).unwrap();
            assert!(c.matches(), "{at}: {:#?}", c.fields);

            // Each value, also checked here without the comparison's help.
            assert!(
                !att.stated_compose_hashes.is_empty(),
                "{at}: no stated compose hash"
            );
            let hash = compose_hash(att.app_compose.as_bytes());
            for (where_, stated) in &att.stated_compose_hashes {
                assert_eq!(hex::encode(hash), *stated, "{at} {where_}");
            }
            let m = Measurements::from_quote(&att.quote).unwrap();
            assert_eq!(mr_config_id(&hash), m.mr_config_id, "{at}: MR_CONFIG_ID");
            let os = OsMeasurements::from_quote(&att.quote).unwrap();
            let e = expected(att.app_compose.as_bytes(), Some(&os));
            assert_eq!(
                e.measurement_digest,
                measurement_digest(&att.quote),
                "{at}: digest"
            );
            assert!(
                c.fields
                    .iter()
                    .any(|f| f.field == MeasureField::EventLogComposeHash),
                "{at}: the event log should vouch for the compose hash"
            );
        }
    }
    // NEAR fixture: gateway + model; nearcloud: gateway + model; neardirect: report + all_attestations[0].
    assert!(attestations >= 6, "only {attestations} attestations");
}

/// The report's `tcb_info` states MRTD and RTMR0..3 next to the quote; as `--os-measurements`
/// input it gives the quote's own registers.
#[test]
fn tcb_info_registers_read_as_os_measurements_equal_the_quotes() {
    let dir = corpus_or_skip!();
    let report = corpus::json(&dir, NEARAI_REPORT);
    for att in [&report["gateway_attestation"], &report["model_attestations"][0]] {
        let from_json = OsMeasurements::from_value(att).unwrap();
        let quote =
            parse_quote(&decode_quote_bytes(att["intel_quote"].as_str().unwrap().as_bytes()).unwrap())
                .unwrap();
        assert_eq!(from_json, OsMeasurements::from_quote(&quote).unwrap());
    }
}

/// A changed app-compose.json (one byte) changes all three values, and the comparison says so.
#[test]
fn a_changed_compose_no_longer_matches_the_quote() {
    let dir = corpus_or_skip!();
    let report = corpus::json(&dir, KNOWN[2]);
    let mut att = dstack_attestations(&report).unwrap().remove(0);
    att.app_compose.push(' ');
    let c = compare(&att).unwrap();
    assert!(!c.matches());
    for f in &c.fields {
        assert!(!f.matches, "{} from {} still matches", f.field, f.reported_in);
    }
}

/// dstack's own verifier capture has no app_compose, but its verified event log's compose-hash
/// event is the preimage of its MR_CONFIG_ID under the same rule.
#[test]
fn dstack_tdx_lite_mr_config_id_is_built_from_its_compose_hash_event() {
    let dir = corpus_or_skip!();
    let capture = corpus::json(&dir, "dstack/verifier_tdx-lite-getquote.json");
    let quote =
        parse_quote(&decode_quote_bytes(capture["quote"].as_str().unwrap().as_bytes()).unwrap()).unwrap();
    let app = verify_event_log(&capture["event_log"], &quote).app.unwrap();
    let hash: [u8; 32] = hex::decode(&app.compose_hash).unwrap().try_into().unwrap();
    assert_eq!(
        mr_config_id(&hash),
        Measurements::from_quote(&quote).unwrap().mr_config_id
    );
}
