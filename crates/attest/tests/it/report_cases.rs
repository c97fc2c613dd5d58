//! Table-driven conformance for every `gpu_and_report_cases` entry of expected_outcomes.json:
//! each id goes to the verifier that handles it and the `expected` fields this crate can compute
//! are compared. One line is printed per case.

use std::path::Path;

use cloister_attest::check::{EventLogCheck, GpuCheck, NrasCheck, Outcome};
use cloister_attest::eventlog;
use cloister_attest::gpu::{self, EvidenceItem, GpuEvidenceSummary, GpuVerdict};
use cloister_attest::nras::verify_nras_response;
use cloister_attest::report::ed25519_report_data_prefix;
use cloister_attest::verify::{Policy, verify_quote};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::corpus::{self, corpus_or_skip};
use crate::nras::{NEARCLOUD, NEARDIRECT, Session};

/// Every NVIDIA certificate involved is valid from 2022 on; use the NEAR AI capture time.
const GPU_NOW: u64 = 1_776_996_364;
const NEARDIRECT_COLLATERAL: &str =
    "teep/neardirect_qwen3.5-122b_20260629/derived/collateral_90c06f000000.json";
const NEARCLOUD_90: &str = "teep/nearcloud_qwen3.5-122b_20260424/derived/collateral_90c06f000000.json";
const NEARCLOUD_B0: &str = "teep/nearcloud_qwen3.5-122b_20260424/derived/collateral_b0c06f000000.json";

fn nonce(hex_str: &str) -> [u8; 32] {
    let mut n = [0; 32];
    hex::decode_to_slice(hex_str.trim_start_matches("0x"), &mut n).unwrap();
    n
}

/// Compares `got` with `expected[key]` when the expectation has that key.
fn cmp(bad: &mut Vec<String>, what: &str, expected: &Value, key: &str, got: Value) {
    if let Some(want) = expected.get(key)
        && *want != got
    {
        bad.push(format!("{what}.{key}: got {got}, expected {want}"));
    }
}

fn device_fields(bad: &mut Vec<String>, what: &str, s: &GpuEvidenceSummary, want: &Value, v: &GpuVerdict) {
    cmp(bad, what, want, "arch", s.arch.clone().into());
    cmp(
        bad,
        what,
        want,
        "spdm_request_nonce",
        s.request_nonce.clone().into(),
    );
    cmp(bad, what, want, "n_certs", s.n_certs.into());
    cmp(
        bad,
        what,
        want,
        "n_measurement_blocks",
        s.n_measurement_blocks.into(),
    );
    cmp(bad, what, want, "driver_version", s.driver_version.clone().into());
    cmp(bad, what, want, "project", s.project.clone().into());
    cmp(bad, what, want, "chip_sku", s.chip_sku.clone().into());
    // The signature, chain and nonce checks are per device; the verdict passes only if all hold.
    let all = |id: GpuCheck| v.worst(id) == Some(Outcome::Pass);
    cmp(
        bad,
        what,
        want,
        "spdm_signature_valid_p384_sha384",
        all(GpuCheck::SpdmSignature).into(),
    );
    cmp(
        bad,
        what,
        want,
        "cert_chain_links_valid",
        all(GpuCheck::CertChain).into(),
    );
    cmp(
        bad,
        what,
        want,
        "chain_root_is_nvidia_device_identity_ca",
        all(GpuCheck::CertChain).into(),
    );
    cmp(
        bad,
        what,
        want,
        "nonce_matches_expected",
        all(GpuCheck::SpdmNonce).into(),
    );
}

fn gpu_list(bad: &mut Vec<String>, v: &GpuVerdict, want: &Value) {
    let want = want.as_array().map(Vec::as_slice).unwrap_or_default();
    if v.gpus.len() != want.len() {
        bad.push(format!("{} devices, expected {}", v.gpus.len(), want.len()));
    }
    for (i, (s, w)) in v.gpus.iter().zip(want).enumerate() {
        device_fields(bad, &format!("device {i}"), s, w, v);
    }
    if !v.passed() {
        bad.push(format!("GPU evidence did not verify: {:?}", v.first_failure()));
    }
}

fn evidence_file(bad: &mut Vec<String>, dir: &Path, file: &str, want: &Value) -> String {
    let items: Vec<EvidenceItem> = serde_json::from_slice(&corpus::read(dir, file)).unwrap();
    let n = nonce(want["nonce"].as_str().unwrap());
    let v = gpu::verify_evidence_list(&items, &n, GPU_NOW);
    cmp(bad, "evidence", want, "n_devices", items.len().into());
    gpu_list(bad, &v, &want["per_device"]);
    format!("{} devices verified", v.gpus.len())
}

