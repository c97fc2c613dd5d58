//! NVIDIA GPU evidence from the real corpus (`gpu_and_report_cases` in expected_outcomes.json):
//! nvtrust's Hopper sample, the PPCIE GPU and NVSwitch evidence, and the NEAR AI report's payload,
//! plus negatives that fail by name.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use cloister_attest::check::{Checks, GpuCheck, Outcome};
use cloister_attest::gpu::{
    self, EvidenceItem, GpuVerdict, verify_device, verify_evidence_list, verify_gpu_payload,
};

use crate::corpus::{self, corpus_or_skip};

/// Every certificate involved is valid 2022-03-01 .. 9999; the NEAR AI model report's time.
const NOW: u64 = 1_776_996_364;
const HOPPER_NONCE: &str = "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb";
const PPCIE_NONCE: &str = "4760e30534a0621357d458b1a7936551b5dc4cd1e69718adf7ed9fb0252a537e";

fn nonce(hex_str: &str) -> [u8; 32] {
    let mut n = [0; 32];
    hex::decode_to_slice(hex_str, &mut n).unwrap();
    n
}

fn print(label: &str, v: &GpuVerdict) {
    println!("{label}: passed={}", v.passed());
    for c in &v.checks {
        println!("  {c}");
    }
}

fn expected_case(dir: &std::path::Path, id: &str) -> serde_json::Value {
    let doc = corpus::json(dir, "expected_outcomes.json");
    doc["gpu_and_report_cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("case {id}"))["expected"]
        .clone()
}

fn hopper(dir: &std::path::Path) -> (Vec<u8>, Vec<u8>) {
    let text = String::from_utf8(corpus::read(dir, "nvtrust/hopperAttestationReport.txt")).unwrap();
    (
        corpus::read(dir, "nvtrust/hopperCertChain.txt"),
        hex::decode(text.trim()).unwrap(),
    )
}

fn failed(checks: &Checks, id: GpuCheck) -> bool {
    checks.failed(id)
}

#[test]
fn nvtrust_hopper_sample_verifies() {
    let dir = corpus_or_skip!();
    let want = expected_case(&dir, "nvtrust-hopper-sample-report");
    let (chain, evidence) = hopper(&dir);
    let (checks, summary) = verify_device(&chain, &evidence, &nonce(HOPPER_NONCE), NOW);
    for c in &checks {
        println!("  {c}");
    }
    assert!(checks.iter().all(|c| c.outcome == Outcome::Pass), "{checks:#?}");
    let s = summary.unwrap();
    assert_eq!(s.request_nonce, want["request_nonce"]);
    assert_eq!(s.spdm_version, 0x11);
    assert_eq!(s.n_certs as u64, want["n_certs"]);
    assert_eq!(s.n_measurement_blocks as u64, want["n_measurement_blocks"]);
    assert_eq!(
        s.measurement_record_length as u64,
        want["measurement_record_length"]
    );
    assert_eq!(s.opaque_length as u64, want["opaque_length"]);
    assert_eq!(s.driver_version.as_deref(), want["driver_version"].as_str());
    assert_eq!(s.vbios_version.as_deref(), Some("96.00.9F.00.01"));
    assert_eq!(s.project.as_deref(), want["project"].as_str());
    assert_eq!(s.project_sku.as_deref(), want["project_sku"].as_str());
    assert_eq!(s.chip_sku.as_deref(), want["chip_sku"].as_str());
    assert_eq!(s.fwid.as_deref(), want["fwid"].as_str());
}

#[test]
fn nvtrust_hopper_negatives_fail_by_name() {
    let dir = corpus_or_skip!();
    let (chain, evidence) = hopper(&dir);
    let n = nonce(HOPPER_NONCE);

    // nvtrust's test_no_gpu nonce is not the one in the report.
    let other = nonce("4cff7f5380ead8fad8ec2c531c110aca4302a88f603792801a8ca29ee151af2e");
    let (checks, _) = verify_device(&chain, &evidence, &other, NOW);
    assert!(failed(&checks, GpuCheck::SpdmNonce));
    assert!(!failed(&checks, GpuCheck::SpdmSignature));

    // A flipped byte in the signature, and one in the signed measurements.
    for at in [evidence.len() - 10, 200] {
        let mut bad = evidence.clone();
        bad[at] ^= 1;
        let (checks, _) = verify_device(&chain, &bad, &n, NOW);
        assert!(failed(&checks, GpuCheck::SpdmSignature), "byte {at}");
        assert!(!failed(&checks, GpuCheck::CertChain));
    }

    // Before the intermediate certificates were valid.
    let (checks, _) = verify_device(&chain, &evidence, &n, 1_600_000_000);
    assert!(failed(&checks, GpuCheck::CertChain));

    // A chain without the device-specific certificates does not reach the leaf's key.
    let text = String::from_utf8(chain.clone()).unwrap();
    let begin = "-----BEGIN CERTIFICATE-----";
    let second = text[1..].find(begin).unwrap() + 1;
    let (checks, _) = verify_device(&text.as_bytes()[second..], &evidence, &n, NOW);
    assert!(failed(&checks, GpuCheck::SpdmSignature));

    // Truncated evidence.
    let (checks, _) = verify_device(&chain, &evidence[..evidence.len() - 97], &n, NOW);
    assert!(failed(&checks, GpuCheck::DeviceDecodes));
}

fn ppcie(dir: &std::path::Path, file: &str) -> Vec<EvidenceItem> {
    serde_json::from_slice(&corpus::read(dir, file)).unwrap()
}

fn check_devices(v: &GpuVerdict, want: &serde_json::Value) {
    let per_device = want["per_device"]
        .as_array()
        .or(want["gpu_evidence"].as_array())
        .unwrap();
    assert_eq!(v.gpus.len(), per_device.len());
    for (s, w) in v.gpus.iter().zip(per_device) {
        assert_eq!(s.arch.as_deref(), w["arch"].as_str());
        assert_eq!(s.request_nonce, w["spdm_request_nonce"]);
        assert_eq!(s.n_certs as u64, w["n_certs"]);
        assert_eq!(s.n_measurement_blocks as u64, w["n_measurement_blocks"]);
        assert_eq!(s.driver_version.as_deref(), w["driver_version"].as_str());
        assert_eq!(s.project.as_deref(), w["project"].as_str());
        assert_eq!(s.chip_sku.as_deref(), w["chip_sku"].as_str());
    }
}

#[test]
fn nvtrust_ppcie_gpus_and_switches_verify() {
    let dir = corpus_or_skip!();
    for (id, file, n) in [
        ("nvtrust-ppcie_gpu_evidence", "nvtrust/ppcie_gpu_evidence.json", 8),
        (
            "nvtrust-ppcie_switch_evidence",
            "nvtrust/ppcie_switch_evidence.json",
            4,
        ),
    ] {
        let want = expected_case(&dir, id);
        let v = verify_evidence_list(&ppcie(&dir, file), &nonce(PPCIE_NONCE), NOW);
        print(id, &v);
        assert!(v.passed(), "{id}: {:?}", v.first_failure());
        assert_eq!(v.gpus.len(), n);
        assert_eq!(v.worst(GpuCheck::NotChecked), Some(Outcome::Warn));
        check_devices(&v, &want);
    }
}

#[test]
fn ppcie_broken_chain_and_garbage_fail_by_name() {
    let dir = corpus_or_skip!();
    let n = nonce(PPCIE_NONCE);
    let items = ppcie(&dir, "nvtrust/ppcie_gpu_evidence.json");

    // Leaf of GPU 0 swapped with GPU 1's leaf: the chain breaks and GPU 0's signature fails.
    let pem = |i: usize| String::from_utf8(STANDARD.decode(&items[i].certificate).unwrap()).unwrap();
    let split = |s: &str| {
        let at = s[1..].find("-----BEGIN CERTIFICATE-----").unwrap() + 1;
        (s[..at].to_owned(), s[at..].to_owned())
    };
    let (_, rest0) = split(&pem(0));
    let (leaf1, _) = split(&pem(1));
    let mut swapped = items.clone();
    swapped[0].certificate = STANDARD.encode(format!("{leaf1}{rest0}"));
    let v = verify_evidence_list(&swapped, &n, NOW);
    assert!(!v.passed());
    assert!(failed(&v.checks, GpuCheck::CertChain));
    assert!(failed(&v.checks, GpuCheck::SpdmSignature));

    // Garbage base64.
    let mut garbage = items.clone();
    garbage[3].evidence = "not base64 !!!".to_owned();
    let v = verify_evidence_list(&garbage, &n, NOW);
    assert!(!v.passed());
    assert_eq!(v.first_failure().unwrap().id, GpuCheck::DeviceDecodes.into());
    assert_eq!(v.gpus.len(), 7);

    // Another nonce.
    let v = verify_evidence_list(&items, &[0x42; 32], NOW);
    assert_eq!(v.first_failure().unwrap().id, GpuCheck::SpdmNonce.into());
}

#[test]
fn nearai_report_payload_verifies() {
    let dir = corpus_or_skip!();
    let want = expected_case(&dir, "nearai-fixture-report");
    let doc = corpus::json(&dir, corpus::NEARAI_REPORT);
    let payload = doc
        .pointer("/model_attestations/0/nvidia_payload")
        .unwrap()
        .as_str()
        .unwrap();
    let n = nonce(corpus::NEARAI_NONCE);
    let v = verify_gpu_payload(payload, &n, NOW);
    print("nearai", &v);
    assert!(v.passed(), "{:?}", v.first_failure());
    assert_eq!(v.worst(GpuCheck::PayloadNonce), Some(Outcome::Pass));
    check_devices(&v, &want);

    let v = verify_gpu_payload(payload, &[1; 32], NOW);
    assert!(!v.passed());
    assert_eq!(v.first_failure().unwrap().id, GpuCheck::PayloadNonce.into());
    assert!(failed(&v.checks, GpuCheck::SpdmNonce));

    // A flipped signature byte in GPU 5's evidence.
    let mut json: serde_json::Value = serde_json::from_str(payload).unwrap();
    let ev = &mut json["evidence_list"][5]["evidence"];
    let mut bytes = STANDARD.decode(ev.as_str().unwrap()).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x80;
    *ev = STANDARD.encode(bytes).into();
    let v = verify_gpu_payload(&json.to_string(), &n, NOW);
    assert!(!v.passed());
    assert_eq!(v.first_failure().unwrap().id, GpuCheck::SpdmSignature.into());
    assert!(v.first_failure().unwrap().detail.starts_with("device 5"));

    assert!(!gpu::verify_gpu_payload("{\"nonce\":", &n, NOW).passed());
}
