//! The node's on-chain life (`docs/protocol.md` §9): register or reattest at start, check client
//! deposits for billing, settle metered vouchers in batches, and answer `InferenceOracle` requests.
//!
//! Settlement never pays twice: before each batch the node reads `Escrow.settled` for every
//! authorization it is about to submit and drops (and records) what the chain already paid; the
//! contract refuses a voucher at or below its settled amount anyway. A batch goes out when the
//! interval elapses, when enough vouchers are waiting, or when a client with unsettled usage has
//! asked to withdraw and its delay is about to end. RPC failures are retried with backoff.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::{Address, B256, Bytes, U256};
use async_trait::async_trait;
use cloister_attest::collect::Attester;
use cloister_chain::alloy::signers::local::PrivateKeySigner;
use cloister_chain::{Chain, ChainConfig, ChainError, Escrow, ModelPrice, Oracle, Registry, SettleItem};
use cloister_crypto::EnclaveKey;
use cloister_engine::Engine;
use cloister_types::ReportData;
use cloister_types::eip712::result_digest;
use cloister_types::openai::{ChatCompletionRequest, ChatMessage};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::billing::{Billing, DepositSource, Ledger, Price, Voucher};

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

/// Every signer `operator` has registered or reattested with (on-chain history, not the disk).
async fn registered_signers(registry: &Registry, operator: Address) -> Result<Vec<Address>, ChainError> {
    let b = registry.binding();
    let mut out = Vec::new();
    let registered = b
        .NodeRegistered_filter()
        .topic1(operator)
        .from_block(0)
        .query()
        .await
        .map_err(ChainError::Contract)?;
    out.extend(registered.into_iter().map(|(e, _)| e.signer));
    let reattested = b
        .NodeReattested_filter()
        .topic1(operator)
        .from_block(0)
        .query()
        .await
        .map_err(ChainError::Contract)?;
    out.extend(reattested.into_iter().map(|(e, _)| e.signer));
    Ok(out)
}

