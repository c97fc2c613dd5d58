//! EIP-1559 fees on real anvil: a transaction's fees stay within the network's caps; a base fee
//! above the cap is refused before anything is sent; and a transaction stuck in the mempool
//! (automine off) is replaced with the same nonce at higher fees, exactly one of them mines, and
//! its effect happens once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use alloy::consensus::Transaction as _;
use alloy::primitives::{B256, U256};
use alloy::providers::Provider;
use cloister_chain::bindings::DevToken;
use cloister_chain::{Chain, ChainConfig, ChainError, DevnetFile, Network, ResendPolicy, parse_private_key};
use serde_json::Value;

use crate::start_devnet;

const GWEI: u128 = 1_000_000_000;

fn network(chain_id: u64, max_fee: u128, max_tip: u128) -> Network {
    Network {
        name: "capped-fees".into(),
        chain_id,
        confirmations: 0,
        max_log_range: 10_000,
        max_fee_per_gas_wei: u64::try_from(max_fee).unwrap(),
        max_priority_fee_per_gas_wei: u64::try_from(max_tip).unwrap(),
        automata_dcap_verifier: None,
    }
}

async fn client(file: &DevnetFile, config: ChainConfig) -> Chain {
    let key = &file.account("client").unwrap().private_key;
    Chain::connect(config, Some(parse_private_key(key).unwrap()))
        .await
        .unwrap()
}

async fn raw(chain: &Chain, method: &'static str, params: Value) -> Value {
    chain.provider().raw_request(method.into(), params).await.unwrap()
}

