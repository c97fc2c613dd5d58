//! EIP-1559 fees for every transaction this crate sends: the provider's estimate, clamped to the
//! network's caps; a refusal when the base fee alone is above the cap (such a transaction would
//! never mine); and the bump a replacement of a stuck transaction offers (at least +12.5% on both
//! fees, above geth's and anvil's +10% replacement rule).

use alloy::eips::BlockNumberOrTag;
use alloy::providers::Provider;
use serde::{Deserialize, Serialize};

use crate::error::{ChainError, Result};

/// The most a transaction may offer, in wei per gas (a network file's `max_fee_per_gas_wei` and
/// `max_priority_fee_per_gas_wei`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeeCaps {
    /// Cap on `maxFeePerGas`.
    pub max_fee_per_gas: u128,
    /// Cap on `maxPriorityFeePerGas`.
    pub max_priority_fee_per_gas: u128,
}

/// When a sent transaction counts as stuck and how often it is replaced.
/// Either field may be left out of a chain file (its default is used).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResendPolicy {
    /// Seconds without a receipt after which the transaction is sent again, same nonce, higher
    /// fees.
    pub after_secs: u64,
    /// How many replacements at most.
    pub max_replacements: u32,
}

impl Default for ResendPolicy {
    fn default() -> Self {
        Self {
            after_secs: 30,
            max_replacements: 5,
        }
    }
}

impl ResendPolicy {
    /// Whether it is the default (left out of a saved chain file).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// What [`crate::send`] follows on one connection: fee caps (none on a devnet) and replacement.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendPolicy {
    /// The network's caps, when a network was named.
    pub caps: Option<FeeCaps>,
    /// Stuck-transaction replacement.
    pub resend: ResendPolicy,
}

/// The two EIP-1559 fees of one transaction, in wei per gas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fees {
    /// `maxFeePerGas`.
    pub max_fee_per_gas: u128,
    /// `maxPriorityFeePerGas`.
    pub max_priority_fee_per_gas: u128,
}

/// The fees to offer now: the provider's estimate, clamped to `caps`. Refuses with
/// [`ChainError::BaseFeeAboveCap`] when the latest base fee alone is above the cap.
pub async fn choose_fees<P: Provider>(provider: &P, caps: Option<FeeCaps>) -> Result<Fees> {
    let estimate = provider.estimate_eip1559_fees().await?;
    let fees = Fees {
        max_fee_per_gas: estimate.max_fee_per_gas,
        max_priority_fee_per_gas: estimate.max_priority_fee_per_gas,
    };
    let Some(caps) = caps else {
        return Ok(fees);
    };
    let base_fee = provider
        .get_block_by_number(BlockNumberOrTag::Latest)
        .await?
        .and_then(|b| b.header.base_fee_per_gas)
        .map_or(0, u128::from);
    if base_fee > caps.max_fee_per_gas {
        return Err(ChainError::BaseFeeAboveCap {
            base_fee,
            cap: caps.max_fee_per_gas,
        });
    }
    Ok(clamp(fees, caps))
}

/// `fees` within `caps`, the tip never above the total.
fn clamp(fees: Fees, caps: FeeCaps) -> Fees {
    let max_fee_per_gas = fees.max_fee_per_gas.min(caps.max_fee_per_gas);
    Fees {
        max_fee_per_gas,
        max_priority_fee_per_gas: fees
            .max_priority_fee_per_gas
            .min(caps.max_priority_fee_per_gas)
            .min(max_fee_per_gas),
    }
}

/// Raises `fee` by 12.5% (rounded up, at least 1 wei).
fn raise(fee: u128) -> u128 {
    fee.saturating_add(fee.div_ceil(8).max(1))
}

/// Whether `new` is at least 10% above `old` (the replacement rule of geth and anvil).
fn replaces(old: u128, new: u128) -> bool {
    new.saturating_mul(10) >= old.saturating_mul(11) && new > old
}

/// The fees a replacement of a transaction sent at `sent` offers: both raised by 12.5%, clamped to
/// `caps`. `None` when the caps leave no room for a replacement the mempool accepts (both fees
/// at least 10% higher): the caller keeps waiting for what it sent.
pub fn bump(sent: Fees, caps: Option<FeeCaps>) -> Option<Fees> {
    let raised = Fees {
        max_fee_per_gas: raise(sent.max_fee_per_gas),
        max_priority_fee_per_gas: raise(sent.max_priority_fee_per_gas),
    };
    let next = caps.map_or(raised, |caps| clamp(raised, caps));
    (replaces(sent.max_fee_per_gas, next.max_fee_per_gas)
        && replaces(sent.max_priority_fee_per_gas, next.max_priority_fee_per_gas))
    .then_some(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn fees(max: u128, tip: u128) -> Fees {
        Fees {
            max_fee_per_gas: max,
            max_priority_fee_per_gas: tip,
        }
    }

    #[test]
    fn a_bump_raises_both_fees_by_an_eighth_within_the_caps() {
        assert_eq!(bump(fees(800, 80), None), Some(fees(900, 90)));
        // Rounded up, and at least one wei, so tiny fees still replace.
        assert_eq!(bump(fees(1, 1), None), Some(fees(2, 2)));
        assert_eq!(bump(fees(9, 9), None), Some(fees(11, 11)));
        let caps = FeeCaps {
            max_fee_per_gas: 880,
            max_priority_fee_per_gas: 1_000,
        };
        // Clamped to the cap but still 10% higher: a replacement.
        assert_eq!(bump(fees(800, 80), Some(caps)), Some(fees(880, 90)));
        // At the cap: no replacement the mempool would take.
        assert_eq!(bump(fees(880, 90), Some(caps)), None);
        // The tip never exceeds the total.
        let tight = FeeCaps {
            max_fee_per_gas: 1_000,
            max_priority_fee_per_gas: 1_000,
        };
        assert_eq!(clamp(fees(2_000, 1_500), tight), fees(1_000, 1_000));
    }
}
