//! Replayed real GPU evidence through the command line: a `cloister node run --gpu required
//! --dev-gpu-replay` subprocess serves NEAR AI's captured 8×H100 evidence (the replay source is a
//! test double: no GPU here), and `cloister attest verify` and `cloister proxy` accept it for the
//! captured nonce, every GPU check named, and refuse it for a fresh one.

use std::path::PathBuf;

use cloister_attest::check::GpuCheck;
use cloister_types::wire;

use super::stack::{chat_body, start_node_with, start_proxy};
use crate::cloister;
use crate::verify_quote::corpus;

/// NEAR AI's attestation answer with 8 H100s' evidence.
const CAPTURE: &str =
    "teep/neardirect_qwen3.5-122b_20260629/0001_qwen35-122b.completions.near.ai_v1_attestation_report.body";
/// The nonce the GPUs signed in it.
const CAPTURED_NONCE: &str = "541b6523f9446dcd170e67ac8171eb9226bee5e3f192de4900b74f0ef293500b";

fn capture() -> Option<PathBuf> {
    Some(corpus()?.join(CAPTURE))
}

/// `attest verify --json` with `extra` flags: (exit code, JSON, stdout as a table when not JSON).
async fn attest(url: &str, extra: &[&str]) -> (Option<i32>, String) {
    let mut args = vec!["attest".to_owned(), "verify".to_owned(), url.to_owned()];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let out = tokio::task::spawn_blocking(move || cloister().args(&args).output().unwrap())
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_gpu_evidence_passes_attest_verify_and_the_proxy_for_its_nonce_only() {
    let Some(capture) = capture() else { return };
    let capture = capture.to_string_lossy().into_owned();
    let dir = tempfile::tempdir().unwrap();
    let (_node, url) = start_node_with(&dir, &["--gpu", "required", "--dev-gpu-replay", &capture]).await;

    // attest verify, the table: every GPU check is named in the output, and the node verifies.
    let (code, table) = attest(&url, &["--allow-simulated", "--nonce", CAPTURED_NONCE]).await;
    assert_eq!(code, Some(0), "{table}");
    assert!(table.contains("verdict: VERIFIED"), "{table}");
    for id in GpuCheck::ALL {
        assert!(table.contains(id.name()), "{id} missing:\n{table}");
    }

    // The JSON names the same checks; the GPU ones pass (the RIM/OCSP one is a warning).
    let (code, out) = attest(&url, &["--allow-simulated", "--nonce", CAPTURED_NONCE, "--json"]).await;
    assert_eq!(code, Some(0), "{out}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(json["passed"], true);
    let checks = json["checks"].as_array().unwrap();
    let outcomes = |name: &str| -> Vec<String> {
        checks
            .iter()
            .filter(|c| c["name"].as_str().is_some_and(|n| n.contains(name)))
            .map(|c| c["outcome"].to_string())
            .collect()
    };
    for id in [GpuCheck::CertChain, GpuCheck::SpdmSignature, GpuCheck::SpdmNonce] {
        let o = outcomes(id.name());
        assert_eq!(o.len(), 8, "{id}: one per GPU: {o:?}");
        assert!(o.iter().all(|x| x.to_lowercase().contains("pass")), "{id}: {o:?}");
    }

    // A fresh nonce: the GPU evidence is stale and the nonce check fails by name.
    let (code, table) = attest(&url, &["--allow-simulated"]).await;
    assert_eq!(code, Some(1), "{table}");
    assert!(table.contains("NOT VERIFIED"), "{table}");
    assert!(table.contains(GpuCheck::PayloadNonce.name()), "{table}");

    // The proxy: with the captured nonce (development flag) a sealed chat goes through with its
    // signature verified; with fresh nonces (the default) the node is refused.
    let http = reqwest::Client::new();
    let (_proxy, proxy_url) = start_proxy(
        &dir,
        &[
            "--node",
            &url,
            "--allow-simulated",
            "--dev-fixed-nonce",
            CAPTURED_NONCE,
        ],
        "proxy-fixed",
    )
    .await;
    let resp = http
        .post(format!("{proxy_url}{}", wire::CHAT_COMPLETIONS_PATH))
        .json(&chat_body("replayed GPUs", false))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let verified = resp
        .headers()
        .get(wire::SIGNATURE_VERIFIED_HEADER)
        .map(|v| v.to_str().unwrap_or_default().to_owned());
    let body = resp.text().await.unwrap();
    assert!(status.is_success(), "{status}: {body}");
    assert_eq!(verified.as_deref(), Some("true"), "{body}");
    assert!(body.contains("echo: replayed GPUs"), "{body}");

    let (_strict, strict_url) =
        start_proxy(&dir, &["--node", &url, "--allow-simulated"], "proxy-fresh").await;
    let resp = http
        .post(format!("{strict_url}{}", wire::CHAT_COMPLETIONS_PATH))
        .json(&chat_body("stale GPUs", false))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.text().await.unwrap();
    assert!(!status.is_success(), "{status}: {body}");
    assert!(body.contains("GPU"), "the refusal names the GPU check: {body}");
}
