//! SPDM 1.1 `GET_MEASUREMENTS` request and `MEASUREMENTS` response, as NVIDIA GPUs and NVSwitches
//! return them (request, then response, then a raw P-384 `r || s` signature at the very end).

use thiserror::Error;

/// Length of the `GET_MEASUREMENTS` request that opens the evidence.
pub const REQUEST_LEN: usize = 37;
/// Length of the raw ECDSA P-384 signature that closes the evidence.
pub const SIGNATURE_LEN: usize = 96;
/// SPDM version byte 1.1.
pub const SPDM_VERSION_11: u8 = 0x11;
const GET_MEASUREMENTS: u8 = 0xE0;
const MEASUREMENTS: u8 = 0x60;

/// Why SPDM evidence did not parse.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpdmError {
    /// The evidence ends before a field it declares.
    #[error("evidence truncated: {0}")]
    Truncated(&'static str),
    /// A header byte is not what SPDM 1.1 measurements use.
    #[error("unexpected {field}: 0x{value:02x}")]
    Unexpected {
        /// Which field.
        field: &'static str,
        /// Its value.
        value: u8,
    },
    /// Bytes remain between the opaque data and the signature.
    #[error("{0} unexpected bytes before the signature")]
    TrailingBytes(usize),
}

/// One measurement block of the measurement record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeasurementBlock<'a> {
    /// Measurement index (1-based).
    pub index: u8,
    /// Measurement specification (1 = DMTF).
    pub spec: u8,
    /// The measurement bytes (for DMTF: type, size, value).
    pub measurement: &'a [u8],
}

/// A parsed SPDM measurement exchange.
#[derive(Clone, Debug)]
pub struct SpdmEvidence<'a> {
    /// The 37-byte request.
    pub request: &'a [u8],
    /// The SPDM version of the request.
    pub version: u8,
    /// The 32-byte nonce the verifier put in the request.
    pub request_nonce: [u8; 32],
    /// Number of measurement blocks the response declares.
    pub n_blocks: u8,
    /// The measurement blocks.
    pub blocks: Vec<MeasurementBlock<'a>>,
    /// Length of the measurement record.
    pub record_len: usize,
    /// The responder's nonce.
    pub response_nonce: [u8; 32],
    /// NVIDIA opaque data (type-length-value fields).
    pub opaque: &'a [u8],
    /// Everything the signature covers: request || response without signature.
    pub signed: &'a [u8],
    /// Raw `r || s`.
    pub signature: &'a [u8],
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], SpdmError> {
        let end = self.pos.checked_add(n).ok_or(SpdmError::Truncated(what))?;
        let out = self.buf.get(self.pos..end).ok_or(SpdmError::Truncated(what))?;
        self.pos = end;
        Ok(out)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, SpdmError> {
        Ok(self.take(1, what)?[0])
    }
    fn le(&mut self, n: usize, what: &'static str) -> Result<usize, SpdmError> {
        Ok(self
            .take(n, what)?
            .iter()
            .rev()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b)))
    }
}

fn expect(field: &'static str, value: u8, want: u8) -> Result<(), SpdmError> {
    if value == want {
        Ok(())
    } else {
        Err(SpdmError::Unexpected { field, value })
    }
}

