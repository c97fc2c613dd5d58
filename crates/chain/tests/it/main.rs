//! cloister-chain against a real anvil with the real contracts. Each test starts its own anvil on a
//! free loopback port and deploys everything. Without anvil the tests print why and pass, unless
//! `CLOISTER_REQUIRE_ANVIL=1`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod deploy;
mod escrow;
mod failover;
mod fees;
mod finality;
mod governance;
mod logscan;
mod network;
mod oracle;
mod registry;
mod token;

use alloy::primitives::{Address, Bytes, U256};
use alloy::signers::local::PrivateKeySigner;
use cloister_chain::devnet::{self, DeployParams, Devnet, DevnetOptions};
use cloister_chain::{Chain, DevnetFile, ModelPrice, TxOutcome, parse_private_key};

pub(crate) const MODEL: &str = "smollm2-135m";

/// Whether anvil can be found; prints why not (and panics if `CLOISTER_REQUIRE_ANVIL=1`).
pub(crate) fn anvil_available() -> bool {
    if devnet::find_anvil().is_some() {
        return true;
    }
    if std::env::var("CLOISTER_REQUIRE_ANVIL").is_ok_and(|v| v == "1") {
        panic!("anvil not found and CLOISTER_REQUIRE_ANVIL=1 (run `npm ci --prefix contracts`)");
    }
    eprintln!("SKIP: anvil not found (set CLOISTER_ANVIL or run `npm ci --prefix contracts`)");
    false
}

/// A running devnet with everything deployed; `None` (after printing why) when anvil is absent.
pub(crate) async fn start_devnet() -> Option<(Devnet, DevnetFile)> {
    if !anvil_available() {
        return None;
    }
    let t = std::time::Instant::now();
    let dn = Devnet::spawn(DevnetOptions::default())
        .await
        .expect("anvil starts");
    let spawned = t.elapsed();
    let file = devnet::deploy_devnet(dn.rpc_url(), &DeployParams::default())
        .await
        .expect("deploys");
    eprintln!(
        "devnet: anvil up in {spawned:?}, deployed in {:?}",
        t.elapsed() - spawned
    );
    Some((dn, file))
}

/// Connects as dev role `role`.
pub(crate) async fn connect(file: &DevnetFile, role: &str) -> Chain {
    let key = &file.account(role).expect("role exists").private_key;
    Chain::connect(file.chain_config(), Some(parse_private_key(key).unwrap()))
        .await
        .unwrap()
}

/// Registers the dev operator's node with a simulated quote for a fresh enclave key.
pub(crate) async fn register_node(file: &DevnetFile) -> (Chain, PrivateKeySigner, TxOutcome) {
    let op = connect(file, "operator").await;
    let enclave = PrivateKeySigner::random();
    let registry = op.registry().unwrap();
    let quote = registry
        .simulated_quote_for(op.address().unwrap(), enclave.address())
        .await
        .unwrap();
    let stake = registry.min_stake().await.unwrap();
    let models = [ModelPrice {
        id: MODEL.into(),
        input_price: U256::from(1u64),
        output_price: U256::from(2u64),
    }];
    let tx = registry
        .register(quote, "https://node.example:8443", &models, stake)
        .await
        .unwrap();
    (op, enclave, tx)
}

pub(crate) fn operator_of(chain: &Chain) -> Address {
    chain.address().unwrap()
}

pub(crate) fn bytes(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}
