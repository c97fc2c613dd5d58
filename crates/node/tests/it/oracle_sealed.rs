//! Oracle inputs sealed to one node (`docs/protocol.md` §9, "Sealed oracle inputs") on a real
//! anvil with the real contracts and the built-in model: a requester verifies the node's report
//! (simulated TEE, dev policy), seals a canary prompt to its attested HPKE key and designates it
//! with `requestFor`; only that node opens and answers it. The same envelope copied into another
//! requester's request does not open, and a request designated to another operator is answered by
//! that operator, not by this node. Without anvil or the model these tests print why and pass.

use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::{Address, Bytes, U256, keccak256};
use cloister_attest::collect::simulated::SimulatedAttester;
use cloister_chain::alloy::providers::Provider;
use cloister_chain::alloy::sol_types::SolCall;
use cloister_chain::bindings::InferenceOracle;
use cloister_chain::{Chain, DevnetFile, Oracle, parse_private_key};
use cloister_client::oracle::{OracleTarget, seal_oracle_input};
use cloister_client::{NodeClient, Policy};
use cloister_crypto::EnclaveKey;
use cloister_engine::Engine;
use cloister_node::onchain::{OnChainConfig, OnChainNode};
use cloister_node::{AppState, NodeConfig, serve};
use cloister_types::e2ee::ORACLE_SEALED_MAGIC;
use cloister_types::openai::{ChatCompletionRequest, ChatMessage};
use tokio::sync::oneshot;

use crate::common::engine;
use crate::onchain::{config, devnet, key_of};

/// A node serving HTTP (for its report) with its on-chain life, the oracle on.
struct OracleNode {
    url: String,
    onchain: OnChainNode,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Starts a node the way `node run` does: the oracle opens inputs with the E2EE key its report binds.
async fn start(engine: Arc<dyn Engine>, mut cfg: OnChainConfig) -> OracleNode {
    cfg.oracle = true;
    let key = Arc::new(EnclaveKey::generate());
    let attester = Arc::new(SimulatedAttester);
    let state = AppState::new(
        Arc::clone(&engine),
        attester.clone(),
        Arc::clone(&key),
        NodeConfig::default(),
    );
    let onchain = OnChainNode::start_with_e2ee(cfg, engine, attester, key, state.e2ee_key())
        .await
        .unwrap();
    let state = state.with_billing(Arc::clone(&onchain.billing));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, state, async move {
        let _ = rx.await;
    }));
    OracleNode {
        url,
        onchain,
        stop,
        task,
    }
}

impl OracleNode {
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
        self.onchain.shutdown().await;
    }
}

async fn oracle_as(file: &DevnetFile, role: &str) -> Oracle {
    Chain::connect(
        file.chain_config(),
        Some(parse_private_key(&key_of(file, role)).unwrap()),
    )
    .await
    .unwrap()
    .oracle()
    .unwrap()
}

