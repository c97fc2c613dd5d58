//! The node's on-chain life (`docs/protocol.md` §9): register or reattest at start, check client
//! deposits for billing, settle metered vouchers in batches, and answer `InferenceOracle` requests.
//!
//! Settlement never pays twice: before each batch the node reads `Escrow.settled` for every
//! authorization it is about to submit and drops (and records) what the chain already paid; the
//! contract refuses a voucher at or below its settled amount anyway. A batch goes out when the
//! interval elapses, when enough vouchers are waiting, or when a client with unsettled usage has
//! asked to withdraw and its delay is about to end. RPC failures are retried with backoff.
//!
//! The oracle's scan position (the first block it has not read) is kept in the ledger, so requests
//! made while the node was down are answered after a restart.
//!
//! Rooms: [`registration`] (register or reattest, re-sign the ledger), [`settlement`] (vouchers to
//! `Escrow.settle`), [`oracle`] (answer `InferenceOracle` requests); this file holds the
//! configuration and the running node that ties them together.

mod oracle;
mod registration;
mod settlement;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::{Address, B256, U256};
use async_trait::async_trait;
use cloister_attest::collect::Attester;
use cloister_chain::alloy::signers::local::PrivateKeySigner;
use cloister_chain::{Chain, ChainConfig, ChainError, Escrow};
use cloister_crypto::EnclaveKey;
use cloister_crypto::e2ee::E2eeKeyPair;
use cloister_engine::Engine;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::billing::{Billing, DepositSource, Ledger, Price};

pub use settlement::{SettleRound, Settler, settle_now};

/// What the node needs to live on chain.
#[derive(Clone)]
pub struct OnChainConfig {
    /// RPC endpoint, chain id and contract addresses.
    pub chain: ChainConfig,
    /// The operator's wallet: pays gas, owns the stake, is the node's registry key.
    pub operator: PrivateKeySigner,
    /// The public URL clients reach the node at (stored in the registry).
    pub endpoint: String,
    /// Prices per served model (registered, and used for metering).
    pub prices: HashMap<String, Price>,
    /// Stake to put up at first registration [default: the registry's minimum].
    pub stake: Option<U256>,
    /// SQLite ledger file.
    pub ledger_path: PathBuf,
    /// Settle at least this often when vouchers wait.
    pub settle_interval: Duration,
    /// Settle at once when this many vouchers wait.
    pub settle_threshold: usize,
    /// Settle a client's vouchers when its withdrawal becomes possible within this margin.
    pub withdrawal_margin: Duration,
    /// How often to look for new chain state (oracle requests, withdrawals).
    pub poll_interval: Duration,
    /// How long a deposit read from chain is trusted.
    pub deposit_ttl: Duration,
    /// Answer `InferenceOracle` requests for the served models.
    pub oracle: bool,
}

