//! Settlement: the ledger's unsettled vouchers go to `Escrow.settle` in batches.
//!
//! Money fails closed here. Before a batch every voucher's `Escrow.settled` is read, and what the
//! chain already paid is recorded and dropped; a failed read fails the batch. After the batch a
//! voucher is marked paid only from what the chain said: its `Settled`/`SettlementShort` event, or,
//! without one, a fresh `Escrow.settled` read. When that read fails the voucher stays pending; the
//! next tick's pre-batch read finds what the chain paid and records it then.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::{Address, B256, U256};
use cloister_chain::{Backoff, Chain, Escrow, SettleItem};
use tokio::sync::watch;

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

/// Settles every unsettled voucher now: syncs with `Escrow.settled` first so nothing is paid
/// twice, then sends one batch. Returns how many vouchers the batch carried. A voucher whose
/// outcome could not be read back stays unsettled in the ledger until a later call reads it.
pub async fn settle_now(escrow: &Escrow, ledger: &Ledger) -> Result<usize, OnChainError> {
    settle_vouchers(escrow, ledger, ledger.unsettled().await?).await
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
            ledger.mark_settled(v.authorization, on_chain).await?;
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
    let settled: HashSet<B256> = outcome.settled.iter().map(|s| s.authorization).collect();
    let short: HashMap<B256, U256> = outcome
        .short
        .iter()
        .map(|(id, due, paid)| (*id, due.saturating_sub(*paid)))
        .collect();
    let mut unknown = 0usize;
    for (authorization, item) in &items {
        // A voucher is paid up to its cumulative amount, less what a short client could not cover
        // (`SettlementShort`); with no event for it, ask the chain, and if that fails, record
        // nothing: the voucher stays pending and the next tick reads the chain again.
        let now_settled = match (short.get(authorization), settled.contains(authorization)) {
            (Some(unpaid), _) => item.cumulative_amount.saturating_sub(*unpaid),
            (None, true) => item.cumulative_amount,
            (None, false) => match escrow.settled(*authorization).await {
                Ok(paid) => paid,
                Err(err) => {
                    tracing::warn!(
                        %authorization,
                        %err,
                        "reading what the chain settled failed; the voucher stays pending"
                    );
                    unknown += 1;
                    continue;
                }
            },
        };
        ledger.mark_settled(*authorization, now_settled).await?;
    }
    ledger
        .record_settlement(&tx, items.len(), outcome.tx.gas_used)
        .await?;
    tracing::info!(
        tx,
        vouchers = items.len(),
        unconfirmed = unknown,
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
        if due {
            match settle_vouchers(&escrow, &ledger, unsettled).await {
                Ok(_) => {
                    last = tokio::time::Instant::now();
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
        }
        if stopping {
            return;
        }
    }
}
