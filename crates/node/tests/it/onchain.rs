//! The node's on-chain life on a real anvil with the real contracts: register at start, paid chat
//! with an API key, durable metering, batch settlement paying the operator, a restart between
//! metering and settlement (nothing lost, nothing paid twice), and named refusals of bad keys.
//! Without anvil these tests print why and pass, unless `CLOISTER_REQUIRE_ANVIL=1`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::{B256, U256};
use cloister_attest::collect::simulated::SimulatedAttester;
use cloister_chain::devnet::{self, DeployParams, Devnet, DevnetOptions, TOKEN};
use cloister_chain::{Chain, DevnetFile, parse_private_key};
use cloister_crypto::EnclaveKey;
use cloister_engine::Engine;
use cloister_node::billing::Price;
use cloister_node::onchain::{OnChainConfig, OnChainNode, settle_now};
use cloister_node::{AppState, NodeConfig, serve};
use cloister_types::eip712::{ApiKey, SpendAuthorization, authorization_id};
use cloister_types::wire;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::common::{chat_body, engine};

pub(crate) async fn devnet() -> Option<(Devnet, DevnetFile)> {
    if devnet::find_anvil().is_none() {
        assert!(
            !std::env::var("CLOISTER_REQUIRE_ANVIL").is_ok_and(|v| v == "1"),
            "anvil not found and CLOISTER_REQUIRE_ANVIL=1 (run `npm ci --prefix contracts`)"
        );
        eprintln!("SKIP: anvil not found (set CLOISTER_ANVIL or run `npm ci --prefix contracts`)");
        return None;
    }
    let dn = Devnet::spawn(DevnetOptions::default()).await.unwrap();
    let file = devnet::deploy_devnet(dn.rpc_url(), &DeployParams::default())
        .await
        .unwrap();
    Some((dn, file))
}

/// Everything a test needs: a devnet with the contracts, the engine and its model id, a directory for
/// ledgers. `None` (after printing why) without the model or anvil.
struct Setup {
    _anvil: Devnet,
    file: DevnetFile,
    model: String,
    engine: Arc<dyn Engine>,
    dir: tempfile::TempDir,
}

async fn setup() -> Option<Setup> {
    let engine = engine().await?;
    let (_anvil, file) = devnet().await?;
    Some(Setup {
        _anvil,
        file,
        model: engine.model_id().to_owned(),
        engine: Arc::new(engine),
        dir: tempfile::tempdir().unwrap(),
    })
}

pub(crate) fn key_of(file: &DevnetFile, role: &str) -> String {
    file.account(role).unwrap().private_key.clone()
}

pub(crate) fn config(file: &DevnetFile, model: &str, ledger: &Path) -> OnChainConfig {
    OnChainConfig {
        chain: file.chain_config(),
        operator: parse_private_key(&key_of(file, "operator")).unwrap(),
        endpoint: "http://127.0.0.1:1".into(),
        prices: HashMap::from([(
            model.to_owned(),
            Price {
                input: U256::from(1_000u64),
                output: U256::from(3_000u64),
            },
        )]),
        stake: None,
        ledger_path: ledger.to_owned(),
        // Settlement only when the test asks (or at shutdown when asked).
        settle_interval: Duration::from_secs(3600),
        settle_threshold: 1_000,
        withdrawal_margin: Duration::from_secs(30),
        poll_interval: Duration::from_millis(200),
        deposit_ttl: Duration::from_secs(1),
        oracle: false,
    }
}

struct PaidNode {
    url: String,
    onchain: OnChainNode,
    key: Arc<EnclaveKey>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start_node(engine: Arc<dyn Engine>, cfg: OnChainConfig) -> PaidNode {
    let key = Arc::new(EnclaveKey::generate());
    let attester = Arc::new(SimulatedAttester);
    let onchain = OnChainNode::start(cfg, Arc::clone(&engine), attester.clone(), Arc::clone(&key))
        .await
        .unwrap();
    let state = AppState::new(engine, attester, Arc::clone(&key), NodeConfig::default())
        .with_billing(Arc::clone(&onchain.billing));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, state, async move {
        let _ = rx.await;
    }));
    PaidNode {
        url,
        onchain,
        key,
        stop: Some(tx),
        task,
    }
}

impl PaidNode {
    async fn stop(mut self) -> OnChainNode {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = self.task.await;
        self.onchain
    }
}

