//! The measurements a dstack node will have, computed before it first boots: what governance
//! allowlists (`docs/protocol.md` §7, "Computing the measurement before boot").
//!
//! dstack binds an app's configuration to its TD twice: the compose hash
//! (`SHA-256` of the `app-compose.json` bytes, exactly as deployed) is the `compose-hash` RTMR3
//! event, and the host launches the TD with `MR_CONFIG_ID = 0x01 ‖ compose_hash ‖ 0^15`. MRTD and
//! RTMR0..2 depend only on the OS image and the VM configuration (CPUs, memory, firmware), so they
//! come from dstack's `dstack-mr` tool or from the quote of any node already running that image
//! with that configuration. Together they give the registry's measurement digest
//! ([`Measurements::digest`]).
//!
//! ```
//! use cloister_attest::measure::{OsMeasurements, expected};
//!
//! let compose = br#"{"manifest_version":2,"name":"cloister","runner":"docker-compose"}"#;
//! let os = OsMeasurements::from_json(&format!(
//!     r#"{{"mrtd":"{a}","rtmr0":"0x{a}","rtmr1":"{a}","rtmr2":"{a}"}}"#,
//!     a = "ab".repeat(48)
//! ))
//! .unwrap();
//! let e = expected(compose, Some(&os));
//! assert_eq!(e.mr_config_id[0], 0x01);
//! assert_eq!(e.mr_config_id[1..33], e.compose_hash);
//! assert!(e.measurement_digest.is_some());
//! ```

pub mod report;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::measurements::Measurements;
use crate::quote::Quote;
use crate::{Error, Result};

/// The OS image's registers: MRTD and RTMR0..2, 48 bytes each. They depend on the image and the VM
/// configuration (CPU count, memory, firmware), not on the app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OsMeasurements {
    /// MRTD: the virtual firmware.
    pub mrtd: [u8; 48],
    /// RTMR0: firmware configuration (ACPI tables, CPU and memory layout).
    pub rtmr0: [u8; 48],
    /// RTMR1: the kernel.
    pub rtmr1: [u8; 48],
    /// RTMR2: kernel command line and initrd.
    pub rtmr2: [u8; 48],
}

/// The names each register goes by: `dstack-mr` and dstack's `tcb_info` use the first,
/// dcap-qvl's verified report the second.
const FIELDS: [[&str; 2]; 4] = [
    ["mrtd", "mr_td"],
    ["rtmr0", "rt_mr0"],
    ["rtmr1", "rt_mr1"],
    ["rtmr2", "rt_mr2"],
];

impl OsMeasurements {
    /// Reads the registers from JSON: `dstack-mr`'s output (`{"mrtd", "rtmr0", "rtmr1",
    /// "rtmr2"}`), dcap-qvl's names (`mr_td`, `rt_mr0`..), or an object holding them under
    /// `tcb_info` or `info.tcb_info` (a dstack report; either may be a JSON-encoded string). Hex
    /// with or without `0x`; each value must be 48 bytes.
    pub fn from_json(text: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text).map_err(Error::MeasurementJson)?;
        Self::from_value(&value)
    }

    /// [`Self::from_json`] on a parsed value.
    pub fn from_value(value: &Value) -> Result<Self> {
        let object = registers_object(value).ok_or_else(|| Error::BadMeasurement {
            field: "mrtd",
            reason: "not found (expected dstack-mr's mrtd, rtmr0, rtmr1, rtmr2, at the top \
                     level or under tcb_info or info.tcb_info)"
                .to_owned(),
        })?;
        let mut regs = [[0u8; 48]; 4];
        for (slot, names) in regs.iter_mut().zip(FIELDS) {
            let text = names
                .iter()
                .find_map(|n| object.get(*n))
                .ok_or_else(|| Error::BadMeasurement {
                    field: names[0],
                    reason: "missing".to_owned(),
                })?;
            *slot = parse_register(names[0], text)?;
        }
        let [mrtd, rtmr0, rtmr1, rtmr2] = regs;
        Ok(Self {
            mrtd,
            rtmr0,
            rtmr1,
            rtmr2,
        })
    }

    /// Reads the registers from individual hex strings (with or without `0x`).
    pub fn from_hex(mrtd: &str, rtmr0: &str, rtmr1: &str, rtmr2: &str) -> Result<Self> {
        Ok(Self {
            mrtd: parse_hex48("mrtd", mrtd)?,
            rtmr0: parse_hex48("rtmr0", rtmr0)?,
            rtmr1: parse_hex48("rtmr1", rtmr1)?,
            rtmr2: parse_hex48("rtmr2", rtmr2)?,
        })
    }

    /// The registers of a reference quote: a node on the same OS image with the same VM
    /// configuration. `None` for an SGX quote, which has no RTMRs.
    pub fn from_quote(quote: &Quote) -> Option<Self> {
        let m = Measurements::from_quote(quote)?;
        Some(Self {
            mrtd: m.mrtd,
            rtmr0: m.rtmr[0],
            rtmr1: m.rtmr[1],
            rtmr2: m.rtmr[2],
        })
    }

    /// The registry's measurement digest of a TD on this image launched with `mr_config_id`:
    /// [`Measurements::digest`] itself, so the two cannot drift apart.
    pub fn digest(&self, mr_config_id: &[u8; 48]) -> [u8; 32] {
        Measurements {
            mrtd: self.mrtd,
            // RTMR3 is not part of the digest; its value here is irrelevant.
            rtmr: [self.rtmr0, self.rtmr1, self.rtmr2, [0; 48]],
            mr_config_id: *mr_config_id,
            mr_owner: [0; 48],
            mr_owner_config: [0; 48],
            mr_seam: [0; 48],
            td_attributes: [0; 8],
            xfam: [0; 8],
            report_data: [0; 64],
        }
        .digest()
    }
}

