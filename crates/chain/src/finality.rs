//! Where a sent transaction stands against reorgs: gone (a reorg removed it, or it reverted where it
//! landed), waiting (fewer than the network's confirmations on top of its block), or final (buried
//! under them, in the block that is still canonical at its height).

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::B256;
use alloy::providers::{DynProvider, Provider as _};

use crate::Result;

/// See the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finality {
    /// No receipt now (a reorg removed it), or it reverted: the caller sends again.
    Dropped,
    /// In block `block`, with `depth` blocks counted from it to the tip; not yet final.
    Waiting {
        /// The block it is in now.
        block: u64,
        /// `latest - block`.
        depth: u64,
    },
    /// Buried under the confirmations, in the canonical block `block`.
    Final {
        /// The block it is in.
        block: u64,
    },
}

/// Where `tx_hash` stands, for a network that counts a transaction final `confirmations` blocks
/// deep (latest − block ≥ confirmations; 0: as soon as it has a receipt). A read that fails is an
/// error, never a standing.
pub async fn tx_finality(provider: &DynProvider, tx_hash: B256, confirmations: u64) -> Result<Finality> {
    let Some(receipt) = provider.get_transaction_receipt(tx_hash).await? else {
        return Ok(Finality::Dropped);
    };
    if !receipt.status() {
        return Ok(Finality::Dropped);
    }
    let (Some(block), Some(hash)) = (receipt.block_number, receipt.block_hash) else {
        return Ok(Finality::Dropped);
    };
    let latest = provider.get_block_number().await?;
    let depth = latest.saturating_sub(block);
    if depth < confirmations {
        return Ok(Finality::Waiting { block, depth });
    }
    // The receipt may be stale (served from a pruned fork): the canonical block at that height
    // must be the one it names.
    let canonical = provider
        .get_block_by_number(BlockNumberOrTag::Number(block))
        .await?
        .map(|b| b.header.hash);
    Ok(if canonical == Some(hash) {
        Finality::Final { block }
    } else {
        Finality::Waiting { block, depth: 0 }
    })
}
