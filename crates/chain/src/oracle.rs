use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::sol_types::SolEvent as _;
use cloister_types::eip712::{self, Domain};
use cloister_types::logscan::{LogCursor, LogScanLimits};

use crate::bindings::{ExampleConsumer, InferenceOracle};
use crate::error::{ChainError, Result};
use crate::logscan::LogScanner;
use crate::revert::from_contract;
use crate::{TxOutcome, ensure_allowance, send};

/// An `InferenceRequested` event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InferenceRequest {
    /// Request id.
    pub id: U256,
    /// Who asked (the consumer contract, when asked through one).
    pub requester: Address,
    /// The only operator that may fulfil it (`requestFor`), or zero for any (`request`).
    pub node: Address,
    /// Model id.
    pub model: String,
    /// Input bytes: plain text, or (designated requests) sealed to the node's HPKE key
    /// (`cloister_types::e2ee::ORACLE_SEALED_MAGIC` then the envelope).
    pub input: Bytes,
    /// Fee paid to the fulfilling operator.
    pub max_fee: U256,
    /// Callback contract (zero for none).
    pub callback: Address,
    /// Gas for the callback.
    pub callback_gas_limit: u32,
    /// Last second it may be fulfilled.
    pub deadline: u64,
    /// Block of the event.
    pub block_number: Option<u64>,
}

/// A request's stored state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OracleRequest {
    /// Who asked.
    pub requester: Address,
    /// Callback contract.
    pub callback: Address,
    /// Gas for the callback.
    pub callback_gas_limit: u32,
    /// Deadline (unix seconds).
    pub deadline: u64,
    /// 0 none, 1 pending, 2 fulfilled, 3 refunded.
    pub status: u8,
    /// Fee.
    pub max_fee: U256,
    /// Model id.
    pub model: String,
    /// The only operator that may fulfil it, or zero for any.
    pub node: Address,
}

impl OracleRequest {
    /// The `status` of a request still waiting for an answer (the only one `fulfill` accepts).
    pub const PENDING: u8 = 1;

    /// Whether the request still waits for an answer: not unknown, fulfilled or refunded.
    pub fn is_pending(&self) -> bool {
        self.status == Self::PENDING
    }
}

/// What a `fulfill` transaction did.
#[derive(Clone, Debug)]
pub struct FulfillOutcome {
    /// The transaction.
    pub tx: TxOutcome,
    /// Whether the consumer's callback succeeded.
    pub callback_ok: bool,
    /// keccak256 of the output.
    pub output_hash: B256,
}

/// Client for `InferenceOracle`.
#[derive(Clone, Debug)]
pub struct Oracle {
    inner: InferenceOracle::InferenceOracleInstance<DynProvider>,
    token: Address,
    chain_id: u64,
    from: Option<Address>,
    scan: LogScanLimits,
}

impl Oracle {
    pub(crate) fn new(
        provider: DynProvider,
        oracle: Address,
        token: Address,
        chain_id: u64,
        from: Option<Address>,
        scan: LogScanLimits,
    ) -> Self {
        Self {
            inner: InferenceOracle::new(oracle, provider),
            token,
            chain_id,
            from,
            scan,
        }
    }

    /// The contract address.
    pub fn address(&self) -> Address {
        *self.inner.address()
    }

    /// The raw binding.
    pub fn binding(&self) -> &InferenceOracle::InferenceOracleInstance<DynProvider> {
        &self.inner
    }

    /// The EIP-712 domain (computed locally; equal to the contract's).
    pub fn domain(&self) -> Domain {
        eip712::oracle_domain(self.chain_id, self.address())
    }

    fn sender(&self) -> Result<Address> {
        self.from.ok_or(ChainError::NoSigner)
    }

    /// Requests an inference directly (approving `max_fee` first); returns the request id.
    pub async fn request(
        &self,
        model: &str,
        input: Bytes,
        max_fee: U256,
        callback: Address,
        callback_gas_limit: u32,
    ) -> Result<(U256, TxOutcome)> {
        let from = self.sender()?;
        ensure_allowance(self.inner.provider(), self.token, from, self.address(), max_fee).await?;
        let tx = send(
            self.inner
                .request(model.to_owned(), input, max_fee, callback, callback_gas_limit),
        )
        .await?;
        Ok((requested_id(&tx)?, tx))
    }

    /// Requests an inference only `node` (an operator address, active and serving `model`) may
    /// fulfil, approving `max_fee` first; returns the request id. `input` may be sealed to the
    /// node's attested HPKE key (`cloister_client::oracle::seal_oracle_input`).
    pub async fn request_for(
        &self,
        node: Address,
        model: &str,
        input: Bytes,
        max_fee: U256,
        callback: Address,
        callback_gas_limit: u32,
    ) -> Result<(U256, TxOutcome)> {
        let from = self.sender()?;
        ensure_allowance(self.inner.provider(), self.token, from, self.address(), max_fee).await?;
        let tx = send(self.inner.requestFor(
            node,
            model.to_owned(),
            input,
            max_fee,
            callback,
            callback_gas_limit,
        ))
        .await?;
        Ok((requested_id(&tx)?, tx))
    }

    /// The chain id (bound into sealed inputs' AAD).
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// Fulfils request `id` as the sender (an active operator); `signature` is the enclave
    /// signer's over [`eip712::result_digest`].
    pub async fn fulfill(&self, id: U256, output: Bytes, signature: [u8; 65]) -> Result<FulfillOutcome> {
        self.sender()?;
        let tx = send(self.inner.fulfill(id, output, Bytes::copy_from_slice(&signature))).await?;
        let ev = tx
            .receipt
            .inner
            .logs()
            .iter()
            .find_map(|l| l.log_decode::<InferenceOracle::InferenceFulfilled>().ok())
            .map(|l| l.inner.data)
            .ok_or(ChainError::MissingEvent {
                tx_hash: tx.tx_hash,
                event: "InferenceFulfilled",
            })?;
        Ok(FulfillOutcome {
            callback_ok: ev.callbackOk,
            output_hash: ev.outputHash,
            tx,
        })
    }

