//! Simulated TDX quotes for development without a TEE. **They prove nothing.**
//!
//! A simulated quote has the exact TDX v4 layout (48-byte header, 584-byte TD 1.0 report, `u32`
//! signature-data length, signature data), so every parser reads it like a real quote. Its
//! measurements are fixed development constants, its report_data is the caller's, and its
//! signature data is the ASCII marker [`SIMULATED_MARKER`] followed by a *development signature*:
//! `sha256(header ‖ body)`. Anyone can compute that; it only detects accidental corruption.
//!
//! The QE vendor id is not Intel's, so a DCAP verifier refuses the quote on its own;
//! [`crate::verify::verify_quote`] refuses it earlier and by name unless the caller passes
//! [`crate::verify::Policy::dev_allow_simulated`].
//!
//! ```
//! use cloister_attest::simulated::{is_simulated, simulated_quote};
//! use cloister_attest::quote::parse_quote;
//! use cloister_types::{Nonce, ReportData};
//!
//! let rd = ReportData::new([0x11; 20], Nonce([0x22; 32]));
//! let quote = simulated_quote(&rd);
//! assert!(is_simulated(&quote));
//! assert_eq!(parse_quote(&quote).unwrap().report_data(), rd.0);
//! ```

use cloister_types::ReportData;
use sha2::{Digest, Sha256, Sha384};

use crate::quote::{self, HEADER_LEN, TD_REPORT10_LEN, TEE_TYPE_TDX};

/// The ASCII marker at the start of a simulated quote's signature data.
pub const SIMULATED_MARKER: &[u8] = b"CLOISTER-SIMULATED-TEE-NOT-SECURE";

/// QE vendor id of simulated quotes (ASCII `CLOISTER-SIM-QE!`; Intel's is different).
pub const SIMULATED_QE_VENDOR_ID: [u8; 16] = *b"CLOISTER-SIM-QE!";

/// TD_ATTRIBUTES of simulated quotes: SEPT_VE_DISABLE set, DEBUG clear (as a production TD).
pub const SIMULATED_TD_ATTRIBUTES: [u8; 8] = [0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00];

/// The constant development measurement named `label` (`mr_td`, `rtmr0`, ...): SHA-384 of
/// `"cloister/simulated/" ‖ label`, so it is recognisable and never all zeros.
pub fn dev_measurement(label: &str) -> [u8; 48] {
    let mut h = Sha384::new();
    h.update(b"cloister/simulated/");
    h.update(label.as_bytes());
    h.finalize().into()
}

/// Builds a simulated TDX v4 quote carrying `report_data`.
pub fn simulated_quote(report_data: &ReportData) -> Vec<u8> {
    let mut q = Vec::with_capacity(HEADER_LEN + TD_REPORT10_LEN + 4 + SIMULATED_MARKER.len() + 32);
    // Header.
    q.extend_from_slice(&4u16.to_le_bytes()); // version
    q.extend_from_slice(&2u16.to_le_bytes()); // attestation key type: ECDSA P-256
    q.extend_from_slice(&TEE_TYPE_TDX.to_le_bytes());
    q.extend_from_slice(&[0u8; 4]); // reserved (qe_svn, pce_svn)
    q.extend_from_slice(&SIMULATED_QE_VENDOR_ID);
    q.extend_from_slice(&[0u8; 20]); // user data
    // TD 1.0 report.
    q.extend_from_slice(&[0u8; 16]); // tee_tcb_svn
    q.extend_from_slice(&dev_measurement("mr_seam"));
    q.extend_from_slice(&[0u8; 48]); // mr_signer_seam: Intel's module
    q.extend_from_slice(&[0u8; 8]); // seam_attributes
    q.extend_from_slice(&SIMULATED_TD_ATTRIBUTES);
    q.extend_from_slice(&[0xe7, 0x02, 0x06, 0x00, 0x00, 0x00, 0x00, 0x00]); // xfam
    q.extend_from_slice(&dev_measurement("mr_td"));
    q.extend_from_slice(&[0u8; 48]); // mr_config_id
    q.extend_from_slice(&[0u8; 48]); // mr_owner
    q.extend_from_slice(&[0u8; 48]); // mr_owner_config
    for label in ["rtmr0", "rtmr1", "rtmr2", "rtmr3"] {
        q.extend_from_slice(&dev_measurement(label));
    }
    q.extend_from_slice(&report_data.0);
    // Signature data: marker, then the development signature over header ‖ body.
    let dev_sig = dev_signature(&q);
    let sig_len = SIMULATED_MARKER.len() + dev_sig.len();
    q.extend_from_slice(&(sig_len as u32).to_le_bytes());
    q.extend_from_slice(SIMULATED_MARKER);
    q.extend_from_slice(&dev_sig);
    q
}