/// Waits (up to 60 s) until request `id` is no longer pending; returns its status.
async fn settled_status(oracle: &Oracle, id: U256) -> u8 {
    for _ in 0..600 {
        let status = oracle.get_request(id).await.unwrap().status;
        if status != 1 {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    1
}

/// The node and output of request `id`'s fulfilment, read from the chain (event and calldata).
async fn fulfilment(oracle: &Oracle, id: U256) -> (Address, Bytes) {
    let events = oracle
        .binding()
        .InferenceFulfilled_filter()
        .from_block(0)
        .query()
        .await
        .unwrap();
    let (ev, log) = events
        .into_iter()
        .find(|(ev, _)| ev.id == id)
        .expect("a fulfilment event");
    let tx = oracle
        .binding()
        .provider()
        .get_transaction_by_hash(log.transaction_hash.unwrap())
        .await
        .unwrap()
        .unwrap();
    let call =
        InferenceOracle::fulfillCall::abi_decode(cloister_chain::alloy::consensus::Transaction::input(&tx))
            .unwrap();
    assert_eq!(keccak256(&call.output), ev.outputHash);
    (ev.node, call.output)
}

#[tokio::test]
async fn a_sealed_input_is_opened_and_answered_only_by_the_designated_node() {
    let Some(engine) = engine().await else {
        return;
    };
    let Some((_anvil, file)) = devnet().await else {
        return;
    };
    let model = engine.model_id().to_owned();
    let engine: Arc<dyn Engine> = Arc::new(engine);
    let dir = tempfile::tempdir().unwrap();
    let node = start(
        Arc::clone(&engine),
        config(&file, &model, &dir.path().join("a.sqlite")),
    )
    .await;
    // A second registered node, run by another operator (the devnet's `client` account).
    let mut other_cfg = config(&file, &model, &dir.path().join("b.sqlite"));
    other_cfg.operator = parse_private_key(&key_of(&file, "client")).unwrap();
    let other = start(Arc::clone(&engine), other_cfg).await;
    let operator = file.account("operator").unwrap().address;
    let other_operator = file.account("client").unwrap().address;

    // The requester verifies the node and seals the canary to its attested key.
    let verified = NodeClient::new(&node.url, Arc::new(Policy::dev_allow_simulated()))
        .unwrap()
        .verified()
        .await
        .unwrap();
    assert!(verified.binds_model(&model));
    let oracle = oracle_as(&file, "requester").await;
    let requester = file.account("requester").unwrap().address;
    let canary = "Say hello to canary-5f1e0c2b-oracle-sealed.";
    let target = OracleTarget {
        chain_id: oracle.chain_id(),
        oracle: oracle.address(),
        requester,
        model: &model,
    };
    let input = seal_oracle_input(&verified, &target, canary.as_bytes()).unwrap();
    let fee = U256::from(1_000_000u64);

    // Designated to the other operator: only it may answer (a plain input it can read).
    let (to_other, _) = oracle
        .request_for(
            other_operator,
            &model,
            Bytes::from_static(b"Name a colour."),
            fee,
            Address::ZERO,
            0,
        )
        .await
        .unwrap();
    let (sealed_id, _) = oracle
        .request_for(operator, &model, input.clone().into(), fee, Address::ZERO, 0)
        .await
        .unwrap();
    // The same envelope in another requester's request: its AAD names another requester.
    let copier = oracle_as(&file, "governance").await;
    let (copied, _) = copier
        .request_for(operator, &model, input.clone().into(), fee, Address::ZERO, 0)
        .await
        .unwrap();

    // On chain the input is the envelope: magic, then bytes that do not contain the prompt.
    let latest = oracle.binding().provider().get_block_number().await.unwrap();
    let logged = oracle.requests_between(0, latest).await.unwrap();
    let on_chain = logged.iter().find(|r| r.id == sealed_id).unwrap();
    assert_eq!(on_chain.node, operator);
    assert!(on_chain.input.starts_with(ORACLE_SEALED_MAGIC));
    let canary_bytes = canary.as_bytes();
    assert!(
        !on_chain
            .input
            .windows(canary_bytes.len())
            .any(|w| w == canary_bytes)
            && !on_chain
                .input
                .windows(12)
                .any(|w| w == b"canary-5f1e0".as_slice()),
        "the prompt is not readable on chain"
    );

    assert_eq!(
        settled_status(&oracle, sealed_id).await,
        2,
        "the designated node answered"
    );
    let (by, output) = fulfilment(&oracle, sealed_id).await;
    assert_eq!(by, operator);
    // The answer is the model's completion of the opened prompt (temperature 0).
    let mut expected = ChatCompletionRequest {
        model: model.clone(),
        ..ChatCompletionRequest::default()
    };
    expected.messages = vec![ChatMessage::text("user", canary)];
    expected.max_tokens = Some(64);
    expected.temperature = Some(0.0);
    let expected = engine.complete(expected).await.unwrap().choices[0]
        .message
        .text_content();
    assert!(!expected.is_empty());
    assert_eq!(
        output.as_ref(),
        expected.as_bytes(),
        "the answer to the canary prompt"
    );

    assert_eq!(settled_status(&oracle, to_other).await, 2);
    assert_eq!(
        fulfilment(&oracle, to_other).await.0,
        other_operator,
        "answered by its operator, not this node"
    );
    // The copied envelope does not open: still pending after the node has seen it for a while.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(oracle.get_request(copied).await.unwrap().status, 1);
    assert_eq!(oracle.get_request(copied).await.unwrap().node, operator);

    node.stop().await;
    other.stop().await;
}