/// What a node running an app-compose.json will measure as.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Expected {
    /// `SHA-256(app-compose.json)`: dstack's `compose-hash` RTMR3 event.
    #[serde(serialize_with = "hex0x")]
    pub compose_hash: [u8; 32],
    /// `0x01 ‖ compose_hash ‖ 0^15`: the MR_CONFIG_ID dstack launches the TD with.
    #[serde(serialize_with = "hex0x")]
    pub mr_config_id: [u8; 48],
    /// The registry's measurement digest; `None` without the OS image's registers.
    #[serde(serialize_with = "hex0x_opt")]
    pub measurement_digest: Option<[u8; 32]>,
}

/// dstack's compose hash: SHA-256 of the app-compose.json bytes exactly as deployed (no
/// re-serialisation: a changed space is a different app).
pub fn compose_hash(app_compose: &[u8]) -> [u8; 32] {
    Sha256::digest(app_compose).into()
}

/// dstack's MR_CONFIG_ID for a compose hash: `0x01 ‖ compose_hash ‖ 0^15` (48 bytes; the first
/// byte is the layout version).
pub fn mr_config_id(compose_hash: &[u8; 32]) -> [u8; 48] {
    let mut id = [0u8; 48];
    id[0] = 0x01;
    id[1..33].copy_from_slice(compose_hash);
    id
}

/// The compose hash, MR_CONFIG_ID and (given the OS image's registers) the measurement digest of
/// an app-compose.json.
pub fn expected(app_compose: &[u8], os: Option<&OsMeasurements>) -> Expected {
    let compose_hash = compose_hash(app_compose);
    let mr_config_id = mr_config_id(&compose_hash);
    Expected {
        compose_hash,
        mr_config_id,
        measurement_digest: os.map(|os| os.digest(&mr_config_id)),
    }
}

/// The object that holds the registers: `value`, else its `tcb_info`, else its `info.tcb_info`;
/// each level may be a JSON-encoded string.
fn registers_object(value: &Value) -> Option<serde_json::Map<String, Value>> {
    let object = as_object(value)?;
    if FIELDS[0].iter().any(|n| object.contains_key(*n)) {
        return Some(object);
    }
    if let Some(tcb) = object.get("tcb_info").and_then(as_object) {
        return registers_object(&Value::Object(tcb));
    }
    let info = object.get("info").and_then(as_object)?;
    let tcb = info.get("tcb_info").and_then(as_object)?;
    FIELDS[0].iter().any(|n| tcb.contains_key(*n)).then_some(tcb)
}

/// An object, or a string holding one (dstack serialises `info`, `tcb_info` and `vm_config`
/// as JSON text in some versions).
pub(crate) fn as_object(value: &Value) -> Option<serde_json::Map<String, Value>> {
    match value {
        Value::Object(o) => Some(o.clone()),
        Value::String(s) => match serde_json::from_str(s) {
            Ok(Value::Object(o)) => Some(o),
            _ => None,
        },
        _ => None,
    }
}

fn parse_register(field: &'static str, value: &Value) -> Result<[u8; 48]> {
    let text = value.as_str().ok_or_else(|| Error::BadMeasurement {
        field,
        reason: "not a hex string".to_owned(),
    })?;
    parse_hex48(field, text)
}

/// 48 bytes of hex, with or without `0x`, surrounding white space ignored.
fn parse_hex48(field: &'static str, text: &str) -> Result<[u8; 48]> {
    let text = text.trim();
    let text = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    let bytes = hex::decode(text).map_err(|e| Error::BadMeasurement {
        field,
        reason: e.to_string(),
    })?;
    let len = bytes.len();
    bytes.try_into().map_err(|_| Error::BadMeasurement {
        field,
        reason: format!("{len} bytes, expected 48"),
    })
}

fn hex0x<S: serde::Serializer, const N: usize>(v: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("0x{}", hex::encode(v)))
}