impl OnChainNode {
    /// Connects, registers (or reattests) with a fresh quote binding this chain, the registry and
    /// the operator, re-signs earlier keys' vouchers, and starts the settlement (and oracle) tasks.
    pub async fn start(
        config: OnChainConfig,
        engine: Arc<dyn Engine>,
        attester: Arc<dyn Attester>,
        key: Arc<EnclaveKey>,
    ) -> Result<Self, OnChainError> {
        let operator = config.operator.address();
        let chain = Chain::connect(config.chain.clone(), Some(config.operator.clone())).await?;
        let registry = chain.registry()?;
        let escrow = chain.escrow()?;
        let signer = Address::from(key.address());

        let ledger = Arc::new(Ledger::open(&config.ledger_path)?);
        let rd: ReportData = registry.report_data_for(operator, signer).await?;
        let evidence = attester.evidence(&rd).await?;
        let quote = Bytes::from(evidence.quote);
        let mut models: Vec<ModelPrice> = config
            .prices
            .iter()
            .map(|(id, p)| ModelPrice {
                id: id.clone(),
                input_price: p.input,
                output_price: p.output,
            })
            .collect();
        models.sort_by(|a, b| a.id.cmp(&b.id));
        let (action, tx) = match registry.get_node(operator).await {
            Ok(info) if info.unbonding_ends != 0 => return Err(OnChainError::Unbonding(operator)),
            Ok(info) => {
                let tx = registry.reattest(quote).await?;
                if info.models != models {
                    registry.update_models(&models).await?;
                }
                ("reattested", tx)
            }
            Err(ChainError::NotRegistered(_)) => {
                let stake = match config.stake {
                    Some(s) => s,
                    None => registry.min_stake().await?,
                };
                (
                    "registered",
                    registry.register(quote, &config.endpoint, &models, stake).await?,
                )
            }
            Err(e) => return Err(e.into()),
        };
        tracing::info!(%operator, %signer, action, tx = %tx.tx_hash, gas = tx.gas_used, "node on chain");

        // Vouchers signed by this operator's earlier enclave keys (restarts) are signed again with
        // this key, which the chain now names as the signer; anything else is set aside.
        let signers = registered_signers(&registry, operator).await?;
        let domain = escrow.domain();
        let resign = ledger.resign(&key, &domain, &signers)?;
        if resign.resigned + resign.rejected > 0 {
            tracing::info!(
                resigned = resign.resigned,
                rejected = resign.rejected,
                "ledger re-signed"
            );
        }

        let billing = Arc::new(Billing::new(
            Arc::clone(&ledger),
            domain,
            operator,
            config.prices.clone(),
            Arc::new(EscrowDeposits(escrow.clone())),
            config.deposit_ttl,
        ));
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = vec![tokio::spawn(settle_loop(
            chain.clone(),
            escrow,
            Arc::clone(&ledger),
            config.clone(),
            stop_rx.clone(),
        ))];
        if config.oracle {
            let oracle = chain.oracle()?;
            let from = chain.block_number().await?;
            tasks.push(tokio::spawn(oracle_loop(
                oracle,
                engine,
                key,
                config.poll_interval,
                from,
                stop_rx,
            )));
        }
        Ok(Self {
            billing,
            registration: RegistrationOutcome {
                action,
                tx_hash: tx.tx_hash,
                gas_used: tx.gas_used,
                resigned: resign.resigned,
                rejected: resign.rejected,
            },
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

/// Settles every unsettled voucher now: syncs with `Escrow.settled` first so nothing is paid
/// twice, then sends one batch. Returns how many vouchers the batch carried.
pub async fn settle_now(escrow: &Escrow, ledger: &Ledger) -> Result<usize, OnChainError> {
    settle_vouchers(escrow, ledger, ledger.unsettled()?).await
}

async fn settle_vouchers(
    escrow: &Escrow,
    ledger: &Ledger,
    unsettled: Vec<Voucher>,
) -> Result<usize, OnChainError> {
    let mut items = Vec::new();
    for v in unsettled {
        let on_chain = escrow.settled(v.authorization).await?;
        if on_chain >= v.cumulative {
            ledger.mark_settled(v.authorization, on_chain)?;
            continue;
        }
        items.push((
            v.authorization,
            SettleItem {
                key: v.api_key,
                cumulative_amount: v.cumulative,
                voucher_signature: v.signature,
            },
        ));
    }
    if items.is_empty() {
        return Ok(0);
    }
    let batch: Vec<SettleItem> = items.iter().map(|(_, i)| i.clone()).collect();
    let outcome = escrow.settle(&batch).await?;
    let tx = format!("{:#x}", outcome.tx.tx_hash);
    let settled: std::collections::HashSet<B256> = outcome.settled.iter().map(|s| s.authorization).collect();
    let short: HashMap<B256, U256> = outcome
        .short
        .iter()
        .map(|(id, due, paid)| (*id, due.saturating_sub(*paid)))
        .collect();
    for (authorization, item) in &items {
        // A voucher is paid up to its cumulative amount, less what a short client could not cover
        // (`SettlementShort`); with no event for it, ask the chain.
        let now_settled = match (short.get(authorization), settled.contains(authorization)) {
            (Some(unpaid), _) => item.cumulative_amount.saturating_sub(*unpaid),
            (None, true) => item.cumulative_amount,
            (None, false) => escrow
                .settled(*authorization)
                .await
                .unwrap_or(item.cumulative_amount),
        };
        ledger.mark_settled(*authorization, now_settled)?;
    }
    ledger.record_settlement(&tx, items.len(), outcome.tx.gas_used)?;
    tracing::info!(
        tx,
        vouchers = items.len(),
        gas = outcome.tx.gas_used,
        "vouchers settled"
    );
    Ok(items.len())
}

/// Whether a client with unsettled usage can withdraw within `margin` (of chain time). Each client
/// is asked once, however many authorizations it has waiting.
async fn withdrawal_due(chain: &Chain, escrow: &Escrow, unsettled: &[Voucher], margin: Duration) -> bool {
    if unsettled.is_empty() {
        return false;
    }
    let Ok(now) = chain.block_timestamp().await else {
        return false;
    };
    let clients: std::collections::BTreeSet<Address> =
        unsettled.iter().map(|v| v.api_key.auth.client).collect();
    for client in clients {
        if let Ok(p) = escrow.pending_withdrawal(client).await
            && !p.amount.is_zero()
            && p.ready_at <= now.saturating_add(margin.as_secs())
        {
            return true;
        }
    }
    false
}

async fn settle_loop(
    chain: Chain,
    escrow: Escrow,
    ledger: Arc<Ledger>,
    config: OnChainConfig,
    mut stop: watch::Receiver<bool>,
) {
    let mut last = tokio::time::Instant::now();
    let mut backoff = Duration::from_secs(1);
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(config.poll_interval) => false,
            _ = stop.changed() => true,
        };
        let unsettled = match ledger.unsettled() {
            Ok(v) => v,
            Err(err) => {
                tracing::warn!(%err, "reading the ledger failed");
                Vec::new()
            }
        };
        let waiting = unsettled.len();
        let due = waiting > 0
            && (stopping
                || waiting >= config.settle_threshold
                || last.elapsed() >= config.settle_interval
                || withdrawal_due(&chain, &escrow, &unsettled, config.withdrawal_margin).await);
        if due {
            match settle_vouchers(&escrow, &ledger, unsettled).await {
                Ok(_) => {
                    last = tokio::time::Instant::now();
                    backoff = Duration::from_secs(1);
                }
                Err(err) => {
                    tracing::warn!(%err, retry_in = ?backoff, "settlement failed; will retry");
                    if !stopping {
                        tokio::time::sleep(backoff).await;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                }
            }
        }
        if stopping {
            return;
        }
    }
}

/// The prompt of an oracle request: its input as UTF-8 text, one user message.
fn oracle_prompt(model: &str, input: &[u8]) -> Option<ChatCompletionRequest> {
    let text = std::str::from_utf8(input).ok()?;
    let mut req = ChatCompletionRequest {
        model: model.to_owned(),
        ..ChatCompletionRequest::default()
    };
    req.messages = vec![ChatMessage::text("user", text)];
    req.max_tokens = Some(64);
    req.temperature = Some(0.0);
    Some(req)
}

async fn oracle_loop(
    oracle: Oracle,
    engine: Arc<dyn Engine>,
    key: Arc<EnclaveKey>,
    poll: Duration,
    from_block: u64,
    mut stop: watch::Receiver<bool>,
) {
    let served: Vec<String> = engine.models().into_iter().map(|m| m.id).collect();
    let domain = oracle.domain();
    let mut watcher = oracle.watch_requests(from_block);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = stop.changed() => return,
        }
        let requests = match watcher.poll().await {
            Ok(r) => r,
            Err(err) => {
                tracing::warn!(%err, "polling oracle requests failed");
                continue;
            }
        };
        for r in requests.into_iter().filter(|r| served.contains(&r.model)) {
            let Some(req) = oracle_prompt(&r.model, &r.input) else {
                tracing::warn!(id = %r.id, "oracle input is not UTF-8 text; skipped");
                continue;
            };
            let output = match engine.complete(req).await {
                Ok(c) => c
                    .choices
                    .first()
                    .map(|c| c.message.text_content())
                    .unwrap_or_default(),
                Err(err) => {
                    tracing::warn!(id = %r.id, %err, "oracle inference failed");
                    continue;
                }
            };
            let digest = result_digest(&domain, r.id, output.as_bytes(), &r.model);
            let signature = key.sign_prehash(&digest.0);
            match oracle
                .fulfill(r.id, Bytes::from(output.into_bytes()), signature)
                .await
            {
                Ok(o) => {
                    tracing::info!(id = %r.id, tx = %o.tx.tx_hash, callback_ok = o.callback_ok, "oracle request fulfilled")
                }
                Err(err) => tracing::warn!(id = %r.id, %err, "fulfilling an oracle request failed"),
            }
        }
    }
}
