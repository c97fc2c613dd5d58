//! Finality and reorgs for settlement, on a real anvil with the real contracts and a network
//! that asks for [`CONFIRMATIONS`] confirmations: a voucher is marked settled only once its
//! settle transaction is buried that deep; a settle transaction that a reorg removes (anvil's
//! `evm_revert`, `anvil_reorg`) is noticed and its voucher sent again; one that a reorg moves to
//! another block is followed there and not sent again. The operator is paid the cumulative amount
//! exactly once, a further round pays nothing, and the contract itself refuses the voucher again
//! (`VoucherAlreadySettled`). anvil stopped mid-settlement and restarted from its state is caught up
//! with. Without anvil these tests print why and pass, unless
//! `CLOISTER_REQUIRE_ANVIL=1`.

use std::sync::Arc;

use alloy_primitives::{Address, B256, Bytes, U256};
use cloister_attest::collect::simulated::SimulatedAttester;
use cloister_chain::alloy::providers::Provider as _;
use cloister_chain::devnet::{Devnet, DevnetOptions, TOKEN};
use cloister_chain::{Chain, Escrow, Network, SettleItem};
use cloister_crypto::EnclaveKey;
use cloister_node::billing::{Ledger, Voucher};
use cloister_node::onchain::{OnChainNode, SettleRound, Settler, settle_now};

use crate::metering::{FixedUsageEngine, MODEL};
use crate::onchain::{config, deposit, devnet, far_future, mint_key};

/// Blocks a settlement must be buried under in these tests.
const CONFIRMATIONS: u64 = 3;

/// A registered node on a devnet that asks for [`CONFIRMATIONS`], with one metered voucher.
struct Finality {
    /// The chain (taken out to stop and restart it).
    anvil: Option<Devnet>,
    node: OnChainNode,
    ledger: Arc<Ledger>,
    escrow: Escrow,
    /// Reads (and anvil's test methods) straight to anvil.
    direct: Chain,
    operator: Address,
    id: B256,
    amount: U256,
    /// The operator's token balance before any settlement.
    before: U256,
    _dir: tempfile::TempDir,
}

async fn setup() -> Option<Finality> {
    let (anvil, file) = devnet().await?;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&file, MODEL, &dir.path().join("l.sqlite"));
    cfg.chain.network = Some(Network {
        name: "reorg-test".into(),
        chain_id: file.chain_id,
        confirmations: CONFIRMATIONS,
        max_log_range: 10_000,
        max_fee_per_gas_wei: 1_000_000_000_000,
        max_priority_fee_per_gas_wei: 1_000_000_000_000,
        automata_dcap_verifier: None,
    });
    let key = Arc::new(EnclaveKey::generate());
    // Registration, too, is final only under the confirmations: anvil mines only on demand, so a
    // miner stands in for the chain's progress while the node waits.
    let miner_chain = Chain::connect(file.chain_config(), None).await.unwrap();
    let miner = tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(150)).await;
            let _: Result<serde_json::Value, _> = miner_chain
                .provider()
                .raw_request("anvil_mine".into(), ("0x1",))
                .await;
        }
    });
    let node = OnChainNode::start(
        cfg,
        Arc::new(FixedUsageEngine),
        Arc::new(SimulatedAttester),
        Arc::clone(&key),
    )
    .await
    .unwrap();
    miner.abort();
    let direct_now = Chain::connect(file.chain_config(), None).await.unwrap();
    let registered_in = direct_now
        .provider()
        .get_transaction_receipt(node.registration.tx_hash)
        .await
        .unwrap()
        .and_then(|r| r.block_number)
        .unwrap();
    let latest = direct_now.provider().get_block_number().await.unwrap();
    assert!(
        latest >= registered_in + CONFIRMATIONS,
        "start returned with the registration {} blocks deep",
        latest - registered_in
    );
    let escrow = node.chain().escrow().unwrap();
    assert_eq!(
        escrow.confirmations(),
        CONFIRMATIONS,
        "the network's confirmations reach the escrow"
    );
    deposit(&file, "client", TOKEN).await;
    let (api_key, id) = mint_key(&file, TOKEN, far_future(), "client");
    let ledger = Arc::clone(node.billing.ledger());
    let amount = U256::from(654_321u64);
    ledger
        .charge(&api_key, id, amount, &key, &escrow.domain())
        .await
        .unwrap();
    let direct = Chain::connect(file.chain_config(), None).await.unwrap();
    let operator = file.account("operator").unwrap().address;
    let before = direct.token_balance(operator).await.unwrap();
    Some(Finality {
        anvil: Some(anvil),
        node,
        ledger,
        escrow,
        direct,
        operator,
        id,
        amount,
        before,
        _dir: dir,
    })
}

impl Finality {
    async fn mine(&self, blocks: u64) {
        let _: serde_json::Value = self
            .direct
            .provider()
            .raw_request("anvil_mine".into(), (format!("{blocks:#x}"),))
            .await
            .unwrap();
    }

