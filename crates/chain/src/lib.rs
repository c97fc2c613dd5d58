//! Cloister's on-chain side: alloy bindings generated from `contracts/out/*.json`, typed clients
//! for `NodeRegistry`, `Escrow` and `InferenceOracle`, the payment token as an ERC-20 ([`Token`],
//! amounts in its own decimals), reverts decoded into named errors, and, with the `devnet` feature,
//! a local devnet (anvil + every contract deployed, simulated quotes).
//!
//! ```no_run
//! # async fn demo() -> cloister_chain::Result<()> {
//! use cloister_chain::{Chain, ChainConfig, parse_private_key};
//! let config = ChainConfig::load("devnet.json")?;
//! let key = parse_private_key(&std::env::var("CLOISTER_CLIENT_KEY").unwrap_or_default())?;
//! let chain = Chain::connect(config, Some(key)).await?;
//! let me = chain.address().expect("connected with a key");
//! chain.escrow()?.deposit(alloy::primitives::U256::from(1_000u64)).await?;
//! println!("escrow balance {}", chain.escrow()?.balance_of(me).await?);
//! for node in chain.registry()?.list_nodes().await? {
//!     println!("{} {} active={}", node.operator, node.endpoint, node.active);
//! }
//! # Ok(()) }
//! ```

mod backoff;
pub mod bindings;
mod config;
mod deploy;
#[cfg(feature = "devnet")]
pub mod devnet;
mod error;
mod escrow;
mod failover;
mod fees;
mod finality;
mod logscan;
mod network;
mod oracle;
mod registry;
mod resend;
mod revert;
pub mod token;

use alloy::network::EthereumWallet;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::TransactionReceipt;
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;

pub use alloy;
pub use backoff::Backoff;
pub use config::{ChainConfig, ChainOverrides, ContractAddresses, DevAccount, DevnetFile};
pub use deploy::{DeploySpec, Deployment, deploy_network};
pub use error::{ChainError, Result};
pub use escrow::{Escrow, PendingWithdrawal, SettleItem, SettleOutcome, SettledVoucher};
pub use failover::Failover;
pub use fees::{FeeCaps, Fees, ResendPolicy, SendPolicy, bump, choose_fees};
pub use finality::{Finality, tx_finality};
pub use logscan::LogScanner;
pub use network::{Network, SHIPPED_NETWORKS};
pub use oracle::{Consumer, FulfillOutcome, InferenceRequest, Oracle, OracleRequest, RequestWatcher};
pub use registry::{ModelPrice, NodeInfo, PendingChange, PendingDelayChange, Registry, SignerHistory};
pub use revert::decode_revert;
pub use token::{Token, format_amount, parse_amount};

/// What a mined transaction cost.
#[derive(Clone, Debug)]
pub struct TxOutcome {
    /// Transaction hash.
    pub tx_hash: B256,
    /// Gas used.
    pub gas_used: u64,
    /// Block it landed in.
    pub block_number: Option<u64>,
    /// The full receipt (for event decoding).
    pub receipt: TransactionReceipt,
}

/// Parses a hex private key (`0x` optional). The error never echoes the input.
pub fn parse_private_key(hex_key: &str) -> Result<PrivateKeySigner> {
    hex_key
        .trim()
        .parse::<PrivateKeySigner>()
        .map_err(|_| ChainError::BadPrivateKey)
}

/// Signs a 32-byte digest with a local key; `r‖s‖v`, `v` in {27, 28} (what `ECDSA.recover` takes).
pub fn sign_digest(signer: &PrivateKeySigner, digest: &B256) -> Result<[u8; 65]> {
    let sig = signer
        .sign_hash_sync(digest)
        .map_err(|_| ChainError::BadPrivateKey)?;
    Ok(sig.as_bytes())
}

/// A read-only provider for `rpc_url`.
pub fn read_provider(rpc_url: &str) -> Result<DynProvider> {
    read_provider_on(Failover::new(&[rpc_url], SendPolicy::default())?)
}

/// A read-only provider over a [`Failover`] transport (several endpoints).
pub fn read_provider_on(transport: Failover) -> Result<DynProvider> {
    Ok(ProviderBuilder::new()
        .connect_client(transport.into_client())
        .erased())
}

/// A provider that signs and sends as `signer`: gas estimation, chain id, and nonces read from
/// the node's pending count for every transaction. (alloy's default nonce cache skips a nonce
/// when gas estimation of a reverting call fails, and every later transaction then waits forever.)
pub fn wallet_provider(rpc_url: &str, signer: PrivateKeySigner) -> Result<DynProvider> {
    wallet_provider_on(Failover::new(&[rpc_url], SendPolicy::default())?, signer)
}

