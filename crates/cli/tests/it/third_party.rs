//! `cloister attest verify` against a third-party (NEAR AI cloud) answer: a gateway report and
//! model reports in one body, each with collateral for its own platform (FMSPC).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use cloister_attest::check::{CheckId, GpuCheck, NrasCheck, QuoteCheck, ReportCheck, Scoped};
use cloister_types::wire::{ATTESTATION_REPORT_PATH, JSON_CONTENT_TYPE};
use serde_json::Value;

use crate::verify_quote::corpus;
use crate::{cloister, serve_in_thread};

const REPORT: &str = "nearai-cloud-verifier/nearai_cloud_report_openai_gpt_oss_120b.json";

/// A JSON answer: content type and body.
type JsonAnswer = std::future::Ready<([(&'static str, &'static str); 1], bytes::Bytes)>;

/// A handler answering `body` as JSON.
fn json_body(body: bytes::Bytes) -> impl Fn() -> JsonAnswer + Clone {
    move || std::future::ready(([("content-type", JSON_CONTENT_TYPE)], body.clone()))
}

/// A POST handler answering `body` as JSON after reading the whole request body (a handler that
/// leaves a large body unread makes hyper close the keep-alive connection the client then reuses).
fn json_body_post(body: bytes::Bytes) -> impl Fn(bytes::Bytes) -> JsonAnswer + Clone {
    move |_request: bytes::Bytes| std::future::ready(([("content-type", JSON_CONTENT_TYPE)], body.clone()))
}

/// A test double of NEAR AI cloud's `GET /v1/attestation/report`: it answers the captured body
/// whatever the query (the capture was made with the nonce the test sends).
fn start_fake_nearai_endpoint(body: Vec<u8>) -> SocketAddr {
    serve_in_thread(axum::Router::new().route(
        ATTESTATION_REPORT_PATH,
        axum::routing::get(json_body(body.into())),
    ))
}

struct Fixture {
    dir: PathBuf,
    nonce: String,
    at: u64,
    gateway_collateral: String,
    model_collateral: String,
}

fn fixture(dir: &Path) -> Fixture {
    let expected: Value =
        serde_json::from_slice(&std::fs::read(dir.join("expected_outcomes.json")).unwrap()).unwrap();
    let case = |section: &str, id: &str| -> Value {
        expected[section]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .unwrap_or_else(|| panic!("{id} not in expected_outcomes.json"))
            .clone()
    };
    let report = case("gpu_and_report_cases", "nearai-fixture-report");
    assert_eq!(report["files"][0], REPORT);
    let gateway = case("tdx_sgx_cases", "nearai-fixture-gateway");
    let model = case("tdx_sgx_cases", "nearai-fixture-model");
    // One time inside both collateral windows: the later of the two cases' times.
    let at = gateway["verify_at_unix"]
        .as_u64()
        .unwrap()
        .max(model["verify_at_unix"].as_u64().unwrap());
    Fixture {
        dir: dir.to_owned(),
        nonce: report["client_nonce"].as_str().unwrap().to_owned(),
        at,
        gateway_collateral: gateway["collateral"].as_str().unwrap().to_owned(),
        model_collateral: model["collateral"].as_str().unwrap().to_owned(),
    }
}

fn attest_verify(f: &Fixture, accept_tcb: &str) -> (i32, Value, String) {
    // Model first: the choice must follow the FMSPC, not the order.
    attest_verify_with(f, accept_tcb, &[&f.model_collateral, &f.gateway_collateral])
}

fn attest_verify_with(f: &Fixture, accept_tcb: &str, collateral: &[&str]) -> (i32, Value, String) {
    let body = std::fs::read(f.dir.join(REPORT)).unwrap();
    let addr = start_fake_nearai_endpoint(body);
    let out = cloister()
        .args(["attest", "verify", &format!("http://{addr}")])
        .args(["--model", "openai/gpt-oss-120b", "--nonce", &f.nonce])
        .args(["--at", &f.at.to_string()])
        .args(
            collateral
                .iter()
                .flat_map(|c| [std::ffi::OsString::from("--collateral"), f.dir.join(c).into()]),
        )
        .args(["--accept-tcb", accept_tcb, "--json"])
        .output()
        .expect("run cloister");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (out.status.code().unwrap_or(-1), json, stderr)
}

