//! `Node::start` from `NodeSettings`: the whole node (simulated TEE, the real built-in engine,
//! signing key, server) comes up from settings alone, answers signed, and shuts down cleanly; on a
//! devnet it also registers from the `chain` setting. Refusals (no TEE, no engine) need no model.

use std::time::Duration;

use cloister_chain::devnet::{self, DeployParams, Devnet, DevnetOptions};
use cloister_node::{Node, NodeError, NodeSettings};
use cloister_types::wire::{
    CHAT_COMPLETIONS_PATH, HEALTH_PATH, JSON_CONTENT_TYPE, MODELS_PATH, SIGNATURE_HEADER,
};
use serde_json::{Value, json};

use crate::common::{address, chat_body, get_json, model_path, signer};

/// Settings for a node on a free loopback port with the simulated TEE and the test model.
fn settings(model: &std::path::Path) -> NodeSettings {
    NodeSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        model: Some(model.to_string_lossy().into_owned()),
        slots: Some(1),
        ctx_per_slot: Some(512),
        threads: Some(2),
        dev_simulated_tee: true,
        ..NodeSettings::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_starts_from_settings_answers_signed_and_shuts_down() {
    let Some(model) = model_path() else { return };
    let node = Node::start(settings(&model)).await.unwrap();
    assert!(node.onchain().is_none(), "no chain setting, no on-chain life");
    let url = node.url();
    assert_ne!(node.local_addr().port(), 0, "the bound port, not the asked-for 0");
    let http = reqwest::Client::new();
    assert_eq!(
        http.get(format!("{url}{HEALTH_PATH}"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let models: Value = get_json(&http, format!("{url}{MODELS_PATH}")).await;
    let id = models["data"][0]["id"].as_str().unwrap().to_owned();

    let request = chat_body(&id, "Say hello.", false, json!({}));
    let resp = http
        .post(format!("{url}{CHAT_COMPLETIONS_PATH}"))
        .header("content-type", JSON_CONTENT_TYPE)
        .body(request.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let signature = resp.headers()[SIGNATURE_HEADER].to_str().unwrap().to_owned();
    let body = resp.bytes().await.unwrap();
    assert_eq!(
        signer(&request, &body, &signature),
        address(node.signing_address()),
        "signed by the key the node reports"
    );

    tokio::time::timeout(Duration::from_secs(30), node.shutdown())
        .await
        .expect("shutdown finishes")
        .unwrap();
    assert!(
        http.get(format!("{url}{HEALTH_PATH}")).send().await.is_err(),
        "a stopped node refuses connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_a_devnet_registers_from_its_chain_setting() {
    let Some(model) = model_path() else { return };
    if devnet::find_anvil().is_none() {
        assert!(
            !std::env::var("CLOISTER_REQUIRE_ANVIL").is_ok_and(|v| v == "1"),
            "anvil not found and CLOISTER_REQUIRE_ANVIL=1 (run `npm ci --prefix contracts`)"
        );
        eprintln!("SKIP: anvil not found (set CLOISTER_ANVIL or run `npm ci --prefix contracts`)");
        return;
    }
    let anvil = Devnet::spawn(DevnetOptions::default()).await.unwrap();
    let file = devnet::deploy_devnet(anvil.rpc_url(), &DeployParams::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let chain_path = dir.path().join("devnet.json");
    file.save(&chain_path).unwrap();
    let settings = NodeSettings {
        chain: Some(chain_path),
        ledger: dir.path().join("ledger.sqlite"),
        no_oracle: true,
        ..settings(&model)
    };
    let node = Node::start(settings).await.unwrap();
    let onchain = node.onchain().expect("on chain");
    assert_eq!(onchain.registration.action, "registered");
    let registered = onchain
        .chain()
        .registry()
        .unwrap()
        .get_node(file.account("operator").unwrap().address)
        .await
        .unwrap();
    assert_eq!(
        registered.endpoint,
        node.url(),
        "the default endpoint is the bound address"
    );

    // Paid access is on: a chat without an API key is refused.
    let http = reqwest::Client::new();
    let models: Value = get_json(&http, format!("{}{MODELS_PATH}", node.url())).await;
    let id = models["data"][0]["id"].as_str().unwrap();
    let resp = http
        .post(format!("{}{CHAT_COMPLETIONS_PATH}", node.url()))
        .header("content-type", JSON_CONTENT_TYPE)
        .body(chat_body(id, "hi", false, json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn without_a_tee_or_an_engine_the_node_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let no_tee = NodeSettings {
        upstream: Some("http://127.0.0.1:9/v1".into()),
        dstack_socket: Some(dir.path().join("no-such.sock")),
        configfs_root: Some(dir.path().join("no-such-configfs")),
        ..NodeSettings::default()
    };
    let err = Node::start(no_tee).await.unwrap_err();
    assert!(matches!(err, NodeError::Attester(_)), "{err:?}");

    let no_engine = NodeSettings {
        dev_simulated_tee: true,
        ..NodeSettings::default()
    };
    let err = Node::start(no_engine).await.unwrap_err();
    assert!(matches!(err, NodeError::NoEngine), "{err:?}");
}
