//! Settle transactions in flight: sent, not yet final. Each round asks the chain again for every
//! one of them. A receipt that is gone (a reorg removed the transaction) or that reverted drops the
//! transaction: its vouchers are still unsettled in the ledger and go out again. A receipt in
//! another block (a reorg moved it) restarts the wait there. A receipt buried under the network's
//! confirmations, whose block is still the canonical one, is final: only then are its vouchers
//! marked settled.

use alloy_primitives::{B256, U256};
use cloister_chain::{Escrow, SettleOutcome};

use crate::billing::Ledger;
use crate::onchain::OnChainError;

/// One settle transaction sent and not yet final.
#[derive(Clone, Debug)]
pub(super) struct InFlight {
    /// The transaction.
    pub(super) tx: B256,
    /// The block it was last seen in: `(number, hash)` (`None`: not yet seen in one).
    pub(super) block: Option<(u64, B256)>,
    /// What it carried: `(authorization, cumulative amount)`.
    pub(super) items: Vec<(B256, U256)>,
}

impl InFlight {
    /// Whether this transaction carries `authorization`.
    pub(super) fn carries(&self, authorization: B256) -> bool {
        self.items.iter().any(|(id, _)| *id == authorization)
    }
}

/// What one look at the transactions in flight found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Checked {
    /// Vouchers marked settled (their transaction is final).
    pub(super) finalized: usize,
    /// Transactions a reorg removed (or that reverted where they landed again): their vouchers go
    /// out again.
    pub(super) dropped: usize,
    /// Transactions a reorg moved to another block: the wait for confirmations starts again there.
    pub(super) moved: usize,
}

/// Where a transaction stands now.
enum Standing {
    /// Gone, or reverted: forget it; its vouchers are unsettled and will be sent again.
    Dropped(&'static str),
    /// Still waiting for confirmations (perhaps in a new block).
    Waiting { moved: bool },
    /// Final: the receipt as re-read now, and the buried block its state is read at.
    Final(Box<SettleOutcome>, u64),
}

/// Looks at every transaction in `in_flight` against the chain (tip `latest`); keeps the ones still
/// waiting, and marks in `ledger` the vouchers of the ones now final. A failed read keeps the
/// transaction as it was (nothing is marked) and is returned after the others were looked at.
pub(super) async fn check(
    escrow: &Escrow,
    ledger: &Ledger,
    in_flight: &mut Vec<InFlight>,
    latest: u64,
) -> Result<Checked, OnChainError> {
    let mut checked = Checked::default();
    let mut failure = None;
    for mut sent in std::mem::take(in_flight) {
        match standing(escrow, &mut sent, latest).await {
            Ok(Standing::Dropped(why)) => {
                tracing::warn!(tx = %sent.tx, vouchers = sent.items.len(), why, "settle transaction dropped; its vouchers go out again");
                checked.dropped += 1;
            }
            Ok(Standing::Waiting { moved }) => {
                if moved {
                    tracing::warn!(tx = %sent.tx, block = ?sent.block.map(|(n, _)| n), "a reorg moved the settle transaction; waiting for confirmations there");
                    checked.moved += 1;
                }
                in_flight.push(sent);
            }
            Ok(Standing::Final(outcome, buried)) => {
                match mark_final(escrow, ledger, &sent, &outcome, buried).await {
                    Ok(marked) => checked.finalized += marked,
                    Err(err) => {
                        // The ledger failed: keep the transaction, the next round marks it.
                        tracing::warn!(tx = %sent.tx, %err, "recording a final settlement failed; it stays in flight");
                        failure.get_or_insert(err);
                        in_flight.push(sent);
                    }
                }
            }
            Err(err) => {
                tracing::warn!(tx = %sent.tx, %err, "reading a settle transaction failed; it stays in flight");
                failure.get_or_insert(err);
                in_flight.push(sent);
            }
        }
    }
    match failure {
        Some(err) => Err(err),
        None => Ok(checked),
    }
}

async fn standing(escrow: &Escrow, sent: &mut InFlight, latest: u64) -> Result<Standing, OnChainError> {
    let Some(outcome) = escrow.settle_receipt(sent.tx).await? else {
        return Ok(Standing::Dropped("its receipt is gone (reorg)"));
    };
    if !outcome.tx.receipt.status() {
        return Ok(Standing::Dropped("it reverted where it landed"));
    }
    let Some(block) = outcome.block() else {
        // A receipt without a block is still pending: not final.
        return Ok(Standing::Waiting { moved: false });
    };
    let moved = sent.block.is_some_and(|seen| seen != block);
    sent.block = Some(block);
    let (number, hash) = block;
    let Some(buried) = latest.checked_sub(escrow.confirmations()) else {
        return Ok(Standing::Waiting { moved });
    };
    if moved || number > buried {
        return Ok(Standing::Waiting { moved });
    }
    // Deep enough: the receipt's block must still be the canonical one at its height.
    if escrow.block_hash(number).await? != Some(hash) {
        return Ok(Standing::Waiting { moved: false });
    }
    Ok(Standing::Final(Box::new(outcome), buried))
}

/// Marks the vouchers of a final transaction from its events (paid in full: `Settled`; paid less:
/// `SettlementShort`); a voucher with neither is read from `Escrow.settled` in the buried block
/// `buried`, and stays pending if that read fails. Returns how many were marked.
async fn mark_final(
    escrow: &Escrow,
    ledger: &Ledger,
    sent: &InFlight,
    outcome: &SettleOutcome,
    buried: u64,
) -> Result<usize, OnChainError> {
    let mut marked = 0;
    for (authorization, cumulative) in &sent.items {
        let short = outcome.short.iter().find(|(id, _, _)| id == authorization);
        let full = outcome.settled.iter().any(|s| s.authorization == *authorization);
        let paid_to = match (short, full) {
            (Some((_, due, paid)), _) => cumulative.saturating_sub(due.saturating_sub(*paid)),
            (None, true) => *cumulative,
            (None, false) => match escrow.settled_at(*authorization, buried).await {
                Ok(paid) => paid,
                Err(err) => {
                    tracing::warn!(%authorization, %err, "reading what the chain settled failed; the voucher stays pending");
                    continue;
                }
            },
        };
        ledger.mark_settled(*authorization, paid_to).await?;
        marked += 1;
    }
    tracing::info!(tx = %sent.tx, block = ?sent.block.map(|(n, _)| n), vouchers = marked, "settlement final");
    Ok(marked)
}
