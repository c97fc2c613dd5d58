//! Every refusal by name: each test sets up one misbehaving node and asserts the named reason.

use std::sync::Arc;

use bytes::Bytes;
use cloister_client::{
    E2eeMode, Error, MeasurementAllowlist, NodeClient, NodePool, Policy, RequestOptions, StreamEvent,
};
use cloister_types::wire;
use futures::StreamExt;

use cloister_testkit::evil_node::{EvilNode, MODEL, Misbehaviour, RECEIPT, simulated_measurement};

fn dev_policy() -> Arc<Policy> {
    Arc::new(Policy::dev_allow_simulated())
}

fn body(stream: bool) -> Bytes {
    Bytes::from(
        serde_json::to_vec(&serde_json::json!({
            "model": MODEL,
            "messages": [{"role": "user", "content": "why is the sky blue?"}],
            "stream": stream,
        }))
        .unwrap(),
    )
}

async fn chat(node: &EvilNode, policy: Arc<Policy>) -> Result<cloister_client::VerifiedResponse, Error> {
    NodeClient::new(&node.url, policy)?
        .chat(body(false), &RequestOptions::default())
        .await
}

/// Reads a whole stream: the data events, then the proof, or the first error.
async fn stream(
    node: &EvilNode,
    policy: Arc<Policy>,
) -> Result<(Vec<Bytes>, cloister_client::StreamProof), Error> {
    let mut s = NodeClient::new(&node.url, policy)?
        .chat_stream(body(true), &RequestOptions::default())
        .await?;
    let mut data = Vec::new();
    while let Some(item) = s.next().await {
        match item? {
            StreamEvent::Data(b) => data.push(b),
            StreamEvent::Done(proof) => return Ok((data, proof)),
        }
    }
    panic!("stream ended without Done or an error");
}

#[tokio::test]
async fn an_honest_node_answers_sealed_and_verified() {
    let node = EvilNode::start(Misbehaviour::Honest).await;
    let answer = chat(&node, dev_policy()).await.unwrap();
    assert!(answer.sealed);
    assert_eq!(answer.node.signer_hex, node.signer_hex());
    assert!(String::from_utf8_lossy(&answer.body).contains("The sky is blue."));
    assert_eq!(answer.receipt.as_deref(), Some(RECEIPT));
    // The node received only ciphertext.
    let (_, sealed_body) = node.seen().pop().unwrap();
    assert!(!String::from_utf8_lossy(&sealed_body).contains("sky"));

    // The Authorization header reaches the node unchanged.
    let opts = RequestOptions {
        authorization: Some("Bearer key".into()),
    };
    let client = NodeClient::new(&node.url, dev_policy()).unwrap();
    client.chat(body(false), &opts).await.unwrap();
    assert_eq!(node.last_authorization().as_deref(), Some("Bearer key"));

    let (data, proof) = stream(&node, dev_policy()).await.unwrap();
    assert_eq!(data.len(), 4);
    assert!(proof.done_seen);
    assert_eq!(proof.receipt.unwrap()["cumulative_amount"], "42");
    assert_eq!(proof.node.signer_hex, node.signer_hex());
}

#[tokio::test]
async fn tampered_ciphertext_is_refused() {
    let node = EvilNode::start(Misbehaviour::TamperCiphertext).await;
    let err = chat(&node, dev_policy()).await.unwrap_err();
    assert_eq!(err.code(), "e2ee_tampered", "{err}");
    let err = stream(&node, dev_policy()).await.unwrap_err();
    assert_eq!(err.code(), "e2ee_tampered", "{err}");
}

#[tokio::test]
async fn an_answer_sealed_under_another_key_is_refused() {
    let node = EvilNode::start(Misbehaviour::WrongResponseKey).await;
    let err = chat(&node, dev_policy()).await.unwrap_err();
    assert!(matches!(err, Error::ResponseTampered), "{err}");
    let err = stream(&node, dev_policy()).await.unwrap_err();
    assert!(matches!(err, Error::ResponseTampered), "{err}");
}

#[tokio::test]
async fn a_replayed_answer_is_refused() {
    let node = EvilNode::start(Misbehaviour::ReplayFirstAnswer).await;
    let client = NodeClient::new(&node.url, dev_policy()).unwrap();
    client
        .chat(body(false), &RequestOptions::default())
        .await
        .unwrap();
    let err = client
        .chat(body(false), &RequestOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "e2ee_tampered", "{err}");
}

