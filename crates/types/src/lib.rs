//! Wire and protocol types shared by every Cloister component.
//!
//! Nothing here does I/O: these are the bytes that cross trust boundaries, and the rules that bind
//! them together (see `docs/protocol.md`).
//!
//! ```
//! use cloister_types::{ReportData, Nonce, signature_text};
//! let nonce: Nonce = "11".repeat(32).parse().unwrap();
//! let rd = ReportData::new([0xab; 20], nonce);
//! assert_eq!(rd.signing_address(), [0xab; 20]);
//! assert_eq!(rd.nonce(), nonce);
//! assert_eq!(signature_text(b"req", b"resp").len(), 64 + 1 + 64);
//! ```

pub mod e2ee;
pub mod eip712;
mod error;
pub mod openai;
mod report;
mod signature;

pub use error::{Error, Result};
pub use report::{AttestationReport, Nonce, ReportData, SigningAlgo, TeeKind, parse_address};
pub use signature::{SignatureRecord, sha256_hex, signature_text};
