//! Intel DCAP quote decoding: TDX v4 and v5 (TD 1.0 and TD 1.5 bodies) and SGX v3.
//!
//! This is a bounds-checked reader of the quote layout (Intel "TDX DCAP Quoting Library API",
//! appendix A): a 48-byte header, for v5 a 6-byte body descriptor, the report body, then a
//! little-endian `u32` length and that many bytes of signature data. It checks no signature;
//! [`crate::verify`] does that through dcap-qvl. Bytes after the signature data are tolerated and
//! counted in [`Quote::trailing_len`]: guests and test fixtures append padding or text there.
//!
//! Nothing here panics on any input; every read is checked against the input's length.

use serde::Serialize;

use crate::{Error, Result};

mod body;

pub use body::{EnclaveReport, QuoteBody, TdReport, TdReport15};
use body::{Reader, hex_ser, read_enclave_report, read_td_report};

/// The largest quote (binary, including trailing bytes) this crate reads. Real quotes are ~5 KB.
pub const MAX_QUOTE_BYTES: usize = 1 << 20;

/// Length of the quote header.
pub const HEADER_LEN: usize = 48;
/// Length of a v5 body descriptor (`u16` type, `u32` size).
pub const BODY_DESCRIPTOR_LEN: usize = 6;
/// Length of an SGX enclave report body.
pub const ENCLAVE_REPORT_LEN: usize = 384;
/// Length of a TD 1.0 report body.
pub const TD_REPORT10_LEN: usize = 584;
/// Length of a TD 1.5 report body.
pub const TD_REPORT15_LEN: usize = 648;

/// Header TEE type of SGX quotes.
pub const TEE_TYPE_SGX: u32 = 0x0000_0000;
/// Header TEE type of TDX quotes.
pub const TEE_TYPE_TDX: u32 = 0x0000_0081;

const BODY_TYPE_SGX: u16 = 1;
const BODY_TYPE_TD10: u16 = 2;
const BODY_TYPE_TD15: u16 = 3;

/// Which TEE produced the quote (from the header's TEE type).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QuoteTee {
    /// Intel SGX enclave.
    Sgx,
    /// Intel TDX trust domain.
    Tdx,
}

/// A decoded quote. Signatures are *not* checked here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Quote {
    /// Header version: 3, 4 or 5.
    pub version: u16,
    /// Attestation key type (2 = ECDSA P-256, the only one DCAP verifiers accept).
    pub attestation_key_type: u16,
    /// TEE kind from the header.
    pub tee: QuoteTee,
    /// Raw header TEE type (`0` SGX, `0x81` TDX).
    pub tee_type: u32,
    /// QE security version (reserved in TDX v4).
    pub qe_svn: u16,
    /// PCE security version (reserved in TDX v4).
    pub pce_svn: u16,
    /// QE vendor id (Intel's is `939a7233f79c4ca9940a0db3957f0607`).
    #[serde(serialize_with = "hex_ser")]
    pub qe_vendor_id: [u8; 16],
    /// Header user data (first 16 bytes: QE id).
    #[serde(serialize_with = "hex_ser")]
    pub user_data: [u8; 20],
    /// The report body.
    #[serde(flatten)]
    pub body: QuoteBody,
    /// Length of the signed part: header, v5 body descriptor and body.
    pub signed_len: usize,
    /// The signature data (ECDSA signature, attestation key, QE report and certification data).
    #[serde(skip)]
    pub signature_data: Vec<u8>,
    /// Length of the quote proper: signed part, the `u32` length and the signature data.
    pub total_len: usize,
    /// Bytes after the quote proper in the input (ignored).
    pub trailing_len: usize,
}

impl Quote {
    /// The 64 report_data bytes of the body.
    pub fn report_data(&self) -> [u8; 64] {
        match &self.body {
            QuoteBody::Td10(r) => r.report_data,
            QuoteBody::Td15(r) => r.base.report_data,
            QuoteBody::Sgx(r) => r.report_data,
        }
    }

    /// Whether the TD or enclave runs in debug mode (TD_ATTRIBUTES bit 0; SGX ATTRIBUTES bit 1).
    /// A debug TD's memory is readable by the host: its quote proves nothing about secrecy.
    pub fn is_debug(&self) -> bool {
        match &self.body {
            QuoteBody::Td10(r) => r.td_attributes[0] & 0x01 != 0,
            QuoteBody::Td15(r) => r.base.td_attributes[0] & 0x01 != 0,
            QuoteBody::Sgx(r) => r.attributes[0] & 0x02 != 0,
        }
    }

    /// The TD report (TD 1.0 fields) of a TDX quote.
    pub fn td_report(&self) -> Option<&TdReport> {
        match &self.body {
            QuoteBody::Td10(r) => Some(r),
            QuoteBody::Td15(r) => Some(&r.base),
            QuoteBody::Sgx(_) => None,
        }
    }

