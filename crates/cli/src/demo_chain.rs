//! The on-chain half of `cloister demo`: a local anvil with the contracts, the node registered with
//! its (simulated) quote, a client that deposits and mints an API key, and a settlement at the end.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cloister_attest::collect::Attester;
use cloister_chain::alloy::primitives::{Address, B256, U256};
use cloister_chain::devnet::{self, DeployParams, Devnet, DevnetOptions, TOKEN};
use cloister_chain::{Chain, DevnetFile, mint_api_key, parse_private_key};
use cloister_crypto::EnclaveKey;
use cloister_engine::Engine;
use cloister_node::billing::{Billing, Price};
use cloister_node::onchain::{OnChainConfig, OnChainNode, settle_now};
use cloister_types::eip712::escrow_domain;

/// Token amounts the demo uses.
const DEPOSIT_TOKENS: u64 = 10;
const KEY_MAX_TOKENS: u64 = 1;

/// A running demo chain with a registered node and a funded client.
pub(crate) struct DemoChain {
    _devnet: Devnet,
    file: DevnetFile,
    node: OnChainNode,
    /// The client's API key (`ck1_…`), to send as `Authorization: Bearer`.
    pub(crate) api_key: String,
    authorization: B256,
    operator: Address,
    client: Address,
    operator_before: U256,
}

fn tokens(base_units: U256) -> String {
    let whole = base_units / TOKEN;
    let frac = base_units % TOKEN;
    format!("{whole}.{:018} cUSD", frac.to::<u128>())
}

impl DemoChain {
    /// Starts anvil, deploys, registers the node and funds the client.
    pub(crate) async fn start(
        engine: Arc<dyn Engine>,
        attester: Arc<dyn Attester>,
        key: Arc<EnclaveKey>,
        endpoint: &str,
        ledger: &Path,
    ) -> anyhow::Result<Self> {
        eprintln!("chain 1/4 starting anvil and deploying the contracts ...");
        let devnet = Devnet::spawn(DevnetOptions::default())
            .await
            .context("starting anvil (run scripts/setup.sh, or `npm ci --prefix contracts`)")?;
        let file = devnet::deploy_devnet(devnet.rpc_url(), &DeployParams::default())
            .await
            .context("deploying the contracts")?;
        println!(
            "== chain: anvil (chain id {}) at {} ==",
            file.chain_id, file.rpc_url
        );
        println!("registry {:#x}", file.contracts.registry);
        println!("escrow   {:#x}", file.contracts.escrow);
        println!("oracle   {:#x}", file.contracts.oracle);

        let role_key = |role: &str| -> anyhow::Result<String> {
            Ok(file
                .account(role)
                .with_context(|| format!("devnet has no {role} account"))?
                .private_key
                .clone())
        };
        let operator_signer = parse_private_key(&role_key("operator")?)?;
        let operator = operator_signer.address();
        let prices: HashMap<String, Price> = engine
            .models()
            .into_iter()
            .map(|m| (m.id, crate::node_cmd::default_price()))
            .collect();
        eprintln!(
            "chain 2/4 registering the node with its quote (report_data binds the chain, registry and operator) ..."
        );
        let node = OnChainNode::start(
            OnChainConfig {
                chain: file.chain_config(),
                operator: operator_signer,
                endpoint: endpoint.to_owned(),
                prices,
                stake: None,
                ledger_path: ledger.to_owned(),
                settle_interval: Duration::from_secs(3600),
                settle_threshold: 1000,
                withdrawal_margin: Duration::from_secs(30),
                poll_interval: Duration::from_secs(1),
                deposit_ttl: Duration::from_secs(30),
                oracle: false,
            },
            engine,
            attester,
            key,
        )
        .await
        .context("registering the node")?;
        let r = &node.registration;
        println!(
            "node {} by operator {operator:#x}: tx {:#x} ({} gas)",
            r.action, r.tx_hash, r.gas_used
        );
        let operator_before = node.chain().token_balance(operator).await?;

        eprintln!(
            "chain 3/4 the client deposits {DEPOSIT_TOKENS} cUSD and signs a spend authorization (the API key) ..."
        );
        let client_signer = parse_private_key(&role_key("client")?)?;
        let client = client_signer.address();
        let client_chain = Chain::connect(file.chain_config(), Some(client_signer.clone())).await?;
        let deposit = client_chain
            .escrow()?
            .deposit(TOKEN * U256::from(DEPOSIT_TOKENS))
            .await
            .context("client deposit")?;
        let key = mint_api_key(
            &client_signer,
            file.chain_id,
            file.contracts.escrow,
            operator,
            TOKEN * U256::from(KEY_MAX_TOKENS),
            cloister_client::unix_now() + 3600,
            B256::from(rand::random::<[u8; 32]>()),
        )?;
        let authorization = key.authorization_id(&escrow_domain(file.chain_id, file.contracts.escrow));
        let api_key = key.encode();
        println!("client {client:#x} deposited: tx {:#x}", deposit.tx_hash);
        println!(
            "API key (SpendAuthorization, max {KEY_MAX_TOKENS} cUSD, 1 h): {}…",
            &api_key[..api_key.len().min(24)]
        );
        Ok(Self {
            _devnet: devnet,
            file,
            node,
            api_key,
            authorization,
            operator,
            client,
            operator_before,
        })
    }

    /// Billing to install on the node.
    pub(crate) fn billing(&self) -> Arc<Billing> {
        Arc::clone(&self.node.billing)
    }

    /// Settles the metered voucher and prints what the operator earned.
    pub(crate) async fn settle_and_report(self) -> anyhow::Result<()> {
        eprintln!("chain 4/4 settling the metered voucher on chain ...");
        let chain = self.node.chain().clone();
        let escrow = chain.escrow()?;
        let ledger = Arc::clone(self.node.billing.ledger());
        let metered = ledger.cumulative(self.authorization)?;
        let n = settle_now(&escrow, &ledger).await.context("settlement")?;
        let settlements = ledger.settlements()?;
        let earned = chain.token_balance(self.operator).await? - self.operator_before;
        println!();
        println!("== settlement ==");
        println!(
            "metered for this key: {} (enclave-signed cumulative voucher)",
            tokens(metered)
        );
        if let Some((tx, items)) = settlements.last() {
            println!("settle tx {tx}: {n} voucher(s) in a batch of {items}");
        }
        println!("operator earned: {}", tokens(earned));
        println!(
            "client escrow left: {}",
            tokens(escrow.balance_of(self.client).await?)
        );
        println!(
            "(dev chain {}; its keys are anvil's public test keys)",
            self.file.chain_id
        );
        self.node.shutdown().await;
        Ok(())
    }
}
