//! Bounded, resumable log scans against real anvil, seen through [`RangeCappedRpc`], a test double
//! that refuses `eth_getLogs` ranges wider than 100 blocks as public providers refuse wider ones
//! (the limit is scaled down rather than the chain up: anvil mines tens of thousands of blocks
//! slowly). Over 1,300 blocks are mined so that a scan from block 0 in one call fails there, and
//! every scan this crate makes (registry signers and measurements, oracle requests) must still
//! find every event, and resume from a stored cursor.

use std::sync::{Arc, Mutex};

use alloy::primitives::{B256, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::Filter;
use alloy::signers::local::PrivateKeySigner;
use axum::extract::State;
use cloister_chain::devnet;
use cloister_chain::{Chain, ChainConfig, Network, SignerHistory, read_provider};
use cloister_types::logscan::LogCursor;
use serde_json::{Value, json};

use crate::{MODEL, bytes, connect, operator_of, register_node, start_devnet};

/// The error text Alchemy answers a too-wide `eth_getLogs` with.
const REFUSAL: &str = "Log response size exceeded. You can make eth_getLogs requests with up to a \
                       100 block range and no limit on the response size.";

/// One `eth_getLogs` the double saw.
#[derive(Clone, Copy, Debug)]
struct Seen {
    from: u64,
    to: u64,
    refused: bool,
}

#[derive(Clone)]
struct DoubleState {
    upstream: String,
    max_range: u64,
    http: alloy::transports::http::reqwest::Client,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// **Test double**: a JSON-RPC proxy in front of a real anvil. It forwards every call unchanged,
/// except an `eth_getLogs` spanning more than `max_range` blocks, which it refuses with a
/// provider's error text (JSON-RPC code -32602, [`REFUSAL`]). It records every `eth_getLogs`
/// range it saw and whether it refused it.
struct RangeCappedRpc {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl RangeCappedRpc {
    fn start(upstream: &str, max_range: u64) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let state = DoubleState {
            upstream: upstream.to_owned(),
            max_range,
            http: alloy::transports::http::reqwest::Client::new(),
            seen: Arc::clone(&seen),
        };
        let app = axum::Router::new()
            .route("/", axum::routing::post(forward))
            .with_state(state);
        let addr = cloister_testkit::serve_in_thread(app);
        Self {
            url: format!("http://{addr}/"),
            seen,
        }
    }

    /// The ranges seen since the last call.
    fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

async fn upstream(state: &DoubleState, body: &Value) -> Value {
    let resp = state
        .http
        .post(&state.upstream)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body).unwrap())
        .send()
        .await
        .unwrap();
    serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap()
}

/// A block tag as a number (`latest`, the default when absent, asked from anvil).
async fn block_of(state: &DoubleState, tag: Option<&Value>) -> u64 {
    match tag.and_then(Value::as_str) {
        Some("earliest") => 0,
        None | Some("latest" | "safe" | "finalized" | "pending") => {
            let answer = upstream(
                state,
                &json!({"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}),
            )
            .await;
            u64::from_str_radix(answer["result"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
        }
        Some(hex) => u64::from_str_radix(hex.trim_start_matches("0x"), 16).unwrap(),
    }
}

async fn forward(State(state): State<DoubleState>, axum::Json(body): axum::Json<Value>) -> axum::Json<Value> {
    if body["method"] == "eth_getLogs" {
        let filter = &body["params"][0];
        let from = block_of(&state, filter.get("fromBlock")).await;
        let to = block_of(&state, filter.get("toBlock")).await;
        let refused = to.saturating_sub(from) + 1 > state.max_range;
        state.seen.lock().unwrap().push(Seen { from, to, refused });
        if refused {
            return axum::Json(json!({
                "jsonrpc": "2.0",
                "id": body["id"],
                "error": {"code": -32602, "message": REFUSAL},
            }));
        }
    }
    axum::Json(upstream(&state, &body).await)
}

async fn mine(provider: &DynProvider, blocks: u64) {
    let _: Value = provider
        .raw_request("anvil_mine".into(), (format!("{blocks:#x}"),))
        .await
        .unwrap();
}

/// A network whose log range (400) is wider than the double takes (100): scans must halve.
fn capped_network(chain_id: u64) -> Network {
    Network {
        name: "capped".into(),
        chain_id,
        confirmations: 0,
        max_log_range: 400,
        max_fee_per_gas_wei: 1_000_000_000,
        max_priority_fee_per_gas_wei: 1_000_000,
        automata_dcap_verifier: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bounded_scans_find_every_event_behind_a_capped_provider_and_resume() {
    let Some((dn, file)) = start_devnet().await else {
        return;
    };
    let started = std::time::Instant::now();
    // Events spread over more than 1,300 blocks: a registration and an oracle request early, a
    // reattestation in the middle, a measurement allowed late.
    let (op, first, registered) = register_node(&file).await;
    let operator = operator_of(&op);
    let requester = connect(&file, "requester").await;
    let (request_id, _) = requester
        .consumer()
        .unwrap()
        .ask(MODEL, bytes("hello"), U256::from(10u64))
        .await
        .unwrap();
    mine(op.provider(), 600).await;
    let second = PrivateKeySigner::random();
    let registry = op.registry().unwrap();
    let quote = registry
        .simulated_quote_for(operator, second.address())
        .await
        .unwrap();
    let reattested = registry.reattest(quote).await.unwrap();
    mine(op.provider(), 400).await;
    let extra = B256::repeat_byte(0x42);
    connect(&file, "governance")
        .await
        .registry()
        .unwrap()
        .set_measurement(extra, true)
        .await
        .unwrap();
    mine(op.provider(), 300).await;
    let latest = op.block_number().await.unwrap();
    assert!(latest > 1_300, "{latest}");
    eprintln!("mined to block {latest} in {:?}", started.elapsed());
    let started = std::time::Instant::now();

    let double = RangeCappedRpc::start(dn.rpc_url(), 100);

    // The old way, one eth_getLogs from block 0, fails through the double.
    let err = read_provider(&double.url)
        .unwrap()
        .get_logs(&Filter::new().address(registry.address()).from_block(0))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Log response size exceeded"), "{err}");
    double.take();

    // The bounded scan through the double finds every event.
    let mut config: ChainConfig = file.chain_config();
    config.rpc_url = double.url.clone();
    config.network = Some(capped_network(config.chain_id));
    let reader = Chain::connect(config.clone(), None).await.unwrap();
    let reg = reader.registry().unwrap();
    let history = reg
        .signer_history(operator, SignerHistory::default(), latest)
        .await
        .unwrap();
    assert_eq!(history.signers, [first.address(), second.address()]);
    assert_eq!(history.cursor, LogCursor::at(latest + 1));
    let seen = double.take();
    assert!(seen.iter().any(|s| s.refused), "the 400-block window was refused");
    assert!(
        seen.iter().filter(|s| !s.refused).all(|s| s.to - s.from < 100),
        "every answered window is within the double's limit"
    );
    assert_eq!(
        seen.iter().map(|s| s.from).min(),
        Some(0),
        "a scan starts at the deploy block (0)"
    );

    let allowed = reg.allowed_measurements().await.unwrap();
    assert!(allowed.contains(&extra), "{allowed:?}");
    assert!(allowed.contains(&devnet::simulated_measurement().unwrap()));

    let found = reader
        .oracle()
        .unwrap()
        .requests_between(0, latest)
        .await
        .unwrap();
    assert_eq!(found.iter().map(|r| r.id).collect::<Vec<_>>(), [request_id]);

    // Resumable: a scan stopped before the reattestation, stored (as JSON, as the node stores
    // it) and resumed, reads only from its cursor on and ends with the same history.
    let reattest_block = reattested.block_number.unwrap();
    let part = reg
        .signer_history(operator, SignerHistory::default(), reattest_block - 1)
        .await
        .unwrap();
    assert_eq!(part.signers, [first.address()]);
    assert_eq!(part.cursor, LogCursor::at(reattest_block));
    let stored: SignerHistory = serde_json::from_str(&serde_json::to_string(&part).unwrap()).unwrap();
    double.take();
    let resumed = reg.signer_history(operator, stored, latest).await.unwrap();
    assert_eq!(resumed, history);
    let seen = double.take();
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|s| s.from >= reattest_block),
        "the resumed scan starts at the stored cursor: {seen:?}"
    );

    // A deployment block in the configuration is where scans start.
    let deploy_block = registered.block_number.unwrap();
    let mut from_deploy = config;
    from_deploy.deploy_block = deploy_block;
    let reg = Chain::connect(from_deploy, None)
        .await
        .unwrap()
        .registry()
        .unwrap();
    let again = reg
        .signer_history(operator, SignerHistory::default(), latest)
        .await
        .unwrap();
    assert_eq!(again.signers, history.signers);
    assert_eq!(double.take().iter().map(|s| s.from).min(), Some(deploy_block));
    eprintln!("scans through the double in {:?}", started.elapsed());
}