#[tokio::test]
async fn fees_stay_within_the_cap_and_a_base_fee_above_it_is_refused() {
    let Some((_dn, file)) = start_devnet().await else {
        return;
    };
    // A cap one wei above today's base fee, well under the estimate (twice the base fee plus the
    // tip): the estimate must be clamped, and the transaction still mines (empty blocks only
    // lower the base fee).
    let probe = client(&file, file.chain_config()).await;
    let base = probe
        .provider()
        .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
        .await
        .unwrap()
        .unwrap()
        .header
        .base_fee_per_gas
        .map(u128::from)
        .unwrap();
    let estimate = probe.provider().estimate_eip1559_fees().await.unwrap();
    let cap = base + 1;
    assert!(estimate.max_fee_per_gas > cap, "{estimate:?} vs base {base}");
    let tip_cap = estimate.max_priority_fee_per_gas.max(2) - 1;
    let mut config = file.chain_config();
    config.network = Some(network(file.chain_id, cap, tip_cap));
    let chain = client(&file, config).await;
    let tx = chain.escrow().unwrap().deposit(U256::from(5u64)).await.unwrap();
    let sent = chain
        .provider()
        .get_transaction_by_hash(tx.tx_hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sent.max_fee_per_gas(), cap, "clamped to the cap");
    let tip = sent.max_priority_fee_per_gas().unwrap();
    assert!(tip <= tip_cap, "{tip} > {tip_cap}");

    // The base fee jumps to 100 gwei, far above a 10 gwei cap: refused, and nothing is sent.
    let mut config = file.chain_config();
    config.network = Some(network(file.chain_id, 10 * GWEI, GWEI));
    let chain = client(&file, config).await;
    let high = format!("{:#x}", 100 * GWEI);
    raw(
        &chain,
        "anvil_setNextBlockBaseFeePerGas",
        serde_json::json!([high]),
    )
    .await;
    raw(&chain, "evm_mine", serde_json::json!([])).await;
    let me = chain.address().unwrap();
    let nonce = chain.provider().get_transaction_count(me).await.unwrap();
    let err = chain
        .escrow()
        .unwrap()
        .request_withdrawal(U256::from(1u64))
        .await
        .unwrap_err();
    match &err {
        ChainError::BaseFeeAboveCap { base_fee, cap } => {
            assert_eq!(*base_fee, 100 * GWEI);
            assert_eq!(*cap, 10 * GWEI);
        }
        other => panic!("expected BaseFeeAboveCap, got {other}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("100000000000") && text.contains("10000000000"),
        "{text}"
    );
    assert_eq!(chain.provider().get_transaction_count(me).await.unwrap(), nonce);
}

/// The client's pending transactions in anvil's mempool: hash → (nonce, maxFeePerGas, tip).
async fn pending(chain: &Chain) -> BTreeMap<B256, (u64, u128, u128)> {
    let pool = raw(chain, "txpool_content", serde_json::json!([])).await;
    let hex = |v: &Value| u128::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
    let mut out = BTreeMap::new();
    for by_nonce in pool["pending"].as_object().into_iter().flat_map(|m| m.values()) {
        for tx in by_nonce.as_object().unwrap().values() {
            let hash: B256 = tx["hash"].as_str().unwrap().parse().unwrap();
            let nonce = u64::try_from(hex(&tx["nonce"])).unwrap();
            out.insert(
                hash,
                (nonce, hex(&tx["maxFeePerGas"]), hex(&tx["maxPriorityFeePerGas"])),
            );
        }
    }
    out
}

#[tokio::test]
async fn a_stuck_transaction_is_replaced_at_a_higher_fee_and_mines_once() {
    let Some((_dn, file)) = start_devnet().await else {
        return;
    };
    let mut config = file.chain_config();
    config.resend = ResendPolicy {
        after_secs: 2,
        max_replacements: 3,
    };
    let chain = client(&file, config).await;
    let me = chain.address().unwrap();
    let escrow = chain.escrow().unwrap();
    // Approve up front (automine on) so that the deposit below is one transaction.
    DevToken::new(file.contracts.token, chain.provider())
        .approve(escrow.address(), U256::MAX)
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    let before = escrow.balance_of(me).await.unwrap();
    let nonce = chain.provider().get_transaction_count(me).await.unwrap();

    let _: Value = raw(&chain, "evm_setAutomine", serde_json::json!([false])).await;
    let amount = U256::from(777u64);
    let deposit = tokio::spawn({
        let escrow = escrow.clone();
        async move { escrow.deposit(amount).await }
    });

    // Every version seen in the mempool, until a replacement (same nonce, higher fees) shows.
    let mut seen: BTreeMap<B256, (u64, u128, u128)> = BTreeMap::new();
    let start = Instant::now();
    while seen.len() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no replacement in 30 s: {seen:?}"
        );
        seen.extend(pending(&chain).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut versions: Vec<_> = seen.iter().map(|(h, v)| (*h, *v)).collect();
    versions.sort_by_key(|(_, (_, fee, _))| *fee);
    let (_, (first_nonce, first_fee, first_tip)) = versions[0];
    let (_, (second_nonce, second_fee, second_tip)) = versions[1];
    assert_eq!(first_nonce, nonce);
    assert_eq!(second_nonce, nonce, "a replacement keeps the nonce");
    assert!(second_fee * 10 >= first_fee * 11, "{second_fee} vs {first_fee}");
    assert!(second_tip * 10 >= first_tip * 11, "{second_tip} vs {first_tip}");

    let _: Value = raw(&chain, "evm_mine", serde_json::json!([])).await;
    let outcome = tokio::time::timeout(Duration::from_secs(30), deposit)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let _: Value = raw(&chain, "evm_setAutomine", serde_json::json!([true])).await;

    // Exactly one of the versions mined, and it is the outcome.
    let mut mined = Vec::new();
    for hash in seen.keys() {
        if chain
            .provider()
            .get_transaction_receipt(*hash)
            .await
            .unwrap()
            .is_some()
        {
            mined.push(*hash);
        }
    }
    assert_eq!(mined, vec![outcome.tx_hash], "seen {seen:?}");
    assert_eq!(
        escrow.balance_of(me).await.unwrap(),
        before + amount,
        "deposited once"
    );
    assert_eq!(
        chain.provider().get_transaction_count(me).await.unwrap(),
        nonce + 1
    );
}