fn hopper_sample(bad: &mut Vec<String>, dir: &Path, want: &Value) -> String {
    let text = String::from_utf8(corpus::read(dir, "nvtrust/hopperAttestationReport.txt")).unwrap();
    let evidence = hex::decode(text.trim()).unwrap();
    let chain = corpus::read(dir, "nvtrust/hopperCertChain.txt");
    let (checks, summary) = gpu::verify_device(
        &chain,
        &evidence,
        &nonce(want["request_nonce"].as_str().unwrap()),
        GPU_NOW,
    );
    let Some(s) = summary else {
        bad.push("no summary".into());
        return String::new();
    };
    let v = GpuVerdict {
        checks,
        gpus: vec![s.clone()],
    };
    device_fields(bad, "hopper", &s, want, &v);
    cmp(
        bad,
        "hopper",
        want,
        "spdm_version",
        format!("0x{:02x}", s.spdm_version).into(),
    );
    cmp(
        bad,
        "hopper",
        want,
        "request_nonce",
        s.request_nonce.clone().into(),
    );
    cmp(
        bad,
        "hopper",
        want,
        "measurement_record_length",
        s.measurement_record_length.into(),
    );
    cmp(bad, "hopper", want, "opaque_length", s.opaque_length.into());
    cmp(bad, "hopper", want, "project_sku", s.project_sku.clone().into());
    cmp(bad, "hopper", want, "fwid", s.fwid.clone().into());
    let vbios = want["vbios_version"].as_str().unwrap_or_default();
    if !s
        .vbios_version
        .as_deref()
        .is_some_and(|got| vbios.starts_with(got))
    {
        bad.push(format!("vbios {:?} vs {vbios:?}", s.vbios_version));
    }
    format!(
        "SPDM 1.1, {} blocks, VBIOS {}",
        s.n_measurement_blocks,
        s.vbios_version.unwrap_or_default()
    )
}

/// One TDX binding (`gateway_tdx_binding`, `model_tdx_binding` or `tdx_binding`) of a report.
fn binding(
    bad: &mut Vec<String>,
    dir: &Path,
    what: &str,
    report: &Value,
    want: &Value,
    client_nonce: &str,
    (collateral, at): (&str, u64),
) -> Option<String> {
    let collateral = corpus::collateral(dir, collateral);
    let any_status = Policy::default().with_accepted_tcb_statuses(["UpToDate", "OutOfDate"]);
    let qv = verify_quote(
        report["intel_quote"].as_str().unwrap().as_bytes(),
        Some(&collateral),
        at,
        &any_status,
    );
    if !qv.passed() {
        bad.push(format!("{what}: quote failed: {:?}", qv.first_failure()));
        return None;
    }
    let quote = qv.quote.as_ref().unwrap();
    let rd = quote.report_data();
    let algo = report["signing_algo"].as_str().unwrap_or("ecdsa");
    let address = report["signing_address"].as_str().unwrap();
    let request_nonce = report["request_nonce"].as_str().unwrap();
    cmp(bad, what, want, "signing_algo", algo.into());
    cmp(bad, what, want, "signing_address", address.into());
    cmp(bad, what, want, "request_nonce", request_nonce.into());
    cmp(
        bad,
        what,
        want,
        "request_nonce_equals_client_nonce",
        (request_nonce == client_nonce).into(),
    );
    let mut padded = hex::decode(address.trim_start_matches("0x")).unwrap();
    padded.resize(32, 0);
    cmp(
        bad,
        what,
        want,
        "report_data_first32_eq_signing_address_zero_padded",
        (rd[..32] == padded[..]).into(),
    );
    cmp(
        bad,
        what,
        want,
        "report_data_last32_eq_request_nonce",
        (rd[32..] == nonce(request_nonce)).into(),
    );
    if let Some(fp) = report["tls_cert_fingerprint"].as_str() {
        let b = ed25519_report_data_prefix(&nonce(address), &nonce(fp));
        cmp(
            bad,
            what,
            want,
            "report_data_first32_eq_sha256(signing_address_bytes||tls_cert_fingerprint_bytes)",
            (rd[..32] == b).into(),
        );
    }
    let log = eventlog::verify_event_log(&report["event_log"], quote);
    let replay: Vec<bool> = EventLogCheck::REPLAY
        .iter()
        .map(|id| log.check(*id).is_some_and(|c| c.outcome == Outcome::Pass))
        .collect();
    cmp(
        bad,
        what,
        want,
        "rtmr0..3_replay_from_event_log_matches_quote",
        replay.into(),
    );
    // MR_CONFIG_ID = 0x01 ‖ SHA-256(app_compose) ‖ zeros, with app_compose from the report's info.
    let tcb_info = match &report["info"]["tcb_info"] {
        Value::String(s) => serde_json::from_str(s).unwrap(),
        other => other.clone(),
    };
    let compose = tcb_info["app_compose"].as_str().unwrap_or_default();
    let mut mr = [0u8; 48];
    mr[0] = 1;
    mr[1..33].copy_from_slice(&Sha256::digest(compose.as_bytes()));
    let td = quote.td_report().unwrap();
    let key = "mr_config_id_eq_01||sha256(app_compose)";
    cmp(bad, what, want, key, (td.mr_config_id == mr).into());
    if want.get(key) == Some(&Value::Bool(true))
        && log.check(EventLogCheck::MrConfigId).map(|c| c.outcome) != Some(Outcome::Pass)
    {
        bad.push(format!(
            "{what}: event log's {} did not pass",
            EventLogCheck::MrConfigId
        ));
    }
    qv.tcb_status.clone()
}

