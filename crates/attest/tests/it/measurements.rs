//! Measurements, event-log replay and (feature `fetch`) the collateral cache, against the real
//! dstack and NEAR AI evidence in the corpus.

use cloister_attest::check::{EventLogCheck, Outcome};
use cloister_attest::eventlog::verify_event_log;
use cloister_attest::measurements::{Measurements, measurement_digest};
use cloister_attest::quote::{Quote, decode_quote_bytes, parse_quote};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::corpus::{self, NEARAI_REPORT, corpus_or_skip};

fn quote_from_hex(hex: &Value) -> Quote {
    let bytes = decode_quote_bytes(hex.as_str().unwrap().as_bytes()).unwrap();
    parse_quote(&bytes).unwrap()
}

fn outcome(v: &cloister_attest::eventlog::EventLogVerdict, id: EventLogCheck) -> Outcome {
    v.check(id).unwrap_or_else(|| panic!("no check {id}")).outcome
}

#[test]
fn dstack_quote_report_replays_all_four_rtmrs() {
    let dir = corpus_or_skip!();
    let report = corpus::json(&dir, "dstack/verifier_quote-report.json");
    let quote = quote_from_hex(&report["quote"]);
    let v = verify_event_log(&report["event_log"], &quote);
    assert!(v.passed(), "{:#?}", v.checks);
    for name in &EventLogCheck::REPLAY {
        assert_eq!(outcome(&v, *name), Outcome::Pass, "{name}");
    }
    assert_eq!(outcome(&v, EventLogCheck::RuntimeDigests), Outcome::Pass);
    // This dstack version leaves MR_CONFIG_ID zero.
    assert_eq!(outcome(&v, EventLogCheck::MrConfigId), Outcome::Skip);
    let app = v.app.unwrap();
    assert_eq!(app.compose_hash.len(), 64);
    assert!(app.key_provider.unwrap().contains("local-sgx"));
    assert!(app.instance_id.is_some());

    // The same quote, as the binary the corpus derived from it.
    let bin = parse_quote(&corpus::read(&dir, "dstack/derived/quote-report.quote.bin")).unwrap();
    assert_eq!(bin.td_report().unwrap().rtmr, quote.td_report().unwrap().rtmr);
}

/// The tdx-lite capture is dstack's stripped log: runtime events carry an empty `digest`. Taken
/// literally (extending nothing) RTMR3 does not replay (corpus README); with the digests
/// recomputed from name and payload, as dstack's verifier does, all four replay and
/// MR_CONFIG_ID binds the compose hash. A changed payload then fails the named RTMR3 replay.
#[test]
fn tdx_lite_rtmr3_replays_only_from_recomputed_digests() {
    let dir = corpus_or_skip!();
    let capture = corpus::json(&dir, "dstack/verifier_tdx-lite-getquote.json");
    let quote = quote_from_hex(&capture["quote"]);
    let log: Value = serde_json::from_str(capture["event_log"].as_str().unwrap()).unwrap();
    let runtime: Vec<&Value> = log.as_array().unwrap().iter().filter(|e| e["imr"] == 3).collect();
    assert!(!runtime.is_empty());
    assert!(
        runtime.iter().all(|e| e["digest"] == ""),
        "the capture is a lite log"
    );

    let v = verify_event_log(&capture["event_log"], &quote);
    assert!(v.passed(), "{:#?}", v.checks);
    assert_eq!(outcome(&v, EventLogCheck::MrConfigId), Outcome::Pass);
    let app = v.app.unwrap();
    assert!(app.key_provider.unwrap().contains("\"kms\""));
    assert!(app.os_image_hash.is_some());

    let mut tampered = log;
    let events = tampered.as_array_mut().unwrap();
    let i = events.iter().position(|e| e["event"] == "compose-hash").unwrap();
    events[i]["event_payload"] = Value::String(hex::encode([0x42u8; 32]));
    let v = verify_event_log(&tampered, &quote);
    assert!(!v.passed());
    for name in &EventLogCheck::REPLAY[..3] {
        assert_eq!(outcome(&v, *name), Outcome::Pass, "{name}");
    }
    assert_eq!(v.first_failure().unwrap().id, EventLogCheck::Rtmr3Replay.into());
    assert!(v.app.is_none());
    assert_eq!(outcome(&v, EventLogCheck::AppIdentity), Outcome::Skip);
}

