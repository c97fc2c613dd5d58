//! Simulated TDX quotes for development without a TEE. **They prove nothing.**
//!
//! A simulated quote has the exact TDX v4 layout (48-byte header, 584-byte TD 1.0 report, `u32`
//! signature-data length, signature data), so every parser reads it like a real quote. Its
//! measurements are fixed development constants and its report_data is the caller's.
//!
//! Its signature data has Intel's ECDSA layout too, so third-party parsers (dcap-qvl) read it
//! whole and refuse it on the signature section, not on parsing:
//!
//! | bytes of the signature data | content |
//! |---|---|
//! | 0..64 ECDSA signature, 64..128 attestation key | the ASCII marker [`SIMULATED_MARKER`] (33), the *development signature* `sha256(header ‖ body)` (32), zeros |
//! | certification data type (u16), size (u32) | 6: QE report certification data |
//! | QE report (384), QE report signature (64) | zeros |
//! | QE auth data size (u16), data | 0: none |
//! | certification data type (u16), size (u32) | 5 (PCK certificate chain), 0: no certificate |
//!
//! The first 65 bytes (marker, then development signature) are where the devnet's
//! `SimulatedQuoteVerifier` contract reads them. Anyone can compute the development signature; it
//! only detects accidental corruption. The header is a real quote's (Intel's QE vendor id), but there
//! is no PCK certificate and no valid signature, so a DCAP verifier refuses the quote on its own, on
//! the signature section (dcap-qvl: after parsing it whole and checking the header and the
//! collateral, at the PCK certificate chain); [`crate::verify::verify_quote`] refuses it earlier and
//! by name (the marker) unless the caller passes [`crate::verify::Policy::dev_allow_simulated`].
//!
//! ```
//! use cloister_attest::simulated::{is_simulated, simulated_quote};
//! use cloister_attest::quote::parse_quote;
//! use cloister_types::{Nonce, ReportData};
//!
//! let rd = ReportData::new(cloister_types::Address::repeat_byte(0x11), Nonce([0x22; 32]));
//! let quote = simulated_quote(&rd);
//! assert!(is_simulated(&quote));
//! assert_eq!(parse_quote(&quote).unwrap().report_data(), rd.0);
//! ```

use cloister_types::ReportData;
use sha2::{Digest, Sha256, Sha384};

use crate::quote::{self, HEADER_LEN, TD_REPORT10_LEN, TEE_TYPE_TDX};

/// The ASCII marker at the start of a simulated quote's signature data.
pub const SIMULATED_MARKER: &[u8] = b"CLOISTER-SIMULATED-TEE-NOT-SECURE";

/// QE vendor id of simulated quotes: Intel's, as in a real quote, so a DCAP verifier gets past the
/// header and refuses the quote on its signature section. Simulated quotes are recognised by the
/// marker in their signature data ([`is_simulated`]), never by their header.
pub const SIMULATED_QE_VENDOR_ID: [u8; 16] = dcap_qvl::INTEL_QE_VENDOR_ID;

/// Intel's certification data type of the QE report certification data (quote v4 signature).
const CERT_TYPE_QE_REPORT: u16 = 6;
/// Intel's certification data type of a PEM PCK certificate chain.
const CERT_TYPE_PCK_CHAIN: u16 = 5;
/// Sizes in Intel's ECDSA quote signature data.
const ECDSA_SIGNATURE_LEN: usize = 64;
const ATTESTATION_KEY_LEN: usize = 64;
const QE_REPORT_LEN: usize = 384;
const QE_REPORT_SIGNATURE_LEN: usize = 64;

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
    simulated_quote_with_config_id(report_data, &[0u8; 48])
}

/// DEVELOPMENT ONLY: [`simulated_quote`] with `mr_config_id` in MR_CONFIG_ID instead of zeros, so
/// its measurement digest differs (tests of governance allowing one simulated image and not
/// another). It proves nothing, like every simulated quote.
pub fn simulated_quote_with_config_id(report_data: &ReportData, mr_config_id: &[u8; 48]) -> Vec<u8> {
    let mut q = Vec::with_capacity(HEADER_LEN + TD_REPORT10_LEN + 4 + 1024);
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
    q.extend_from_slice(mr_config_id);
    q.extend_from_slice(&[0u8; 48]); // mr_owner
    q.extend_from_slice(&[0u8; 48]); // mr_owner_config
    for label in ["rtmr0", "rtmr1", "rtmr2", "rtmr3"] {
        q.extend_from_slice(&dev_measurement(label));
    }
    q.extend_from_slice(&report_data.0);
    // Signature data in Intel's layout, carrying the development signature over header ‖ body.
    let signature_data = signature_data(&dev_signature(&q));
    q.extend_from_slice(&len_u32(signature_data.len()).to_le_bytes());
    q.extend_from_slice(&signature_data);
    q
}

