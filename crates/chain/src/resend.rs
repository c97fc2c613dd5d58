//! Waiting for a sent transaction, and replacing it when it is stuck: after the policy's
//! `resend.after_secs` without a receipt, the same request is signed again with the same nonce and
//! gas limit and both fees raised ([`crate::fees::bump`]), up to `resend.max_replacements` times.
//! Every hash sent is watched; whichever mines is the outcome (one nonce: at most one can).

use std::time::{Duration, Instant};

use alloy::consensus::Transaction as _;
use alloy::primitives::B256;
use alloy::providers::Provider;
use alloy::rpc::types::{TransactionReceipt, TransactionRequest};

use crate::RECEIPT_TIMEOUT;
use crate::backoff::Backoff;
use crate::error::{ChainError, Result};
use crate::fees::{Fees, SendPolicy, bump};

/// Polls every hash sent for a receipt, replacing the transaction while it is stuck. Gives up
/// with [`ChainError::ReceiptTimeout`] [`RECEIPT_TIMEOUT`] after the last send. A failed read is
/// logged and polled again: the transaction is out, and failing here would invite a second one.
pub(crate) async fn wait_or_replace<P: Provider>(
    provider: &P,
    mut request: TransactionRequest,
    first: B256,
    mut fees: Fees,
    policy: &SendPolicy,
) -> Result<TransactionReceipt> {
    let stuck_after = Duration::from_secs(policy.resend.after_secs);
    let mut sent = vec![first];
    // The timeout counts from the last transaction sent; a failed replacement only paces retries.
    let mut last_send = Instant::now();
    let mut last_attempt = last_send;
    let mut replacements = 0;
    let mut at_cap = false;
    let mut backoff = Backoff::new(Duration::from_millis(20), Duration::from_secs(1));
    loop {
        for hash in &sent {
            match provider.get_transaction_receipt(*hash).await {
                Ok(Some(receipt)) => return Ok(receipt),
                Ok(None) => {}
                Err(error) => tracing::warn!(%hash, %error, "reading a receipt failed; polling again"),
            }
        }
        let last = sent.last().copied().unwrap_or(first);
        if last_send.elapsed() > RECEIPT_TIMEOUT {
            return Err(ChainError::ReceiptTimeout { tx_hash: last });
        }
        if !at_cap && replacements < policy.resend.max_replacements && last_attempt.elapsed() >= stuck_after {
            last_attempt = Instant::now();
            let Some(next) = bump(fees, policy.caps) else {
                at_cap = true;
                tracing::warn!(
                    tx = %last,
                    max_fee_per_gas = fees.max_fee_per_gas,
                    "transaction not mined and its fees are at the network's cap: waiting, not replacing"
                );
                continue;
            };
            match replace(provider, &mut request, first, next).await {
                Ok(hash) => {
                    tracing::warn!(
                        stuck = %last,
                        replacement = %hash,
                        max_fee_per_gas = next.max_fee_per_gas,
                        max_priority_fee_per_gas = next.max_priority_fee_per_gas,
                        "transaction not mined in {}s: replaced at a higher fee",
                        policy.resend.after_secs
                    );
                    sent.push(hash);
                    last_send = last_attempt;
                    fees = next;
                    replacements += 1;
                    backoff.reset();
                }
                // "nonce too low" when one of them mined meanwhile: the next poll finds it.
                Err(error) => tracing::warn!(tx = %last, %error, "replacement not sent"),
            }
        }
        backoff.wait().await;
    }
}

/// Sends `request` again at `fees`, pinned to the nonce and gas limit of the transaction `first`.
async fn replace<P: Provider>(
    provider: &P,
    request: &mut TransactionRequest,
    first: B256,
    fees: Fees,
) -> Result<B256> {
    if request.nonce.is_none() {
        let sent = provider.get_transaction_by_hash(first).await?.ok_or_else(|| {
            ChainError::Rpc(alloy::transports::TransportErrorKind::custom_str(
                "the stuck transaction is unknown to the endpoint",
            ))
        })?;
        request.nonce = Some(sent.nonce());
        request.gas = Some(sent.gas_limit());
        request.from = Some(sent.inner.signer());
    }
    request.max_fee_per_gas = Some(fees.max_fee_per_gas);
    request.max_priority_fee_per_gas = Some(fees.max_priority_fee_per_gas);
    Ok(*provider.send_transaction(request.clone()).await?.tx_hash())
}
