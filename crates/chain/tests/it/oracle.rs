use alloy::primitives::U256;
use alloy::signers::local::PrivateKeySigner;
use cloister_chain::devnet;
use cloister_chain::sign_digest;
use cloister_types::eip712;

use crate::{MODEL, bytes, connect, operator_of, register_node, start_devnet};

#[tokio::test]
async fn request_fulfil_and_the_consumer_has_the_answer() {
    let Some((_dn, file)) = start_devnet().await else {
        return;
    };
    let (op, enclave, _) = register_node(&file).await;
    let operator = operator_of(&op);
    let requester = connect(&file, "requester").await;
    let start = op.block_number().await.unwrap();

    let fee = U256::from(1_000u64);
    let consumer = requester.consumer().unwrap();
    let (id, _) = consumer.ask(MODEL, bytes("What is 6 x 7?"), fee).await.unwrap();
    assert_eq!(consumer.answer(id).await.unwrap(), None);

    // The node's worker sees the request in the logs.
    let oracle = op.oracle().unwrap();
    let mut watcher = oracle.watch_requests(start);
    let found = watcher.poll().await.unwrap();
    assert_eq!(found.len(), 1);
    let req = &found[0];
    assert_eq!((req.id, req.model.as_str(), req.max_fee), (id, MODEL, fee));
    assert_eq!(req.input.as_ref(), b"What is 6 x 7?");
    assert_eq!(req.callback, consumer.address());
    assert!(
        watcher.poll().await.unwrap().is_empty(),
        "each event is seen once"
    );

    let output = bytes("42");
    // A result signed by a key that is not the node's signer is refused.
    let forged = sign_digest(
        &PrivateKeySigner::random(),
        &eip712::result_digest(&oracle.domain(), id, &output, MODEL),
    )
    .unwrap();
    let err = oracle.fulfill(id, output.clone(), forged).await.unwrap_err();
    assert_eq!(err.revert_name(), Some("BadResultSignature"), "{err}");

    let before = op.token_balance(operator).await.unwrap();
    let sig = sign_digest(
        &enclave,
        &eip712::result_digest(&oracle.domain(), id, &output, MODEL),
    )
    .unwrap();
    let out = oracle.fulfill(id, output.clone(), sig).await.unwrap();
    eprintln!("fulfill: gas {}", out.tx.gas_used);
    assert!(out.callback_ok);
    assert_eq!(consumer.answer(id).await.unwrap(), Some(output.clone()));
    assert_eq!(op.token_balance(operator).await.unwrap() - before, fee);
    assert_eq!(oracle.get_request(id).await.unwrap().status, 2);
    let err = oracle.fulfill(id, output, sig).await.unwrap_err();
    assert_eq!(err.revert_name(), Some("RequestNotPending"), "{err}");
}

#[tokio::test]
async fn direct_request_and_refund_after_deadline() {
    let Some((_dn, file)) = start_devnet().await else {
        return;
    };
    let requester = connect(&file, "requester").await;
    let oracle = requester.oracle().unwrap();
    let (id, _) = oracle
        .request(
            MODEL,
            bytes("hi"),
            U256::from(7u64),
            alloy::primitives::Address::ZERO,
            0,
        )
        .await
        .unwrap();
    let err = oracle.refund(id).await.unwrap_err();
    assert_eq!(err.revert_name(), Some("NotExpired"), "{err}");
    devnet::increase_time(requester.provider(), 3601).await.unwrap();
    oracle.refund(id).await.unwrap();
    assert_eq!(oracle.get_request(id).await.unwrap().status, 3);
}