    /// The enclave report of an SGX quote.
    pub fn enclave_report(&self) -> Option<&EnclaveReport> {
        match &self.body {
            QuoteBody::Sgx(r) => Some(r),
            QuoteBody::Td10(_) | QuoteBody::Td15(_) => None,
        }
    }

    /// A short human description, e.g. `TDX v4 (TD 1.0 body)`.
    pub fn describe(&self) -> String {
        let body = match self.body {
            QuoteBody::Td10(_) => "TD 1.0 body",
            QuoteBody::Td15(_) => "TD 1.5 body",
            QuoteBody::Sgx(_) => "SGX enclave body",
        };
        let tee = match self.tee {
            QuoteTee::Sgx => "SGX",
            QuoteTee::Tdx => "TDX",
        };
        format!("{tee} v{} ({body})", self.version)
    }
}

/// Turns a quote as found in files and JSON into binary.
///
/// Accepts binary (returned unchanged), or ASCII hex with or without `0x`, with whitespace and
/// newlines anywhere. A binary quote starts with its version (`03`, `04` or `05` then `00`), never
/// with an ASCII hex digit or whitespace, so the two cannot be confused.
pub fn decode_quote_bytes(input: &[u8]) -> Result<Vec<u8>> {
    let first = input.first().ok_or(Error::EmptyQuote)?;
    let looks_textual = first.is_ascii_hexdigit() || first.is_ascii_whitespace();
    if !looks_textual {
        if input.len() > MAX_QUOTE_BYTES {
            return Err(Error::QuoteTooLarge {
                len: input.len(),
                max: MAX_QUOTE_BYTES,
            });
        }
        return Ok(input.to_vec());
    }
    let trimmed = input.trim_ascii();
    let digits = trimmed
        .strip_prefix(b"0x")
        .or_else(|| trimmed.strip_prefix(b"0X"))
        .unwrap_or(trimmed);
    if digits.is_empty() {
        return Err(Error::EmptyQuote);
    }
    if digits.len() / 2 > MAX_QUOTE_BYTES {
        return Err(Error::QuoteTooLarge {
            len: digits.len() / 2,
            max: MAX_QUOTE_BYTES,
        });
    }
    let compact: Vec<u8> = digits
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    Ok(hex::decode(compact)?)
}

