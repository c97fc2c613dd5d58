//! The report bodies a quote carries (TD 1.0, TD 1.5, SGX enclave), and the bounds-checked
//! reader that decodes them.

use serde::{Serialize, Serializer};

use crate::{Error, Result};

/// A TD report (TDX module 1.0 layout, 584 bytes). Field order is the wire order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TdReport {
    /// TEE TCB security version numbers (TDX module and SEAM loader SVNs).
    #[serde(serialize_with = "hex_ser")]
    pub tee_tcb_svn: [u8; 16],
    /// Measurement of the TDX module.
    #[serde(serialize_with = "hex_ser")]
    pub mr_seam: [u8; 48],
    /// Signer of the TDX module (zero for Intel's).
    #[serde(serialize_with = "hex_ser")]
    pub mr_signer_seam: [u8; 48],
    /// TDX module attributes.
    #[serde(serialize_with = "hex_ser")]
    pub seam_attributes: [u8; 8],
    /// TD attributes; bit 0 of byte 0 is DEBUG.
    #[serde(serialize_with = "hex_ser")]
    pub td_attributes: [u8; 8],
    /// Extended features allowed mask.
    #[serde(serialize_with = "hex_ser")]
    pub xfam: [u8; 8],
    /// Measurement of the initial TD contents (firmware).
    #[serde(serialize_with = "hex_ser")]
    pub mr_td: [u8; 48],
    /// Software-defined configuration id (dstack: `0x01 ‖ compose_hash`).
    #[serde(serialize_with = "hex_ser")]
    pub mr_config_id: [u8; 48],
    /// Software-defined owner id.
    #[serde(serialize_with = "hex_ser")]
    pub mr_owner: [u8; 48],
    /// Software-defined owner configuration.
    #[serde(serialize_with = "hex_ser")]
    pub mr_owner_config: [u8; 48],
    /// Runtime measurement registers RTMR0..RTMR3.
    #[serde(serialize_with = "hex_ser_rtmr")]
    pub rtmr: [[u8; 48]; 4],
    /// The 64 bytes chosen by the TD (Cloister: signing address, padding, nonce).
    #[serde(serialize_with = "hex_ser")]
    pub report_data: [u8; 64],
}

/// A TD 1.5 report: the TD 1.0 fields, then two more.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TdReport15 {
    /// The TD 1.0 part.
    #[serde(flatten)]
    pub base: TdReport,
    /// Second TEE TCB SVN (TDX module 1.5).
    #[serde(serialize_with = "hex_ser")]
    pub tee_tcb_svn2: [u8; 16],
    /// Measurement of a service TD bound to this TD (zero when none).
    #[serde(serialize_with = "hex_ser")]
    pub mr_service_td: [u8; 48],
}

/// An SGX enclave report (384 bytes); reserved fields are skipped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EnclaveReport {
    /// CPU security version number.
    #[serde(serialize_with = "hex_ser")]
    pub cpu_svn: [u8; 16],
    /// MISCSELECT.
    pub misc_select: u32,
    /// Enclave attributes; bit 1 of byte 0 is DEBUG.
    #[serde(serialize_with = "hex_ser")]
    pub attributes: [u8; 16],
    /// MRENCLAVE.
    #[serde(serialize_with = "hex_ser")]
    pub mr_enclave: [u8; 32],
    /// MRSIGNER.
    #[serde(serialize_with = "hex_ser")]
    pub mr_signer: [u8; 32],
    /// ISV product id.
    pub isv_prod_id: u16,
    /// ISV security version number.
    pub isv_svn: u16,
    /// The 64 bytes chosen by the enclave.
    #[serde(serialize_with = "hex_ser")]
    pub report_data: [u8; 64],
}

/// The report body of a quote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "body", rename_all = "snake_case")]
pub enum QuoteBody {
    /// TD 1.0 report (v4 TDX, or v5 body type 2).
    Td10(TdReport),
    /// TD 1.5 report (v5 body type 3).
    Td15(TdReport15),
    /// SGX enclave report (v3, v4 SGX, or v5 body type 1).
    Sgx(EnclaveReport),
}

pub(super) fn read_td_report(r: &mut Reader<'_>) -> Result<TdReport> {
    const W: &str = "TD report";
    Ok(TdReport {
        tee_tcb_svn: r.array(W)?,
        mr_seam: r.array(W)?,
        mr_signer_seam: r.array(W)?,
        seam_attributes: r.array(W)?,
        td_attributes: r.array(W)?,
        xfam: r.array(W)?,
        mr_td: r.array(W)?,
        mr_config_id: r.array(W)?,
        mr_owner: r.array(W)?,
        mr_owner_config: r.array(W)?,
        rtmr: [r.array(W)?, r.array(W)?, r.array(W)?, r.array(W)?],
        report_data: r.array(W)?,
    })
}

pub(super) fn read_enclave_report(r: &mut Reader<'_>) -> Result<EnclaveReport> {
    const W: &str = "SGX enclave report";
    let cpu_svn = r.array(W)?;
    let misc_select = r.u32(W)?;
    r.bytes(28, W)?;
    let attributes = r.array(W)?;
    let mr_enclave = r.array(W)?;
    r.bytes(32, W)?;
    let mr_signer = r.array(W)?;
    r.bytes(96, W)?;
    let isv_prod_id = r.u16(W)?;
    let isv_svn = r.u16(W)?;
    r.bytes(60, W)?;
    let report_data = r.array(W)?;
    Ok(EnclaveReport {
        cpu_svn,
        misc_select,
        attributes,
        mr_enclave,
        mr_signer,
        isv_prod_id,
        isv_svn,
        report_data,
    })
}

/// A cursor that refuses to read past the end.
pub(super) struct Reader<'a> {
    buf: &'a [u8],
    pub(super) pos: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(super) fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n);
        let slice = end.and_then(|end| self.buf.get(self.pos..end));
        match slice {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(Error::QuoteTruncated {
                what,
                start: self.pos,
                end: end.unwrap_or(usize::MAX),
                len: self.buf.len(),
            }),
        }
    }

    pub(super) fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N]> {
        let s = self.bytes(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    pub(super) fn u16(&mut self, what: &'static str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    pub(super) fn u32(&mut self, what: &'static str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
}

pub(super) fn hex_ser<S: Serializer, T: AsRef<[u8]>>(v: &T, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(v.as_ref()))
}

fn hex_ser_rtmr<S: Serializer>(v: &[[u8; 48]; 4], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(hex::encode))
}
