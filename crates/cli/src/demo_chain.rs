//! The on-chain half of `cloister demo`: a local anvil with the contracts (the node registers on
//! it with its simulated quote when it starts), a client that deposits and mints an API key, and a
//! settlement at the end.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use cloister_chain::alloy::primitives::{Address, B256, U256};
use cloister_chain::devnet::{self, DeployParams, Devnet, DevnetOptions, TOKEN};
use cloister_chain::{Chain, DevnetFile, mint_api_key, parse_private_key};
use cloister_node::onchain::settle_now;
use cloister_node::{NodeSettings, RunningNode};
use cloister_types::eip712::escrow_domain;

/// Token amounts the demo uses.
const DEPOSIT_TOKENS: u64 = 10;
const KEY_MAX_TOKENS: u64 = 1;

/// A running demo chain: anvil with every contract deployed, described by a `devnet.json`.
pub(crate) struct DemoChain {
    _devnet: Devnet,
    file: DevnetFile,
    /// Where `file` is saved, for the node's `chain` setting.
    path: PathBuf,
    /// The ledger the node meters into.
    ledger: PathBuf,
}

/// The funded client of the demo, and what the operator held before it paid.
pub(crate) struct DemoClient {
    /// The client's API key (`ck1_…`), to send as `Authorization: Bearer`.
    pub(crate) api_key: String,
    authorization: B256,
    operator: Address,
    client: Address,
    operator_before: U256,
}

impl DemoChain {
    /// Starts anvil and deploys the contracts; writes `devnet.json` and keeps the ledger in `dir`.
    pub(crate) async fn start(dir: &Path) -> anyhow::Result<Self> {
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
        let path = dir.join("devnet.json");
        file.save(&path).context("writing the demo's devnet.json")?;
        Ok(Self {
            _devnet: devnet,
            file,
            path,
            ledger: dir.join("ledger.sqlite"),
        })
    }

    /// Puts the node on this chain: registered by the devnet's operator account at start, a
    /// ledger in the demo's directory, settlement only when the demo asks, no oracle.
    pub(crate) fn configure(&self, settings: &mut NodeSettings) {
        settings.chain = Some(self.path.clone());
        settings.ledger.clone_from(&self.ledger);
        settings.settle_interval_secs = 3600;
        settings.settle_threshold = 1000;
        settings.no_oracle = true;
    }

    fn role_key(&self, role: &str) -> anyhow::Result<String> {
        Ok(self
            .file
            .account(role)
            .with_context(|| format!("devnet has no {role} account"))?
            .private_key
            .clone())
    }

    /// Prints the node's registration, then funds the client: a deposit and a spend authorization
    /// (the API key) for the node's operator.
    pub(crate) async fn fund_client(&self, node: &RunningNode) -> anyhow::Result<DemoClient> {
        let onchain = node.onchain().context("the demo node is not on chain")?;
        let operator = parse_private_key(&self.role_key("operator")?)?.address();
        let r = &onchain.registration;
        println!(
            "node {} by operator {operator:#x}: tx {:#x} ({} gas)",
            r.action, r.tx_hash, r.gas_used
        );
        let operator_before = onchain.chain().token_balance(operator).await?;

        eprintln!(
            "chain 3/4 the client deposits {DEPOSIT_TOKENS} cUSD and signs a spend authorization (the API key) ..."
        );
        let file = &self.file;
        let client_signer = parse_private_key(&self.role_key("client")?)?;
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
        Ok(DemoClient {
            api_key,
            authorization,
            operator,
            client,
            operator_before,
        })
    }

    /// Settles the metered voucher, prints what the operator earned, and shuts the node down.
    pub(crate) async fn settle_and_report(
        &self,
        client: &DemoClient,
        node: RunningNode,
    ) -> anyhow::Result<()> {
        eprintln!("chain 4/4 settling the metered voucher on chain ...");
        let onchain = node.onchain().context("the demo node is not on chain")?;
        let chain = onchain.chain().clone();
        let escrow = chain.escrow()?;
        let ledger = Arc::clone(onchain.billing.ledger());
        let metered = ledger.cumulative(client.authorization).await?;
        let n = settle_now(&escrow, &ledger).await.context("settlement")?;
        let settlements = ledger.settlements().await?;
        let token = chain.token().await?;
        let earned = chain.token_balance(client.operator).await? - client.operator_before;
        println!();
        println!("== settlement ==");
        println!(
            "metered for this key: {} (enclave-signed cumulative voucher)",
            token.format(metered)
        );
        if let Some((tx, items)) = settlements.last() {
            println!("settle tx {tx}: {n} voucher(s) in a batch of {items}");
        }
        println!("operator earned: {}", token.format(earned));
        println!(
            "client escrow left: {}",
            token.format(escrow.balance_of(client.client).await?)
        );
        println!(
            "(dev chain {}; its keys are anvil's public test keys)",
            self.file.chain_id
        );
        node.shutdown().await?;
        Ok(())
    }
}