#[tokio::test]
async fn a_replayed_request_is_refused_by_the_node() {
    let node = EvilNode::start(Misbehaviour::Honest).await;
    chat(&node, dev_policy()).await.unwrap();
    let (headers, sealed) = node.seen().pop().unwrap();
    let mut req = reqwest::Client::new().post(format!("{}{}", node.url, wire::CHAT_COMPLETIONS_PATH));
    for (k, v) in &headers {
        if k.as_str().starts_with("x-cloister") || k == reqwest::header::CONTENT_TYPE {
            req = req.header(k.as_str(), v.as_bytes());
        }
    }
    let resp = req.body(sealed).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "e2ee_replayed");
}

#[tokio::test]
async fn a_truncated_stream_is_refused() {
    let node = EvilNode::start(Misbehaviour::TruncateStream).await;
    let err = stream(&node, dev_policy()).await.unwrap_err();
    assert!(matches!(err, Error::ResponseTruncated), "{err}");
    assert_eq!(err.code(), "e2ee_truncated");
}

#[tokio::test]
async fn a_signature_from_another_key_is_refused() {
    let node = EvilNode::start(Misbehaviour::SignWithOtherKey).await;
    let err = chat(&node, dev_policy()).await.unwrap_err();
    assert!(matches!(err, Error::SignatureFromAnotherKey { .. }), "{err}");
    assert_eq!(err.code(), "signature_from_another_key");
    let err = stream(&node, dev_policy()).await.unwrap_err();
    assert_eq!(err.code(), "signature_from_another_key", "{err}");
}

#[tokio::test]
async fn an_unapproved_measurement_is_refused() {
    let node = EvilNode::start(Misbehaviour::Honest).await;
    let mut policy = Policy::dev_allow_simulated();
    policy.allowed_measurements = MeasurementAllowlist::of(["ab".repeat(32)]);
    let err = chat(&node, Arc::new(policy.clone())).await.unwrap_err();
    assert!(
        matches!(&err, Error::MeasurementNotAllowed { digest: Some(d) } if *d == simulated_measurement()),
        "{err}"
    );
    assert_eq!(err.code(), "measurement_not_allowed");
    // The same node passes once its measurement is listed.
    policy.allowed_measurements = MeasurementAllowlist::of([simulated_measurement()]);
    chat(&node, Arc::new(policy)).await.unwrap();
}

#[tokio::test]
async fn a_simulated_node_is_refused_without_the_switch() {
    let node = EvilNode::start(Misbehaviour::Honest).await;
    let err = chat(&node, Arc::new(Policy::default())).await.unwrap_err();
    assert!(matches!(err, Error::SimulatedRefused), "{err}");
    assert_eq!(err.code(), "simulated_tee_refused");
}

#[tokio::test]
async fn a_key_binding_by_another_key_is_refused() {
    let node = EvilNode::start(Misbehaviour::BindingByOtherKey).await;
    let err = chat(&node, dev_policy()).await.unwrap_err();
    assert!(
        matches!(&err, Error::KeyBindingInvalid { detail } if detail.contains("signed by")),
        "{err}"
    );
    assert_eq!(err.code(), "key_binding_invalid");
}

#[tokio::test]
async fn no_key_binding_is_refused_when_e2ee_is_required_and_plain_otherwise() {
    let node = EvilNode::start(Misbehaviour::NoKeyBinding).await;
    let err = chat(&node, dev_policy()).await.unwrap_err();
    assert!(matches!(err, Error::E2eeUnavailable), "{err}");
    let mut policy = Policy::dev_allow_simulated();
    policy.e2ee = E2eeMode::Preferred;
    let answer = chat(&node, Arc::new(policy)).await.unwrap();
    assert!(!answer.sealed);
}

#[tokio::test]
async fn an_unsealed_answer_to_a_sealed_request_is_refused() {
    let node = EvilNode::start(Misbehaviour::DowngradeToPlaintext).await;
    let err = chat(&node, dev_policy()).await.unwrap_err();
    assert!(matches!(err, Error::ResponseNotSealed), "{err}");
    let err = stream(&node, dev_policy()).await.unwrap_err();
    assert!(matches!(err, Error::ResponseNotSealed), "{err}");
}