fn hex0x_opt<S: serde::Serializer>(v: &Option<[u8; 32]>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => hex0x(v, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::quote::parse_quote;
    use crate::simulated::simulated_quote;
    use cloister_types::{Address, Nonce, ReportData};

    fn regs() -> OsMeasurements {
        OsMeasurements {
            mrtd: [1; 48],
            rtmr0: [2; 48],
            rtmr1: [3; 48],
            rtmr2: [4; 48],
        }
    }

    #[test]
    fn compose_hash_is_sha256_of_the_exact_bytes() {
        // SHA-256("") and SHA-256("abc"), FIPS 180-2 test vectors.
        assert_eq!(
            hex::encode(compose_hash(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex::encode(compose_hash(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // No normalisation: the same JSON with other white space is another app.
        assert_ne!(compose_hash(br#"{"a":1}"#), compose_hash(br#"{"a": 1}"#));
    }

    #[test]
    fn mr_config_id_layout() {
        let id = mr_config_id(&[0xaa; 32]);
        assert_eq!(id[0], 0x01);
        assert_eq!(id[1..33], [0xaa; 32]);
        assert_eq!(id[33..], [0; 15]);
    }

    #[test]
    fn digest_is_the_registry_digest_of_the_five_registers() {
        let id = mr_config_id(&[9; 32]);
        let mut bytes = Vec::new();
        for r in [[1u8; 48], [2; 48], [3; 48], [4; 48], id] {
            bytes.extend_from_slice(&r);
        }
        let want: [u8; 32] = Sha256::digest(&bytes).into();
        assert_eq!(regs().digest(&id), want);
        let e = expected(b"{}", Some(&regs()));
        assert_eq!(e.measurement_digest, Some(regs().digest(&e.mr_config_id)));
        assert_eq!(expected(b"{}", None).measurement_digest, None);
    }

    #[test]
    fn digest_from_a_quote_equals_the_quotes_own_digest() {
        let raw = simulated_quote(&ReportData::new(Address::repeat_byte(1), Nonce([2; 32])));
        let quote = parse_quote(&raw).unwrap();
        let m = Measurements::from_quote(&quote).unwrap();
        let os = OsMeasurements::from_quote(&quote).unwrap();
        assert_eq!(os.digest(&m.mr_config_id), m.digest());
    }

    #[test]
    fn json_accepts_dstack_mr_dcap_qvl_and_report_shapes() {
        let a = hex::encode([1u8; 48]);
        let b = hex::encode([2u8; 48]);
        let c = hex::encode([3u8; 48]);
        let d = hex::encode([4u8; 48]);
        let dstack_mr = format!(r#"{{"mrtd":"{a}","rtmr0":"0x{b}","rtmr1":"{c}","rtmr2":"{d}"}}"#);
        assert_eq!(OsMeasurements::from_json(&dstack_mr).unwrap(), regs());
        let qvl = format!(r#"{{"mr_td":"{a}","rt_mr0":"{b}","rt_mr1":"{c}","rt_mr2":"{d}"}}"#);
        assert_eq!(OsMeasurements::from_json(&qvl).unwrap(), regs());
        let tcb = serde_json::json!({"mrtd": a, "rtmr0": b, "rtmr1": c, "rtmr2": d, "rtmr3": a});
        let report = serde_json::json!({"info": {"tcb_info": tcb.to_string()}});
        assert_eq!(OsMeasurements::from_value(&report).unwrap(), regs());
        let report = serde_json::json!({"info": serde_json::json!({"tcb_info": tcb}).to_string()});
        assert_eq!(OsMeasurements::from_value(&report).unwrap(), regs());
        assert_eq!(
            OsMeasurements::from_hex(&a, &b, &c, &format!("0x{d}")).unwrap(),
            regs()
        );
    }

    #[test]
    fn json_errors_name_the_field() {
        let a = hex::encode([1u8; 48]);
        let short = format!(r#"{{"mrtd":"{a}","rtmr0":"{a}","rtmr1":"abcd","rtmr2":"{a}"}}"#);
        let err = OsMeasurements::from_json(&short).unwrap_err();
        assert!(
            matches!(err, Error::BadMeasurement { field: "rtmr1", .. }),
            "{err}"
        );
        let missing = format!(r#"{{"mrtd":"{a}","rtmr0":"{a}","rtmr1":"{a}"}}"#);
        let err = OsMeasurements::from_json(&missing).unwrap_err();
        assert!(
            matches!(err, Error::BadMeasurement { field: "rtmr2", .. }),
            "{err}"
        );
        let not_hex = format!(r#"{{"mrtd":"zz{a}","rtmr0":"{a}","rtmr1":"{a}","rtmr2":"{a}"}}"#);
        assert!(OsMeasurements::from_json(&not_hex).is_err());
        assert!(matches!(
            OsMeasurements::from_json("[1,2").unwrap_err(),
            Error::MeasurementJson(_)
        ));
        assert!(OsMeasurements::from_json(r#"{"name":"x"}"#).is_err());
        assert!(OsMeasurements::from_json(r#"{"mrtd": 5}"#).is_err());
    }

    #[test]
    fn expected_serialises_as_0x_hex() {
        let json = serde_json::to_value(expected(b"{}", None)).unwrap();
        assert!(json["compose_hash"].as_str().unwrap().starts_with("0x"));
        assert_eq!(json["mr_config_id"].as_str().unwrap().len(), 2 + 96);
        assert!(json["measurement_digest"].is_null());
    }
}