fn payload_gpus(bad: &mut Vec<String>, report: &Value, want: &Value, client_nonce: &str, at: u64) {
    let payload = report["nvidia_payload"].as_str().unwrap();
    let p: Value = serde_json::from_str(payload).unwrap();
    cmp(
        bad,
        "nvidia_payload",
        want,
        "nvidia_payload_nonce_equals_client_nonce",
        (p["nonce"] == client_nonce).into(),
    );
    let v = gpu::verify_gpu_payload(payload, &nonce(client_nonce), at);
    gpu_list(bad, &v, &want["gpu_evidence"]);
}

fn nras_tokens(bad: &mut Vec<String>, dir: &Path, s: &Session, want: &Value) {
    let (body, jwks) = crate::nras::files(dir, s);
    let v = verify_nras_response(&body, &jwks, &crate::nras::nonce(s), s.iat + 60);
    if !v.passed() {
        bad.push(format!("NRAS: {:?}", v.first_failure()));
    }
    for w in want.as_array().map(Vec::as_slice).unwrap_or_default() {
        let name = w["token"].as_str().unwrap();
        let Some(t) = v.tokens.iter().find(|t| t.name == name) else {
            bad.push(format!("NRAS token {name} missing"));
            continue;
        };
        cmp(bad, name, w, "kid", t.kid.clone().into());
        let signed = v.checks.iter().any(|c| {
            c.id == NrasCheck::Signature.into()
                && c.outcome == Outcome::Pass
                && c.detail.starts_with(&format!("{name}:"))
        });
        cmp(bad, name, w, "es384_signature_valid_against_jwks", signed.into());
        for (k, wv) in w["claims"].as_object().unwrap() {
            if t.claims[k] != *wv {
                bad.push(format!("NRAS {name}.{k}: {} != {wv}", t.claims[k]));
            }
        }
    }
}

fn nvattest_output(bad: &mut Vec<String>, dir: &Path, want: &Value) -> String {
    let doc = corpus::json(dir, "dstack/gpu_attestation_h100.json");
    let claims = &doc["claims"][0];
    cmp(bad, "nvattest", want, "result_code", doc["result_code"].clone());
    cmp(
        bad,
        "nvattest",
        want,
        "result_message",
        doc["result_message"].clone(),
    );
    cmp(
        bad,
        "nvattest",
        want,
        "claims_version",
        claims["x-nvidia-gpu-claims-version"].clone(),
    );
    cmp(bad, "nvattest", want, "measres", claims["measres"].clone());
    cmp(bad, "nvattest", want, "eat_nonce", claims["eat_nonce"].clone());
    cmp(
        bad,
        "nvattest",
        want,
        "driver_version",
        claims["x-nvidia-gpu-driver-version"].clone(),
    );
    cmp(
        bad,
        "nvattest",
        want,
        "vbios_version",
        claims["x-nvidia-gpu-vbios-version"].clone(),
    );
    // The detached EAT has NRAS's shape but is unsigned (alg none): it must not verify as proof,
    // whatever JWKS is offered.
    let (_, jwks) = crate::nras::files(dir, &NEARDIRECT);
    let eat = serde_json::to_vec(&doc["detached_eat"]).unwrap();
    let n = nonce(claims["eat_nonce"].as_str().unwrap());
    let v = verify_nras_response(&eat, &jwks, &n, 1_800_000_000);
    let first = v.first_failure().map(|c| c.detail.clone()).unwrap_or_default();
    if v.passed() || !first.contains("not ES384") {
        bad.push(format!(
            "unsigned nvattest EAT was not refused for its signature: {first}"
        ));
    }
    format!("result_code 0, measres success, EAT refused ({first})")
}