/// A key signed by the devnet client for the devnet operator.
pub(crate) fn mint_key(file: &DevnetFile, max: U256, expiry: u64, client_role: &str) -> (ApiKey, B256) {
    let client = EnclaveKey::from_secret_bytes(
        &hex::decode(key_of(file, client_role).trim_start_matches("0x")).unwrap(),
    )
    .unwrap();
    let auth = SpendAuthorization {
        client: client.address(),
        node: file.account("operator").unwrap().address,
        maxAmount: max,
        expiry,
        salt: B256::from(rand_bytes()),
    };
    let domain = cloister_types::eip712::escrow_domain(file.chain_id, file.contracts.escrow);
    let id = authorization_id(&domain, &auth);
    (ApiKey::new(auth, client.sign_prehash(&id.0)), id)
}

fn rand_bytes() -> [u8; 32] {
    let k = EnclaveKey::generate();
    cloister_crypto::keccak256(&k.public_key_uncompressed())
}

pub(crate) fn far_future() -> u64 {
    4_000_000_000
}

async fn chat(url: &str, model: &str, bearer: Option<&str>, stream: bool) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(format!("{url}{}", wire::CHAT_COMPLETIONS_PATH))
        .header(wire::INLINE_SIGNATURE_HEADER, wire::INLINE_SIGNATURE_ON)
        .body(chat_body(model, "Say hello.", stream, json!({})));
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    req.send().await.unwrap()
}

pub(crate) async fn deposit(file: &DevnetFile, role: &str, amount: U256) {
    let chain = Chain::connect(
        file.chain_config(),
        Some(parse_private_key(&key_of(file, role)).unwrap()),
    )
    .await
    .unwrap();
    chain.escrow().unwrap().deposit(amount).await.unwrap();
}

