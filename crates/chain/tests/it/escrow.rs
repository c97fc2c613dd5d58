use alloy::primitives::{B256, U256};
use alloy::signers::local::PrivateKeySigner;
use cloister_chain::devnet::{self, TOKEN};
use cloister_chain::{SettleItem, sign_digest};
use cloister_types::eip712::{self, ApiKey, SpendAuthorization};

use crate::{bytes, connect, operator_of, register_node, start_devnet};

#[tokio::test]
async fn digests_equal_the_contract_views() {
    let Some((_dn, file)) = start_devnet().await else {
        return;
    };
    let client = connect(&file, "client").await;
    let escrow = client.escrow().unwrap();
    let auth = SpendAuthorization {
        client: client.address().unwrap(),
        node: alloy::primitives::Address::repeat_byte(7),
        maxAmount: U256::from(123_456u64),
        expiry: 1_900_000_000,
        salt: B256::repeat_byte(9),
    };
    let id = eip712::authorization_id(&escrow.domain(), &auth);
    assert_eq!(escrow.authorization_id(&auth).await.unwrap(), id);
    let cum = U256::from(42u64);
    assert_eq!(
        escrow.voucher_digest(id, cum).await.unwrap(),
        eip712::voucher_digest(&escrow.domain(), id, cum)
    );
    let oracle = client.oracle().unwrap();
    let output = b"forty-two";
    let expected = eip712::result_digest(&oracle.domain(), U256::from(5u64), output, "m");
    let got = oracle
        .result_digest(U256::from(5u64), eip712::output_hash(output), "m")
        .await
        .unwrap();
    assert_eq!(got, expected);
}

static SALT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn mint_key(
    client: &PrivateKeySigner,
    escrow: &cloister_chain::Escrow,
    node: alloy::primitives::Address,
    max: U256,
) -> ApiKey {
    let auth = SpendAuthorization {
        client: client.address(),
        node,
        maxAmount: max,
        expiry: u64::MAX / 2,
        salt: B256::from(U256::from(
            SALT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        )),
    };
    let sig = sign_digest(client, &eip712::authorization_id(&escrow.domain(), &auth)).unwrap();
    ApiKey::new(auth, sig)
}

fn voucher(
    enclave: &PrivateKeySigner,
    escrow: &cloister_chain::Escrow,
    key: &ApiKey,
    cum: U256,
) -> SettleItem {
    let id = key.authorization_id(&escrow.domain());
    let sig = sign_digest(enclave, &eip712::voucher_digest(&escrow.domain(), id, cum)).unwrap();
    SettleItem {
        key: key.clone(),
        cumulative_amount: cum,
        voucher_signature: sig,
    }
}

#[tokio::test]
async fn deposit_settle_pays_operator_and_refusals_are_named() {
    let Some((_dn, file)) = start_devnet().await else {
        return;
    };
    let (op, enclave, _) = register_node(&file).await;
    let operator = operator_of(&op);
    let client = connect(&file, "client").await;
    let client_key = devnet::dev_signer("client").unwrap();
    let escrow = client.escrow().unwrap();

    let deposit = TOKEN * U256::from(10u64);
    escrow.deposit(deposit).await.unwrap();
    assert_eq!(escrow.balance_of(client_key.address()).await.unwrap(), deposit);

    let key = mint_key(&client_key, &escrow, operator, TOKEN * U256::from(5u64));
    let key = ApiKey::decode(&key.encode()).unwrap(); // through its text form, as a node gets it
    let auth_id = key.verify(&escrow.domain()).unwrap();

    let before = op.token_balance(operator).await.unwrap();
    let op_escrow = op.escrow().unwrap();
    let first = U256::from(300u64);
    let out = op_escrow
        .settle(&[voucher(&enclave, &escrow, &key, first)])
        .await
        .unwrap();
    eprintln!("settle 1 voucher: gas {}", out.tx.gas_used);
    assert_eq!(out.settled.len(), 1);
    assert_eq!(out.settled[0].paid, first);
    assert_eq!(out.settled[0].authorization, auth_id);
    assert_eq!(op.token_balance(operator).await.unwrap() - before, first);
    assert_eq!(escrow.settled(auth_id).await.unwrap(), first);
    assert_eq!(
        escrow.balance_of(client_key.address()).await.unwrap(),
        deposit - first
    );

    // A later cumulative voucher pays only the difference.
    let out = op_escrow
        .settle(&[voucher(&enclave, &escrow, &key, U256::from(500u64))])
        .await
        .unwrap();
    assert_eq!(out.settled[0].paid, U256::from(200u64));

    // Replay of an already-settled voucher.
    let err = op_escrow
        .settle(&[voucher(&enclave, &escrow, &key, U256::from(500u64))])
        .await
        .unwrap_err();
    assert_eq!(err.revert_name(), Some("VoucherAlreadySettled"), "{err}");
    // A voucher signed by a key that is not the node's registered signer.
    let forger = PrivateKeySigner::random();
    let err = op_escrow
        .settle(&[voucher(&forger, &escrow, &key, U256::from(900u64))])
        .await
        .unwrap_err();
    assert_eq!(err.revert_name(), Some("BadVoucherSignature"), "{err}");
    // Above the authorization's maximum.
    let err = op_escrow
        .settle(&[voucher(&enclave, &escrow, &key, TOKEN * U256::from(6u64))])
        .await
        .unwrap_err();
    assert_eq!(err.revert_name(), Some("AmountAboveMax"), "{err}");
    // A key whose client signature is not the client's.
    let mut stolen = key.clone();
    stolen.auth.maxAmount = TOKEN * U256::from(9u64);
    let err = op_escrow
        .settle(&[voucher(&enclave, &escrow, &stolen, U256::from(900u64))])
        .await
        .unwrap_err();
    assert_eq!(err.revert_name(), Some("BadClientSignature"), "{err}");

    // A batch of three authorizations in one transaction.
    let keys: Vec<ApiKey> = (0..3)
        .map(|_| mint_key(&client_key, &escrow, operator, TOKEN))
        .collect();
    let items: Vec<SettleItem> = keys
        .iter()
        .map(|k| voucher(&enclave, &escrow, k, U256::from(1_000u64)))
        .collect();
    let out = op_escrow.settle(&items).await.unwrap();
    eprintln!("settle 3 vouchers: gas {}", out.tx.gas_used);
    assert_eq!(out.settled.len(), 3);
    let _ = bytes("");
}

#[tokio::test]
async fn withdrawal_waits_for_the_delay() {
    let Some((_dn, file)) = start_devnet().await else {
        return;
    };
    let client = connect(&file, "client").await;
    let me = client.address().unwrap();
    let escrow = client.escrow().unwrap();
    escrow.deposit(U256::from(1_000u64)).await.unwrap();
    escrow.request_withdrawal(U256::from(400u64)).await.unwrap();
    let pending = escrow.pending_withdrawal(me).await.unwrap();
    assert_eq!(pending.amount, U256::from(400u64));
    let err = escrow.withdraw().await.unwrap_err();
    assert_eq!(err.revert_name(), Some("WithdrawalNotReady"), "{err}");
    devnet::increase_time(client.provider(), escrow.withdraw_delay().await.unwrap() + 1)
        .await
        .unwrap();
    let before = client.token_balance(me).await.unwrap();
    escrow.withdraw().await.unwrap();
    assert_eq!(
        client.token_balance(me).await.unwrap() - before,
        U256::from(400u64)
    );
    assert_eq!(escrow.pending_withdrawal(me).await.unwrap().amount, U256::ZERO);
}
