use thiserror::Error;

/// Errors from decoding protocol values.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// A nonce was not exactly 32 bytes of hex (64 hex digits, optional `0x`).
    #[error("nonce must be 64 hex digits (32 bytes)")]
    BadNonce,
    /// report_data was not 64 bytes.
    #[error("report_data must be 64 bytes, got {0}")]
    BadReportDataLength(usize),
    /// An address was not 20 bytes of hex.
    #[error("address must be 40 hex digits (20 bytes)")]
    BadAddress,
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