#[tokio::test]
async fn a_pool_fails_over_but_never_to_an_unverified_node() {
    let down = "http://127.0.0.1:9".to_owned();
    let busy = EvilNode::start(Misbehaviour::Overloaded).await;
    let liar = EvilNode::start(Misbehaviour::SignWithOtherKey).await;
    let good = EvilNode::start(Misbehaviour::Honest).await;
    let pool = NodePool::new([&down, &busy.url, &liar.url, &good.url], dev_policy()).unwrap();
    for _ in 0..4 {
        let answer = pool.chat(body(false), &RequestOptions::default()).await.unwrap();
        assert_eq!(answer.node.signer_hex, good.signer_hex());
        let mut s = pool
            .chat_stream(body(true), &RequestOptions::default())
            .await
            .unwrap();
        let mut last = None;
        while let Some(item) = s.next().await {
            last = Some(item);
        }
        // The liar's stream opens fine and is refused at its end; the pool cannot move a started
        // stream, so it either came from the good node or ended in the named refusal.
        match last.unwrap() {
            Ok(StreamEvent::Done(p)) => assert_eq!(p.node.signer_hex, good.signer_hex()),
            Err(e) => assert_eq!(e.code(), "signature_from_another_key"),
            Ok(StreamEvent::Data(_)) => panic!("stream ended on data"),
        }
    }
    let bad = NodePool::new([&down, &liar.url], dev_policy()).unwrap();
    let err = bad
        .chat(body(false), &RequestOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::AllNodesFailed { errors } if errors.len() == 2),
        "{err}"
    );
    assert_eq!(err.code(), "signature_from_another_key");
}

#[tokio::test]
async fn the_verdict_is_cached_for_its_ttl_then_verified_again() {
    let node = EvilNode::start(Misbehaviour::Honest).await;
    let client = NodeClient::new(&node.url, dev_policy()).unwrap();
    for _ in 0..3 {
        client
            .chat(body(false), &RequestOptions::default())
            .await
            .unwrap();
    }
    assert_eq!(node.reports_served(), 1, "one verification serves the TTL");

    let mut policy = Policy::dev_allow_simulated();
    policy.verdict_ttl = std::time::Duration::ZERO;
    let client = NodeClient::new(&node.url, Arc::new(policy)).unwrap();
    for _ in 0..3 {
        client
            .chat(body(false), &RequestOptions::default())
            .await
            .unwrap();
    }
    assert_eq!(node.reports_served(), 4, "an expired verdict is verified again");
}

#[tokio::test]
async fn a_restarted_node_is_verified_again_and_its_new_key_used() {
    let node = EvilNode::start(Misbehaviour::Honest).await;
    let client = NodeClient::new(&node.url, dev_policy()).unwrap();
    let first = client
        .chat(body(false), &RequestOptions::default())
        .await
        .unwrap();
    node.restart();
    // The cached key no longer opens on the node (`e2ee_open_failed`): the client verifies the
    // node again, once, and seals to its new attested key.
    let second = client
        .chat(body(false), &RequestOptions::default())
        .await
        .unwrap();
    assert_ne!(first.node.signer_hex, second.node.signer_hex);
    assert_eq!(second.node.signer_hex, node.signer_hex());
    assert_eq!(node.reports_served(), 2);
    node.restart();
    let mut s = client
        .chat_stream(body(true), &RequestOptions::default())
        .await
        .unwrap();
    let mut last = None;
    while let Some(item) = s.next().await {
        last = Some(item.unwrap());
    }
    assert!(matches!(last, Some(StreamEvent::Done(p)) if p.node.signer_hex == node.signer_hex()));
}

#[tokio::test]
async fn an_expired_key_binding_is_fetched_again_before_sealing() {
    let node = EvilNode::start(Misbehaviour::ShortLivedBinding).await;
    let client = NodeClient::new(&node.url, dev_policy()).unwrap();
    client
        .chat(body(false), &RequestOptions::default())
        .await
        .unwrap();
    client
        .chat(body(false), &RequestOptions::default())
        .await
        .unwrap();
    assert_eq!(node.reports_served(), 1);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    client
        .chat(body(false), &RequestOptions::default())
        .await
        .unwrap();
    assert_eq!(
        node.reports_served(),
        2,
        "the binding expired within the verdict TTL"
    );
}

/// A hostile server that answers the attestation request with an endless body: the client stops
/// reading at its bound and names the refusal, instead of buffering without limit.
#[tokio::test]
async fn an_oversized_report_is_refused_at_the_bound() {
    use axum::routing::get;
    let endless = || async {
        let chunk = Bytes::from(vec![b' '; 1 << 20]);
        let chunks = futures::stream::repeat(chunk).map(Ok::<_, std::io::Error>);
        axum::body::Body::from_stream(chunks)
    };
    let addr = cloister_testkit::serve_in_thread(
        axum::Router::new().route(wire::ATTESTATION_REPORT_PATH, get(endless)),
    );
    let client = NodeClient::new(&format!("http://{addr}"), dev_policy()).unwrap();
    let err = client
        .chat(body(false), &RequestOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "malformed_response", "{err}");
    assert!(err.to_string().contains("larger than"), "{err}");
}
