use alloy::eips::{BlockId, BlockNumberOrTag};
use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::{DynProvider, Provider as _};
use alloy::rpc::types::TransactionReceipt;
use cloister_types::eip712::{self, ApiKey, Domain, SpendAuthorization};

use crate::bindings::Escrow as EscrowContract;
use crate::error::{ChainError, Result};
use crate::revert::from_contract;
use crate::{TxOutcome, ensure_allowance, send};

/// A client's withdrawal in waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingWithdrawal {
    /// Amount requested (zero: none pending).
    pub amount: U256,
    /// When `withdraw` may be called (unix seconds).
    pub ready_at: u64,
}

/// One voucher to settle: the client's signed authorization (the API key) and the node's
/// latest cumulative voucher over it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettleItem {
    /// The client's signed authorization.
    pub key: ApiKey,
    /// Cumulative amount metered so far.
    pub cumulative_amount: U256,
    /// The enclave signer's signature over [`eip712::voucher_digest`].
    pub voucher_signature: [u8; 65],
}

/// One `Settled` event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SettledVoucher {
    /// Authorization id.
    pub authorization: B256,
    /// Operator paid.
    pub node: Address,
    /// Client charged.
    pub client: Address,
    /// Cumulative amount of the voucher.
    pub cumulative_amount: U256,
    /// Paid now (less than due if the client's balance ran short).
    pub paid: U256,
}

/// What a `settle` transaction did.
#[derive(Clone, Debug)]
pub struct SettleOutcome {
    /// The transaction.
    pub tx: TxOutcome,
    /// One entry per settled item, in order.
    pub settled: Vec<SettledVoucher>,
    /// Items paid less than due: (authorization, due, paid).
    pub short: Vec<(B256, U256, U256)>,
}

impl SettleOutcome {
    /// Decodes a `settle` transaction's receipt: its `Settled` and `SettlementShort` events.
    pub fn from_receipt(receipt: TransactionReceipt) -> Self {
        let mut settled = Vec::new();
        let mut short = Vec::new();
        for log in receipt.inner.logs() {
            if let Ok(ev) = log.log_decode::<EscrowContract::Settled>() {
                let ev = ev.inner.data;
                settled.push(SettledVoucher {
                    authorization: ev.authorization,
                    node: ev.node,
                    client: ev.client,
                    cumulative_amount: ev.cumulativeAmount,
                    paid: ev.paid,
                });
            } else if let Ok(ev) = log.log_decode::<EscrowContract::SettlementShort>() {
                let ev = ev.inner.data;
                short.push((ev.authorization, ev.due, ev.paid));
            }
        }
        let tx = TxOutcome {
            tx_hash: receipt.transaction_hash,
            gas_used: receipt.gas_used,
            block_number: receipt.block_number,
            receipt,
        };
        Self { tx, settled, short }
    }

    /// The block the transaction landed in: `(number, hash)`, when the receipt names both.
    pub fn block(&self) -> Option<(u64, B256)> {
        Some((self.tx.receipt.block_number?, self.tx.receipt.block_hash?))
    }
}

pub(crate) fn to_binding(a: &SpendAuthorization) -> EscrowContract::SpendAuthorization {
    EscrowContract::SpendAuthorization {
        client: a.client,
        node: a.node,
        maxAmount: a.maxAmount,
        expiry: a.expiry,
        salt: a.salt,
    }
}

/// Client for `Escrow`.
#[derive(Clone, Debug)]
pub struct Escrow {
    inner: EscrowContract::EscrowInstance<DynProvider>,
    token: Address,
    chain_id: u64,
    from: Option<Address>,
    confirmations: u64,
}

impl Escrow {
    pub(crate) fn new(
        provider: DynProvider,
        escrow: Address,
        token: Address,
        chain_id: u64,
        from: Option<Address>,
    ) -> Self {
        Self {
            inner: EscrowContract::new(escrow, provider),
            token,
            chain_id,
            from,
            confirmations: 0,
        }
    }

    /// The same client, counting a settlement final only once its block is buried under
    /// `confirmations` blocks (the network's; [`crate::ChainConfig::confirmations`]).
    #[must_use]
    pub fn with_confirmations(mut self, confirmations: u64) -> Self {
        self.confirmations = confirmations;
        self
    }

    /// Blocks a settlement must be buried under before it counts as final (0: at once).
    pub fn confirmations(&self) -> u64 {
        self.confirmations
    }

    /// The latest block number.
    pub async fn latest_block(&self) -> Result<u64> {
        Ok(self.inner.provider().get_block_number().await?)
    }

    /// The hash of the canonical block at `number` (`None`: the chain is not that long now).
    pub async fn block_hash(&self, number: u64) -> Result<Option<B256>> {
        let block = self
            .inner
            .provider()
            .get_block_by_number(BlockNumberOrTag::Number(number))
            .await?;
        Ok(block.map(|b| b.header.hash))
    }