/// [`wallet_provider`] over a [`Failover`] transport, whose [`SendPolicy`] every transaction this
/// crate sends through it follows.
pub fn wallet_provider_on(transport: Failover, signer: PrivateKeySigner) -> Result<DynProvider> {
    Ok(ProviderBuilder::new()
        .disable_recommended_fillers()
        .with_gas_estimation()
        .with_simple_nonce_management()
        .fetch_chain_id()
        .wallet(EthereumWallet::from(signer))
        .connect_client(transport.into_client())
        .erased())
}

/// Signs, as `client`, a `SpendAuthorization` for `node` (the operator address) up to `max_amount`
/// until `expiry` under the `Escrow` at `escrow` on `chain_id`: the API key (`ck1_…` once encoded)
/// an OpenAI SDK sends as its bearer token.
pub fn mint_api_key(
    client: &PrivateKeySigner,
    chain_id: u64,
    escrow: Address,
    node: Address,
    max_amount: U256,
    expiry: u64,
    salt: B256,
) -> Result<cloister_types::eip712::ApiKey> {
    use cloister_types::eip712::{ApiKey, SpendAuthorization, authorization_id, escrow_domain};
    let auth = SpendAuthorization {
        client: client.address(),
        node,
        maxAmount: max_amount,
        expiry,
        salt,
    };
    let id = authorization_id(&escrow_domain(chain_id, escrow), &auth);
    Ok(ApiKey::new(auth, sign_digest(client, &id)?))
}

/// A connection to one chain with the contracts of a [`ChainConfig`], optionally with a key to send
/// transactions. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Chain {
    provider: DynProvider,
    config: ChainConfig,
    from: Option<Address>,
}

impl Chain {
    /// Connects and checks that the endpoint serves `config.chain_id`.
    pub async fn connect(config: ChainConfig, signer: Option<PrivateKeySigner>) -> Result<Self> {
        let from = signer.as_ref().map(|s| s.address());
        let transport = Failover::new(&config.rpc_urls(), config.send_policy())?;
        let provider = match signer {
            Some(signer) => wallet_provider_on(transport, signer)?,
            None => read_provider_on(transport)?,
        };
        let actual = provider.get_chain_id().await?;
        if actual != config.chain_id {
            return Err(ChainError::WrongChain {
                expected: config.chain_id,
                actual,
            });
        }
        Ok(Self {
            provider,
            config,
            from,
        })
    }

    /// The provider (for raw calls).
    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    /// The configuration.
    pub fn config(&self) -> &ChainConfig {
        &self.config
    }

    /// The sending address, if connected with a key.
    pub fn address(&self) -> Option<Address> {
        self.from
    }

    /// The `NodeRegistry` client.
    pub fn registry(&self) -> Result<Registry> {
        let registry = nonzero(self.config.registry, "registry")?;
        Ok(Registry::new(
            self.provider.clone(),
            registry,
            self.config.token,
            self.from,
            self.config.log_scan_limits(),
        ))
    }

    /// The `Escrow` client.
    pub fn escrow(&self) -> Result<Escrow> {
        let escrow = nonzero(self.config.escrow, "escrow")?;
        Ok(Escrow::new(
            self.provider.clone(),
            escrow,
            self.config.token,
            self.config.chain_id,
            self.from,
        )
        .with_confirmations(self.config.confirmations()))
    }

    /// The `InferenceOracle` client.
    pub fn oracle(&self) -> Result<Oracle> {
        let oracle = nonzero(self.config.oracle, "oracle")?;
        Ok(Oracle::new(
            self.provider.clone(),
            oracle,
            self.config.token,
            self.config.chain_id,
            self.from,
            self.config.log_scan_limits(),
        ))
    }

    /// The `ExampleConsumer` client.
    pub fn consumer(&self) -> Result<Consumer> {
        let consumer = self
            .config
            .consumer
            .ok_or(ChainError::MissingContract("consumer"))?;
        Ok(Consumer::new(
            self.provider.clone(),
            nonzero(consumer, "consumer")?,
            self.config.token,
            self.from,
        ))
    }

    /// The payment token (reads its decimals and symbol): the configured address, else the one
    /// the `Escrow` pays in.
    pub async fn token(&self) -> Result<Token> {
        let address = if self.config.token.is_zero() {
            self.escrow()?
                .binding()
                .token()
                .call()
                .await
                .map_err(revert::from_contract)?
        } else {
            self.config.token
        };
        Token::connect(self.provider.clone(), address).await
    }

    /// Payment-token balance of `who`, in base units.
    pub async fn token_balance(&self, who: Address) -> Result<U256> {
        let token = token::IERC20Metadata::new(nonzero(self.config.token, "token")?, &self.provider);
        token.balanceOf(who).call().await.map_err(revert::from_contract)
    }

