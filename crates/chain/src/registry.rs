use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::{DynProvider, Provider as _};
use alloy::rpc::types::Filter;
use alloy::sol_types::SolEvent;
use cloister_types::logscan::{LogCursor, LogScanLimits};
use serde::{Deserialize, Serialize};

use crate::bindings::NodeRegistry;
use crate::error::{ChainError, Result};
use crate::logscan::LogScanner;
use crate::revert::from_contract;
use crate::{TxOutcome, ensure_allowance, send};

mod governance;

pub use governance::{PendingChange, PendingDelayChange};

/// Page size for [`Registry::list_nodes`] (the contract caps a page).
const PAGE: u64 = 50;

/// A served model and its prices (token base units per token of input / output).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelPrice {
    /// Model id as clients name it.
    pub id: String,
    /// Price per input token.
    pub input_price: U256,
    /// Price per output token.
    pub output_price: U256,
}

/// A registered node, as the registry stores it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Operator (registry key, payee, sender of `register`).
    pub operator: Address,
    /// Enclave signing address from the quote's report_data.
    pub signer: Address,
    /// Public API URL.
    pub endpoint: String,
    /// Measurement digest of the attested image.
    pub measurement: B256,
    /// TCB status the verifier reported.
    pub tcb_status: u8,
    /// When it last attested (unix seconds).
    pub attested_at: u64,
    /// Stake held.
    pub stake: U256,
    /// Non-zero while unbonding: when the stake can be withdrawn.
    pub unbonding_ends: u64,
    /// The registry's `active` flag (see [`Registry::is_active`] for the full rule with max age).
    pub active: bool,
    /// Served models.
    pub models: Vec<ModelPrice>,
}