    /// Refunds an expired request to its requester.
    pub async fn refund(&self, id: U256) -> Result<TxOutcome> {
        self.sender()?;
        send(self.inner.refund(id)).await
    }

    /// The contract's result digest (equal to [`eip712::result_digest`]).
    pub async fn result_digest(&self, id: U256, output_hash: B256, model: &str) -> Result<B256> {
        self.inner
            .resultDigest(id, output_hash, model.to_owned())
            .call()
            .await
            .map_err(from_contract)
    }

    /// A request's stored state.
    pub async fn get_request(&self, id: U256) -> Result<OracleRequest> {
        let r = self.inner.getRequest(id).call().await.map_err(from_contract)?;
        Ok(OracleRequest {
            requester: r.requester,
            callback: r.callback,
            callback_gas_limit: r.callbackGasLimit,
            deadline: r.deadline,
            status: r.status,
            max_fee: r.maxFee,
            model: r.model,
            node: r.node,
        })
    }

    /// `InferenceRequested` events in blocks `from..=to`, read in windows no wider than the
    /// network's log range (halved when the provider refuses one).
    pub async fn requests_between(&self, from: u64, to: u64) -> Result<Vec<InferenceRequest>> {
        let filter = self.inner.InferenceRequested_filter().filter;
        let limits = self.scan.resume(LogCursor::at(from));
        let mut scan = LogScanner::new(self.inner.provider(), filter, limits);
        let mut out = Vec::new();
        for log in scan.scan_to(to).await? {
            let block_number = log.block_number;
            let ev = InferenceOracle::InferenceRequested::decode_log(&log.inner)?.data;
            out.push(InferenceRequest {
                id: ev.id,
                requester: ev.requester,
                node: ev.node,
                model: ev.model,
                input: ev.input,
                max_fee: ev.maxFee,
                callback: ev.callback,
                callback_gas_limit: ev.callbackGasLimit,
                deadline: ev.deadline,
                block_number,
            });
        }
        Ok(out)
    }

    /// A poller over `InferenceRequested` events starting at `from_block`.
    pub fn watch_requests(&self, from_block: u64) -> RequestWatcher {
        RequestWatcher {
            oracle: self.clone(),
            next_block: from_block,
        }
    }
}

/// The id in a request transaction's `InferenceRequested` event.
fn requested_id(tx: &TxOutcome) -> Result<U256> {
    tx.receipt
        .inner
        .logs()
        .iter()
        .find_map(|l| l.log_decode::<InferenceOracle::InferenceRequested>().ok())
        .map(|l| l.inner.data.id)
        .ok_or(ChainError::MissingEvent {
            tx_hash: tx.tx_hash,
            event: "InferenceRequested",
        })
}

/// Polls `InferenceRequested` logs: each [`RequestWatcher::poll`] returns the events since the last.
#[derive(Clone, Debug)]
pub struct RequestWatcher {
    oracle: Oracle,
    next_block: u64,
}

impl RequestWatcher {
    /// The first block the next poll reads.
    pub fn next_block(&self) -> u64 {
        self.next_block
    }

    /// New requests since the last poll (up to the latest block).
    pub async fn poll(&mut self) -> Result<Vec<InferenceRequest>> {
        let latest = self.oracle.inner.provider().get_block_number().await?;
        if latest < self.next_block {
            return Ok(Vec::new());
        }
        let found = self.oracle.requests_between(self.next_block, latest).await?;
        self.next_block = latest + 1;
        Ok(found)
    }
}

/// Client for `ExampleConsumer` (asks the oracle, stores answers).
#[derive(Clone, Debug)]
pub struct Consumer {
    inner: ExampleConsumer::ExampleConsumerInstance<DynProvider>,
    token: Address,
    from: Option<Address>,
}

impl Consumer {
    pub(crate) fn new(
        provider: DynProvider,
        consumer: Address,
        token: Address,
        from: Option<Address>,
    ) -> Self {
        Self {
            inner: ExampleConsumer::new(consumer, provider),
            token,
            from,
        }
    }

    /// The contract address.
    pub fn address(&self) -> Address {
        *self.inner.address()
    }

    /// Asks through the consumer (approving `fee` to it first); returns the oracle request id.
    pub async fn ask(&self, model: &str, input: Bytes, fee: U256) -> Result<(U256, TxOutcome)> {
        let from = self.from.ok_or(ChainError::NoSigner)?;
        ensure_allowance(self.inner.provider(), self.token, from, self.address(), fee).await?;
        let tx = send(self.inner.ask(model.to_owned(), input, fee)).await?;
        let id = tx
            .receipt
            .inner
            .logs()
            .iter()
            .find_map(|l| l.log_decode::<ExampleConsumer::Asked>().ok())
            .map(|l| l.inner.data.id)
            .ok_or(ChainError::MissingEvent {
                tx_hash: tx.tx_hash,
                event: "Asked",
            })?;
        Ok((id, tx))
    }

    /// The stored answer to request `id`, if answered.
    pub async fn answer(&self, id: U256) -> Result<Option<Bytes>> {
        if !self.inner.answered(id).call().await.map_err(from_contract)? {
            return Ok(None);
        }
        self.inner
            .answers(id)
            .call()
            .await
            .map_err(from_contract)
            .map(Some)
    }
}
