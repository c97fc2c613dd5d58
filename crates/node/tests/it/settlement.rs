//! Settlement fails closed: when the chain cannot be read after a settle transaction, the ledger
//! keeps the voucher pending instead of assuming it was paid, and a later settlement records it
//! from what the chain says, without paying twice.
//!
//! [`RpcDouble`] is a test double JSON-RPC endpoint in front of a real anvil: transparent until
//! armed; armed, it strips the logs from receipts (so the node sees no `Settled` event) and, once a
//! transaction has been sent, refuses every `eth_call` (so reading `Escrow.settled` fails).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use alloy_primitives::U256;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use cloister_attest::collect::simulated::SimulatedAttester;
use cloister_chain::Chain;
use cloister_chain::devnet::TOKEN;
use cloister_crypto::EnclaveKey;
use cloister_node::onchain::{OnChainNode, settle_now};
use cloister_types::wire;
use serde_json::{Value, json};

use crate::metering::{FixedUsageEngine, MODEL};
use crate::onchain::{config, deposit, devnet, far_future, mint_key};

/// Test double RPC endpoint (see the module docs).
#[derive(Clone)]
struct RpcDouble {
    upstream: String,
    http: reqwest::Client,
    armed: Arc<AtomicBool>,
    sent: Arc<AtomicBool>,
}

async fn relay(State(double): State<RpcDouble>, body: Bytes) -> Json<Value> {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let method = request["method"].as_str().unwrap_or_default().to_owned();
    let armed = double.armed.load(Ordering::SeqCst);
    if armed && method == "eth_sendRawTransaction" {
        double.sent.store(true, Ordering::SeqCst);
    }
    if armed && method == "eth_call" && double.sent.load(Ordering::SeqCst) {
        return Json(json!({
            "jsonrpc": "2.0",
            "id": request["id"],
            "error": {"code": -32000, "message": "rpc test double: read refused"},
        }));
    }
    let mut response: Value = double
        .http
        .post(&double.upstream)
        .header("content-type", wire::JSON_CONTENT_TYPE)
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    if armed
        && method == "eth_getTransactionReceipt"
        && let Some(receipt) = response["result"].as_object_mut()
    {
        receipt.insert("logs".into(), json!([]));
    }
    Json(response)
}

impl RpcDouble {
    /// Serves on 127.0.0.1 (random port) in front of `upstream`; returns the double and its URL.
    async fn start(upstream: &str) -> (Self, String) {
        let double = Self {
            upstream: upstream.to_owned(),
            http: reqwest::Client::new(),
            armed: Arc::new(AtomicBool::new(false)),
            sent: Arc::new(AtomicBool::new(false)),
        };
        let app = axum::Router::new()
            .route("/", axum::routing::post(relay))
            .with_state(double.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (double, url)
    }

    fn arm(&self, on: bool) {
        self.sent.store(false, Ordering::SeqCst);
        self.armed.store(on, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_read_after_settling_keeps_the_voucher_pending_until_the_chain_says() {
    let Some((anvil, file)) = devnet().await else {
        return;
    };
    let (double, double_url) = RpcDouble::start(anvil.rpc_url()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&file, MODEL, &dir.path().join("l.sqlite"));
    cfg.chain.rpc_url = double_url;
    let key = Arc::new(EnclaveKey::generate());
    let node = OnChainNode::start(
        cfg,
        Arc::new(FixedUsageEngine),
        Arc::new(SimulatedAttester),
        Arc::clone(&key),
    )
    .await
    .unwrap();

    // One metered voucher, signed by the registered enclave key.
    deposit(&file, "client", TOKEN).await;
    let (api_key, id) = mint_key(&file, TOKEN, far_future(), "client");
    let escrow = node.chain().escrow().unwrap();
    let ledger = Arc::clone(node.billing.ledger());
    let amount = U256::from(123_456u64);
    ledger
        .charge(&api_key, id, amount, &key, &escrow.domain())
        .await
        .unwrap();
    let direct = Chain::connect(file.chain_config(), None).await.unwrap();
    let operator = file.account("operator").unwrap().address;
    let before = direct.token_balance(operator).await.unwrap();

    // The batch goes out and is mined, but the node can read back neither its events nor
    // `Escrow.settled`: it must not record the voucher as paid.
    double.arm(true);
    assert_eq!(settle_now(&escrow, &ledger).await.unwrap(), 1);
    double.arm(false);
    assert_eq!(
        direct.escrow().unwrap().settled(id).await.unwrap(),
        amount,
        "the chain did settle"
    );
    let pending = ledger.unsettled().await.unwrap();
    assert_eq!(pending.len(), 1, "the unread voucher stays pending");
    assert_eq!((pending[0].authorization, pending[0].settled), (id, U256::ZERO));

    // The next round reads the chain, records the payment, and sends nothing.
    assert_eq!(settle_now(&escrow, &ledger).await.unwrap(), 0);
    assert!(ledger.unsettled().await.unwrap().is_empty());
    assert_eq!(
        direct.token_balance(operator).await.unwrap() - before,
        amount,
        "paid exactly once"
    );
    node.shutdown().await;
}