#[test]
fn every_gpu_and_report_case() {
    let dir = corpus_or_skip!();
    let doc = corpus::json(&dir, "expected_outcomes.json");
    let cases = doc["gpu_and_report_cases"].as_array().unwrap();
    let mut failures = Vec::new();
    let mut seen = Vec::new();
    for case in cases {
        let id = case["id"].as_str().unwrap();
        let want = &case["expected"];
        let client = case["client_nonce"].as_str().unwrap_or_default();
        let mut bad = Vec::new();
        let summary = match id {
            "nvtrust-hopper-sample-report" => hopper_sample(&mut bad, &dir, want),
            "nvtrust-ppcie_gpu_evidence" => {
                evidence_file(&mut bad, &dir, "nvtrust/ppcie_gpu_evidence.json", want)
            }
            "nvtrust-ppcie_switch_evidence" => {
                evidence_file(&mut bad, &dir, "nvtrust/ppcie_switch_evidence.json", want)
            }
            "teep-neardirect-20260629-report" => {
                let r = corpus::json(&dir, case["files"][0].as_str().unwrap());
                let at = 1_782_698_793;
                let status = binding(
                    &mut bad,
                    &dir,
                    "tdx",
                    &r,
                    &want["tdx_binding"],
                    client,
                    (NEARDIRECT_COLLATERAL, at),
                );
                payload_gpus(&mut bad, &r, want, client, at);
                nras_tokens(&mut bad, &dir, &NEARDIRECT, &want["nras"]);
                // ACCEPT: the model quote is UpToDate, so even the strict policy holds.
                if status.as_deref() != Some("UpToDate") {
                    bad.push(format!("status {status:?}, expected UpToDate for ACCEPT"));
                }
                format!("ed25519+TLS binding, {status:?}, 8 GPUs, 9 NRAS tokens")
            }
            "teep-nearcloud-20260424-report" => {
                let r = corpus::json(&dir, case["files"][0].as_str().unwrap());
                let (g, s) = nearcloud_gateway_and_model(&mut bad, &dir, &r, want, client);
                nras_tokens(&mut bad, &dir, &NEARCLOUD, &want["nras"]);
                // ACCEPT only if OutOfDate is tolerated: the gateway is OutOfDate.
                if g.as_deref() != Some("OutOfDate") || s.as_deref() != Some("UpToDate") {
                    bad.push(format!("gateway {g:?} / model {s:?}"));
                }
                format!("gateway {g:?}, model {s:?}, 8 GPUs, 9 NRAS tokens")
            }
            "nearai-fixture-report" => {
                let r = corpus::json(&dir, case["files"][0].as_str().unwrap());
                let (g, s) = nearcloud_gateway_and_model(&mut bad, &dir, &r, want, client);
                format!("ECDSA binding, gateway {g:?}, model {s:?}, 8 GPUs")
            }
            "dstack-nvattest-output-h100" => nvattest_output(&mut bad, &dir, want),
            other => {
                bad.push(format!("no verifier for case {other}"));
                String::new()
            }
        };
        seen.push(id.to_owned());
        let mark = if bad.is_empty() { "ok  " } else { "FAIL" };
        println!("{mark} {id}: {summary}");
        for b in &bad {
            println!("       {b}");
        }
        if !bad.is_empty() {
            failures.push(format!("{id}: {}", bad.join("; ")));
        }
    }
    assert_eq!(seen.len(), 7, "{seen:?}");
    assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
}

/// A NEAR AI cloud answer (gateway + model[0], captured 2026-04-24): both TDX bindings at their
/// collateral's time, and the model's GPU payload. Returns the gateway's and the model's TCB status.
fn nearcloud_gateway_and_model(
    bad: &mut Vec<String>,
    dir: &Path,
    r: &Value,
    want: &Value,
    client: &str,
) -> (Option<String>, Option<String>) {
    let g = binding(
        bad,
        dir,
        "gateway",
        &r["gateway_attestation"],
        &want["gateway_tdx_binding"],
        client,
        (NEARCLOUD_B0, 1_776_996_365),
    );
    let m = &r["model_attestations"][0];
    let s = binding(
        bad,
        dir,
        "model",
        m,
        &want["model_tdx_binding"],
        client,
        (NEARCLOUD_90, 1_776_996_364),
    );
    payload_gpus(bad, m, want, client, 1_776_996_364);
    (g, s)
}
