//! The plan of a bounded, resumable `eth_getLogs` scan, with no I/O: which block range to ask for
//! next, what to do when the provider refuses a range as too wide, and where to resume.
//!
//! Public RPC providers cap the block range (or the result size) of one `eth_getLogs`, so a scan
//! from block 0 to `latest` in one call fails on a real L2. Every log scan in Cloister
//! (`cloister-chain` over alloy's provider, `cloister-client`'s discovery over plain JSON-RPC) walks
//! with this one planner:
//!
//! - it starts at a given block (the deployment or registration block; 0 by default),
//! - asks for windows no wider than the network's limit ([`LogScanPlan::max_range`]),
//! - halves the window when the provider answers a range refusal ([`is_range_refusal`]), and keeps
//!   the narrower window for the rest of the scan (a provider's limit does not move back up),
//! - and after every answered window moves its [`LogCursor`], which the caller may store to resume
//!   from there after a restart.
//!
//! ```
//! use cloister_types::logscan::{LogCursor, LogScanPlan};
//! let mut plan = LogScanPlan::new(LogCursor::at(100), 1_000);
//! let first = plan.next_range(5_000).expect("blocks to read");
//! assert_eq!((first.from, first.to), (100, 1_099));
//! // The provider refuses 1,000 blocks: ask for half.
//! plan.refused(first).expect("the window can still shrink");
//! let again = plan.next_range(5_000).expect("blocks to read");
//! assert_eq!((again.from, again.to), (100, 599));
//! plan.answered(again);
//! assert_eq!(plan.cursor(), LogCursor::at(600));
//! ```

use serde::{Deserialize, Serialize};

/// The widest window a scan asks for when the network names no limit (most public providers take
/// 10,000 blocks; a provider that takes fewer is met by halving).
pub const DEFAULT_MAX_LOG_RANGE: u64 = 10_000;

/// Where a scan resumes: the first block not yet read. A caller stores it between runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LogCursor {
    /// The first block the next scan reads.
    pub next_block: u64,
}

impl LogCursor {
    /// A cursor that reads from `block` on.
    pub const fn at(block: u64) -> Self {
        Self { next_block: block }
    }
}

/// Where a scan starts and how wide its windows may be: what a chain configuration gives every
/// scan of its contracts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LogScanLimits {
    /// The first block to read: the contracts' deployment block (no event of theirs is older).
    pub from_block: u64,
    /// The widest window, in blocks.
    pub max_range: u64,
}

impl Default for LogScanLimits {
    /// From block 0 in windows of [`DEFAULT_MAX_LOG_RANGE`].
    fn default() -> Self {
        Self {
            from_block: 0,
            max_range: DEFAULT_MAX_LOG_RANGE,
        }
    }
}

impl LogScanLimits {
    /// The plan of a scan with these limits.
    pub fn plan(&self) -> LogScanPlan {
        LogScanPlan::new(LogCursor::at(self.from_block), self.max_range)
    }

    /// The same limits, starting at a stored `cursor` (never before `from_block`).
    pub fn resume(self, cursor: LogCursor) -> Self {
        Self {
            from_block: cursor.next_block.max(self.from_block),
            ..self
        }
    }
}

/// An inclusive block range, `from..=to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockRange {
    /// First block.
    pub from: u64,
    /// Last block (inclusive).
    pub to: u64,
}

impl BlockRange {
    /// How many blocks it spans.
    pub const fn len(&self) -> u64 {
        self.to.saturating_sub(self.from).saturating_add(1)
    }

    /// Whether it spans no block (never, for a range the planner hands out).
    pub const fn is_empty(&self) -> bool {
        self.to < self.from
    }
}

/// The provider refused a single-block window: the range cannot shrink further, so the scan
/// cannot proceed (the provider refuses something other than the width).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the provider refuses eth_getLogs even for the single block {block}")]
pub struct CannotShrink {
    /// The block it refused.
    pub block: u64,
}

/// The state of one bounded scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogScanPlan {
    cursor: LogCursor,
    window: u64,
    max_range: u64,
}

impl LogScanPlan {
    /// A scan from `cursor` in windows of at most `max_range` blocks (0 is taken as 1).
    pub fn new(cursor: LogCursor, max_range: u64) -> Self {
        let max_range = max_range.max(1);
        Self {
            cursor,
            window: max_range,
            max_range,
        }
    }

    /// The window the next range uses (at most [`LogScanPlan::max_range`]; smaller after a
    /// refusal).
    pub fn window(&self) -> u64 {
        self.window
    }

    /// The widest window this scan asks for.
    pub fn max_range(&self) -> u64 {
        self.max_range
    }

    /// Where the scan stands: the first block not yet read.
    pub fn cursor(&self) -> LogCursor {
        self.cursor
    }