#[test]
fn nearai_event_logs_replay_and_bind_the_compose_hash() {
    let dir = corpus_or_skip!();
    let expected = corpus::json(&dir, "expected_outcomes.json");
    let case = expected["gpu_and_report_cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "nearai-fixture-report")
        .unwrap();
    let report = corpus::json(&dir, NEARAI_REPORT);
    let gateway = &report["gateway_attestation"];
    let model = &report["model_attestations"][0];
    for (att, facts) in [
        (gateway, &case["expected"]["gateway_tdx_binding"]),
        (model, &case["expected"]["model_tdx_binding"]),
    ] {
        let quote = quote_from_hex(&att["intel_quote"]);
        // `event_log` is a JSON string on the gateway and a list on the model: both are read.
        let v = verify_event_log(&att["event_log"], &quote);
        assert!(v.passed(), "{:#?}", v.checks);
        let replays: Vec<bool> = EventLogCheck::REPLAY
            .iter()
            .map(|n| outcome(&v, *n) == Outcome::Pass)
            .collect();
        let want: Vec<bool> = facts["rtmr0..3_replay_from_event_log_matches_quote"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_bool().unwrap())
            .collect();
        assert_eq!(replays, want);
        assert_eq!(
            outcome(&v, EventLogCheck::MrConfigId) == Outcome::Pass,
            facts["mr_config_id_eq_01||sha256(app_compose)"]
                .as_bool()
                .unwrap()
        );

        let app = v.app.unwrap();
        let info = &att["info"];
        let app_compose = info["tcb_info"]["app_compose"].as_str().unwrap();
        assert_eq!(
            app.compose_hash,
            hex::encode(Sha256::digest(app_compose.as_bytes()))
        );
        assert_eq!(app.compose_hash, info["compose_hash"].as_str().unwrap());
        assert_eq!(app.app_id, info["app_id"].as_str().unwrap());
        assert_eq!(app.instance_id.as_deref(), info["instance_id"].as_str());
        assert_eq!(app.os_image_hash.as_deref(), info["os_image_hash"].as_str());
        assert_eq!(app.key_provider.as_deref(), info["key_provider_info"].as_str());
    }
}

#[test]
fn tampered_event_log_fails() {
    let dir = corpus_or_skip!();
    let report = corpus::json(&dir, NEARAI_REPORT);
    let model = &report["model_attestations"][0];
    let quote = quote_from_hex(&model["intel_quote"]);
    let log = model["event_log"].as_array().unwrap().clone();

    // A changed RTMR1 digest breaks that replay.
    let mut tampered = log.clone();
    let i = tampered.iter().position(|e| e["imr"] == 1).unwrap();
    let mut digest = hex::decode(tampered[i]["digest"].as_str().unwrap()).unwrap();
    digest[0] ^= 1;
    tampered[i]["digest"] = Value::String(hex::encode(digest));
    let v = verify_event_log(&Value::Array(tampered), &quote);
    assert!(!v.passed());
    assert_eq!(v.first_failure().unwrap().id, EventLogCheck::Rtmr1Replay.into());

    // A changed compose-hash payload beside the original digest: the replay still holds, the
    // digest check does not, and the forged payload is not reported as the identity.
    let mut tampered = log;
    let i = tampered
        .iter()
        .position(|e| e["event"] == "compose-hash")
        .unwrap();
    tampered[i]["event_payload"] = Value::String(hex::encode([0x42u8; 32]));
    let v = verify_event_log(&Value::Array(tampered), &quote);
    assert!(!v.passed());
    assert_eq!(outcome(&v, EventLogCheck::Rtmr3Replay), Outcome::Pass);
    assert_eq!(
        v.first_failure().unwrap().id,
        EventLogCheck::RuntimeDigests.into()
    );
    assert!(v.app.is_none());
}

#[test]
fn measurement_digest_excludes_rtmr3() {
    let dir = corpus_or_skip!();
    let report = corpus::json(&dir, NEARAI_REPORT);
    let quote = quote_from_hex(&report["model_attestations"][0]["intel_quote"]);
    let m = Measurements::from_quote(&quote).unwrap();
    let td = quote.td_report().unwrap();
    let mut preimage = Vec::new();
    for part in [&td.mr_td, &td.rtmr[0], &td.rtmr[1], &td.rtmr[2], &td.mr_config_id] {
        preimage.extend_from_slice(part);
    }
    let want: [u8; 32] = Sha256::digest(&preimage).into();
    assert_eq!(m.digest(), want);
    assert_eq!(measurement_digest(&quote), Some(want));
    let json = serde_json::to_value(&m).unwrap();
    assert_eq!(
        json["mrtd"].as_str().unwrap(),
        report["model_attestations"][0]["info"]["tcb_info"]["mrtd"]
            .as_str()
            .unwrap()
    );
}

#[cfg(feature = "fetch")]
mod cache {
    use cloister_attest::collateral::pck_info;
    use cloister_attest::collateral_cache::{CollateralCache, collateral_next_update};

    use crate::corpus::{self, corpus_or_skip};

    const QUOTE: &str = "dstack/derived/quote-report.quote.bin";
    const COLLATERAL: &str = "dcap-qvl/tdx_quote_outdated_collateral.json";
    /// The collateral window's end from expected_outcomes.json (case dstack-verifier-quote-report).
    const NOT_AFTER: u64 = 1_774_003_275;

    fn closed_port_url() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        format!("http://127.0.0.1:{port}")
    }

    #[test]
    fn next_update_is_the_collateral_window_end() {
        let dir = corpus_or_skip!();
        let c = corpus::collateral(&dir, COLLATERAL);
        assert_eq!(collateral_next_update(&c), Some(NOT_AFTER));
    }

    #[tokio::test]
    async fn fresh_entry_is_served_from_disk_and_stale_one_is_refetched() {
        let dir = corpus_or_skip!();
        let quote = corpus::read(&dir, QUOTE);
        let collateral = corpus::collateral(&dir, COLLATERAL);
        let tmp = tempfile::tempdir().unwrap();
        let cache = CollateralCache::new(tmp.path().join("collateral"));
        let info = pck_info(&quote).unwrap();
        cache.store(&info, &collateral).unwrap();
        assert!(
            cache
                .entry_path(&info)
                .ends_with("tdx-90C06F000000-platform.json")
                || cache
                    .entry_path(&info)
                    .ends_with("tdx-90C06F000000-processor.json")
        );

        // Fresh: served from disk; the PCCS URL points nowhere, so a fetch would fail.
        let url = closed_port_url();
        let got = cache.get(&url, &quote, NOT_AFTER - 1).await.unwrap();
        assert_eq!(got.tcb_info, collateral.tcb_info);
        assert_eq!(got.pck_crl, collateral.pck_crl);

        // Expired: a download is attempted, and its failure is reported.
        let err = cache.get(&url, &quote, NOT_AFTER).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains("127.0.0.1"), "{text}");
        assert!(matches!(err, cloister_attest::Error::Http { .. }), "{err:?}");
        assert!(cache.lookup(&info, NOT_AFTER).is_none());
    }

    #[tokio::test]
    async fn missing_or_corrupt_entry_is_refetched() {
        let dir = corpus_or_skip!();
        let quote = corpus::read(&dir, QUOTE);
        let tmp = tempfile::tempdir().unwrap();
        let cache = CollateralCache::new(tmp.path());
        let url = closed_port_url();
        assert!(cache.get(&url, &quote, NOT_AFTER - 1).await.is_err());
        let info = pck_info(&quote).unwrap();
        std::fs::write(cache.entry_path(&info), b"{not json").unwrap();
        assert!(cache.lookup(&info, NOT_AFTER - 1).is_none());
        assert!(cache.get(&url, &quote, NOT_AFTER - 1).await.is_err());
    }
}
