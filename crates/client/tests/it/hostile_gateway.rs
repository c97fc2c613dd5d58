//! The client through a hostile gateway (`EvilGateway`, cloister-testkit) in front of node doubles
//! built from the real pieces: each attack ends in the named refusal, never a panic, and nothing a
//! gateway tampered with is ever returned as verified.

use std::collections::HashSet;
use std::sync::Arc;

use alloy_primitives::Address;
use bytes::Bytes;
use cloister_client::gateway::GatewayRoute;
use cloister_client::{E2eeMode, Error, NodeClient, NodePool, Policy, RequestOptions, StreamEvent};
use futures::StreamExt;

use cloister_testkit::evil_gateway::{
    Backend, BadList, EvilGateway, GatewayAttack, MADE_UP_SIGNER, operator_of,
};
use cloister_testkit::evil_node::{EvilNode, MODEL, Misbehaviour};

fn policy(e2ee: E2eeMode) -> Arc<Policy> {
    let mut p = Policy::dev_allow_simulated();
    p.e2ee = e2ee;
    Arc::new(p)
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

/// Two honest nodes behind a gateway attacking as `attack`.
async fn setup(attack: GatewayAttack) -> (EvilGateway, [EvilNode; 2]) {
    let nodes = [
        EvilNode::start(Misbehaviour::Honest).await,
        EvilNode::start(Misbehaviour::Honest).await,
    ];
    let gateway = EvilGateway::start(attack, nodes.iter().map(Backend::of).collect()).await;
    (gateway, nodes)
}

fn address(node: &EvilNode) -> Address {
    node.signer_hex().parse().unwrap()
}

/// Reads a whole stream: the data events, then the proof, or the first error.
async fn read_stream(client: &NodeClient) -> Result<(Vec<Bytes>, cloister_client::StreamProof), Error> {
    let mut s = client.chat_stream(body(true), &RequestOptions::default()).await?;
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
async fn an_honest_gateway_reaches_each_named_node_verified() {
    let (gateway, nodes) = setup(GatewayAttack::Honest).await;
    let route = GatewayRoute::new(&gateway.url, policy(E2eeMode::Required)).unwrap();
    let candidates = route.candidates(MODEL).await.unwrap();
    assert_eq!(candidates.len(), 2);
    for (candidate, node) in candidates.iter().zip(&nodes) {
        assert_eq!(candidate.client.routed_to(), Some(address(node)));
        let answer = candidate
            .client
            .chat(body(false), &RequestOptions::default())
            .await
            .unwrap();
        assert!(answer.sealed);
        assert_eq!(answer.node.signer_hex.to_lowercase(), node.signer_hex());
        let (data, proof) = read_stream(&candidate.client).await.unwrap();
        assert_eq!(data.len(), 4);
        assert!(proof.done_seen);
    }
    // Plain requests (no E2EE) through it verify too: the attacks below are the only difference.
    let plain = NodeClient::via_gateway(&gateway.url, address(&nodes[0]), policy(E2eeMode::Off)).unwrap();
    assert!(
        !plain
            .chat(body(false), &RequestOptions::default())
            .await
            .unwrap()
            .sealed
    );
    read_stream(&plain).await.unwrap();
}

#[tokio::test]
async fn a_gateway_answering_with_another_nodes_report_is_misrouted() {
    let (gateway, nodes) = setup(GatewayAttack::Misroute).await;
    for e2ee in [E2eeMode::Required, E2eeMode::Off] {
        let client = NodeClient::via_gateway(&gateway.url, address(&nodes[0]), policy(e2ee)).unwrap();
        let err = client
            .chat(body(false), &RequestOptions::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), "gateway_misrouted", "{err}");
        match &err {
            Error::GatewayMisrouted { named, attested } => {
                assert_eq!(named.to_lowercase(), nodes[0].signer_hex());
                assert_eq!(attested.to_lowercase(), nodes[1].signer_hex());
            }
            other => panic!("{other}"),
        }
        let err = read_stream(&client).await.unwrap_err();
        assert_eq!(err.code(), "gateway_misrouted", "{err}");
    }
    // A pool through the gateway fails over across both nodes and refuses both.
    let pool = NodePool::via_gateway(&gateway.url, policy(E2eeMode::Required)).unwrap();
    let err = pool
        .chat(body(false), &RequestOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "gateway_misrouted", "{err}");
}

/// The signers and operators of `model`'s candidates.
async fn listed(gateway: &EvilGateway) -> Result<Vec<(Address, Option<Address>)>, Error> {
    let route = GatewayRoute::new(&gateway.url, policy(E2eeMode::Required)).unwrap();
    Ok(route
        .candidates(MODEL)
        .await?
        .iter()
        .map(|c| (c.client.routed_to().unwrap(), c.operator))
        .collect())
}

#[tokio::test]
async fn malformed_node_lists_are_refused_or_their_bad_entries_dropped() {
    // Not a node list at all: a named error, no candidates.
    for bad in [BadList::Garbage, BadList::WrongShape, BadList::Oversized] {
        let (gateway, _nodes) = setup(GatewayAttack::NodeList(bad)).await;
        let err = listed(&gateway).await.unwrap_err();
        assert_eq!(err.code(), "malformed_response", "{bad:?}: {err}");
    }
    // Bad entries among good ones: exactly the good ones remain, in order, and they work.
    for bad in [
        BadList::WrongTypes,
        BadList::BadEntries,
        BadList::DuplicateSigners,
    ] {
        let (gateway, nodes) = setup(GatewayAttack::NodeList(bad)).await;
        let got = listed(&gateway).await.unwrap();
        let mut want: Vec<(Address, Option<Address>)> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (address(n), Some(operator_of(i).parse().unwrap())))
            .collect();
        if bad == BadList::BadEntries {
            // Its entries with bad endpoint URLs are otherwise well formed: kept (the endpoint is
            // never used). The gateway answers 404 for that made-up node, as the real one does.
            want.insert(
                0,
                (
                    MADE_UP_SIGNER.parse().unwrap(),
                    Some(operator_of(0).parse().unwrap()),
                ),
            );
        }
        assert_eq!(got, want, "{bad:?}");
        let client =
            NodeClient::via_gateway(&gateway.url, address(&nodes[1]), policy(E2eeMode::Required)).unwrap();
        let answer = client
            .chat(body(false), &RequestOptions::default())
            .await
            .unwrap();
        assert_eq!(
            answer.node.signer_hex.to_lowercase(),
            nodes[1].signer_hex(),
            "{bad:?}"
        );
    }
    // A huge list: bounded, the honest nodes first, each signer once.
    let (gateway, nodes) = setup(GatewayAttack::NodeList(BadList::Huge)).await;
    let got = listed(&gateway).await.unwrap();
    assert!(got.len() <= 64, "{}", got.len());
    assert_eq!(got[0].0, address(&nodes[0]));
    assert_eq!(got[1].0, address(&nodes[1]));
    assert_eq!(
        got.iter().map(|(s, _)| s).collect::<HashSet<_>>().len(),
        got.len()
    );
}

