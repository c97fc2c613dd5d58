//! Discovery's bounded log scan against [`CappedRegistryRpc`], a test double of a public RPC
//! provider: it refuses `eth_getLogs` wider than its limit, as providers do, and serves one
//! `MeasurementSet` event deep in the chain.

use std::sync::{Arc, Mutex};

use alloy_primitives::{Address, B256};
use alloy_sol_types::{SolCall, SolEvent, SolValue};
use axum::extract::State;
use cloister_types::logscan::LogScanLimits;
use serde_json::{Value, json};

use super::{DiscoverError, NodeRegistry, RegistryConfig, discover_with_limits};

/// The latest block the double reports.
const LATEST: u64 = 25_000;
/// The block its one `MeasurementSet` event is in.
const EVENT_BLOCK: u64 = 20_000;

#[derive(Clone)]
struct Double {
    max_range: u64,
    /// Every `eth_getLogs` range seen, and whether it was refused.
    seen: Arc<Mutex<Vec<(u64, u64, bool)>>>,
}

fn measurement() -> B256 {
    B256::repeat_byte(0x42)
}

fn hex_u64(v: &Value) -> u64 {
    let text = v.as_str().unwrap_or_default().trim_start_matches("0x");
    u64::from_str_radix(text, 16).unwrap_or(u64::MAX)
}

fn hex(bytes: impl AsRef<[u8]>) -> String {
    format!("0x{}", hex::encode(bytes))
}

/// **Test double**: a registry's JSON-RPC endpoint (chain 7, no nodes, one allowed measurement
/// set at block [`EVENT_BLOCK`]) that refuses any `eth_getLogs` over `max_range` blocks with
/// Ankr's "block range is too wide".
async fn answer(State(double): State<Double>, axum::Json(body): axum::Json<Value>) -> axum::Json<Value> {
    let ok = |result: Value| axum::Json(json!({"jsonrpc": "2.0", "id": 1, "result": result}));
    match body["method"].as_str().unwrap_or_default() {
        "eth_chainId" => ok(json!("0x7")),
        "eth_blockNumber" => ok(json!(format!("{LATEST:#x}"))),
        "eth_call" => {
            let data = body["params"][0]["data"].as_str().unwrap_or_default();
            if data.starts_with(&hex(NodeRegistry::nodeCountCall::SELECTOR)) {
                ok(json!(hex(alloy_primitives::U256::ZERO.abi_encode())))
            } else {
                ok(json!(hex(true.abi_encode())))
            }
        }
        "eth_getLogs" => {
            let filter = &body["params"][0];
            let (from, to) = (hex_u64(&filter["fromBlock"]), hex_u64(&filter["toBlock"]));
            let refused = to.saturating_sub(from) + 1 > double.max_range;
            if let Ok(mut seen) = double.seen.lock() {
                seen.push((from, to, refused));
            }
            if refused {
                return axum::Json(json!({"jsonrpc": "2.0", "id": 1,
                    "error": {"code": -32000, "message": "block range is too wide"}}));
            }
            let mut logs = Vec::new();
            if (from..=to).contains(&EVENT_BLOCK) {
                logs.push(json!({
                    "topics": [hex(NodeRegistry::MeasurementSet::SIGNATURE_HASH), hex(measurement())],
                    "data": hex(true.abi_encode()),
                    "blockNumber": format!("{EVENT_BLOCK:#x}"),
                }));
            }
            ok(Value::Array(logs))
        }
        _ => axum::Json(json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": "no"}})),
    }
}

async fn start(max_range: u64) -> (RegistryConfig, Double) {
    let double = Double {
        max_range,
        seen: Arc::default(),
    };
    let app = axum::Router::new()
        .route("/", axum::routing::post(answer))
        .with_state(double.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let config = RegistryConfig {
        rpc_url: format!("http://{addr}/"),
        chain_id: 7,
        registry: Address::repeat_byte(0x11),
    };
    (config, double)
}

fn seen(double: &Double) -> Vec<(u64, u64, bool)> {
    double.seen.lock().map(|s| s.clone()).unwrap_or_default()
}

#[tokio::test]
async fn the_scan_halves_to_the_providers_limit_and_reads_every_block() {
    let (config, double) = start(1_000).await;
    let http = reqwest::Client::new();
    let limits = LogScanLimits {
        from_block: 0,
        max_range: 4_096,
    };
    let found = discover_with_limits(&http, &config, limits)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(found.allowed_measurements, [measurement()]);
    let seen = seen(&double);
    assert!(seen.iter().any(|s| s.2), "the 4,096-block window was refused");
    let answered: Vec<_> = seen.iter().filter(|s| !s.2).collect();
    assert!(answered.iter().all(|s| s.1 - s.0 < 1_000));
    assert_eq!(answered.first().map(|s| s.0), Some(0));
    assert_eq!(answered.last().map(|s| s.1), Some(LATEST));
    for pair in answered.windows(2) {
        assert_eq!(pair[0].1 + 1, pair[1].0, "no block skipped or read twice");
    }
}

#[tokio::test]
async fn the_scan_starts_at_the_given_block() {
    let (config, double) = start(1_000).await;
    let limits = LogScanLimits {
        from_block: EVENT_BLOCK + 1,
        max_range: 1_000,
    };
    let found = discover_with_limits(&reqwest::Client::new(), &config, limits)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        found.allowed_measurements.is_empty(),
        "the event is before the start"
    );
    assert!(seen(&double).iter().all(|s| s.0 > EVENT_BLOCK));
}

#[tokio::test]
async fn a_provider_refusing_even_one_block_fails_by_name_after_a_bounded_number_of_calls() {
    let (config, double) = start(0).await;
    let limits = LogScanLimits {
        from_block: 0,
        max_range: 4_096,
    };
    let err = discover_with_limits(&reqwest::Client::new(), &config, limits)
        .await
        .err()
        .unwrap_or_else(|| panic!("a provider that refuses every range cannot be scanned"));
    assert!(
        matches!(&err, DiscoverError::Rpc { method: "eth_getLogs", message, .. } if message.contains("too wide")),
        "{err}"
    );
    assert_eq!(seen(&double).len(), 13, "4096, 2048, ..., 1: thirteen tries");
}
