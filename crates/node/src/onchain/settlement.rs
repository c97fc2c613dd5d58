//! Settlement: the ledger's unsettled vouchers go to `Escrow.settle` in batches, and are marked
//! settled only once the chain's answer is final.
//!
//! Money fails closed here. A voucher is marked settled only from a settle transaction whose block
//! is buried under the network's confirmations ([`Escrow::confirmations`]; 0 on a devnet) and,
//! re-read then, is still in the canonical chain ([`finality`]), or from `Escrow.settled` read in
//! such a buried block. Until then it stays unsettled in the ledger, so it is never forgotten: a
//! settle transaction that a reorg removes is noticed (its receipt is gone) and the voucher goes
//! out again. Nothing is paid twice: a voucher in a transaction still in flight is not sent again,
//! one the chain's tip already shows paid is not sent again (it waits to be buried), and the
//! contract refuses a voucher at or below what it already settled (`VoucherAlreadySettled`).
//! Every failed read fails the round and leaves the ledger as it was.

mod finality;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::{Address, B256};
use cloister_chain::{Backoff, Chain, Escrow, SettleItem};
use tokio::sync::watch;

use self::finality::InFlight;
use super::{OnChainConfig, OnChainError};
use crate::billing::{Ledger, Voucher};

/// When the loop settles: the part of [`OnChainConfig`] it reads.
#[derive(Clone, Copy, Debug)]
pub(super) struct Schedule {
    interval: Duration,
    threshold: usize,
    withdrawal_margin: Duration,
    poll: Duration,
}

impl Schedule {
    pub(super) fn of(config: &OnChainConfig) -> Self {
        Self {
            interval: config.settle_interval,
            threshold: config.settle_threshold,
            withdrawal_margin: config.withdrawal_margin,
            poll: config.poll_interval,
        }
    }
}

/// What one settlement round did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SettleRound {
    /// Vouchers sent in this round's batch (0: no batch).
    pub sent: usize,
    /// Vouchers marked settled because their settlement became final.
    pub finalized: usize,
    /// Settle transactions a reorg removed (their vouchers went out again or will).
    pub reorged: usize,
    /// Settle transactions a reorg moved to another block (their wait started again).
    pub moved: usize,
    /// Vouchers the chain's tip shows paid by a transaction this settler does not track (sent
    /// before a restart): neither sent again nor marked until buried.
    pub awaiting_finality: usize,
    /// Settle transactions still waiting for confirmations after the round.
    pub in_flight: usize,
}

/// A settler: sends the ledger's unsettled vouchers and follows each settle transaction until it
/// is final, or gone in a reorg (then its vouchers go out again). The node's settlement loop holds
/// one; [`settle_now`] is one round of a fresh one.
#[derive(Debug)]
pub struct Settler {
    escrow: Escrow,
    ledger: Arc<Ledger>,
    in_flight: Vec<InFlight>,
}

impl Settler {
    /// A settler with nothing in flight. Finality follows `escrow`'s confirmations.
    pub fn new(escrow: Escrow, ledger: Arc<Ledger>) -> Self {
        Self {
            escrow,
            ledger,
            in_flight: Vec::new(),
        }
    }

    /// Settle transactions sent and not yet final.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Looks at the transactions in flight only: marks the final ones, drops the ones a reorg
    /// removed. Sends nothing.
    pub async fn check(&mut self) -> Result<SettleRound, OnChainError> {
        let latest = self.escrow.latest_block().await?;
        let checked = finality::check(&self.escrow, &self.ledger, &mut self.in_flight, latest).await?;
        Ok(SettleRound {
            finalized: checked.finalized,
            reorged: checked.dropped,
            moved: checked.moved,
            in_flight: self.in_flight.len(),
            ..SettleRound::default()
        })
    }

    /// One round: [`Settler::check`], then every unsettled voucher not in flight is read against
    /// the chain and the ones it has not paid go out in one batch.
    pub async fn round(&mut self) -> Result<SettleRound, OnChainError> {
        let unsettled = self.ledger.unsettled().await?;
        self.round_over(unsettled).await
    }

    async fn round_over(&mut self, unsettled: Vec<Voucher>) -> Result<SettleRound, OnChainError> {
        let mut round = self.check().await?;
        let latest = self.escrow.latest_block().await?;
        let unsettled: Vec<Voucher> = unsettled
            .into_iter()
            .filter(|v| !self.in_flight.iter().any(|t| t.carries(v.authorization)))
            .collect();
        let (items, awaiting) = unpaid(&self.escrow, &self.ledger, unsettled, latest).await?;
        round.awaiting_finality = awaiting;
        if !items.is_empty() {
            let sent = send_batch(&self.escrow, &self.ledger, items).await?;
            round.sent = sent.items.len();
            self.in_flight.push(sent);
            // With no confirmations to wait for (a devnet), the batch is final at once; else this
            // only records that it waits.
            let now = self.check().await?;
            round.finalized += now.finalized;
            round.reorged += now.reorged;
            round.moved += now.moved;
        }
        round.in_flight = self.in_flight.len();
        Ok(round)
    }
}