/// Whether `raw` (binary or hex) is a simulated quote: it parses and its signature data starts
/// with [`SIMULATED_MARKER`].
pub fn is_simulated(raw: &[u8]) -> bool {
    let Ok(bytes) = quote::decode_quote_bytes(raw) else {
        return false;
    };
    quote::parse_quote(&bytes).is_ok_and(|q| q.signature_data.starts_with(SIMULATED_MARKER))
}

/// Whether a simulated quote's development signature matches its header and body, i.e. it was
/// not altered after [`simulated_quote`] built it. This is an integrity check, not security.
pub fn dev_signature_matches(raw: &[u8]) -> bool {
    let Ok(bytes) = quote::decode_quote_bytes(raw) else {
        return false;
    };
    let Ok(q) = quote::parse_quote(&bytes) else {
        return false;
    };
    let Some(signed) = bytes.get(..q.signed_len) else {
        return false;
    };
    q.signature_data.strip_prefix(SIMULATED_MARKER) == Some(dev_signature(signed).as_slice())
}

fn dev_signature(header_and_body: &[u8]) -> [u8; 32] {
    Sha256::digest(header_and_body).into()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use cloister_types::Nonce;

    use super::*;
    use crate::quote::{QuoteBody, parse_quote};

    #[test]
    fn layout_is_tdx_v4() {
        let rd = ReportData::new([0xab; 20], Nonce([0xcd; 32]));
        let raw = simulated_quote(&rd);
        let q = parse_quote(&raw).unwrap();
        assert_eq!(q.version, 4);
        assert_eq!(q.tee_type, TEE_TYPE_TDX);
        assert_eq!(q.signed_len, HEADER_LEN + TD_REPORT10_LEN);
        assert_eq!(q.total_len, raw.len());
        assert_eq!(q.report_data(), rd.0);
        assert!(!q.is_debug());
        let QuoteBody::Td10(td) = &q.body else {
            panic!("not TD 1.0")
        };
        assert_eq!(td.mr_td, dev_measurement("mr_td"));
        assert_eq!(td.rtmr[3], dev_measurement("rtmr3"));
        assert!(is_simulated(&raw));
        assert!(is_simulated(hex::encode(&raw).as_bytes()));
        assert!(dev_signature_matches(&raw));
    }

    #[test]
    fn tampering_breaks_the_dev_signature_but_not_the_marker() {
        let mut raw = simulated_quote(&ReportData([1; 64]));
        let last_rd_byte = HEADER_LEN + TD_REPORT10_LEN - 1;
        raw[last_rd_byte] ^= 1;
        assert!(is_simulated(&raw));
        assert!(!dev_signature_matches(&raw));
    }

    #[test]
    fn real_looking_quotes_are_not_simulated() {
        assert!(!is_simulated(b""));
        assert!(!is_simulated(b"garbage"));
        let mut raw = simulated_quote(&ReportData([1; 64]));
        let sig_start = HEADER_LEN + TD_REPORT10_LEN + 4;
        raw[sig_start] = b'X';
        assert!(!is_simulated(&raw));
    }
}
