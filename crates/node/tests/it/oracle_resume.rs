//! The oracle's scan position survives restarts, on a real anvil with the real contracts and the
//! built-in model: a request made while the node is down (and buried under later blocks) is
//! answered when the node starts again on the same ledger, and a request answered before the
//! restart is not answered again. A node that reads the chain from the deployment block skips
//! every request already fulfilled. Without anvil or the model these tests print why and pass.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy_primitives::{Address, Bytes, U256};
use async_trait::async_trait;
use cloister_attest::collect::simulated::SimulatedAttester;
use cloister_chain::alloy::providers::Provider;
use cloister_chain::{Chain, DevnetFile, Oracle, OracleRequest, parse_private_key};
use cloister_crypto::EnclaveKey;
use cloister_engine::{ChunkStream, Engine, ModelCard};
use cloister_node::onchain::{OnChainConfig, OnChainNode};
use cloister_types::openai::{ChatCompletion, ChatCompletionRequest};
use serde_json::Value;

use crate::common::engine;
use crate::onchain::{config, devnet, key_of};

/// Test double: the real engine, recording the prompt of every oracle answer it is asked for, so
/// the test sees which requests a node attempted.
struct CountingEngine {
    inner: Arc<dyn Engine>,
    prompts: Mutex<Vec<String>>,
}

impl CountingEngine {
    fn prompts(&self) -> Vec<String> {
        self.prompts.lock().unwrap().clone()
    }
}

#[async_trait]
impl Engine for CountingEngine {
    fn models(&self) -> Vec<ModelCard> {
        self.inner.models()
    }

    async fn complete(&self, req: ChatCompletionRequest) -> cloister_engine::Result<ChatCompletion> {
        let prompt = req.messages.last().map(|m| m.text_content()).unwrap_or_default();
        self.prompts.lock().unwrap().push(prompt);
        self.inner.complete(req).await
    }

    async fn stream(&self, req: ChatCompletionRequest) -> cloister_engine::Result<ChunkStream> {
        self.inner.stream(req).await
    }
}

async fn start(engine: &Arc<CountingEngine>, mut cfg: OnChainConfig) -> OnChainNode {
    cfg.oracle = true;
    let engine: Arc<dyn Engine> = Arc::clone(engine) as Arc<dyn Engine>;
    OnChainNode::start(
        cfg,
        engine,
        Arc::new(SimulatedAttester),
        Arc::new(EnclaveKey::generate()),
    )
    .await
    .unwrap()
}

async fn requester(file: &DevnetFile) -> Oracle {
    Chain::connect(
        file.chain_config(),
        Some(parse_private_key(&key_of(file, "requester")).unwrap()),
    )
    .await
    .unwrap()
    .oracle()
    .unwrap()
}

async fn ask(oracle: &Oracle, model: &str, prompt: &'static str) -> U256 {
    let fee = U256::from(1_000_000u64);
    let (id, _) = oracle
        .request(
            model,
            Bytes::from_static(prompt.as_bytes()),
            fee,
            Address::ZERO,
            0,
        )
        .await
        .unwrap();
    id
}

/// Waits (up to 60 s) until request `id` is no longer pending; returns its status.
async fn final_status(oracle: &Oracle, id: U256) -> u8 {
    for _ in 0..600 {
        let status = oracle.get_request(id).await.unwrap().status;
        if status != OracleRequest::PENDING {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    OracleRequest::PENDING
}

/// `InferenceFulfilled` events of request `id`.
async fn fulfilments(oracle: &Oracle, id: U256) -> usize {
    let events = oracle
        .binding()
        .InferenceFulfilled_filter()
        .from_block(0)
        .query()
        .await
        .unwrap();
    events.iter().filter(|(ev, _)| ev.id == id).count()
}

const FULFILLED: u8 = 2;

#[tokio::test]
async fn a_request_made_while_the_node_was_down_is_answered_after_a_restart() {
    let Some(inner) = engine().await else {
        return;
    };
    let Some((_anvil, file)) = devnet().await else {
        return;
    };
    let model = inner.model_id().to_owned();
    let engine = Arc::new(CountingEngine {
        inner: Arc::new(inner),
        prompts: Mutex::new(Vec::new()),
    });
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("l.sqlite");
    let oracle = requester(&file).await;

    let node = start(&engine, config(&file, &model, &ledger)).await;
    let first = ask(&oracle, &model, "Name a colour.").await;
    assert_eq!(final_status(&oracle, first).await, FULFILLED, "answered while up");
    node.shutdown().await;

    // While the node is down: a request, then the chain moves on (a start at the current block
    // would never see it).
    let second = ask(&oracle, &model, "Name a fruit.").await;
    let _: Value = oracle
        .binding()
        .provider()
        .raw_request("anvil_mine".into(), (format!("{:#x}", 5),))
        .await
        .unwrap();
    assert_eq!(
        oracle.get_request(second).await.unwrap().status,
        OracleRequest::PENDING
    );

    let node = start(&engine, config(&file, &model, &ledger)).await;
    assert_eq!(
        final_status(&oracle, second).await,
        FULFILLED,
        "the request made while the node was down is answered after the restart"
    );
    node.shutdown().await;
    assert_eq!(
        engine.prompts(),
        ["Name a colour.", "Name a fruit."],
        "each request answered once; the one answered before the restart not attempted again"
    );

    // A node on a fresh ledger whose chain configuration knows the deployment block reads every
    // request from there: the two fulfilled ones are skipped, a new one is answered.
    let third = ask(&oracle, &model, "Name a tree.").await;
    let mut cfg = config(&file, &model, &dir.path().join("fresh.sqlite"));
    cfg.chain.deploy_block = 1;
    let node = start(&engine, cfg).await;
    assert_eq!(final_status(&oracle, third).await, FULFILLED);
    node.shutdown().await;
    assert_eq!(
        engine.prompts(),
        ["Name a colour.", "Name a fruit.", "Name a tree."],
        "requests already fulfilled are skipped, not answered again"
    );
    for id in [first, second, third] {
        assert_eq!(fulfilments(&oracle, id).await, 1, "request {id} fulfilled once");
    }
}