    /// The latest block number.
    pub async fn block_number(&self) -> Result<u64> {
        Ok(self.provider.get_block_number().await?)
    }

    /// The latest block's timestamp (seconds).
    pub async fn block_timestamp(&self) -> Result<u64> {
        let block = self
            .provider
            .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
            .await?
            .ok_or_else(|| {
                ChainError::Rpc(alloy::transports::TransportErrorKind::custom_str(
                    "no latest block",
                ))
            })?;
        Ok(block.header.timestamp)
    }
}

fn nonzero(a: Address, what: &'static str) -> Result<Address> {
    if a.is_zero() {
        Err(ChainError::MissingContract(what))
    } else {
        Ok(a)
    }
}

/// Sends a prepared call, waits for its receipt, and fails by name if it reverted. The fees are
/// explicit and within the connection's caps ([`fees::choose_fees`]); a transaction without a
/// receipt after the policy's `resend.after_secs` is replaced (same nonce, fees [`fees::bump`]ed),
/// and whichever of those mines is the outcome.
pub(crate) async fn send<P, D>(call: alloy::contract::CallBuilder<P, D>) -> Result<TxOutcome>
where
    P: Provider + Clone,
    D: alloy::contract::CallDecoder,
{
    let provider = call.provider.clone();
    let policy = failover::failover_of(&provider)
        .map(|f| *f.policy())
        .unwrap_or_default();
    let mut request = call.into_transaction_request();
    // The estimate is made against the latest block; the transaction runs in the next one, where
    // a timestamp or a slot written in between can cost more (a reattestation whose `attestedAt`
    // write was a no-op in the estimate ran out of gas that way). A margin covers it; unused gas is
    // not charged.
    let estimate = provider
        .estimate_gas(request.clone())
        .await
        .map_err(|e| revert::from_contract(alloy::contract::Error::TransportError(e)))?;
    request.gas = Some(with_gas_margin(estimate));
    let fees = fees::choose_fees(&provider, policy.caps).await?;
    request.gas_price = None;
    request.max_fee_per_gas = Some(fees.max_fee_per_gas);
    request.max_priority_fee_per_gas = Some(fees.max_priority_fee_per_gas);
    let first = *provider
        .send_transaction(request.clone())
        .await
        .map_err(|e| revert::from_contract(alloy::contract::Error::TransportError(e)))?
        .tx_hash();
    let receipt = resend::wait_or_replace(&provider, request, first, fees, &policy).await?;
    if !receipt.status() {
        return Err(ChainError::TxFailed {
            tx_hash: receipt.transaction_hash,
        });
    }
    Ok(TxOutcome {
        tx_hash: receipt.transaction_hash,
        gas_used: receipt.gas_used,
        block_number: receipt.block_number,
        receipt,
    })
}

/// A gas limit above `estimate`: a fifth more plus 20,000 (two cold storage writes' worth).
pub fn with_gas_margin(estimate: u64) -> u64 {
    estimate.saturating_add(estimate / 5).saturating_add(20_000)
}

/// How long [`wait_for_receipt`] waits before giving up.
pub const RECEIPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Polls for a transaction's receipt (20 ms, doubling to 1 s) for up to [`RECEIPT_TIMEOUT`].
///
/// Plain receipt polling keeps no block-subscription state and suits L2s with sub-second blocks
/// as well as anvil's instant mining.
pub async fn wait_for_receipt<P: Provider>(provider: &P, tx_hash: B256) -> Result<TransactionReceipt> {
    let start = std::time::Instant::now();
    let mut backoff = Backoff::new(
        std::time::Duration::from_millis(20),
        std::time::Duration::from_secs(1),
    );
    loop {
        if let Some(receipt) = provider.get_transaction_receipt(tx_hash).await? {
            return Ok(receipt);
        }
        if start.elapsed() > RECEIPT_TIMEOUT {
            return Err(ChainError::ReceiptTimeout { tx_hash });
        }
        backoff.wait().await;
    }
}

/// Approves `spender` for `amount` of `token` from `owner` unless the allowance already covers it.
pub(crate) async fn ensure_allowance(
    provider: &DynProvider,
    token: Address,
    owner: Address,
    spender: Address,
    amount: U256,
) -> Result<Option<TxOutcome>> {
    if amount.is_zero() {
        return Ok(None);
    }
    let token = token::IERC20Metadata::new(nonzero(token, "token")?, provider);
    let allowance = token
        .allowance(owner, spender)
        .call()
        .await
        .map_err(revert::from_contract)?;
    if allowance >= amount {
        return Ok(None);
    }
    send(token.approve(spender, amount)).await.map(Some)
}