/// Parses `request || response || signature`.
pub fn parse(evidence: &[u8]) -> Result<SpdmEvidence<'_>, SpdmError> {
    let body_len = evidence
        .len()
        .checked_sub(SIGNATURE_LEN)
        .ok_or(SpdmError::Truncated("signature"))?;
    let (signed, signature) = evidence.split_at(body_len);
    let mut c = Cursor { buf: signed, pos: 0 };

    let request = c.take(REQUEST_LEN, "request")?;
    let mut r = Cursor { buf: request, pos: 0 };
    let version = r.u8("request version")?;
    expect("request SPDM version", version, SPDM_VERSION_11)?;
    expect("request code", r.u8("request code")?, GET_MEASUREMENTS)?;
    let param1 = r.u8("request param1")?;
    if param1 & 1 == 0 {
        return Err(SpdmError::Unexpected {
            field: "request param1 (signature not requested)",
            value: param1,
        });
    }
    let _operation = r.u8("request param2")?;
    let mut request_nonce = [0u8; 32];
    request_nonce.copy_from_slice(r.take(32, "request nonce")?);

    expect("response SPDM version", c.u8("response version")?, version)?;
    expect("response code", c.u8("response code")?, MEASUREMENTS)?;
    let _param1 = c.u8("response param1")?;
    let _param2 = c.u8("response param2")?;
    let n_blocks = c.u8("number of blocks")?;
    let record_len = c.le(3, "measurement record length")?;
    let record = c.take(record_len, "measurement record")?;
    let mut blocks = Vec::with_capacity(usize::from(n_blocks));
    let mut m = Cursor { buf: record, pos: 0 };
    while m.pos < record.len() {
        let index = m.u8("block index")?;
        let spec = m.u8("block specification")?;
        let size = m.le(2, "block size")?;
        let measurement = m.take(size, "block measurement")?;
        blocks.push(MeasurementBlock {
            index,
            spec,
            measurement,
        });
    }
    if blocks.len() != usize::from(n_blocks) {
        return Err(SpdmError::Truncated(
            "measurement blocks (count differs from header)",
        ));
    }
    let mut response_nonce = [0u8; 32];
    response_nonce.copy_from_slice(c.take(32, "response nonce")?);
    let opaque_len = c.le(2, "opaque length")?;
    let opaque = c.take(opaque_len, "opaque data")?;
    if c.pos != signed.len() {
        return Err(SpdmError::TrailingBytes(signed.len() - c.pos));
    }
    Ok(SpdmEvidence {
        request,
        version,
        request_nonce,
        n_blocks,
        blocks,
        record_len,
        response_nonce,
        opaque,
        signed,
        signature,
    })
}

/// NVIDIA opaque-data field types (nvtrust `OPAQUE_FIELD_ID_*`).
pub mod opaque_field {
    /// Driver version, NUL-terminated text.
    pub const DRIVER_VERSION: u16 = 3;
    /// VBIOS version, 8 raw bytes.
    pub const VBIOS_VERSION: u16 = 6;
    /// Chip SKU, NUL-padded text.
    pub const CHIP_SKU: u16 = 15;
    /// Project, NUL-padded text.
    pub const PROJECT: u16 = 17;
    /// Project SKU, NUL-padded text.
    pub const PROJECT_SKU: u16 = 18;
    /// Firmware ID (48 bytes).
    pub const FWID: u16 = 20;
}

/// The value of the first opaque field of type `ty`, if the opaque data is well formed and has one.
pub fn opaque_field(opaque: &[u8], ty: u16) -> Option<&[u8]> {
    let mut c = Cursor { buf: opaque, pos: 0 };
    while c.pos < opaque.len() {
        let t = c.le(2, "opaque type").ok()?;
        let n = c.le(2, "opaque size").ok()?;
        let v = c.take(n, "opaque value").ok()?;
        if t == usize::from(ty) {
            return Some(v);
        }
    }
    None
}

/// An opaque text field with its NUL padding removed.
pub fn opaque_text(opaque: &[u8], ty: u16) -> Option<String> {
    let v = opaque_field(opaque, ty)?;
    let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
    let s = String::from_utf8_lossy(&v[..end]).into_owned();
    (!s.is_empty()).then_some(s)
}

/// The VBIOS version as NVIDIA prints it, e.g. `96.00.9F.00.01`.
pub fn vbios_version(opaque: &[u8]) -> Option<String> {
    let v = opaque_field(opaque, opaque_field::VBIOS_VERSION)?;
    if v.len() < 5 {
        return None;
    }
    Some(format!(
        "{:02X}.{:02X}.{:02X}.{:02X}.{:02X}",
        v[3], v[2], v[1], v[0], v[4]
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn short_and_garbage_input_is_an_error_not_a_panic() {
        assert!(parse(&[]).is_err());
        assert!(parse(&[0x11; 100]).is_err());
        assert!(parse(&[0xff; 4096]).is_err());
        for n in 0..300 {
            let mut v = vec![0u8; n];
            v.iter_mut().enumerate().for_each(|(i, b)| *b = (i * 7) as u8);
            if n > 3 {
                v[0] = 0x11;
                v[1] = 0xE0;
                v[2] = 1;
            }
            let _ = parse(&v);
        }
    }

    #[test]
    fn opaque_fields() {
        let opaque = [
            3, 0, 4, 0, b'5', b'5', b'0', 0, 6, 0, 8, 0, 0, 0x9f, 0, 0x96, 1, 0, 0, 0,
        ];
        assert_eq!(opaque_text(&opaque, opaque_field::DRIVER_VERSION).unwrap(), "550");
        assert_eq!(vbios_version(&opaque).unwrap(), "96.00.9F.00.01");
        assert_eq!(opaque_field(&opaque[..5], 6), None);
    }
}
