//! `cloister proxy --chain` and `cloister_client::discover` against a real anvil devnet.

use cloister_types::wire;

use super::stack::{chat_body, start_proxy};

/// The whole client path on chain: a paid node registered on a devnet, a proxy that finds it in the
/// `NodeRegistry` and takes its measurement allowlist from there, and an OpenAI-style client whose
/// API key is a signed spend authorization.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_discovers_paid_nodes_on_chain_and_follows_the_registry_allowlist() {
    use cloister_chain::devnet;
    use cloister_chain::{Chain, parse_private_key};
    use cloister_types::eip712::ApiKey;

    let dir = tempfile::tempdir().unwrap();
    let Some(net) = crate::paid::PaidNet::start(&dir).await else {
        return;
    };
    let file = &net.file;
    let devnet_arg = net.chain_arg();

    // A paid node: registers at start (before it serves), meters into its ledger.
    let (_node, _node_url) = net.node(&dir, "operator", "1000:2000", &[], &[]).await;

    // The client deposits and signs a spend authorization for the operator: its API key.
    net.deposit("client").await;
    let api_key = net.api_key("client", "operator");
    let id = ApiKey::decode(&api_key)
        .unwrap()
        .authorization_id(&net.escrow_domain());

    // The proxy is given the chain only.
    let (proxy, proxy_url) = start_proxy(&dir, &["--chain", devnet_arg, "--allow-simulated"], "proxy").await;
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{proxy_url}{}", wire::CHAT_COMPLETIONS_PATH))
        .bearer_auth(&api_key)
        .json(&chat_body("paid hello", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", proxy.log_text());
    assert_eq!(resp.headers()[wire::VERIFIED_HEADER], "true");
    let receipt: serde_json::Value =
        serde_json::from_str(resp.headers()[wire::RECEIPT_HEADER].to_str().unwrap()).unwrap();
    assert_eq!(
        receipt["cumulative_amount"], "9000",
        "3 prompt x 1000 + 3 completion x 2000"
    );
    assert_eq!(receipt["authorization"], format!("{id:#x}"));

    // Without a key the paid node's own refusal comes back through the proxy.
    let resp = http
        .post(format!("{proxy_url}{}", wire::CHAT_COMPLETIONS_PATH))
        .json(&chat_body("free hello", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "missing_api_key");

    // Governance withdraws the measurement: a proxy started now refuses the node by name.
    let gov = Chain::connect(
        file.chain_config(),
        Some(parse_private_key(&file.account("governance").unwrap().private_key).unwrap()),
    )
    .await
    .unwrap();
    gov.registry()
        .unwrap()
        .set_measurement(devnet::simulated_measurement().unwrap(), false)
        .await
        .unwrap();
    let (_strict, strict_url) =
        start_proxy(&dir, &["--chain", devnet_arg, "--allow-simulated"], "strict").await;
    let resp = http
        .post(format!("{strict_url}{}", wire::CHAT_COMPLETIONS_PATH))
        .bearer_auth(&api_key)
        .json(&chat_body("hello again", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "measurement_not_allowed", "{body}");
}

/// `cloister_client::discover` in process against a real devnet: what it reads agrees with
/// cloister-chain's provider-based reads, and a withdrawn measurement leaves an allowlist that
/// refuses everything. (Here rather than in the client's tests: the client must not depend on the
/// provider stack, not even as a dev-dependency.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_reads_what_the_registry_holds_on_a_devnet() {
    use cloister_chain::alloy::primitives::{Address, U256};
    use cloister_chain::alloy::signers::local::PrivateKeySigner;
    use cloister_chain::devnet;
    use cloister_chain::{DevnetFile, ModelPrice};
    use cloister_client::discover::{DiscoverError, RegistryConfig, discover};

    let config = |file: &DevnetFile| RegistryConfig {
        rpc_url: file.rpc_url.clone(),
        chain_id: file.chain_id,
        registry: file.contracts.registry,
    };

    let dir = tempfile::tempdir().unwrap();
    let Some(net) = crate::paid::PaidNet::start(&dir).await else {
        return;
    };
    let file = net.file.clone();

    // Nothing registered yet; the deployment allows the simulated measurement.
    let found = discover(&config(&file)).await.unwrap();
    assert!(found.nodes.is_empty());
    assert_eq!(found.registry, file.contracts.registry);
    let simulated = devnet::simulated_measurement().unwrap();
    assert_eq!(found.allowed_measurements, [simulated]);

    // One node registered with a simulated quote for a fresh enclave key.
    let op = net.chain("operator").await;
    let registry = op.registry().unwrap();
    let enclave = PrivateKeySigner::random();
    let quote = registry
        .simulated_quote_for(op.address().unwrap(), enclave.address())
        .await
        .unwrap();
    let stake = registry.min_stake().await.unwrap();
    let models = [ModelPrice {
        id: "m-1".into(),
        input_price: U256::from(1u64),
        output_price: U256::from(2u64),
    }];
    registry
        .register(quote, "http://node.example:8080", &models, stake)
        .await
        .unwrap();

    let found = discover(&config(&file)).await.unwrap();
    assert_eq!(found.active_endpoints(), ["http://node.example:8080"]);
    let node = &found.nodes[0];
    assert_eq!(node.operator, op.address().unwrap());
    assert_eq!(node.signer, enclave.address());
    assert_eq!(node.measurement, simulated);
    assert_eq!(node.models, ["m-1"]);
    // The provider-based reads of cloister-chain agree.
    let listed = registry.list_nodes().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (
            listed[0].endpoint.as_str(),
            listed[0].attested_at,
            listed[0].active
        ),
        (node.endpoint.as_str(), node.attested_at, node.active)
    );
    assert_eq!(
        registry.allowed_measurements().await.unwrap(),
        found.allowed_measurements
    );
    assert!(found.allowlist().allows(Some(&hex::encode(simulated))));

    // Governance withdraws the measurement: the allowlist refuses everything, it does not open up.
    let gov = net.chain("governance").await;
    gov.registry()
        .unwrap()
        .set_measurement(simulated, false)
        .await
        .unwrap();
    let found = discover(&config(&file)).await.unwrap();
    assert!(found.allowed_measurements.is_empty());
    let allowlist = found.allowlist();
    assert!(!allowlist.is_any());
    assert!(!allowlist.allows(Some(&hex::encode(simulated))));

    // Wrong chain id and no registry are named.
    let mut wrong = config(&file);
    wrong.chain_id += 1;
    assert!(matches!(
        discover(&wrong).await,
        Err(DiscoverError::WrongChain { .. })
    ));
    let mut none = config(&file);
    none.registry = Address::ZERO;
    assert!(matches!(discover(&none).await, Err(DiscoverError::NoRegistry)));
}
