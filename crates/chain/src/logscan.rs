//! Bounded, resumable `eth_getLogs` scans over an alloy provider: the one place in this crate that
//! asks for logs. The windows follow [`cloister_types::logscan::LogScanPlan`] (the planner the
//! client's discovery uses too): no wider than the network's limit, halved when the provider
//! refuses a range, and a [`LogCursor`] the caller may store to resume after a restart.
//!
//! ```no_run
//! # async fn f(chain: cloister_chain::Chain) -> cloister_chain::Result<()> {
//! use cloister_chain::LogScanner;
//! use cloister_chain::alloy::rpc::types::Filter;
//! let filter = Filter::new().address(chain.config().registry);
//! let mut scan = LogScanner::new(chain.provider(), filter, chain.config().log_scan_limits());
//! let latest = chain.block_number().await?;
//! let logs = scan.scan_to(latest).await?;
//! let resume_from = scan.cursor(); // store it; LogScanner::new(.., limits.resume(resume_from))
//! # let _ = (logs, resume_from); Ok(()) }
//! ```

use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::{Filter, Log};
use alloy::transports::{RpcError, TransportError, TransportErrorKind};
use cloister_types::logscan::{BlockRange, LogCursor, LogScanLimits, LogScanPlan, is_range_refusal};

use crate::error::{ChainError, Result};

/// One bounded scan of the logs `filter` matches (its block range is ignored: the scanner sets
/// one per window).
#[derive(Debug)]
pub struct LogScanner<'a> {
    provider: &'a DynProvider,
    filter: Filter,
    plan: LogScanPlan,
}

impl<'a> LogScanner<'a> {
    /// A scan from `limits.from_block` in windows of at most `limits.max_range` blocks.
    pub fn new(provider: &'a DynProvider, filter: Filter, limits: LogScanLimits) -> Self {
        Self {
            provider,
            filter,
            plan: limits.plan(),
        }
    }

    /// Where the scan stands: the first block not yet read (store it to resume).
    pub fn cursor(&self) -> LogCursor {
        self.plan.cursor()
    }

    /// The window the next call asks for (smaller than the limit after a refusal).
    pub fn window(&self) -> u64 {
        self.plan.window()
    }

    /// Reads the next window up to `to_block`: `Ok(None)` once the scan has read through it. A
    /// range refusal halves the window and asks again; any other error leaves the cursor where
    /// it was, so a retry reads the same window.
    pub async fn next_window(&mut self, to_block: u64) -> Result<Option<(BlockRange, Vec<Log>)>> {
        while let Some(range) = self.plan.next_range(to_block) {
            let filter = self.filter.clone().from_block(range.from).to_block(range.to);
            match self.provider.get_logs(&filter).await {
                Ok(logs) => {
                    self.plan.answered(range);
                    return Ok(Some((range, logs)));
                }
                Err(err) => {
                    let Some(message) = range_refusal(&err) else {
                        return Err(err.into());
                    };
                    tracing::debug!(
                        from = range.from,
                        to = range.to,
                        %message,
                        "eth_getLogs range refused; halving the window"
                    );
                    self.plan
                        .refused(range)
                        .map_err(|e| ChainError::LogRangeRefused {
                            block: e.block,
                            message,
                        })?;
                }
            }
        }
        Ok(None)
    }

    /// Reads every window up to `to_block` and returns the logs in block order.
    pub async fn scan_to(&mut self, to_block: u64) -> Result<Vec<Log>> {
        let mut out = Vec::new();
        while let Some((_, logs)) = self.next_window(to_block).await? {
            out.extend(logs.into_iter().filter(|l| !l.removed));
        }
        Ok(out)
    }
}

/// The provider's words if `err` refuses the range as too wide (a JSON-RPC error, or an HTTP
/// error whose body says so).
fn range_refusal(err: &TransportError) -> Option<String> {
    if let Some(payload) = err.as_error_resp() {
        return is_range_refusal(payload.code, &payload.message).then(|| payload.message.to_string());
    }
    match err {
        RpcError::Transport(TransportErrorKind::HttpError(http)) if is_range_refusal(0, &http.body) => {
            Some(http.body.chars().take(300).collect())
        }
        _ => None,
    }
}