#[tokio::test]
async fn register_pay_chat_settle_and_the_operator_is_paid() {
    let Some(Setup {
        _anvil,
        file,
        model,
        engine,
        dir,
    }) = setup().await
    else {
        return;
    };
    let node = start_node(
        Arc::clone(&engine),
        config(&file, &model, &dir.path().join("l.sqlite")),
    )
    .await;
    assert_eq!(node.onchain.registration.action, "registered");

    let chain = node.onchain.chain().clone();
    let operator = file.account("operator").unwrap().address;
    let registry = chain.registry().unwrap();
    assert!(registry.is_active(operator).await.unwrap());
    assert_eq!(registry.signer_of(operator).await.unwrap(), node.key.address());

    deposit(&file, "client", TOKEN).await;
    let (key, id) = mint_key(&file, TOKEN, far_future(), "client");
    let bearer = key.encode();

    // Plain: the receipt is a voucher for the cumulative amount, signed by the enclave key.
    let resp = chat(&node.url, &model, Some(&bearer), false).await;
    assert_eq!(resp.status(), 200);
    let receipt: Value =
        serde_json::from_str(resp.headers()[wire::RECEIPT_HEADER].to_str().unwrap()).unwrap();
    let first: U256 = receipt["cumulative_amount"].as_str().unwrap().parse().unwrap();
    assert!(first > U256::ZERO);
    assert_eq!(receipt["authorization"], format!("{id:#x}"));

    // Streamed: the receipt rides in the signature event; the total grows.
    let resp = chat(&node.url, &model, Some(&bearer), true).await;
    let text = resp.text().await.unwrap();
    let sig_event = text
        .split(&format!("event: {}\ndata: ", wire::SIGNATURE_EVENT))
        .nth(1)
        .unwrap();
    let sig: Value = serde_json::from_str(sig_event.trim()).unwrap();
    let total: U256 = sig["receipt"]["cumulative_amount"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(total > first);

    let escrow = chain.escrow().unwrap();
    let client = key.auth.client;
    let before_client = escrow.balance_of(client).await.unwrap();
    let before_op = chain.token_balance(operator).await.unwrap();
    let ledger = Arc::clone(node.onchain.billing.ledger());
    assert_eq!(
        settle_now(&escrow, &ledger).await.unwrap(),
        1,
        "one voucher for the authorization"
    );
    assert_eq!(
        chain.token_balance(operator).await.unwrap() - before_op,
        total,
        "operator paid the total"
    );
    assert_eq!(before_client - escrow.balance_of(client).await.unwrap(), total);
    assert_eq!(escrow.settled(id).await.unwrap(), total);
    // Nothing left, nothing paid twice.
    assert_eq!(settle_now(&escrow, &ledger).await.unwrap(), 0);
    node.stop().await.shutdown().await;
}

#[tokio::test]
async fn restart_between_metering_and_settlement_loses_nothing_and_pays_once() {
    let Some(Setup {
        _anvil,
        file,
        model,
        engine,
        dir,
    }) = setup().await
    else {
        return;
    };
    let ledger_path = dir.path().join("ledger.sqlite");
    deposit(&file, "client", TOKEN).await;
    let (key, id) = mint_key(&file, TOKEN, far_future(), "client");
    let bearer = key.encode();

    // First life: meter two answers, stop without settling.
    let node = start_node(Arc::clone(&engine), config(&file, &model, &ledger_path)).await;
    let old_signer = node.key.address();
    for _ in 0..2 {
        assert_eq!(chat(&node.url, &model, Some(&bearer), false).await.status(), 200);
    }
    let metered = node.onchain.billing.ledger().cumulative(id).await.unwrap();
    drop(node.stop().await); // tasks dropped, no settlement

    // Second life: a new enclave key, reattested; the old voucher is re-signed with it.
    let node = start_node(Arc::clone(&engine), config(&file, &model, &ledger_path)).await;
    assert_eq!(node.onchain.registration.action, "reattested");
    assert_eq!(node.onchain.registration.resigned, 1);
    assert_ne!(node.key.address(), old_signer);
    let ledger = Arc::clone(node.onchain.billing.ledger());
    assert_eq!(ledger.cumulative(id).await.unwrap(), metered, "nothing lost");

    // Keeps metering on top of the old total, then settles once.
    let resp = chat(&node.url, &model, Some(&bearer), false).await;
    let receipt: Value =
        serde_json::from_str(resp.headers()[wire::RECEIPT_HEADER].to_str().unwrap()).unwrap();
    let total: U256 = receipt["cumulative_amount"].as_str().unwrap().parse().unwrap();
    assert!(total > metered);
    let chain = node.onchain.chain().clone();
    let escrow = chain.escrow().unwrap();
    let operator = file.account("operator").unwrap().address;
    let before = chain.token_balance(operator).await.unwrap();
    assert_eq!(settle_now(&escrow, &ledger).await.unwrap(), 1);
    assert_eq!(settle_now(&escrow, &ledger).await.unwrap(), 0);
    assert_eq!(
        chain.token_balance(operator).await.unwrap() - before,
        total,
        "paid exactly once"
    );

    // A third life right after settlement pays nothing more.
    drop(node.stop().await);
    let node = start_node(Arc::clone(&engine), config(&file, &model, &ledger_path)).await;
    let ledger = Arc::clone(node.onchain.billing.ledger());
    assert_eq!(settle_now(&escrow, &ledger).await.unwrap(), 0);
    assert_eq!(escrow.settled(id).await.unwrap(), total);
    node.stop().await.shutdown().await;
}

#[tokio::test]
async fn bad_keys_are_refused_by_name() {
    let Some(Setup {
        _anvil,
        file,
        model,
        engine,
        dir,
    }) = setup().await
    else {
        return;
    };
    let node = start_node(engine, config(&file, &model, &dir.path().join("l.sqlite"))).await;
    deposit(&file, "client", TOKEN).await;

    async fn code(resp: reqwest::Response) -> (u16, String) {
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        (
            status,
            body["error"]["code"].as_str().unwrap_or_default().to_owned(),
        )
    }
    assert_eq!(
        code(chat(&node.url, &model, None, false).await).await,
        (401, "missing_api_key".into())
    );
    assert_eq!(
        code(chat(&node.url, &model, Some("ck1_garbage"), false).await).await,
        (401, "invalid_api_key".into())
    );
    // Signed by someone else than the client it names.
    let (mut forged, _) = mint_key(&file, TOKEN, far_future(), "client");
    forged.auth.maxAmount = TOKEN * U256::from(10u64);
    assert_eq!(
        code(chat(&node.url, &model, Some(&forged.encode()), false).await).await,
        (401, "invalid_api_key".into())
    );
    let (expired, _) = mint_key(&file, TOKEN, 1_000, "client");
    assert_eq!(
        code(chat(&node.url, &model, Some(&expired.encode()), false).await).await,
        (401, "api_key_expired".into())
    );
    // The requester account never deposited.
    let (poor, _) = mint_key(&file, TOKEN, far_future(), "requester");
    assert_eq!(
        code(chat(&node.url, &model, Some(&poor.encode()), false).await).await,
        (402, "insufficient_deposit".into())
    );
    // A tiny limit: the first answer uses it up, the next is refused.
    let (tiny, _) = mint_key(&file, U256::from(1u64), far_future(), "client");
    assert_eq!(
        chat(&node.url, &model, Some(&tiny.encode()), false)
            .await
            .status(),
        200
    );
    assert_eq!(
        code(chat(&node.url, &model, Some(&tiny.encode()), false).await).await,
        (402, "spend_limit_reached".into())
    );
    // The node still serves a good key.
    let (good, _) = mint_key(&file, TOKEN, far_future(), "client");
    assert_eq!(
        chat(&node.url, &model, Some(&good.encode()), false)
            .await
            .status(),
        200
    );
    node.stop().await.shutdown().await;
}

#[tokio::test]
async fn oracle_requests_for_served_models_are_answered_on_chain() {
    let Some(Setup {
        _anvil,
        file,
        model,
        engine,
        dir,
    }) = setup().await
    else {
        return;
    };
    let mut cfg = config(&file, &model, &dir.path().join("l.sqlite"));
    cfg.oracle = true;
    let node = start_node(engine, cfg).await;

    let requester = Chain::connect(
        file.chain_config(),
        Some(parse_private_key(&key_of(&file, "requester")).unwrap()),
    )
    .await
    .unwrap();
    let consumer = requester.consumer().unwrap();
    let operator = file.account("operator").unwrap().address;
    let before = requester.token_balance(operator).await.unwrap();
    let fee = U256::from(1_000_000u64);
    let (id, _) = consumer
        .ask(
            &model,
            alloy_primitives::Bytes::from_static(b"Name a colour."),
            fee,
        )
        .await
        .unwrap();
    // A request for a model nobody serves stays pending (and is refundable after the timeout).
    let (other, _) = consumer
        .ask("no-such-model", alloy_primitives::Bytes::from_static(b"x"), fee)
        .await
        .unwrap();

    let mut answer = None;
    for _ in 0..300 {
        answer = consumer.answer(id).await.unwrap();
        if answer.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = answer.expect("the node fulfilled the request within 30 s");
    assert!(!answer.is_empty());
    assert!(std::str::from_utf8(&answer).is_ok());
    assert_eq!(
        requester.token_balance(operator).await.unwrap() - before,
        fee,
        "fee paid to the operator"
    );
    assert!(consumer.answer(other).await.unwrap().is_none());
    node.stop().await.shutdown().await;
}

#[tokio::test]
async fn a_pending_withdrawal_triggers_settlement_before_its_delay_ends() {
    let Some(Setup {
        _anvil,
        file,
        model,
        engine,
        dir,
    }) = setup().await
    else {
        return;
    };
    // Interval and threshold never fire here; only the withdrawal can.
    let node = start_node(engine, config(&file, &model, &dir.path().join("l.sqlite"))).await;
    deposit(&file, "client", TOKEN).await;
    let (key, id) = mint_key(&file, TOKEN, far_future(), "client");
    assert_eq!(
        chat(&node.url, &model, Some(&key.encode()), false).await.status(),
        200
    );
    let metered = node.onchain.billing.ledger().cumulative(id).await.unwrap();

    let client = Chain::connect(
        file.chain_config(),
        Some(parse_private_key(&key_of(&file, "client")).unwrap()),
    )
    .await
    .unwrap();
    let escrow = client.escrow().unwrap();
    assert_eq!(escrow.settled(id).await.unwrap(), U256::ZERO);
    escrow.request_withdrawal(TOKEN).await.unwrap();
    // The delay is 60 s of chain time; move the chain to 20 s before its end (inside the margin).
    devnet::increase_time(client.provider(), 40).await.unwrap();
    let mut settled = U256::ZERO;
    for _ in 0..100 {
        settled = escrow.settled(id).await.unwrap();
        if settled == metered {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(settled, metered, "settled before the client could withdraw");
    node.stop().await.shutdown().await;
}
