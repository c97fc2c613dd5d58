//! Chain reads for the explorer, over the same plain JSON-RPC as discovery: the registry's pending
//! measurement changes and the `Escrow`'s `Settled` events (contracts/src/Escrow.sol).
//!
//! Settlements are read incrementally: [`settlements`] scans from a block to the latest one and
//! says where it stopped, so a caller keeps running totals and scans only new blocks next time.

use alloy_primitives::{Address, B256, U256};
use alloy_sol_types::{SolEvent, sol};
use cloister_types::logscan::LogScanLimits;

use super::rpc::Rpc;
use super::{DiscoverError, RegistryConfig};

sol! {
    /// The `NodeRegistry` governance view the explorer reads.
    interface PendingView {
        struct PendingMeasurement {
            bytes32 measurement;
            bool allowed;
            uint64 eta;
        }

        function pendingMeasurements() external view returns (PendingMeasurement[] memory);
    }

    /// The `Escrow` event the explorer reads.
    interface EscrowEvents {
        event Settled(
            bytes32 indexed authorization,
            address indexed node,
            address indexed client,
            uint256 cumulativeAmount,
            uint256 paid
        );
    }
}

/// Most pending changes accepted from the registry (the contract bounds its own list far lower).
pub const MAX_PENDING: usize = 1_000;
/// Most `Settled` events one [`settlements`] call reads.
pub const MAX_SETTLEMENT_EVENTS: usize = 100_000;

/// An announced, not yet applied change to the measurement allowlist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingMeasurement {
    /// The measurement digest it changes.
    pub measurement: B256,
    /// Whether it allows (`true`) or withdraws the measurement.
    pub allowed: bool,
    /// When it may be applied (unix seconds, chain time).
    pub eta: u64,
}

/// One `Settled` event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settlement {
    /// The spend authorization settled.
    pub authorization: B256,
    /// The node's operator (the payee).
    pub node: Address,
    /// The paying client.
    pub client: Address,
    /// The voucher's running total.
    pub cumulative: U256,
    /// What this settlement paid (token base units).
    pub paid: U256,
}

/// What one [`settlements`] call read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SettlementScan {
    /// The events, in chain order.
    pub settlements: Vec<Settlement>,
    /// The last block read (resume from the next one); `limits.from_block - 1` when there was
    /// nothing new (saturating).
    pub scanned_to: u64,
}

/// The registry's pending measurement changes (`pendingMeasurements()`), soonest first.
pub async fn pending_measurements(
    http: &reqwest::Client,
    config: &RegistryConfig,
) -> Result<Vec<PendingMeasurement>, DiscoverError> {
    if config.registry.is_zero() {
        return Err(DiscoverError::NoRegistry);
    }
    let rpc = Rpc::new(http, &config.rpc_url);
    check_chain(&rpc, config.chain_id).await?;
    let list = rpc
        .call(config.registry, &PendingView::pendingMeasurementsCall {})
        .await?;
    if list.len() > MAX_PENDING {
        return Err(DiscoverError::TooMany {
            what: "pending measurement changes",
            limit: MAX_PENDING as u64,
        });
    }
    let mut out: Vec<PendingMeasurement> = list
        .into_iter()
        .map(|p| PendingMeasurement {
            measurement: p.measurement,
            allowed: p.allowed,
            eta: p.eta,
        })
        .collect();
    out.sort_by_key(|p| (p.eta, p.measurement));
    Ok(out)
}

/// The `Settled` events of `escrow` from `limits.from_block` to the latest block, in bounded
/// windows (halved when the endpoint refuses one), on the chain `chain_id`.
pub async fn settlements(
    http: &reqwest::Client,
    rpc_url: &str,
    chain_id: u64,
    escrow: Address,
    limits: LogScanLimits,
) -> Result<SettlementScan, DiscoverError> {
    let rpc = Rpc::new(http, rpc_url);
    check_chain(&rpc, chain_id).await?;
    let latest = rpc.block_number().await?;
    if latest < limits.from_block {
        return Ok(SettlementScan {
            settlements: Vec::new(),
            scanned_to: limits.from_block.saturating_sub(1),
        });
    }
    let logs = super::scan_logs_to(
        &rpc,
        escrow,
        EscrowEvents::Settled::SIGNATURE_HASH,
        limits,
        latest,
        (MAX_SETTLEMENT_EVENTS, "Settled events"),
    )
    .await?;
    let mut settlements = Vec::with_capacity(logs.len());
    for (topics, data) in logs {
        let e =
            EscrowEvents::Settled::decode_raw_log(topics, &data).map_err(|e| DiscoverError::Malformed {
                method: "eth_getLogs",
                detail: format!("a Settled event does not decode: {e}"),
            })?;
        settlements.push(Settlement {
            authorization: e.authorization,
            node: e.node,
            client: e.client,
            cumulative: e.cumulativeAmount,
            paid: e.paid,
        });
    }
    Ok(SettlementScan {
        settlements,
        scanned_to: latest,
    })
}

async fn check_chain(rpc: &Rpc<'_>, expected: u64) -> Result<(), DiscoverError> {
    let actual = rpc.chain_id().await?;
    if actual != expected {
        return Err(DiscoverError::WrongChain { expected, actual });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settled_event_is_the_one_the_escrow_contract_emits() {
        let source = include_str!("../../../../contracts/src/Escrow.sol");
        let flat = source.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            flat.contains(
                "event Settled( bytes32 indexed authorization, address indexed node, \
                 address indexed client, uint256 cumulativeAmount, uint256 paid );"
            ),
            "contracts/src/Escrow.sol changed its Settled event"
        );
        assert_eq!(
            EscrowEvents::Settled::SIGNATURE,
            "Settled(bytes32,address,address,uint256,uint256)"
        );
    }
}