    /// The next range to ask for, ending no later than `to_block`; `None` once the scan has read
    /// through `to_block`.
    pub fn next_range(&self, to_block: u64) -> Option<BlockRange> {
        let from = self.cursor.next_block;
        if from > to_block {
            return None;
        }
        let to = to_block.min(from.saturating_add(self.window - 1));
        Some(BlockRange { from, to })
    }

    /// `range` was answered: the cursor moves past it.
    pub fn answered(&mut self, range: BlockRange) {
        self.cursor = LogCursor::at(range.to.saturating_add(1).max(self.cursor.next_block));
    }

    /// The provider refused `range` as too wide: the window halves (below `range`'s width, so a
    /// range cut short by `to_block` still shrinks). A single-block range cannot shrink.
    pub fn refused(&mut self, range: BlockRange) -> Result<(), CannotShrink> {
        let width = range.len().min(self.window);
        if width <= 1 {
            return Err(CannotShrink { block: range.from });
        }
        self.window = width / 2;
        Ok(())
    }
}

/// Whether a JSON-RPC error from `eth_getLogs` says the range (or the result it would give) is too
/// large, in the words public providers use, so that the scan halves its window rather than fail.
///
/// Matched (case-insensitively): Alchemy's "Log response size exceeded" and "block range",
/// Infura's "query returned more than 10000 results", QuickNode's "eth_getLogs is limited to a
/// 10,000 range", Ankr's "block range is too wide", geth's "exceed maximum block range",
/// Chainstack's "Block range limit exceeded", and the general "range too large" / "too many
/// results" / "response size" family; also JSON-RPC code -32005 (EIP-1474 "limit exceeded").
pub fn is_range_refusal(code: i64, message: &str) -> bool {
    const LIMIT_EXCEEDED: i64 = -32005;
    const PHRASES: [&str; 13] = [
        "block range",
        "range is too",
        "range too",
        "log response size",
        "response size exceeded",
        "query returned more than",
        "more than 10000 results",
        "getlogs is limited to",
        "too many results",
        "too many logs",
        "max range",
        "blocks range",
        "exceed maximum",
    ];
    if code == LIMIT_EXCEEDED {
        return true;
    }
    let message = message.to_ascii_lowercase();
    PHRASES.iter().any(|p| message.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_tile_the_range_without_gap_or_overlap() {
        let mut plan = LogScanPlan::new(LogCursor::at(7), 10);
        let mut seen = Vec::new();
        while let Some(r) = plan.next_range(42) {
            assert!(r.len() <= 10);
            seen.push(r);
            plan.answered(r);
        }
        assert_eq!(seen.first().map(|r| r.from), Some(7));
        assert_eq!(seen.last().map(|r| r.to), Some(42));
        for pair in seen.windows(2) {
            assert_eq!(pair[0].to + 1, pair[1].from);
        }
        assert_eq!(plan.cursor(), LogCursor::at(43));
        assert_eq!(plan.next_range(42), None);
    }

    #[test]
    fn a_refusal_halves_until_one_block_then_gives_up() {
        let mut plan = LogScanPlan::new(LogCursor::default(), 8);
        let mut widths = Vec::new();
        while let Some(r) = plan.next_range(100) {
            widths.push(r.len());
            if plan.refused(r).is_err() {
                break;
            }
        }
        assert_eq!(widths, [8, 4, 2, 1]);
        assert_eq!(plan.cursor(), LogCursor::at(0), "nothing was read");
    }

    #[test]
    fn a_short_final_range_still_shrinks_when_refused() {
        let mut plan = LogScanPlan::new(LogCursor::at(0), 1_000);
        let r = plan.next_range(9).unwrap_or_else(|| panic!("blocks to read"));
        assert_eq!(r.len(), 10);
        plan.refused(r).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(plan.window(), 5);
    }

    #[test]
    fn provider_refusals_are_recognised_and_others_are_not() {
        for (code, msg) in [
            (
                -32602,
                "Log response size exceeded. You can make eth_getLogs requests with up to a 2K block range",
            ),
            (-32000, "query returned more than 10000 results"),
            (-32614, "eth_getLogs is limited to a 10,000 range"),
            (-32000, "block range is too wide"),
            (-32000, "exceed maximum block range: 5000"),
            (-32005, "anything at all"),
        ] {
            assert!(is_range_refusal(code, msg), "{code} {msg}");
        }
        assert!(is_range_refusal(
            -32000,
            "eth_getLogs and eth_newFilter are limited to a 10,000 blocks range"
        ));
        assert!(!is_range_refusal(-32000, "header not found"));
        assert!(!is_range_refusal(
            429,
            "rate limited to a few requests per second"
        ));
        assert!(!is_range_refusal(3, "execution reverted"));
    }
}