/// One settlement round for every unsettled voucher (a fresh [`Settler`]): marks what the chain
/// has finally paid, sends the rest in one batch, and marks that batch only if it is already final
/// (no confirmations to wait for). Returns how many vouchers the batch carried. A voucher whose
/// payment is not yet final, or could not be read back, stays unsettled until a later call.
pub async fn settle_now(escrow: &Escrow, ledger: &Arc<Ledger>) -> Result<usize, OnChainError> {
    let mut settler = Settler::new(escrow.clone(), Arc::clone(ledger));
    Ok(settler.round().await?.sent)
}

/// Reads each voucher against the chain: one paid up to its amount in a buried block is marked
/// settled; one the tip shows paid but not yet buried waits (counted); the rest are returned to be
/// sent. Any failed read fails the whole call.
async fn unpaid(
    escrow: &Escrow,
    ledger: &Ledger,
    unsettled: Vec<Voucher>,
    latest: u64,
) -> Result<(Vec<(B256, SettleItem)>, usize), OnChainError> {
    let buried = latest.checked_sub(escrow.confirmations());
    let mut items = Vec::new();
    let mut awaiting = 0;
    for v in unsettled {
        if let Some(buried) = buried {
            let paid = escrow.settled_at(v.authorization, buried).await?;
            if paid >= v.cumulative {
                ledger.mark_settled(v.authorization, paid).await?;
                continue;
            }
        }
        if escrow.confirmations() > 0 || buried.is_none() {
            let at_tip = escrow.settled(v.authorization).await?;
            if at_tip >= v.cumulative {
                awaiting += 1;
                continue;
            }
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
    Ok((items, awaiting))
}

/// Sends one batch and returns it as in flight (its block as the send's receipt names it).
async fn send_batch(
    escrow: &Escrow,
    ledger: &Ledger,
    items: Vec<(B256, SettleItem)>,
) -> Result<InFlight, OnChainError> {
    let batch: Vec<SettleItem> = items.iter().map(|(_, i)| i.clone()).collect();
    let outcome = escrow.settle(&batch).await?;
    let tx = outcome.tx.tx_hash;
    ledger
        .record_settlement(&format!("{tx:#x}"), items.len(), outcome.tx.gas_used)
        .await?;
    tracing::info!(%tx, vouchers = items.len(), gas = outcome.tx.gas_used, "settle transaction mined; waiting for finality");
    Ok(InFlight {
        tx,
        // A mined receipt names its block; without one the first check reads it.
        block: outcome.block(),
        items: items
            .into_iter()
            .map(|(id, item)| (id, item.cumulative_amount))
            .collect(),
    })
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
    let clients: BTreeSet<Address> = unsettled.iter().map(|v| v.api_key.auth.client).collect();
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

pub(super) async fn settle_loop(
    chain: Chain,
    escrow: Escrow,
    ledger: Arc<Ledger>,
    schedule: Schedule,
    mut stop: watch::Receiver<bool>,
) {
    let mut settler = Settler::new(escrow.clone(), Arc::clone(&ledger));
    let mut last = tokio::time::Instant::now();
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(schedule.poll) => false,
            _ = stop.changed() => true,
        };
        let unsettled = match ledger.unsettled().await {
            Ok(v) => v,
            Err(err) => {
                tracing::warn!(%err, "reading the ledger failed");
                Vec::new()
            }
        };
        let waiting = unsettled.len();
        let due = waiting > 0
            && (stopping
                || waiting >= schedule.threshold
                || last.elapsed() >= schedule.interval
                || withdrawal_due(&chain, &escrow, &unsettled, schedule.withdrawal_margin).await);
        let result = if due {
            settler.round_over(unsettled).await
        } else if settler.in_flight() > 0 {
            // Between batches, follow the ones in flight: final ones are marked, reorged ones
            // go out again at the next round.
            settler.check().await
        } else {
            Ok(SettleRound::default())
        };
        match result {
            Ok(round) => {
                if due {
                    last = tokio::time::Instant::now();
                }
                if round.reorged > 0 {
                    // Send the removed vouchers again without waiting for the interval.
                    last = last.checked_sub(schedule.interval).unwrap_or(last);
                }
                backoff.reset();
            }
            Err(err) => {
                let retry_in = backoff.next_delay();
                tracing::warn!(%err, ?retry_in, "settlement failed; will retry");
                if !stopping {
                    tokio::time::sleep(retry_in).await;
                }
            }
        }
        if stopping {
            return;
        }
    }
}