/// The signature data of a simulated quote whose development signature is `dev_sig` (module docs).
fn signature_data(dev_sig: &[u8; 32]) -> Vec<u8> {
    let mut qe = Vec::with_capacity(QE_REPORT_LEN + QE_REPORT_SIGNATURE_LEN + 2 + 6);
    qe.extend_from_slice(&[0u8; QE_REPORT_LEN]);
    qe.extend_from_slice(&[0u8; QE_REPORT_SIGNATURE_LEN]);
    qe.extend_from_slice(&0u16.to_le_bytes());
    qe.extend_from_slice(&CERT_TYPE_PCK_CHAIN.to_le_bytes());
    qe.extend_from_slice(&0u32.to_le_bytes());

    // ECDSA signature ‖ attestation key: the marker and the development signature, then zeros.
    let mut key_and_signature = [0u8; ECDSA_SIGNATURE_LEN + ATTESTATION_KEY_LEN];
    let (marker, rest) = key_and_signature.split_at_mut(SIMULATED_MARKER.len());
    marker.copy_from_slice(SIMULATED_MARKER);
    if let Some(slot) = rest.get_mut(..dev_sig.len()) {
        slot.copy_from_slice(dev_sig);
    }
    let mut sig = Vec::with_capacity(key_and_signature.len() + 6 + qe.len());
    sig.extend_from_slice(&key_and_signature);
    sig.extend_from_slice(&CERT_TYPE_QE_REPORT.to_le_bytes());
    sig.extend_from_slice(&len_u32(qe.len()).to_le_bytes());
    sig.extend_from_slice(&qe);
    sig
}

/// A length that is small by construction (a few hundred bytes) as the quote's `u32`.
fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
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
    q.signature_data == signature_data(&dev_signature(signed))
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
        let rd = ReportData::new(cloister_types::Address::repeat_byte(0xab), Nonce([0xcd; 32]));
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
    fn dcap_qvl_parses_it_whole() {
        let rd = ReportData([0x5a; 64]);
        let raw = simulated_quote(&rd);
        let quote = dcap_qvl::quote::Quote::parse(&raw).unwrap();
        assert_eq!(quote.header.version, 4);
        assert_eq!(quote.header.qe_vendor_id, SIMULATED_QE_VENDOR_ID);
        let dcap_qvl::quote::Report::TD10(td) = &quote.report else {
            panic!("not TD 1.0")
        };
        assert_eq!(td.report_data, rd.0);
        let dcap_qvl::quote::AuthData::V4(auth) = &quote.auth_data else {
            panic!("not v4 auth data")
        };
        assert!(auth.ecdsa_signature.starts_with(SIMULATED_MARKER));
        assert_eq!(auth.certification_data.cert_type, CERT_TYPE_QE_REPORT);
        assert!(auth.qe_report_data.qe_auth_data.data.is_empty());
        assert_eq!(
            auth.qe_report_data.certification_data.cert_type,
            CERT_TYPE_PCK_CHAIN
        );
        assert!(quote.raw_cert_chain().unwrap().is_empty());
    }

    /// The devnet contract's view: signature data = marker ‖ sha256(quote[0..632]) ‖ ...
    #[test]
    fn the_first_65_signature_bytes_are_marker_then_dev_signature() {
        let raw = simulated_quote(&ReportData([9; 64]));
        let signed = HEADER_LEN + TD_REPORT10_LEN;
        let sig = &raw[signed + 4..];
        assert_eq!(&sig[..33], SIMULATED_MARKER);
        assert_eq!(sig[33..65], dev_signature(&raw[..signed]));
        assert_eq!(&raw[12..28], &SIMULATED_QE_VENDOR_ID);
    }

    /// dcap-qvl, given real collateral at a time it is valid, parses the quote whole, accepts its
    /// header, and refuses it on the signature section (the PCK certificate chain it lacks), never
    /// as undecodable or for its header. Needs the corpus; skips without it.
    #[test]
    fn dcap_qvl_refuses_it_on_verification_not_on_parsing() {
        let dir =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/attestation");
        let dir = std::env::var_os("CLOISTER_ATTESTATION_TESTDATA").map_or(dir, Into::into);
        let Ok(json) = std::fs::read(dir.join("dcap-qvl/tdx_quote_collateral.json")) else {
            assert!(
                std::env::var("CLOISTER_REQUIRE_CORPUS").as_deref() != Ok("1"),
                "corpus not found at {}",
                dir.display()
            );
            eprintln!("skipping: attestation corpus not found at {}", dir.display());
            return;
        };
        let collateral = crate::collateral::load_collateral_json(&json).unwrap();
        // The corpus's own quote verifies with this collateral at this time.
        const AT: u64 = 1_752_919_234;
        let verifier = dcap_qvl::verify::QuoteVerifier::new_prod();
        let err = verifier
            .verify(&simulated_quote(&ReportData([7; 64])), &collateral, AT)
            .unwrap_err();
        let text = format!("{err:#}");
        assert!(!text.contains("decode"), "{text}");
        assert!(!text.contains("vendor"), "{text}");
        assert!(!text.contains("Unsupported"), "{text}");
        // dcap-qvl: "Certificate chain is too short in quote" (the empty PCK chain).
        assert!(
            text.contains("Certificate chain"),
            "refused at the PCK chain: {text}"
        );
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