/// The check a JSON check names (every name in `--json` output is a [`CheckId`]'s).
fn check_id(check: &Value) -> CheckId {
    let name = check["name"].as_str().unwrap();
    name.parse().unwrap_or_else(|e| panic!("{e}: {check}"))
}

fn outcome(attestation: &Value, id: CheckId) -> Option<&str> {
    attestation["checks"]
        .as_array()?
        .iter()
        .find(|c| check_id(c) == id)
        .and_then(|c| c["outcome"].as_str())
}

#[test]
fn nearai_gateway_and_model_attestations_verify() {
    let Some(dir) = corpus() else { return };
    let f = fixture(&dir);
    let (code, json, stderr) = attest_verify(&f, "UpToDate,OutOfDate");
    let list = json
        .as_array()
        .unwrap_or_else(|| panic!("expected a list: {json:#}"));
    let labels: Vec<&str> = list.iter().map(|a| a["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["gateway", "model[0]"]);
    for a in list {
        let failed: Vec<&Value> = a["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["outcome"] == "fail")
            .collect();
        assert_eq!(
            a["passed"], true,
            "{}: failed checks {failed:#?}\n{stderr}",
            a["label"]
        );
        assert!(
            a["collateral"].as_str().unwrap().contains("matches the quote"),
            "{}",
            a["collateral"]
        );
    }
    assert_eq!(code, 0, "{json:#}\n{stderr}");
    let (gateway, model) = (&list[0], &list[1]);
    assert_eq!(gateway["tcb_status"], "OutOfDate");
    assert_eq!(model["tcb_status"], "UpToDate");
    assert!(
        gateway["collateral"]
            .as_str()
            .unwrap()
            .contains(&f.gateway_collateral)
    );
    assert!(
        model["collateral"]
            .as_str()
            .unwrap()
            .contains(&f.model_collateral)
    );

    // The model's GPU evidence: every GPU check passes (or warns about what it leaves out), and
    // the signature and chain checks are among them.
    let gpu: Vec<&Value> = model["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| matches!(check_id(c), CheckId::Gpu(_)))
        .collect();
    assert!(
        gpu.iter()
            .all(|c| c["outcome"] == "pass" || c["outcome"] == "warn"),
        "{gpu:#?}"
    );
    for id in [
        GpuCheck::PayloadNonce,
        GpuCheck::CertChain,
        GpuCheck::SpdmSignature,
    ] {
        assert!(
            gpu.iter()
                .any(|c| check_id(c) == id.into() && c["outcome"] == "pass"),
            "no passing {id} check: {gpu:#?}"
        );
    }
    println!("gateway OutOfDate accepted, model UpToDate, GPU evidence verified");
}

#[test]
fn nearai_gateway_fails_on_out_of_date_tcb_by_default() {
    let Some(dir) = corpus() else { return };
    let f = fixture(&dir);
    let (code, json, stderr) = attest_verify(&f, "UpToDate");
    assert_eq!(code, 1, "{json:#}\n{stderr}");
    let list = json.as_array().unwrap();
    let (gateway, model) = (&list[0], &list[1]);
    assert_eq!(gateway["label"], "gateway");
    assert_eq!(gateway["passed"], false);
    assert_eq!(gateway["tcb_status"], "OutOfDate");
    let tcb = CheckId::from(Scoped::Quote(QuoteCheck::TcbAccepted));
    assert_eq!(tcb.to_string(), "quote: TCB status accepted");
    assert_eq!(outcome(gateway, tcb), Some("fail"), "{gateway:#}");
    // Nothing else about the gateway failed: the refusal is the TCB status alone.
    let other_failures: Vec<&Value> = gateway["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["outcome"] == "fail" && check_id(c) != tcb)
        .collect();
    assert!(other_failures.is_empty(), "{other_failures:#?}");
    assert_eq!(model["passed"], true, "{model:#}");
}

#[test]
fn nearai_gateway_without_matching_collateral_says_so() {
    let Some(dir) = corpus() else { return };
    let f = fixture(&dir);
    let (code, json, stderr) = attest_verify_with(&f, "UpToDate,OutOfDate", &[f.model_collateral.as_str()]);
    assert_eq!(code, 1, "{json:#}\n{stderr}");
    let gateway = &json[0];
    let note = gateway["collateral"].as_str().unwrap();
    assert!(
        note.contains("no --collateral file is for the quote's FMSPC B0C06F000000"),
        "{note}"
    );
    assert_eq!(gateway["passed"], false);
    assert_eq!(json[1]["passed"], true, "{:#}", json[1]);
}

const NEARCLOUD: &str = "teep/nearcloud_qwen3.5-122b_20260424";

/// A test double of NEAR AI cloud and of NVIDIA's attestation service (NRAS), replaying the bodies
/// teep captured in one session: the report, the NRAS answer (tampered when asked) and the JWKS.
fn start_fake_near_and_nras(dir: &Path, tamper_nras: bool) -> SocketAddr {
    start_fake_session(
        &dir.join(NEARCLOUD),
        "0001_cloud-api.near.ai_v1_attestation_report.body",
        tamper_nras,
    )
}

/// [`start_fake_near_and_nras`] for any teep session directory and its report body.
fn start_fake_session(session: &Path, report_body: &str, tamper_nras: bool) -> SocketAddr {
    let read = |name: &str| bytes::Bytes::from(std::fs::read(session.join(name)).unwrap());
    let report = read(report_body);
    let mut nras = read("0006_nras.attestation.nvidia.com_v3_attest_gpu.body").to_vec();
    if tamper_nras {
        // Change one character inside the overall token's payload: its ES384 signature must fail.
        let text = String::from_utf8(nras.clone()).unwrap();
        let jwt_start = text.find("eyJ").unwrap();
        let payload_start = jwt_start + text[jwt_start..].find('.').unwrap() + 1;
        let c = nras[payload_start + 10];
        nras[payload_start + 10] = if c == b'A' { b'B' } else { b'A' };
    }
    let nras = bytes::Bytes::from(nras);
    let jwks = read("0007_nras.attestation.nvidia.com_.well-known_jwks.json.body");
    serve_in_thread(
        axum::Router::new()
            .route(ATTESTATION_REPORT_PATH, axum::routing::get(json_body(report)))
            .route("/v3/attest/gpu", axum::routing::post(json_body_post(nras)))
            .route("/.well-known/jwks.json", axum::routing::get(json_body(jwks))),
    )
}

fn run_nras(dir: &Path, tamper: bool) -> Value {
    run_nearcloud(dir, tamper, "UpToDate,OutOfDate").1
}

/// `cloister attest verify --nras` against the nearcloud session's test doubles, accepting the
/// TCB statuses `accept_tcb`: the exit code and the JSON list.
fn run_nearcloud(dir: &Path, tamper: bool, accept_tcb: &str) -> (i32, Value) {
    let addr = start_fake_near_and_nras(dir, tamper);
    let derived = dir.join(NEARCLOUD).join("derived");
    let out = cloister()
        .args(["attest", "verify", &format!("http://{addr}")])
        .args([
            "--nonce",
            "7c4b89c7c794886908702155bc671b6214269ed4a4bffaaf751449dba01e27da",
        ])
        .args([
            "--at",
            "1776996365",
            "--accept-tcb",
            accept_tcb,
            "--json",
            "--nras",
        ])
        .args(["--nras-url", &format!("http://{addr}/v3/attest/gpu")])
        .args(["--nras-jwks-url", &format!("http://{addr}/.well-known/jwks.json")])
        .arg("--collateral")
        .arg(derived.join("collateral_90c06f000000.json"))
        .arg("--collateral")
        .arg(derived.join("collateral_b0c06f000000.json"))
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), parse_json(&out))
}

fn parse_json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn nras_checks(json: &Value) -> Vec<(CheckId, String)> {
    let model = json
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["label"] == "model[0]")
        .expect("model[0]");
    model["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| matches!(check_id(c), CheckId::Scoped(Scoped::Nras(_))))
        .map(|c| (check_id(c), c["outcome"].as_str().unwrap().to_lowercase()))
        .collect()
}

#[test]
fn nras_online_path_verifies_nvidias_signed_answer() {
    let Some(dir) = corpus() else { return };
    let checks = nras_checks(&run_nras(&dir, false));
    println!("{checks:?}");
    assert!(checks.len() >= 3, "{checks:?}");
    assert!(
        checks.iter().all(|(_, o)| o == "pass" || o == "warn"),
        "{checks:?}"
    );
}

#[test]
fn nras_answer_with_a_tampered_token_is_refused() {
    let Some(dir) = corpus() else { return };
    let checks = nras_checks(&run_nras(&dir, true));
    println!("{checks:?}");
    assert!(
        checks
            .iter()
            .any(|(id, o)| o == "fail" && *id == Scoped::Nras(NrasCheck::Signature).into()),
        "{checks:?}"
    );
}

/// The failing checks of one attestation in `--json` output.
fn failures(attestation: &Value) -> Vec<&Value> {
    attestation["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["outcome"] == "fail")
        .collect()
}

/// The corpus's `teep-nearcloud-20260424-report` verdict: ACCEPT when an OutOfDate gateway TCB
/// is tolerated, REJECT under a strict UpToDate-only policy (on the gateway's TCB alone). Both
/// attestations are ed25519 reports bound to their TLS keys, and the model's GPU evidence goes to
/// NRAS (test double replaying the captured answer).
#[test]
fn nearcloud_ed25519_reports_get_the_documented_verdict() {
    let Some(dir) = corpus() else { return };
    let (code, json) = run_nearcloud(&dir, false, "UpToDate,OutOfDate");
    let list = json.as_array().unwrap();
    assert_eq!(list.len(), 2, "{json:#}");
    for a in list {
        assert_eq!(a["passed"], true, "{}: {:#?}", a["label"], failures(a));
        for id in [
            ReportCheck::SigningAlgo,
            ReportCheck::BindsAddress,
            ReportCheck::BindsNonce,
        ] {
            assert_eq!(outcome(a, id.into()), Some("pass"), "{}: {id}", a["label"]);
        }
        // Replayed over plain HTTP: there is no certificate to compare, and the verdict says so.
        assert_eq!(outcome(a, ReportCheck::TlsFingerprint.into()), Some("skip"));
    }
    assert_eq!(code, 0);

    let (code, json) = run_nearcloud(&dir, false, "UpToDate");
    assert_eq!(code, 1, "{json:#}");
    let gateway = &json[0];
    assert_eq!(gateway["label"], "gateway");
    let tcb = CheckId::from(Scoped::Quote(QuoteCheck::TcbAccepted));
    let failed: Vec<CheckId> = failures(gateway).into_iter().map(check_id).collect();
    assert_eq!(failed, [tcb], "{gateway:#}");
    assert_eq!(json[1]["passed"], true, "{:#?}", failures(&json[1]));
}

/// The corpus's `teep-neardirect-20260629-report` verdict: ACCEPT. The model server's own ed25519
/// report (quote UpToDate, key bound with its TLS fingerprint, 8 GPUs, NRAS true).
#[test]
fn neardirect_ed25519_report_is_accepted() {
    let Some(dir) = corpus() else { return };
    let session = dir.join("teep/neardirect_qwen3.5-122b_20260629");
    let addr = start_fake_session(
        &session,
        "0001_qwen35-122b.completions.near.ai_v1_attestation_report.body",
        false,
    );
    let out = cloister()
        .args(["attest", "verify", &format!("http://{addr}")])
        .args([
            "--nonce",
            "541b6523f9446dcd170e67ac8171eb9226bee5e3f192de4900b74f0ef293500b",
        ])
        // Inside the collateral window and the NRAS tokens' hour (iat 1782698794).
        .args(["--at", "1782698800", "--json", "--nras"])
        .args(["--nras-url", &format!("http://{addr}/v3/attest/gpu")])
        .args(["--nras-jwks-url", &format!("http://{addr}/.well-known/jwks.json")])
        .arg("--collateral")
        .arg(session.join("derived/collateral_90c06f000000.json"))
        .output()
        .unwrap();
    let json = parse_json(&out);
    assert_eq!(json["passed"], true, "{:#?}", failures(&json));
    assert_eq!(json["tcb_status"], "UpToDate");
    assert_eq!(
        json["signing_address"],
        "d0aa20bcf567cc0c7c914608967dbd4c7a17e10b600802d45923434ce323f823"
    );
    for id in [
        CheckId::from(ReportCheck::BindsAddress),
        GpuCheck::SpdmSignature.into(),
        Scoped::Nras(NrasCheck::Signature).into(),
    ] {
        assert_eq!(outcome(&json, id), Some("pass"), "{id}: {json:#}");
    }
    assert_eq!(out.status.code(), Some(0));
}
