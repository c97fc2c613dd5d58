//! Wire and protocol types shared by every Cloister component.
//!
//! Nothing here does I/O: these are the bytes that cross trust boundaries, and the rules that bind
//! them together (see `docs/protocol.md`).
//!
//! ```
//! use cloister_types::{ReportData, Nonce, signature_text};
//! let nonce: Nonce = "11".repeat(32).parse().unwrap();
//! let rd = ReportData::new(cloister_types::Address::repeat_byte(0xab), nonce);
//! assert_eq!(rd.signing_address(), [0xab; 20]);
//! assert_eq!(rd.nonce(), nonce);
//! assert_eq!(signature_text(b"req", b"resp").len(), 64 + 1 + 64);
//! ```

pub mod e2ee;
pub mod eip712;
mod error;
pub mod gateway;
#[cfg(feature = "http")]
pub mod http;
pub mod logscan;
pub mod openai;
pub mod recover;
mod report;
mod signature;
pub mod wire;

/// A 20-byte Ethereum address: the one address type of the workspace (alloy's, so that it
/// prints EIP-55 checksummed, parses `0x` hex and converts to and from `[u8; 20]` with `From`).
pub use alloy_primitives::Address;
pub use error::{Error, Result};
pub use recover::{RecoverError, recover_address};
pub use report::{
    AttestationReport, Nonce, ReportData, Signer, SigningAlgo, TeeKind, parse_address, parse_ed25519_key,
};
pub use signature::{SignatureRecord, sha256_hex, signature_text};

/// Seconds since the Unix epoch by the host clock (0 if the clock is before 1970). The one clock
/// read of the workspace: verification code takes the time as an argument instead.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
