//! The measurement registers of a TDX quote, and the measurement digest the on-chain registry
//! stores.
//!
//! A TD's identity is its measurements: MRTD (the firmware the TDX module loaded), RTMR0..2
//! (firmware configuration, kernel and command line, extended during boot) and MR_CONFIG_ID
//! (set by the host at launch; dstack puts `0x01 ‖ compose_hash` there). RTMR3 is extended at
//! run time with per-instance events (instance id, key provider, application events), so two
//! instances of one image never share it: it is left out of the [`Measurements::digest`] and
//! checked against the event log instead ([`crate::eventlog`]). See `docs/protocol.md` §7.
//!
//! ```
//! use cloister_attest::measurements::Measurements;
//! use cloister_attest::quote::parse_quote;
//! use cloister_attest::simulated::simulated_quote;
//! use cloister_types::{Nonce, ReportData};
//!
//! let quote = parse_quote(&simulated_quote(&ReportData::new(cloister_types::Address::repeat_byte(1), Nonce([2; 32])))).unwrap();
//! let m = Measurements::from_quote(&quote).unwrap();
//! assert_eq!(m.digest().len(), 32);
//! ```

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::quote::Quote;

/// The measurements and report_data of a TD quote. Serialises every field as lower-case hex.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measurements {
    /// MRTD: measurement of the initial TD contents (the virtual firmware).
    #[serde(with = "hex_array")]
    pub mrtd: [u8; 48],
    /// RTMR0..RTMR3, in register order.
    #[serde(with = "hex_rtmrs")]
    pub rtmr: [[u8; 48]; 4],
    /// MR_CONFIG_ID (dstack: `0x01 ‖ compose_hash ‖ zeros`, or all zero).
    #[serde(with = "hex_array")]
    pub mr_config_id: [u8; 48],
    /// MR_OWNER.
    #[serde(with = "hex_array")]
    pub mr_owner: [u8; 48],
    /// MR_OWNER_CONFIG.
    #[serde(with = "hex_array")]
    pub mr_owner_config: [u8; 48],
    /// MR_SEAM: the TDX module.
    #[serde(with = "hex_array")]
    pub mr_seam: [u8; 48],
    /// TD_ATTRIBUTES (bit 0: debug).
    #[serde(with = "hex_array")]
    pub td_attributes: [u8; 8],
    /// XFAM.
    #[serde(with = "hex_array")]
    pub xfam: [u8; 8],
    /// The 64 report_data bytes.
    #[serde(with = "hex_array")]
    pub report_data: [u8; 64],
}

impl Measurements {
    /// The measurements of a TDX quote; `None` for an SGX quote, which has no RTMRs.
    pub fn from_quote(quote: &Quote) -> Option<Self> {
        let td = quote.td_report()?;
        Some(Self {
            mrtd: td.mr_td,
            rtmr: td.rtmr,
            mr_config_id: td.mr_config_id,
            mr_owner: td.mr_owner,
            mr_owner_config: td.mr_owner_config,
            mr_seam: td.mr_seam,
            td_attributes: td.td_attributes,
            xfam: td.xfam,
            report_data: td.report_data,
        })
    }

    /// The measurement digest registered on chain:
    /// `SHA-256(MRTD ‖ RTMR0 ‖ RTMR1 ‖ RTMR2 ‖ MR_CONFIG_ID)`, 5 × 48 = 240 bytes hashed.
    ///
    /// RTMR3 is excluded: it holds runtime events (instance id, key provider, application
    /// events) that differ between instances of the same image and configuration. The event
    /// log check ([`crate::eventlog::verify_event_log`]) ties RTMR3 to those events instead.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.mrtd);
        h.update(self.rtmr[0]);
        h.update(self.rtmr[1]);
        h.update(self.rtmr[2]);
        h.update(self.mr_config_id);
        h.finalize().into()
    }
}

/// The measurement digest ([`Measurements::digest`]) of a quote; `None` for an SGX quote.
pub fn measurement_digest(quote: &Quote) -> Option<[u8; 32]> {
    Measurements::from_quote(quote).map(|m| m.digest())
}

/// Hex (de)serialisation of fixed-size byte arrays.
mod hex_array {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub(super) fn serialize<S: Serializer, const N: usize>(v: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>, const N: usize>(d: D) -> Result<[u8; N], D::Error> {
        let text = String::deserialize(d)?;
        let bytes = hex::decode(text.trim_start_matches("0x")).map_err(D::Error::custom)?;
        let len = bytes.len();
        bytes
            .try_into()
            .map_err(|_| D::Error::custom(format!("expected {N} bytes, got {len}")))
    }
}

/// Hex (de)serialisation of the four RTMRs as a list.
mod hex_rtmrs {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub(super) fn serialize<S: Serializer>(v: &[[u8; 48]; 4], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(hex::encode))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[[u8; 48]; 4], D::Error> {
        let texts = Vec::<String>::deserialize(d)?;
        if texts.len() != 4 {
            return Err(D::Error::custom(format!("expected 4 RTMRs, got {}", texts.len())));
        }
        let mut out = [[0u8; 48]; 4];
        for (slot, text) in out.iter_mut().zip(&texts) {
            let bytes = hex::decode(text.trim_start_matches("0x")).map_err(D::Error::custom)?;
            *slot = bytes
                .try_into()
                .map_err(|_| D::Error::custom("an RTMR must be 48 bytes"))?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::quote::parse_quote;
    use crate::simulated::simulated_quote;
    use cloister_types::{Nonce, ReportData};

    fn sample() -> Measurements {
        let raw = simulated_quote(&ReportData::new(
            cloister_types::Address::repeat_byte(1),
            Nonce([2; 32]),
        ));
        Measurements::from_quote(&parse_quote(&raw).unwrap()).unwrap()
    }

    #[test]
    fn digest_is_sha256_of_the_five_registers() {
        let mut m = sample();
        m.mrtd = [1; 48];
        m.rtmr = [[2; 48], [3; 48], [4; 48], [5; 48]];
        m.mr_config_id = [6; 48];
        let mut bytes = Vec::new();
        for b in 1u8..=4 {
            bytes.extend_from_slice(&[b; 48]);
        }
        bytes.extend_from_slice(&[6; 48]);
        let want: [u8; 32] = Sha256::digest(&bytes).into();
        assert_eq!(m.digest(), want);
    }

    #[test]
    fn rtmr3_and_report_data_do_not_change_the_digest() {
        let a = sample();
        let mut b = a.clone();
        b.rtmr[3] = [0xff; 48];
        b.report_data = [0xee; 64];
        assert_eq!(a.digest(), b.digest());
        b.rtmr[2][0] ^= 1;
        assert_ne!(a.digest(), b.digest());
    }

    #[test]
    fn hex_round_trip() {
        let m = sample();
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["mrtd"].as_str().unwrap().len(), 96);
        assert_eq!(json["rtmr"].as_array().unwrap().len(), 4);
        let back: Measurements = serde_json::from_value(json).unwrap();
        assert_eq!(back, m);
    }
}
