//! Integration tests of `cloister-bench`: the reference upstream, the load generator, and short
//! runs of each benchmark against a real node on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cloister_bench::e2ee::{LatencyOptions, crypto, latency};
use cloister_bench::load::{load_round, post_json};
use cloister_bench::overhead::{OverheadOptions, run};
use cloister_bench::quote::QuoteBench;
use cloister_bench::upstream::{
    REFERENCE_ANSWER, REFERENCE_MODEL, reference_request, reference_stream, start_reference_upstream,
};
use cloister_bench::{Error, stats::RoundStats};
use cloister_types::wire::{CHAT_COMPLETIONS_PATH, EVENT_STREAM_CONTENT_TYPE, MODELS_PATH, SSE_DONE_EVENT};

#[tokio::test]
async fn reference_upstream_answers_plain_streamed_and_models() {
    let addr = start_reference_upstream().await.unwrap();
    let http = reqwest::Client::new();
    let url = format!("http://{addr}{CHAT_COMPLETIONS_PATH}");
    let plain = http
        .post(&url)
        .body(reference_request(false).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(plain.text().await.unwrap(), REFERENCE_ANSWER);
    let streamed = http
        .post(&url)
        .body(reference_request(true).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        streamed.headers()[reqwest::header::CONTENT_TYPE],
        EVENT_STREAM_CONTENT_TYPE
    );
    let body = streamed.text().await.unwrap();
    assert_eq!(body, reference_stream());
    assert!(body.ends_with(SSE_DONE_EVENT));
    assert_eq!(
        body.matches("data: ").count(),
        13,
        "10 words, finish, usage, [DONE]"
    );
    let models: serde_json::Value = http
        .get(format!("http://{addr}{MODELS_PATH}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], REFERENCE_MODEL);
}

#[tokio::test]
async fn load_round_runs_every_request_with_bounded_concurrency() {
    let (calls, inflight, peak) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let one = || {
        let (calls, inflight, peak) = (calls.clone(), inflight.clone(), peak.clone());
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            let now = inflight.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(2)).await;
            inflight.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        }
    };
    let stats = load_round(40, 4, one).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 40);
    assert_eq!(peak.load(Ordering::SeqCst), 4);
    assert!(
        stats.rps > 0.0 && stats.p50_ms >= 2.0 && stats.p99_ms >= stats.p50_ms,
        "{stats:?}"
    );

    let failing = || async { Err(Error::NotWorking("refused".into())) };
    assert!(matches!(
        load_round(5, 2, failing).await,
        Err(Error::NotWorking(_))
    ));
}

#[tokio::test]
async fn post_json_refuses_error_statuses() {
    let addr = start_reference_upstream().await.unwrap();
    let missing = format!("http://{addr}/v1/nothing-here");
    let err = post_json(reqwest::Client::new(), missing, reference_request(false).unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Status { status, .. } if status == 404),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overhead_measures_both_paths_for_each_round() {
    let mut seen = Vec::new();
    let opts = OverheadOptions {
        requests: 20,
        concurrency: 2,
        rounds: 2,
        stream: true,
    };
    let report = run(opts, |round, d, n| seen.push((round, *d, *n))).await.unwrap();
    assert_eq!((report.direct.len(), report.via_node.len()), (2, 2));
    assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), [1, 2]);
    for s in report.direct.iter().chain(&report.via_node) {
        assert!(s.rps > 0.0 && s.p99_ms >= s.p50_ms && s.p50_ms > 0.0, "{s:?}");
    }
    let median = RoundStats::median_of(&report.via_node);
    assert!(report.via_node.iter().any(|s| s.rps == median.rps));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2ee_crypto_and_latency_run_against_a_verified_node() {
    let body = reference_request(false).unwrap();
    let figures = crypto(20, &body).unwrap();
    assert_eq!((figures.iterations, figures.request_len), (20, body.len()));
    assert_eq!(figures.answer_len, REFERENCE_ANSWER.len());
    assert!(figures.event_len > 0 && figures.per_request_us > 0.0 && figures.signing_us > 0.0);

    let opts = LatencyOptions {
        requests: 10,
        concurrency: 2,
        rounds: 1,
        stream: true,
    };
    let mut rounds_seen = 0;
    let rounds = latency(opts, |_, _| rounds_seen += 1).await.unwrap();
    assert_eq!((rounds.len(), rounds_seen), (1, 1));
    let r = rounds[0];
    for s in [r.unencrypted, r.verified_clear, r.sealed, r.via_proxy] {
        assert!(s.rps > 0.0 && s.p50_ms > 0.0, "{r:?}");
    }
}

/// The attestation corpus, or `None` (with a reason on stderr) when it is absent and not required.
fn corpus() -> Option<PathBuf> {
    let dir = std::env::var_os("CLOISTER_ATTESTATION_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/attestation")
        });
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var("CLOISTER_REQUIRE_CORPUS").as_deref() == Ok("1") {
        panic!(
            "attestation corpus not found at {} and CLOISTER_REQUIRE_CORPUS=1",
            dir.display()
        );
    }
    eprintln!("skipping: attestation corpus not found at {}", dir.display());
    None
}

#[test]
fn quote_bench_times_both_verifiers_on_the_corpus_quote() {
    let Some(dir) = corpus() else { return };
    let bench = QuoteBench::load(&dir).unwrap();
    let (direct, ours) = (bench.time_direct(3).unwrap(), bench.time_ours(3).unwrap());
    assert_eq!((direct.len(), ours.len()), (3, 3));
    assert!(ours.windows(2).all(|w| w[0] <= w[1]), "sorted");

    let missing = tempfile_dir();
    assert!(matches!(QuoteBench::load(&missing), Err(Error::Io { .. })));
}

fn tempfile_dir() -> PathBuf {
    std::env::temp_dir().join(format!("cloister-bench-no-corpus-{}", std::process::id()))
}

/// The client's honest path against the real node (not a test double): a sealed plain chat and a
/// sealed stream verify end to end (report, key binding, envelope, signature by the attested
/// signer), and the production policy refuses the same node because its TEE is simulated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_verifies_a_real_node_end_to_end() {
    use cloister_client::{NodeClient, Policy, RequestOptions, StreamEvent};
    use futures::StreamExt as _;

    let bench = cloister_bench::node::BenchNode::start(4).await.unwrap();
    let url = format!("http://{}", bench.node);
    let node = NodeClient::new(&url, Arc::new(Policy::dev_allow_simulated())).unwrap();

    let answer = node
        .chat(reference_request(false).unwrap(), &RequestOptions::default())
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    assert!(answer.sealed, "the client seals by default");
    let json: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(json["model"], REFERENCE_MODEL);
    assert!(answer.signature_id.is_some());
    assert_eq!(
        answer.signature.signing_address.to_ascii_lowercase(),
        answer.node.signer_hex
    );

    let mut stream = node
        .chat_stream(reference_request(true).unwrap(), &RequestOptions::default())
        .await
        .unwrap();
    assert!(stream.sealed);
    let (mut events, mut proof) = (0, None);
    while let Some(item) = stream.next().await {
        match item.unwrap() {
            StreamEvent::Data(_) => events += 1,
            StreamEvent::Done(p) => proof = Some(p),
        }
    }
    let proof = proof.expect("a verified stream ends with its proof");
    assert!(events > 0 && proof.done_seen);
    assert_eq!(proof.node.signer_hex, answer.node.signer_hex);

    let production = NodeClient::new(&url, Arc::new(Policy::default())).unwrap();
    let err = production
        .chat(reference_request(false).unwrap(), &RequestOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "simulated_tee_refused", "{err}");
    bench.stop().await;
}