    /// What the operator has been paid so far.
    async fn paid(&self) -> U256 {
        self.direct.token_balance(self.operator).await.unwrap() - self.before
    }

    /// What `Escrow.settled` says at the chain's tip.
    async fn settled_at_tip(&self) -> U256 {
        self.direct.escrow().unwrap().settled(self.id).await.unwrap()
    }

    /// The voucher as the ledger still holds it unsettled (`None`: marked settled).
    async fn pending(&self) -> Option<Voucher> {
        let mut unsettled = self.ledger.unsettled().await.unwrap();
        assert!(unsettled.len() <= 1);
        unsettled.pop()
    }

    /// The last settle transaction the ledger recorded.
    async fn last_settle_tx(&self) -> B256 {
        let (hash, _) = self.ledger.settlements().await.unwrap().pop().unwrap();
        hash.parse().unwrap()
    }

    /// After the voucher is final: paid exactly once, a further round (and `settle_now`) sends
    /// nothing, and the contract refuses the same voucher again by name.
    async fn paid_exactly_once(&self, settler: &mut Settler, voucher: &Voucher) {
        assert!(self.pending().await.is_none(), "final: marked settled");
        assert_eq!(
            self.paid().await,
            self.amount,
            "the operator is paid the amount once"
        );
        let again = settler.round().await.unwrap();
        assert_eq!((again.sent, again.in_flight), (0, 0), "{again:?}");
        assert_eq!(settle_now(&self.escrow, &self.ledger).await.unwrap(), 0);
        let refused = self
            .escrow
            .settle(&[SettleItem {
                key: voucher.api_key.clone(),
                cumulative_amount: voucher.cumulative,
                voucher_signature: voucher.signature,
            }])
            .await
            .unwrap_err();
        assert_eq!(refused.revert_name(), Some("VoucherAlreadySettled"), "{refused}");
        assert_eq!(self.paid().await, self.amount, "nothing paid twice");
    }
}

/// Sends the voucher: one transaction in flight, paid at the tip, not marked.
async fn send(f: &Finality, settler: &mut Settler) -> Voucher {
    let voucher = f.pending().await.unwrap();
    let round = settler.round().await.unwrap();
    assert_eq!(
        round,
        SettleRound {
            sent: 1,
            in_flight: 1,
            ..SettleRound::default()
        }
    );
    assert_eq!(
        f.settled_at_tip().await,
        f.amount,
        "the chain's tip shows it paid"
    );
    assert_eq!(f.paid().await, f.amount);
    let pending = f
        .pending()
        .await
        .expect("not final: still unsettled in the ledger");
    assert_eq!(pending.settled, U256::ZERO);
    voucher
}

