//! `deploy_network`: a production deployment (Automata DCAP adapter, registry, escrow, oracle) on
//! real anvil whose chain id is set to each shipped network's, written as a chain file that loads
//! back; a wrong chain and a network without a quote verifier are refused by name.

use alloy::primitives::U256;
use alloy::providers::Provider as _;
use cloister_chain::bindings::automata::AutomataDcapAdapter;
use cloister_chain::bindings::{DevToken, NodeRegistry};
use cloister_chain::devnet::{Devnet, DevnetOptions, dev_signer};
use cloister_chain::{
    ChainConfig, ChainError, ChainOverrides, DeploySpec, Network, SHIPPED_NETWORKS, deploy_network,
    wallet_provider,
};

fn spec(rpc_url: &str, token: alloy::primitives::Address) -> DeploySpec {
    DeploySpec {
        rpc_url: rpc_url.to_owned(),
        token,
        automata: None,
        governance: None,
        min_stake: U256::from(100u64) * U256::from(1_000_000u64),
        max_age: 24 * 3600,
        unbonding_delay: 7 * 24 * 3600,
        measurement_delay: 2 * 24 * 3600,
        withdraw_delay: 24 * 3600,
        oracle_timeout: 3600,
    }
}

#[tokio::test]
async fn deploys_to_each_network_and_writes_a_chain_file() {
    if !crate::anvil_available() {
        return;
    }
    let dn = Devnet::spawn(DevnetOptions::default()).await.unwrap();
    let deployer = dev_signer("governance").unwrap();
    let p = wallet_provider(dn.rpc_url(), deployer.clone()).unwrap();
    // Stands in for the network's payment token (USDC on the real chains).
    let token = *DevToken::deploy(&p).await.unwrap().address();
    let dir = tempfile::tempdir().unwrap();

    for (name, _) in SHIPPED_NETWORKS {
        let network = Network::named(name).unwrap();
        let _: serde_json::Value = p
            .raw_request("anvil_setChainId".into(), (network.chain_id,))
            .await
            .unwrap();
        let deployed = deploy_network(&network, &spec(dn.rpc_url(), token), deployer.clone())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let config = &deployed.config;
        assert_eq!(config.chain_id, network.chain_id);
        assert!(config.deploy_block > 0, "{name}");

        // The registry verifies quotes with the adapter, which calls Automata's contract.
        let reader = cloister_chain::read_provider(dn.rpc_url()).unwrap();
        let registry = NodeRegistry::new(config.registry, &reader);
        assert_eq!(registry.verifier().call().await.unwrap(), deployed.quote_verifier);
        assert_eq!(
            registry.measurementDelay().call().await.unwrap(),
            2 * 24 * 3600,
            "{name}: the measurement timelock"
        );
        let adapter = AutomataDcapAdapter::new(deployed.quote_verifier, &reader);
        assert_eq!(
            Some(adapter.automata().call().await.unwrap()),
            network.automata_dcap_verifier
        );

        // The chain file loads back whole and resolves against the network.
        let file = dir.path().join(format!("{name}.json"));
        config.save(&file).unwrap();
        assert_eq!(&ChainConfig::load(&file).unwrap(), config);
        let resolved = ChainConfig::resolve_on(Some(&network), Some(&file), &ChainOverrides::default())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resolved.log_scan_limits().from_block, config.deploy_block);
    }

    // Deployment transactions follow the network's fee caps: with the base fee above the cap of
    // the network the endpoint now is, nothing is sent.
    let (last, _) = SHIPPED_NETWORKS[SHIPPED_NETWORKS.len() - 1];
    let last = Network::named(last).unwrap();
    let high = format!("{:#x}", u128::from(last.max_fee_per_gas_wei) * 10);
    let _: serde_json::Value = p
        .raw_request(
            "anvil_setNextBlockBaseFeePerGas".into(),
            serde_json::json!([high]),
        )
        .await
        .unwrap();
    let _: serde_json::Value = p
        .raw_request("evm_mine".into(), serde_json::json!([]))
        .await
        .unwrap();
    let nonce = p.get_transaction_count(deployer.address()).await.unwrap();
    let err = deploy_network(&last, &spec(dn.rpc_url(), token), deployer.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, ChainError::BaseFeeAboveCap { .. }), "{err}");
    assert_eq!(
        p.get_transaction_count(deployer.address()).await.unwrap(),
        nonce,
        "nothing was sent"
    );

    // The endpoint is now OP Sepolia's chain: Base is refused before anything is sent.
    let base = Network::named("base").unwrap();
    let err = deploy_network(&base, &spec(dn.rpc_url(), token), deployer.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ChainError::WrongChain { expected: 8453, .. }),
        "{err}"
    );
    // A network without an Automata contract (and none given) gets no verifier, never the simulated one.
    let mut bare = base;
    bare.automata_dcap_verifier = None;
    let err = deploy_network(&bare, &spec(dn.rpc_url(), token), deployer)
        .await
        .unwrap_err();
    assert!(matches!(err, ChainError::NoQuoteVerifier(_)), "{err}");
}
