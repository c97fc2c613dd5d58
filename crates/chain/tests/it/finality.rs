//! `tx_finality` on real anvil: a transaction waits until it is `confirmations` deep, is final
//! then, and is dropped when a reorg (here `evm_revert`) removes it.

use alloy::primitives::{Address, U256};
use alloy::providers::Provider as _;
use cloister_chain::bindings::DevToken;
use cloister_chain::{Finality, tx_finality, wallet_provider};

#[tokio::test]
async fn a_transaction_waits_is_final_and_is_dropped_by_a_reorg() {
    let Some((dn, file)) = crate::start_devnet().await else {
        return;
    };
    let gov = cloister_chain::devnet::dev_signer("governance").unwrap();
    let p = wallet_provider(dn.rpc_url(), gov).unwrap();
    let token = DevToken::new(file.contracts.token, &p);
    let snapshot: serde_json::Value = p.raw_request("evm_snapshot".into(), ()).await.unwrap();
    let tx = token
        .mint(Address::repeat_byte(7), U256::from(1u64))
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap()
        .transaction_hash;
    let mine = |n: u64| {
        let p = p.clone();
        async move {
            let _: serde_json::Value = p
                .raw_request("anvil_mine".into(), (format!("{n:#x}"),))
                .await
                .unwrap();
        }
    };
    assert!(matches!(
        tx_finality(&p, tx, 2).await.unwrap(),
        Finality::Waiting { depth: 0, .. }
    ));
    assert!(matches!(
        tx_finality(&p, tx, 0).await.unwrap(),
        Finality::Final { .. }
    ));
    mine(1).await;
    assert!(matches!(
        tx_finality(&p, tx, 2).await.unwrap(),
        Finality::Waiting { depth: 1, .. }
    ));
    mine(1).await;
    assert!(matches!(
        tx_finality(&p, tx, 2).await.unwrap(),
        Finality::Final { .. }
    ));

    let _: bool = p.raw_request("evm_revert".into(), (snapshot,)).await.unwrap();
    mine(5).await;
    assert_eq!(tx_finality(&p, tx, 2).await.unwrap(), Finality::Dropped);
}