/// Decodes a binary quote. See the module docs for what is and is not checked.
pub fn parse_quote(raw: &[u8]) -> Result<Quote> {
    if raw.is_empty() {
        return Err(Error::EmptyQuote);
    }
    if raw.len() > MAX_QUOTE_BYTES {
        return Err(Error::QuoteTooLarge {
            len: raw.len(),
            max: MAX_QUOTE_BYTES,
        });
    }
    let mut r = Reader::new(raw);
    let version = r.u16("header")?;
    let attestation_key_type = r.u16("header")?;
    let tee_type = r.u32("header")?;
    let qe_svn = r.u16("header")?;
    let pce_svn = r.u16("header")?;
    let qe_vendor_id = r.array::<16>("header")?;
    let user_data = r.array::<20>("header")?;

    let tee = match tee_type {
        TEE_TYPE_SGX => QuoteTee::Sgx,
        TEE_TYPE_TDX => QuoteTee::Tdx,
        _ => return Err(Error::UnsupportedTeeType { version, tee_type }),
    };

    let body = match (version, tee) {
        (3, QuoteTee::Sgx) | (4, QuoteTee::Sgx) => QuoteBody::Sgx(read_enclave_report(&mut r)?),
        (3, QuoteTee::Tdx) => return Err(Error::UnsupportedTeeType { version, tee_type }),
        (4, QuoteTee::Tdx) => QuoteBody::Td10(read_td_report(&mut r)?),
        (5, _) => {
            let body_type = r.u16("v5 body descriptor")?;
            let size = r.u32("v5 body descriptor")?;
            let (expected, tee_ok) = match body_type {
                BODY_TYPE_SGX => (ENCLAVE_REPORT_LEN, tee == QuoteTee::Sgx),
                BODY_TYPE_TD10 => (TD_REPORT10_LEN, tee == QuoteTee::Tdx),
                BODY_TYPE_TD15 => (TD_REPORT15_LEN, tee == QuoteTee::Tdx),
                other => return Err(Error::UnsupportedBodyType(other)),
            };
            if !tee_ok {
                return Err(Error::UnsupportedTeeType { version, tee_type });
            }
            if usize::try_from(size).ok() != Some(expected) {
                return Err(Error::BodySizeMismatch {
                    body_type,
                    expected,
                    size,
                });
            }
            match body_type {
                BODY_TYPE_SGX => QuoteBody::Sgx(read_enclave_report(&mut r)?),
                BODY_TYPE_TD10 => QuoteBody::Td10(read_td_report(&mut r)?),
                _ => {
                    let base = read_td_report(&mut r)?;
                    let tee_tcb_svn2 = r.array::<16>("TD 1.5 report")?;
                    let mr_service_td = r.array::<48>("TD 1.5 report")?;
                    QuoteBody::Td15(TdReport15 {
                        base,
                        tee_tcb_svn2,
                        mr_service_td,
                    })
                }
            }
        }
        _ => return Err(Error::UnsupportedQuoteVersion(version)),
    };
    let signed_len = r.pos;

    let sig_len = r.u32("signature data length")?;
    let sig_len = usize::try_from(sig_len).unwrap_or(usize::MAX);
    let signature_data = r.bytes(sig_len, "signature data")?.to_vec();
    let total_len = r.pos;

    Ok(Quote {
        version,
        attestation_key_type,
        tee,
        tee_type,
        qe_svn,
        pce_svn,
        qe_vendor_id,
        user_data,
        body,
        signed_len,
        signature_data,
        total_len,
        trailing_len: raw.len().saturating_sub(total_len),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// A syntactically valid quote of the given version/TEE/body with `sig` as signature data.
    fn build(
        version: u16,
        tee_type: u32,
        body_desc: Option<(u16, u32)>,
        body_len: usize,
        sig: &[u8],
    ) -> Vec<u8> {
        let mut q = Vec::new();
        q.extend_from_slice(&version.to_le_bytes());
        q.extend_from_slice(&2u16.to_le_bytes());
        q.extend_from_slice(&tee_type.to_le_bytes());
        q.extend_from_slice(&[0u8; 4]);
        q.extend_from_slice(&[0xaa; 16]);
        q.extend_from_slice(&[0xbb; 20]);
        if let Some((t, s)) = body_desc {
            q.extend_from_slice(&t.to_le_bytes());
            q.extend_from_slice(&s.to_le_bytes());
        }
        let mut body = vec![0u8; body_len];
        // report_data ends the TD 1.0 / SGX part of the body.
        let end = body_len.min(TD_REPORT10_LEN);
        body[end - 64..end].copy_from_slice(&[0x42; 64]);
        q.extend_from_slice(&body);
        q.extend_from_slice(&u32::try_from(sig.len()).unwrap().to_le_bytes());
        q.extend_from_slice(sig);
        q
    }

    #[test]
    fn parses_each_layout() {
        let q = parse_quote(&build(4, TEE_TYPE_TDX, None, TD_REPORT10_LEN, b"sig")).unwrap();
        assert!(matches!(q.body, QuoteBody::Td10(_)));
        assert_eq!(q.signed_len, HEADER_LEN + TD_REPORT10_LEN);
        assert_eq!(q.report_data(), [0x42; 64]);
        assert_eq!(q.signature_data, b"sig");
        assert_eq!(q.trailing_len, 0);

        let q = parse_quote(&build(5, TEE_TYPE_TDX, Some((3, 648)), TD_REPORT15_LEN, b"")).unwrap();
        assert!(matches!(q.body, QuoteBody::Td15(_)));
        assert_eq!(q.signed_len, HEADER_LEN + 6 + TD_REPORT15_LEN);
        assert_eq!(q.report_data(), [0x42; 64]);

        let q = parse_quote(&build(5, TEE_TYPE_TDX, Some((2, 584)), TD_REPORT10_LEN, b"x")).unwrap();
        assert!(matches!(q.body, QuoteBody::Td10(_)));

        let q = parse_quote(&build(3, TEE_TYPE_SGX, None, ENCLAVE_REPORT_LEN, b"x")).unwrap();
        assert!(matches!(q.body, QuoteBody::Sgx(_)));
        assert_eq!(q.tee, QuoteTee::Sgx);
        assert_eq!(q.report_data(), [0x42; 64]);
    }

    #[test]
    fn refuses_inconsistent_headers() {
        let e = parse_quote(&build(6, TEE_TYPE_TDX, None, TD_REPORT10_LEN, b"")).unwrap_err();
        assert!(matches!(e, Error::UnsupportedQuoteVersion(6)), "{e}");
        let e = parse_quote(&build(3, TEE_TYPE_TDX, None, TD_REPORT10_LEN, b"")).unwrap_err();
        assert!(matches!(e, Error::UnsupportedTeeType { .. }), "{e}");
        let e = parse_quote(&build(4, 0x42, None, TD_REPORT10_LEN, b"")).unwrap_err();
        assert!(
            matches!(e, Error::UnsupportedTeeType { tee_type: 0x42, .. }),
            "{e}"
        );
        let e = parse_quote(&build(5, TEE_TYPE_TDX, Some((9, 584)), TD_REPORT10_LEN, b"")).unwrap_err();
        assert!(matches!(e, Error::UnsupportedBodyType(9)), "{e}");
        let e = parse_quote(&build(5, TEE_TYPE_TDX, Some((3, 584)), TD_REPORT15_LEN, b"")).unwrap_err();
        assert!(matches!(e, Error::BodySizeMismatch { .. }), "{e}");
        let e = parse_quote(&build(5, TEE_TYPE_SGX, Some((2, 584)), TD_REPORT10_LEN, b"")).unwrap_err();
        assert!(matches!(e, Error::UnsupportedTeeType { .. }), "{e}");
    }

    #[test]
    fn signature_length_beyond_input_is_truncation() {
        let mut q = build(4, TEE_TYPE_TDX, None, TD_REPORT10_LEN, b"abc");
        let at = HEADER_LEN + TD_REPORT10_LEN;
        q[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let e = parse_quote(&q).unwrap_err();
        assert!(
            matches!(
                e,
                Error::QuoteTruncated {
                    what: "signature data",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn every_truncation_fails_cleanly_and_trailing_bytes_are_counted() {
        let full = build(5, TEE_TYPE_TDX, Some((3, 648)), TD_REPORT15_LEN, &[7; 100]);
        for n in 0..full.len() {
            assert!(parse_quote(&full[..n]).is_err(), "prefix of {n} bytes parsed");
        }
        let mut padded = full.clone();
        padded.extend_from_slice(b"\nextra bytes\n");
        let q = parse_quote(&padded).unwrap();
        assert_eq!(q.total_len, full.len());
        assert_eq!(q.trailing_len, 13);
    }

    #[test]
    fn debug_bits() {
        let mut q = build(4, TEE_TYPE_TDX, None, TD_REPORT10_LEN, b"");
        assert!(!parse_quote(&q).unwrap().is_debug());
        // TD_ATTRIBUTES is at body offset 16+48+48+8 = 120.
        q[HEADER_LEN + 120] = 0x01;
        assert!(parse_quote(&q).unwrap().is_debug());
        let mut s = build(3, TEE_TYPE_SGX, None, ENCLAVE_REPORT_LEN, b"");
        // ATTRIBUTES is at body offset 16+4+28 = 48.
        s[HEADER_LEN + 48] = 0x02;
        assert!(parse_quote(&s).unwrap().is_debug());
    }

    #[test]
    fn hex_decoding_variants() {
        let bin = build(4, TEE_TYPE_TDX, None, TD_REPORT10_LEN, b"sig");
        let hex_plain = hex::encode(&bin);
        assert_eq!(decode_quote_bytes(&bin).unwrap(), bin);
        assert_eq!(decode_quote_bytes(hex_plain.as_bytes()).unwrap(), bin);
        assert_eq!(
            decode_quote_bytes(format!("0x{hex_plain}\n").as_bytes()).unwrap(),
            bin
        );
        assert_eq!(
            decode_quote_bytes(hex_plain.to_uppercase().as_bytes()).unwrap(),
            bin
        );
        let wrapped: String = hex_plain
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("\r\n ");
        assert_eq!(
            decode_quote_bytes(format!("  {wrapped}\n").as_bytes()).unwrap(),
            bin
        );
        assert!(matches!(decode_quote_bytes(b""), Err(Error::EmptyQuote)));
        assert!(matches!(decode_quote_bytes(b" \n"), Err(Error::EmptyQuote)));
        assert!(matches!(decode_quote_bytes(b"0x"), Err(Error::EmptyQuote)));
        assert!(matches!(decode_quote_bytes(b"abc"), Err(Error::QuoteHex(_))));
        assert!(matches!(decode_quote_bytes(b"0xzz"), Err(Error::QuoteHex(_))));
    }

    #[test]
    fn size_limit() {
        let big = vec![4u8; MAX_QUOTE_BYTES + 1];
        assert!(matches!(parse_quote(&big), Err(Error::QuoteTooLarge { .. })));
        assert!(matches!(
            decode_quote_bytes(&big),
            Err(Error::QuoteTooLarge { .. })
        ));
    }

    #[test]
    fn serialises_as_hex() {
        let q = parse_quote(&build(4, TEE_TYPE_TDX, None, TD_REPORT10_LEN, b"")).unwrap();
        let v = serde_json::to_value(&q).unwrap();
        assert_eq!(v["body"], "td10");
        assert_eq!(v["report_data"], "42".repeat(64));
        assert_eq!(v["rtmr"].as_array().map(Vec::len), Some(4));
        assert_eq!(v["tee"], "tdx");
    }
}