impl std::fmt::Debug for OnChainConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnChainConfig")
            .field("chain", &self.chain)
            .field("operator", &self.operator.address())
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// Why the node could not start or keep its on-chain life.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OnChainError {
    /// The chain refused or failed.
    #[error("chain: {0}")]
    Chain(#[from] ChainError),
    /// The TEE could not produce a quote.
    #[error("attestation: {0}")]
    Attestation(#[from] cloister_attest::Error),
    /// The ledger failed.
    #[error("ledger: {0}")]
    Ledger(#[from] crate::billing::LedgerError),
    /// The registration transaction was removed by reorgs every time it was sent, or did not
    /// become final in time.
    #[error("registration not final: {0}")]
    RegistrationNotFinal(String),
    /// The node is deregistering (unbonding); it cannot serve on chain.
    #[error("operator {0} is unbonding; withdraw the stake and register again")]
    Unbonding(Address),
}

/// The running on-chain side: billing for the HTTP layer, and background tasks.
pub struct OnChainNode {
    /// Billing to hand to [`crate::AppState::with_billing`].
    pub billing: Arc<Billing>,
    /// The registration transaction (register or reattest).
    pub registration: RegistrationOutcome,
    chain: Chain,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// What happened at start.
#[derive(Clone, Debug)]
pub struct RegistrationOutcome {
    /// `registered` or `reattested`.
    pub action: &'static str,
    /// Transaction hash.
    pub tx_hash: B256,
    /// Gas used.
    pub gas_used: u64,
    /// Vouchers of earlier signing keys signed again with this one.
    pub resigned: usize,
    /// Vouchers set aside (did not recover to a registered signer of this operator).
    pub rejected: usize,
}

impl std::fmt::Debug for OnChainNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnChainNode")
            .field("registration", &self.registration)
            .finish_non_exhaustive()
    }
}

/// Escrow balances as the billing layer's deposit source.
struct EscrowDeposits(Escrow);

#[async_trait]
impl DepositSource for EscrowDeposits {
    async fn balance(&self, client: Address) -> Result<U256, String> {
        self.0.balance_of(client).await.map_err(|e| e.to_string())
    }
}

impl OnChainNode {
    /// Connects, registers (or reattests) with a fresh quote binding this chain, the registry and
    /// the operator, re-signs earlier keys' vouchers, and starts the settlement (and oracle) tasks.
    /// Without the node's E2EE key the oracle skips inputs sealed to it (with a warning); a
    /// serving node starts with [`OnChainNode::start_with_e2ee`].
    pub async fn start(
        config: OnChainConfig,
        engine: Arc<dyn Engine>,
        attester: Arc<dyn Attester>,
        key: Arc<EnclaveKey>,
    ) -> Result<Self, OnChainError> {
        Self::start_inner(config, engine, attester, key, None).await
    }

    /// [`OnChainNode::start`], with the E2EE key the node's report binds
    /// ([`crate::AppState::e2ee_key`]): the oracle opens inputs sealed to it.
    pub async fn start_with_e2ee(
        config: OnChainConfig,
        engine: Arc<dyn Engine>,
        attester: Arc<dyn Attester>,
        key: Arc<EnclaveKey>,
        e2ee: Arc<E2eeKeyPair>,
    ) -> Result<Self, OnChainError> {
        Self::start_inner(config, engine, attester, key, Some(e2ee)).await
    }

    async fn start_inner(
        config: OnChainConfig,
        engine: Arc<dyn Engine>,
        attester: Arc<dyn Attester>,
        key: Arc<EnclaveKey>,
        e2ee: Option<Arc<E2eeKeyPair>>,
    ) -> Result<Self, OnChainError> {
        let chain = Chain::connect(config.chain.clone(), Some(config.operator.clone())).await?;
        let registry = chain.registry()?;
        let escrow = chain.escrow()?;
        let domain = escrow.domain();
        let ledger = Arc::new(Ledger::open(&config.ledger_path)?);
        let registration =
            registration::register(&registry, &config, attester.as_ref(), &key, &ledger, &domain).await?;

        let billing = Arc::new(Billing::new(
            Arc::clone(&ledger),
            domain,
            config.operator.address(),
            config.prices.clone(),
            Arc::new(EscrowDeposits(escrow.clone())),
            config.deposit_ttl,
        ));
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = vec![tokio::spawn(settlement::settle_loop(
            chain.clone(),
            escrow,
            Arc::clone(&ledger),
            settlement::Schedule::of(&config),
            stop_rx.clone(),
        ))];
        if config.oracle {
            let oracle = chain.oracle()?;
            let mut scan = oracle::ScanPosition::of(&oracle, Arc::clone(&ledger));
            let from = scan.start_block(&chain).await?;
            tasks.push(tokio::spawn(oracle::oracle_loop(
                oracle::OracleNode {
                    oracle,
                    engine,
                    key,
                    e2ee,
                    operator: config.operator.address(),
                },
                config.poll_interval,
                from,
                scan,
                stop_rx,
            )));
        }
        Ok(Self {
            billing,
            registration,
            chain,
            stop,
            tasks,
        })
    }

    /// The chain connection.
    pub fn chain(&self) -> &Chain {
        &self.chain
    }

    /// Stops the background tasks after a last settlement attempt.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
    }
}

impl Drop for OnChainNode {
    /// Dropped without [`OnChainNode::shutdown`]: the tasks stop where they are, as in a crash
    /// (the ledger keeps every voucher for the next start).
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
