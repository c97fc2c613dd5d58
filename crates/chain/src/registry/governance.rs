//! The timelocked measurement allowlist (docs/protocol.md, "Governance"): the owner announces a
//! change, anyone executes it once `measurementDelay` has passed, the owner may cancel it before.
//! Lowering the delay is itself timelocked by the current delay; raising it is immediate.

use alloy::primitives::B256;
use serde::{Deserialize, Serialize};

use super::Registry;
use crate::error::{ChainError, Result};
use crate::revert::from_contract;
use crate::{TxOutcome, send};

/// An announced, not yet executed change to the measurement allowlist.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingChange {
    /// The measurement digest it changes.
    pub measurement: B256,
    /// Whether it allows (`true`) or disallows the measurement.
    pub allowed: bool,
    /// When it may be executed (unix seconds, chain time).
    pub eta: u64,
}

impl PendingChange {
    /// Seconds until `eta` at unix time `now` (0 once it may be executed).
    pub fn seconds_left(&self, now: u64) -> u64 {
        self.eta.saturating_sub(now)
    }
}

/// An announced lowering of `measurementDelay` (raising applies at once).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingDelayChange {
    /// The delay it sets (seconds).
    pub delay: u64,
    /// When it may be executed (unix seconds, chain time).
    pub eta: u64,
}

impl Registry {
    /// The timelock on measurement allowlist changes (seconds).
    pub async fn measurement_delay(&self) -> Result<u64> {
        self.inner.measurementDelay().call().await.map_err(from_contract)
    }

    /// Governance: announces that `measurement` will be allowed (or disallowed) once the delay has
    /// passed. Reverts `ChangeAlreadyPending` if one is pending for it, `TooManyPendingChanges` at
    /// the contract's cap.
    pub async fn announce_measurement(&self, measurement: B256, allowed: bool) -> Result<TxOutcome> {
        self.sender()?;
        send(self.inner.announceMeasurement(measurement, allowed)).await
    }

    /// Applies the pending change for `measurement` (any sender). Reverts `TooEarly(eta)` before its
    /// eta, `NoPendingChange` if none is pending.
    pub async fn execute_measurement(&self, measurement: B256) -> Result<TxOutcome> {
        self.sender()?;
        send(self.inner.executeMeasurement(measurement)).await
    }

    /// Governance: drops the pending change for `measurement` (`NoPendingChange` if none).
    pub async fn cancel_measurement(&self, measurement: B256) -> Result<TxOutcome> {
        self.sender()?;
        send(self.inner.cancelMeasurement(measurement)).await
    }

    /// Governance, in one step: announces the change and executes it at once. Works only while the
    /// registry's `measurementDelay` is 0 (devnets); otherwise it sends nothing and fails with
    /// [`ChainError::MeasurementTimelocked`] (use [`Self::announce_measurement`], then
    /// [`Self::execute_measurement`] after the delay). Returns the execution's outcome.
    pub async fn set_measurement(&self, measurement: B256, allowed: bool) -> Result<TxOutcome> {
        self.sender()?;
        let delay = self.measurement_delay().await?;
        if delay != 0 {
            return Err(ChainError::MeasurementTimelocked { delay });
        }
        self.announce_measurement(measurement, allowed).await?;
        self.execute_measurement(measurement).await
    }

    /// Every pending measurement change (the contract bounds the list), soonest eta first.
    pub async fn pending_measurement_changes(&self) -> Result<Vec<PendingChange>> {
        let list = self
            .inner
            .pendingMeasurements()
            .call()
            .await
            .map_err(from_contract)?;
        let mut out: Vec<PendingChange> = list
            .into_iter()
            .map(|p| PendingChange {
                measurement: p.measurement,
                allowed: p.allowed,
                eta: p.eta,
            })
            .collect();
        out.sort_by_key(|p| (p.eta, p.measurement));
        Ok(out)
    }

    /// Governance: sets a new `measurementDelay`. Raising (or keeping) it applies at once; lowering
    /// it is announced and applies after the current delay ([`Self::execute_measurement_delay`]).
    pub async fn announce_measurement_delay(&self, delay: u64) -> Result<TxOutcome> {
        self.sender()?;
        send(self.inner.announceMeasurementDelay(delay)).await
    }

    /// Applies a pending lowering of the delay (any sender, from its eta).
    pub async fn execute_measurement_delay(&self) -> Result<TxOutcome> {
        self.sender()?;
        send(self.inner.executeMeasurementDelay()).await
    }

    /// Governance: drops a pending lowering of the delay.
    pub async fn cancel_measurement_delay(&self) -> Result<TxOutcome> {
        self.sender()?;
        send(self.inner.cancelMeasurementDelay()).await
    }

    /// The pending lowering of the delay, if any.
    pub async fn pending_measurement_delay(&self) -> Result<Option<PendingDelayChange>> {
        let eta = self
            .inner
            .pendingMeasurementDelayEta()
            .call()
            .await
            .map_err(from_contract)?;
        if eta == 0 {
            return Ok(None);
        }
        let delay = self
            .inner
            .pendingMeasurementDelay()
            .call()
            .await
            .map_err(from_contract)?;
        Ok(Some(PendingDelayChange { delay, eta }))
    }
}