/// Mines until the voucher is buried under exactly [`CONFIRMATIONS`]: unsettled one block before,
/// settled at that block.
async fn bury(f: &Finality, settler: &mut Settler) {
    f.mine(CONFIRMATIONS - 1).await;
    let round = settler.round().await.unwrap();
    assert_eq!(
        (round.sent, round.finalized, round.in_flight),
        (0, 0, 1),
        "{round:?}"
    );
    assert!(f.pending().await.is_some(), "one block short of final");
    f.mine(1).await;
    let round = settler.round().await.unwrap();
    assert_eq!(
        (round.sent, round.finalized, round.in_flight),
        (0, 1, 0),
        "{round:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settlement_counts_only_once_buried_under_the_confirmations() {
    let Some(f) = setup().await else {
        return;
    };
    let mut settler = Settler::new(f.escrow.clone(), Arc::clone(&f.ledger));
    let voucher = send(&f, &mut settler).await;
    // A fresh settler (a restarted node) does not track the transaction: it neither sends the
    // voucher again (the tip shows it paid) nor marks it before it is buried.
    let mut fresh = Settler::new(f.escrow.clone(), Arc::clone(&f.ledger));
    let round = fresh.round().await.unwrap();
    assert_eq!((round.sent, round.awaiting_finality), (0, 1), "{round:?}");
    bury(&f, &mut settler).await;
    f.paid_exactly_once(&mut settler, &voucher).await;
    f.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settle_transaction_reverted_away_is_noticed_and_sent_again() {
    let Some(f) = setup().await else {
        return;
    };
    let mut settler = Settler::new(f.escrow.clone(), Arc::clone(&f.ledger));
    let snapshot: serde_json::Value = f
        .direct
        .provider()
        .raw_request("evm_snapshot".into(), ())
        .await
        .unwrap();
    let voucher = send(&f, &mut settler).await;
    let first = f.last_settle_tx().await;
    let reverted: bool = f
        .direct
        .provider()
        .raw_request("evm_revert".into(), (snapshot,))
        .await
        .unwrap();
    assert!(reverted);
    // The chain moves past the old height on other blocks: the transaction is gone, nothing paid.
    f.mine(CONFIRMATIONS + 1).await;
    assert_eq!(f.settled_at_tip().await, U256::ZERO);
    assert_eq!(f.paid().await, U256::ZERO);
    let round = settler.round().await.unwrap();
    assert_eq!(
        (round.reorged, round.sent, round.finalized, round.in_flight),
        (1, 1, 0, 1),
        "{round:?}"
    );
    assert_ne!(
        f.last_settle_tx().await,
        first,
        "a new settle transaction went out"
    );
    assert_eq!(f.settled_at_tip().await, f.amount);
    bury(&f, &mut settler).await;
    f.paid_exactly_once(&mut settler, &voucher).await;
    f.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settle_transaction_reorged_out_is_sent_again_and_one_moved_is_followed() {
    let Some(f) = setup().await else {
        return;
    };
    let provider = f.direct.provider();
    let mut settler = Settler::new(f.escrow.clone(), Arc::clone(&f.ledger));

    // anvil_reorg replaces the settle transaction's block (and one above) with empty blocks.
    let voucher = send(&f, &mut settler).await;
    f.mine(1).await;
    let _: serde_json::Value = provider
        .raw_request("anvil_reorg".into(), (2u64, Vec::<(Bytes, u64)>::new()))
        .await
        .unwrap();
    assert_eq!(f.paid().await, U256::ZERO, "the reorg undid the payment");
    let round = settler.round().await.unwrap();
    assert_eq!(
        (round.reorged, round.sent, round.in_flight),
        (1, 1, 1),
        "{round:?}"
    );

    // The new transaction is moved one block up by another reorg: followed there, not sent again,
    // and final only once buried under its new block.
    let tx = f.last_settle_tx().await;
    let raw: Bytes = provider
        .raw_request("eth_getRawTransactionByHash".into(), (tx,))
        .await
        .unwrap();
    let old_block = provider
        .get_transaction_receipt(tx)
        .await
        .unwrap()
        .unwrap()
        .block_number
        .unwrap();
    f.mine(1).await;
    let _: serde_json::Value = provider
        .raw_request("anvil_reorg".into(), (2u64, vec![(raw, 1u64)]))
        .await
        .unwrap();
    let moved_to = provider
        .get_transaction_receipt(tx)
        .await
        .unwrap()
        .unwrap()
        .block_number
        .unwrap();
    assert_eq!(moved_to, old_block + 1);
    let round = settler.round().await.unwrap();
    assert_eq!(
        (round.moved, round.sent, round.finalized, round.in_flight),
        (1, 0, 0, 1),
        "{round:?}"
    );
    assert_eq!(f.paid().await, f.amount);
    bury(&f, &mut settler).await;
    f.paid_exactly_once(&mut settler, &voucher).await;
    f.node.shutdown().await;
}

/// anvil stopped (its state dumped) while a settle transaction waits for its confirmations, then
/// restarted from that state on the same port: rounds during the outage fail and change nothing
/// (the voucher stays unsettled, nothing more is sent), and after the restart the settler follows
/// its transaction to finality and the operator is paid exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anvil_stopped_mid_settlement_and_restarted_with_its_state_is_caught_up() {
    let Some(mut f) = setup().await else {
        return;
    };
    let mut settler = Settler::new(f.escrow.clone(), Arc::clone(&f.ledger));
    let voucher = send(&f, &mut settler).await;
    let sent = f.ledger.settlements().await.unwrap().len();
    let state: serde_json::Value = f
        .direct
        .provider()
        .raw_request("anvil_dumpState".into(), ())
        .await
        .unwrap();
    let anvil = f.anvil.take().unwrap();
    let port: u16 = anvil.rpc_url().rsplit(':').next().unwrap().parse().unwrap();
    let chain_id = anvil.chain_id();
    anvil.stop();

    // The chain is unreachable: every round fails, and nothing changes.
    for _ in 0..2 {
        let err = settler.round().await.unwrap_err();
        eprintln!("round during the outage: {err}");
        assert!(f.pending().await.is_some(), "still unsettled");
        assert_eq!(
            f.ledger.settlements().await.unwrap().len(),
            sent,
            "nothing sent while the chain was down"
        );
    }

    // Back on the same port, from the dumped state.
    let anvil = Devnet::spawn(DevnetOptions {
        port: Some(port),
        chain_id: Some(chain_id),
        anvil: None,
    })
    .await
    .unwrap();
    let loaded: bool = f
        .direct
        .provider()
        .raw_request("anvil_loadState".into(), (state,))
        .await
        .unwrap();
    assert!(loaded);
    f.anvil = Some(anvil);
    assert_eq!(
        f.settled_at_tip().await,
        f.amount,
        "the restarted chain holds the settlement"
    );
    bury(&f, &mut settler).await;
    assert_eq!(
        f.ledger.settlements().await.unwrap().len(),
        sent,
        "the transaction in flight was followed, not sent again"
    );
    f.paid_exactly_once(&mut settler, &voucher).await;
    f.node.shutdown().await;
}