impl From<NodeRegistry::NodeInfo> for NodeInfo {
    fn from(n: NodeRegistry::NodeInfo) -> Self {
        Self {
            operator: n.operator,
            signer: n.signer,
            endpoint: n.endpoint,
            measurement: n.measurement,
            tcb_status: n.tcbStatus,
            attested_at: n.attestedAt,
            stake: n.stake,
            unbonding_ends: n.unbondingEnds,
            active: n.active,
            models: n.models.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<NodeRegistry::ModelPrice> for ModelPrice {
    fn from(m: NodeRegistry::ModelPrice) -> Self {
        Self {
            id: m.id,
            input_price: m.inputPrice,
            output_price: m.outputPrice,
        }
    }
}

impl From<&ModelPrice> for NodeRegistry::ModelPrice {
    fn from(m: &ModelPrice) -> Self {
        Self {
            id: m.id.clone(),
            inputPrice: m.input_price,
            outputPrice: m.output_price,
        }
    }
}

/// The enclave signers one operator has registered or reattested with, as far as a log scan has
/// read: a resumable record (store it; [`Registry::signer_history`] continues from its cursor).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignerHistory {
    /// The first block not yet read.
    pub cursor: LogCursor,
    /// Every signer found so far, oldest first, each once.
    pub signers: Vec<Address>,
}

/// Client for `NodeRegistry`.
#[derive(Clone, Debug)]
pub struct Registry {
    inner: NodeRegistry::NodeRegistryInstance<DynProvider>,
    token: Address,
    from: Option<Address>,
    scan: LogScanLimits,
}

impl Registry {
    pub(crate) fn new(
        provider: DynProvider,
        registry: Address,
        token: Address,
        from: Option<Address>,
        scan: LogScanLimits,
    ) -> Self {
        Self {
            inner: NodeRegistry::new(registry, provider),
            token,
            from,
            scan,
        }
    }

    /// Where this registry's log scans start (the deployment block) and how wide they read.
    pub fn log_scan_limits(&self) -> LogScanLimits {
        self.scan
    }

    /// The contract address.
    pub fn address(&self) -> Address {
        *self.inner.address()
    }

    /// The raw binding, for calls this client does not wrap.
    pub fn binding(&self) -> &NodeRegistry::NodeRegistryInstance<DynProvider> {
        &self.inner
    }

    fn sender(&self) -> Result<Address> {
        self.from.ok_or(ChainError::NoSigner)
    }

    /// The nonce `operator`'s next quote must carry in report_data[32..64].
    pub async fn attestation_nonce(&self, operator: Address) -> Result<B256> {
        self.inner
            .attestationNonce(operator)
            .call()
            .await
            .map_err(from_contract)
    }

    /// The report_data a quote for `operator`'s next registration or reattestation must carry:
    /// `signer ‖ 0^12 ‖ attestationNonce(operator)`.
    pub async fn report_data_for(
        &self,
        operator: Address,
        signer: Address,
    ) -> Result<cloister_types::ReportData> {
        let nonce = self.attestation_nonce(operator).await?;
        Ok(cloister_types::ReportData::new(
            signer,
            cloister_types::Nonce(nonce.0),
        ))
    }

    /// A **simulated** quote (devnet only: refused by every production verifier) for `operator`'s
    /// next attestation with enclave signer `signer`.
    #[cfg(feature = "devnet")]
    pub async fn simulated_quote_for(&self, operator: Address, signer: Address) -> Result<Bytes> {
        let rd = self.report_data_for(operator, signer).await?;
        Ok(cloister_attest::simulated::simulated_quote(&rd).into())
    }

    /// Registers the sender's node: approves `stake` to the registry if needed, then `register`.
    pub async fn register(
        &self,
        quote: Bytes,
        endpoint: &str,
        models: &[ModelPrice],
        stake: U256,
    ) -> Result<TxOutcome> {
        let from = self.sender()?;
        ensure_allowance(self.inner.provider(), self.token, from, self.address(), stake).await?;
        let models: Vec<NodeRegistry::ModelPrice> = models.iter().map(Into::into).collect();
        send(self.inner.register(quote, endpoint.to_owned(), models, stake)).await
    }

    /// Where `tx_hash` stands for a network counting `confirmations` ([`crate::tx_finality`]).
    pub async fn finality(&self, tx_hash: B256, confirmations: u64) -> Result<crate::Finality> {
        crate::tx_finality(self.inner.provider(), tx_hash, confirmations).await
    }

    /// Refreshes the sender's attestation (new signer, measurement, time).
    pub async fn reattest(&self, quote: Bytes) -> Result<TxOutcome> {
        self.sender()?;
        send(self.inner.reattest(quote)).await
    }

    /// Replaces the sender's model list.
    pub async fn update_models(&self, models: &[ModelPrice]) -> Result<TxOutcome> {
        self.sender()?;
        send(self.inner.updateModels(models.iter().map(Into::into).collect())).await
    }

    /// Starts unbonding the sender's node.
    pub async fn deregister(&self) -> Result<TxOutcome> {
        self.sender()?;
        send(self.inner.deregister()).await
    }

    /// Withdraws the sender's stake after unbonding.
    pub async fn withdraw_stake(&self) -> Result<TxOutcome> {
        self.sender()?;
        send(self.inner.withdrawStake()).await
    }

    /// Governance: accepts or refuses a TCB status.
    pub async fn set_tcb_status(&self, status: u8, accepted: bool) -> Result<TxOutcome> {
        self.sender()?;
        send(self.inner.setTcbStatus(status, accepted)).await
    }

    /// The measurement digests governance currently allows: the `MeasurementSet` events replayed
    /// in order (the mapping itself cannot be listed) from the deployment block, in bounded
    /// windows, each then confirmed with `measurementAllowed`.
    pub async fn allowed_measurements(&self) -> Result<Vec<B256>> {
        let latest = self.inner.provider().get_block_number().await?;
        let filter = self.inner.MeasurementSet_filter().filter;
        let logs = LogScanner::new(self.inner.provider(), filter, self.scan)
            .scan_to(latest)
            .await?;
        let mut allowed: Vec<B256> = Vec::new();
        for log in logs {
            let e = NodeRegistry::MeasurementSet::decode_log(&log.inner)?.data;
            allowed.retain(|m| *m != e.measurement);
            if e.allowed {
                allowed.push(e.measurement);
            }
        }
        let mut confirmed = Vec::with_capacity(allowed.len());
        for m in allowed {
            if self
                .inner
                .measurementAllowed(m)
                .call()
                .await
                .map_err(from_contract)?
            {
                confirmed.push(m);
            }
        }
        Ok(confirmed)
    }

    /// `history` carried forward through block `to_block`: every signer `operator` registered
    /// (`NodeRegistered`) or reattested (`NodeReattested`) with, read from `history.cursor` (for a
    /// first scan, `SignerHistory::default()`, which starts at the deployment block) in bounded
    /// windows. One `eth_getLogs` per window covers both events. A failed read returns the error;
    /// the caller's stored history is unchanged and the next call reads the same windows again.
    pub async fn signer_history(
        &self,
        operator: Address,
        history: SignerHistory,
        to_block: u64,
    ) -> Result<SignerHistory> {
        let filter = Filter::new()
            .address(self.address())
            .event_signature(vec![
                NodeRegistry::NodeRegistered::SIGNATURE_HASH,
                NodeRegistry::NodeReattested::SIGNATURE_HASH,
            ])
            .topic1(operator.into_word());
        let mut scan = LogScanner::new(self.inner.provider(), filter, self.scan.resume(history.cursor));
        let mut signers = history.signers;
        for log in scan.scan_to(to_block).await? {
            let signer = match log.topic0() {
                Some(&NodeRegistry::NodeRegistered::SIGNATURE_HASH) => {
                    NodeRegistry::NodeRegistered::decode_log(&log.inner)?.data.signer
                }
                _ => NodeRegistry::NodeReattested::decode_log(&log.inner)?.data.signer,
            };
            if !signers.contains(&signer) {
                signers.push(signer);
            }
        }
        Ok(SignerHistory {
            cursor: scan.cursor(),
            signers,
        })
    }

    /// Whether `operator` is registered, not unbonding, and attested within the max age.
    pub async fn is_active(&self, operator: Address) -> Result<bool> {
        self.inner.isActive(operator).call().await.map_err(from_contract)
    }

    /// `operator`'s current enclave signer (zero if none).
    pub async fn signer_of(&self, operator: Address) -> Result<Address> {
        self.inner.signerOf(operator).call().await.map_err(from_contract)
    }

    /// `operator`'s (input, output) prices for `model`, or `None` if it does not serve it.
    pub async fn price_of(&self, operator: Address, model: &str) -> Result<Option<(U256, U256)>> {
        let r = self
            .inner
            .priceOf(operator, model.to_owned())
            .call()
            .await
            .map_err(from_contract)?;
        Ok(r.served.then_some((r.inputPrice, r.outputPrice)))
    }

    /// Everything about `operator`'s node; [`ChainError::NotRegistered`] if it has none.
    pub async fn get_node(&self, operator: Address) -> Result<NodeInfo> {
        let n: NodeInfo = self
            .inner
            .getNode(operator)
            .call()
            .await
            .map_err(from_contract)?
            .into();
        if n.operator.is_zero() {
            return Err(ChainError::NotRegistered(operator));
        }
        Ok(n)
    }

    /// How many nodes are listed.
    pub async fn node_count(&self) -> Result<u64> {
        let n = self.inner.nodeCount().call().await.map_err(from_contract)?;
        Ok(n.saturating_to())
    }

    /// One page of nodes.
    pub async fn list_page(&self, offset: u64, limit: u64) -> Result<Vec<NodeInfo>> {
        let page = self
            .inner
            .listNodes(U256::from(offset), U256::from(limit))
            .call()
            .await
            .map_err(from_contract)?;
        Ok(page.into_iter().map(Into::into).collect())
    }

    /// Every listed node, fetched page by page.
    pub async fn list_nodes(&self) -> Result<Vec<NodeInfo>> {
        let count = self.node_count().await?;
        let mut out = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(10_000));
        let mut offset = 0;
        while offset < count {
            let page = self.list_page(offset, PAGE).await?;
            if page.is_empty() {
                break;
            }
            offset += page.len() as u64;
            out.extend(page);
        }
        Ok(out)
    }

    /// The longest an attestation keeps a node active (seconds).
    pub async fn max_age(&self) -> Result<u64> {
        self.inner.maxAge().call().await.map_err(from_contract)
    }

    /// The least stake to register.
    pub async fn min_stake(&self) -> Result<U256> {
        self.inner.minStake().call().await.map_err(from_contract)
    }
}
