//! GPU evidence in reports: a real node (simulated TEE, the built-in engine) with the replay test
//! double serving the corpus's real H100 evidence (NEAR AI's 8-GPU capture). For the captured
//! nonce its report verifies with every GPU check passing; for any other nonce the GPU nonce check
//! fails by name. `gpu = required` without a GPU refuses to start. Only the GPU part is real: the
//! report's quote is the simulator's.

use std::path::PathBuf;

use cloister_attest::check::{GpuCheck, Outcome};
use cloister_attest::collect::gpu::GpuError;
use cloister_attest::collect::gpu::nvml::NvmlGpuEvidence;
use cloister_attest::report::verify_report;
use cloister_attest::verify::Policy;
use cloister_node::{GpuMode, Node, NodeError, NodeSettings};
use cloister_types::{AttestationReport, Nonce, wire};

use crate::common::{get_json, model_path};

/// The captured report whose `nvidia_payload` the replay serves, inside the corpus.
const CAPTURE: &str =
    "teep/neardirect_qwen3.5-122b_20260629/0001_qwen35-122b.completions.near.ai_v1_attestation_report.body";
/// The nonce NEAR's GPUs signed in that capture.
const CAPTURED_NONCE: &str = "541b6523f9446dcd170e67ac8171eb9226bee5e3f192de4900b74f0ef293500b";
/// When it was captured (the device certificates are valid then).
const CAPTURED_AT: u64 = 1_782_698_793;

/// The capture: `$CLOISTER_ATTESTATION_TESTDATA`, else `<workspace>/../shared/testdata/attestation`.
/// `None` (saying why) when absent, unless `CLOISTER_REQUIRE_CORPUS=1`.
fn capture() -> Option<PathBuf> {
    let dir = std::env::var_os("CLOISTER_ATTESTATION_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/attestation")
        });
    let path = dir.join(CAPTURE);
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var("CLOISTER_REQUIRE_CORPUS").as_deref() != Ok("1"),
        "GPU capture not found at {} and CLOISTER_REQUIRE_CORPUS=1",
        path.display()
    );
    eprintln!("skipping: GPU capture not found at {}", path.display());
    None
}

fn settings(model: &std::path::Path, gpu: GpuMode, replay: Option<PathBuf>) -> NodeSettings {
    NodeSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        model: Some(model.to_string_lossy().into_owned()),
        slots: Some(1),
        ctx_per_slot: Some(256),
        threads: Some(2),
        dev_simulated_tee: true,
        gpu,
        dev_gpu_replay: replay,
        ..NodeSettings::default()
    }
}

async fn report(http: &reqwest::Client, url: &str, nonce: &Nonce) -> AttestationReport {
    get_json(
        http,
        format!(
            "{url}{}?{}={nonce}",
            wire::ATTESTATION_REPORT_PATH,
            wire::QUERY_NONCE
        ),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_h100_evidence_verifies_for_its_nonce_only() {
    let (Some(model), Some(capture)) = (model_path(), capture()) else {
        return;
    };
    let node = Node::start(settings(&model, GpuMode::Required, Some(capture)))
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let policy = Policy::dev_allow_simulated();

    // The captured nonce: the node's report_data and the GPUs' signed requests carry it.
    let captured: Nonce = CAPTURED_NONCE.parse().unwrap();
    let r = report(&http, &node.url(), &captured).await;
    assert_eq!(r.request_nonce, CAPTURED_NONCE);
    assert_eq!(r.info["gpu"]["count"], 8, "{}", r.info);
    assert_eq!(r.info["gpu"]["source"], "replay");
    assert_eq!(r.info["gpu"]["arch"], "HOPPER");
    let metrics = crate::common::get_text(&http, format!("{}{}", node.url(), wire::METRICS_PATH)).await;
    assert!(
        metrics.contains("cloister_gpus{source=\"replay\"} 8"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cloister_gpu_cc_mode{mode=\"unknown\"} 1"),
        "{metrics}"
    );
    let payload: serde_json::Value = serde_json::from_str(r.nvidia_payload.as_deref().unwrap()).unwrap();
    assert_eq!(payload["nonce"], CAPTURED_NONCE);
    let v = verify_report(&r, &captured, None, CAPTURED_AT, &policy);
    for id in [
        GpuCheck::PayloadParses,
        GpuCheck::PayloadNonce,
        GpuCheck::DevicesPresent,
        GpuCheck::CertChain,
        GpuCheck::SpdmSignature,
        GpuCheck::SpdmNonce,
    ] {
        assert_eq!(v.checks.worst(id), Some(Outcome::Pass), "{id:?}: {:#?}", v.checks);
    }
    assert!(v.passed(), "{:?}", v.first_failure());

    // Any other nonce: the quote binds it, but the replayed GPU evidence is stale, and the GPU
    // nonce checks say so by name.
    let other = Nonce([0x5a; 32]);
    let r = report(&http, &node.url(), &other).await;
    assert_eq!(r.request_nonce, other.to_hex());
    let v = verify_report(&r, &other, None, CAPTURED_AT, &policy);
    assert!(!v.passed());
    let failure = v.first_failure().unwrap();
    assert_eq!(failure.id, GpuCheck::PayloadNonce.into(), "{failure:?}");
    assert!(failure.detail.contains(CAPTURED_NONCE), "{}", failure.detail);
    assert_eq!(v.checks.worst(GpuCheck::SpdmNonce), Some(Outcome::Fail));
    // Signatures and chains are still genuine: only freshness fails.
    assert_eq!(v.checks.worst(GpuCheck::SpdmSignature), Some(Outcome::Pass));
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_gpu_evidence_the_report_has_none_and_says_so() {
    let Some(model) = model_path() else { return };
    let node = Node::start(settings(&model, GpuMode::Off, None)).await.unwrap();
    let http = reqwest::Client::new();
    let n = Nonce([7; 32]);
    let r = report(&http, &node.url(), &n).await;
    assert!(r.nvidia_payload.is_none());
    let metrics = crate::common::get_text(&http, format!("{}{}", node.url(), wire::METRICS_PATH)).await;
    assert!(metrics.contains("cloister_gpus{source=\"none\"} 0"), "{metrics}");
    assert_eq!(r.info["gpu"]["count"], 0);
    let v = verify_report(
        &r,
        &n,
        None,
        cloister_types::unix_now(),
        &Policy::dev_allow_simulated(),
    );
    assert_eq!(v.checks.worst(GpuCheck::PayloadNonce), Some(Outcome::Skip));
    assert!(v.passed(), "{:?}", v.first_failure());
    node.shutdown().await.unwrap();
}

/// No model needed: the GPU source is chosen before the engine loads.
#[tokio::test]
async fn gpu_required_without_a_gpu_refuses_to_start_naming_what_is_missing() {
    if !matches!(NvmlGpuEvidence::open(None), Err(GpuError::NoDriver { .. })) {
        eprintln!("skipping: this machine has an NVIDIA driver");
        return;
    }
    let settings = NodeSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        dev_simulated_tee: true,
        gpu: GpuMode::Required,
        ..NodeSettings::default()
    };
    let err = Node::start(settings).await.err().unwrap();
    let text = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(matches!(err, NodeError::Gpu(GpuError::NoDriver { .. })), "{text}");
    assert!(
        text.contains("--gpu") && text.contains("no NVIDIA driver"),
        "{text}"
    );
}