    /// A `settle` transaction as the chain has it now, decoded (`None`: no receipt, e.g. a reorg
    /// removed it).
    pub async fn settle_receipt(&self, tx_hash: B256) -> Result<Option<SettleOutcome>> {
        let receipt = self.inner.provider().get_transaction_receipt(tx_hash).await?;
        Ok(receipt.map(SettleOutcome::from_receipt))
    }

    /// The contract address.
    pub fn address(&self) -> Address {
        *self.inner.address()
    }

    /// The raw binding.
    pub fn binding(&self) -> &EscrowContract::EscrowInstance<DynProvider> {
        &self.inner
    }

    /// The EIP-712 domain (computed locally; equal to the contract's).
    pub fn domain(&self) -> Domain {
        eip712::escrow_domain(self.chain_id, self.address())
    }

    fn sender(&self) -> Result<Address> {
        self.from.ok_or(ChainError::NoSigner)
    }

    /// Deposits `amount` for the sender (approving the escrow first if needed).
    pub async fn deposit(&self, amount: U256) -> Result<TxOutcome> {
        let from = self.sender()?;
        ensure_allowance(self.inner.provider(), self.token, from, self.address(), amount).await?;
        send(self.inner.deposit(amount)).await
    }

    /// Deposits `amount` for `client`, paid by the sender.
    pub async fn deposit_for(&self, client: Address, amount: U256) -> Result<TxOutcome> {
        let from = self.sender()?;
        ensure_allowance(self.inner.provider(), self.token, from, self.address(), amount).await?;
        send(self.inner.depositFor(client, amount)).await
    }

    /// Starts the withdrawal delay for `amount` of the sender's balance.
    pub async fn request_withdrawal(&self, amount: U256) -> Result<TxOutcome> {
        self.sender()?;
        send(self.inner.requestWithdrawal(amount)).await
    }

    /// Completes the sender's pending withdrawal (after the delay).
    pub async fn withdraw(&self) -> Result<TxOutcome> {
        self.sender()?;
        send(self.inner.withdraw()).await
    }

    /// `client`'s balance.
    pub async fn balance_of(&self, client: Address) -> Result<U256> {
        self.inner.balanceOf(client).call().await.map_err(from_contract)
    }

    /// `client`'s pending withdrawal.
    pub async fn pending_withdrawal(&self, client: Address) -> Result<PendingWithdrawal> {
        let r = self
            .inner
            .pendingWithdrawal(client)
            .call()
            .await
            .map_err(from_contract)?;
        Ok(PendingWithdrawal {
            amount: r.amount,
            ready_at: r.readyAt,
        })
    }

    /// The withdrawal delay (seconds).
    pub async fn withdraw_delay(&self) -> Result<u64> {
        self.inner.withdrawDelay().call().await.map_err(from_contract)
    }

    /// Already settled for an authorization.
    pub async fn settled(&self, authorization: B256) -> Result<U256> {
        self.inner
            .settled(authorization)
            .call()
            .await
            .map_err(from_contract)
    }

    /// Already settled for an authorization in the state after block `block` (a block buried
    /// under the confirmations reads what is final).
    pub async fn settled_at(&self, authorization: B256, block: u64) -> Result<U256> {
        self.inner
            .settled(authorization)
            .block(BlockId::number(block))
            .call()
            .await
            .map_err(from_contract)
    }

    /// The contract's authorization id (equal to [`eip712::authorization_id`]).
    pub async fn authorization_id(&self, auth: &SpendAuthorization) -> Result<B256> {
        self.inner
            .authorizationId(to_binding(auth))
            .call()
            .await
            .map_err(from_contract)
    }

    /// The contract's voucher digest (equal to [`eip712::voucher_digest`]).
    pub async fn voucher_digest(&self, authorization: B256, cumulative_amount: U256) -> Result<B256> {
        self.inner
            .voucherDigest(authorization, cumulative_amount)
            .call()
            .await
            .map_err(from_contract)
    }

    /// Settles a batch of vouchers in one transaction (any sender may; the operator is paid).
    /// A refused item reverts the whole batch with its named error. The outcome is what the tip
    /// of the chain says; it is final only once [`Escrow::confirmations`] blocks bury it.
    pub async fn settle(&self, items: &[SettleItem]) -> Result<SettleOutcome> {
        self.sender()?;
        let batch: Vec<EscrowContract::SettleItem> = items
            .iter()
            .map(|it| EscrowContract::SettleItem {
                auth: to_binding(&it.key.auth),
                clientSignature: Bytes::copy_from_slice(&it.key.signature),
                cumulativeAmount: it.cumulative_amount,
                voucherSignature: Bytes::copy_from_slice(&it.voucher_signature),
            })
            .collect();
        let tx = send(self.inner.settle(batch)).await?;
        Ok(SettleOutcome::from_receipt(tx.receipt))
    }
}
