use alloy::primitives::B256;
use cloister_chain::devnet::{self, DevnetOptions};
use cloister_chain::{ChainError, devnet::Devnet};

use crate::{MODEL, connect, operator_of, register_node, start_devnet};

#[tokio::test]
async fn register_simulated_node_and_list() {
    let Some((_dn, file)) = start_devnet().await else {
        return;
    };
    let (op, enclave, tx) = register_node(&file).await;
    eprintln!("register: gas {}", tx.gas_used);
    let reader = cloister_chain::Chain::connect(file.chain_config(), None)
        .await
        .unwrap();
    let registry = reader.registry().unwrap();
    let operator = operator_of(&op);
    assert!(registry.is_active(operator).await.unwrap());
    assert_eq!(registry.signer_of(operator).await.unwrap(), enclave.address());
    let (input, output) = registry.price_of(operator, MODEL).await.unwrap().unwrap();
    assert_eq!((input.to::<u64>(), output.to::<u64>()), (1, 2));
    assert_eq!(registry.price_of(operator, "other").await.unwrap(), None);
    let nodes = registry.list_nodes().await.unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].operator, operator);
    assert_eq!(nodes[0].measurement, devnet::simulated_measurement().unwrap());
    assert_eq!(nodes[0].endpoint, "https://node.example:8443");
    // Registering twice is refused by name.
    let quote = op
        .registry()
        .unwrap()
        .simulated_quote_for(operator, enclave.address())
        .await
        .unwrap();
    let err = op
        .registry()
        .unwrap()
        .register(quote, "https://x", &[], nodes[0].stake)
        .await
        .unwrap_err();
    assert_eq!(err.revert_name(), Some("AlreadyRegistered"), "{err}");
}

#[tokio::test]
async fn unapproved_measurement_and_bad_nonce_are_refused_by_name() {
    let Some((_dn, file)) = start_devnet().await else {
        return;
    };
    let gov = connect(&file, "governance").await;
    let op = connect(&file, "operator").await;
    let registry = op.registry().unwrap();
    let operator = operator_of(&op);
    let stake = registry.min_stake().await.unwrap();
    let signer = alloy::primitives::Address::repeat_byte(0x5a);

    // A quote carrying a wrong nonce.
    let rd = cloister_types::ReportData::new(signer, cloister_types::Nonce([9; 32]));
    let quote = cloister_attest::simulated::simulated_quote(&rd);
    let err = registry
        .register(quote.into(), "https://x", &[], stake)
        .await
        .unwrap_err();
    assert_eq!(err.revert_name(), Some("BadNonce"), "{err}");

    // Governance withdraws the simulated measurement: the same (correct) quote is now refused.
    gov.registry()
        .unwrap()
        .set_measurement(devnet::simulated_measurement().unwrap(), false)
        .await
        .unwrap();
    let quote = registry.simulated_quote_for(operator, signer).await.unwrap();
    let err = registry
        .register(quote, "https://x", &[], stake)
        .await
        .unwrap_err();
    assert_eq!(err.revert_name(), Some("UnapprovedMeasurement"), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("{:#x}", devnet::simulated_measurement().unwrap())),
        "{err}"
    );
    // Only governance may change the allowlist.
    let err = registry.set_measurement(B256::ZERO, true).await.unwrap_err();
    assert_eq!(err.revert_name(), Some("OwnableUnauthorizedAccount"), "{err}");
}

#[tokio::test]
async fn stale_attestation_goes_inactive_until_reattested() {
    let Some((dn, file)) = start_devnet().await else {
        return;
    };
    let (op, _enclave, _) = register_node(&file).await;
    let registry = op.registry().unwrap();
    let operator = operator_of(&op);
    assert!(registry.is_active(operator).await.unwrap());
    let max_age = registry.max_age().await.unwrap();
    devnet::increase_time(op.provider(), max_age + 1).await.unwrap();
    assert!(
        !registry.is_active(operator).await.unwrap(),
        "attestation older than maxAge"
    );
    let _ = &dn;

    let new_enclave = alloy::signers::local::PrivateKeySigner::random();
    let quote = registry
        .simulated_quote_for(operator, new_enclave.address())
        .await
        .unwrap();
    registry.reattest(quote.clone()).await.unwrap();
    assert!(registry.is_active(operator).await.unwrap());
    assert_eq!(registry.signer_of(operator).await.unwrap(), new_enclave.address());
    // The nonce moved on: the same quote cannot be replayed.
    let err = registry.reattest(quote).await.unwrap_err();
    assert_eq!(err.revert_name(), Some("BadNonce"), "{err}");
}

#[tokio::test]
async fn simulated_verifier_refuses_a_non_dev_chain() {
    if !crate::anvil_available() {
        return;
    }
    let dn = Devnet::spawn(DevnetOptions {
        chain_id: Some(10),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(dn.chain_id(), 10);
    let err = devnet::deploy_simulated_verifier(dn.rpc_url()).await.unwrap_err();
    assert!(
        matches!(&err, ChainError::Reverted { name, .. } if name == "NotLocalChain"),
        "{err}"
    );
    let err = devnet::deploy_devnet(dn.rpc_url(), &Default::default())
        .await
        .unwrap_err();
    assert_eq!(err.revert_name(), Some("NotLocalChain"), "{err}");
}