/// Whether `err` is a refused signature.
fn signature_refused(err: &Error) -> bool {
    matches!(
        err,
        Error::SignatureInvalid { .. } | Error::SignatureFromAnotherKey { .. }
    )
}

#[tokio::test]
async fn a_tampered_answer_is_never_returned_verified() {
    let (gateway, nodes) = setup(GatewayAttack::TamperAnswer).await;
    // Sealed: the AEAD refuses the changed ciphertext.
    let sealed =
        NodeClient::via_gateway(&gateway.url, address(&nodes[0]), policy(E2eeMode::Required)).unwrap();
    let err = sealed
        .chat(body(false), &RequestOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "e2ee_tampered", "{err}");
    let err = read_stream(&sealed).await.unwrap_err();
    assert_eq!(err.code(), "e2ee_tampered", "{err}");
    // In the clear: the node's signature no longer covers the bytes.
    let plain = NodeClient::via_gateway(&gateway.url, address(&nodes[0]), policy(E2eeMode::Off)).unwrap();
    let err = plain
        .chat(body(false), &RequestOptions::default())
        .await
        .unwrap_err();
    assert!(signature_refused(&err), "{err}");
    let err = read_stream(&plain).await.unwrap_err();
    assert!(signature_refused(&err), "{err}");
}

#[tokio::test]
async fn a_forged_signature_is_refused() {
    let (gateway, nodes) = setup(GatewayAttack::TamperSignature).await;
    for e2ee in [E2eeMode::Required, E2eeMode::Off] {
        let client = NodeClient::via_gateway(&gateway.url, address(&nodes[0]), policy(e2ee)).unwrap();
        let err = client
            .chat(body(false), &RequestOptions::default())
            .await
            .unwrap_err();
        assert!(signature_refused(&err), "{e2ee:?}: {err}");
    }
    let plain = NodeClient::via_gateway(&gateway.url, address(&nodes[0]), policy(E2eeMode::Off)).unwrap();
    let err = read_stream(&plain).await.unwrap_err();
    assert!(signature_refused(&err), "{err}");
}

#[tokio::test]
async fn an_answer_dropped_halfway_is_a_clean_error() {
    let (gateway, nodes) = setup(GatewayAttack::DropHalfway).await;
    for e2ee in [E2eeMode::Required, E2eeMode::Off] {
        let client = NodeClient::via_gateway(&gateway.url, address(&nodes[0]), policy(e2ee)).unwrap();
        let err = client
            .chat(body(false), &RequestOptions::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), "node_unreachable", "{e2ee:?}: {err}");
        let err = read_stream(&client).await.unwrap_err();
        assert!(
            ["node_unreachable", "e2ee_truncated"].contains(&err.code()),
            "{e2ee:?}: {err}"
        );
    }
}
