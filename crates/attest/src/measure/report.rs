//! dstack attestations found inside a report, and the comparison of what [`super::expected`]
//! computes from their `app_compose` with what their quote (and the report) says.
//!
//! A report may hold several attestations (NEAR AI cloud: `gateway_attestation` and
//! `model_attestations[..]`; a model server: its own fields plus `all_attestations[..]`; a
//! Cloister node: `evidence`). An attestation is any object with a quote (`intel_quote` or
//! `quote`, hex) and an `info` whose `tcb_info.app_compose` is the app-compose.json text; `info`
//! and `tcb_info` may each be a JSON-encoded string.

use std::fmt;

use serde::Serialize;
use serde_json::Value;

use super::{Expected, OsMeasurements, as_object, expected};
use crate::eventlog::verify_event_log;
use crate::measurements::Measurements;
use crate::quote::{Quote, decode_quote_bytes, parse_quote};
use crate::{Error, Result};

/// How deep in a report attestations are looked for (reports nest them two or three levels).
const MAX_DEPTH: usize = 8;

/// The keys a quote goes by in a report.
const QUOTE_KEYS: [&str; 2] = ["intel_quote", "quote"];

/// One dstack attestation inside a report.
#[derive(Clone, Debug)]
pub struct DstackAttestation {
    /// Where in the report it is, e.g. `model_attestations[0]`; `report` for the top level.
    pub path: String,
    /// `info.tcb_info.app_compose`: the app-compose.json text, byte for byte.
    pub app_compose: String,
    /// Compose hashes the report states, with where: `info.tcb_info.compose_hash`,
    /// `info.compose_hash`.
    pub stated_compose_hashes: Vec<(String, String)>,
    /// The attestation's quote.
    pub quote: Quote,
    /// Its `event_log`, when it carries one.
    pub event_log: Option<Value>,
}

/// Every dstack attestation in a report, in document order.
/// [`Error::NoDstackAttestation`] when there is none; a quote that does not decode is an error.
pub fn dstack_attestations(report: &Value) -> Result<Vec<DstackAttestation>> {
    let mut found = Vec::new();
    walk(report, "report".to_owned(), 0, &mut found)?;
    if found.is_empty() {
        return Err(Error::NoDstackAttestation);
    }
    Ok(found)
}

/// Every TDX quote in a report (any `intel_quote` or `quote` hex string), with its path: the
/// reference quotes a `--reference-report` may take the OS registers from.
pub fn quotes(report: &Value) -> Result<Vec<(String, Quote)>> {
    let mut found = Vec::new();
    walk_quotes(report, "report".to_owned(), 0, &mut found)?;
    Ok(found)
}

fn child_path(path: &str, key: &str) -> String {
    if path == "report" {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn walk(value: &Value, path: String, depth: usize, out: &mut Vec<DstackAttestation>) -> Result<()> {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    match value {
        Value::Object(object) => {
            if let Some(att) = attestation(object, &path)? {
                out.push(att);
            }
            for (key, child) in object {
                if key != "info" {
                    walk(child, child_path(&path, key), depth + 1, out)?;
                }
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                walk(child, format!("{path}[{i}]"), depth + 1, out)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn walk_quotes(value: &Value, path: String, depth: usize, out: &mut Vec<(String, Quote)>) -> Result<()> {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    match value {
        Value::Object(object) => {
            for (key, child) in object {
                let here = child_path(&path, key);
                match child.as_str() {
                    Some(hex) if QUOTE_KEYS.contains(&key.as_str()) => {
                        let quote = parse_quote(&decode_quote_bytes(hex.as_bytes())?)?;
                        if quote.td_report().is_some() {
                            out.push((here, quote));
                        }
                    }
                    _ => walk_quotes(child, here, depth + 1, out)?,
                }
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                walk_quotes(child, format!("{path}[{i}]"), depth + 1, out)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn attestation(object: &serde_json::Map<String, Value>, path: &str) -> Result<Option<DstackAttestation>> {
    let Some(quote_hex) = QUOTE_KEYS.iter().find_map(|k| object.get(*k)?.as_str()) else {
        return Ok(None);
    };
    let Some(info) = object.get("info").and_then(as_object) else {
        return Ok(None);
    };
    let Some(tcb) = info.get("tcb_info").and_then(as_object) else {
        return Ok(None);
    };
    let Some(app_compose) = tcb.get("app_compose").and_then(Value::as_str) else {
        return Ok(None);
    };
    let quote = parse_quote(&decode_quote_bytes(quote_hex.as_bytes())?)?;
    let stated_compose_hashes = [("info.tcb_info.compose_hash", &tcb), ("info.compose_hash", &info)]
        .into_iter()
        .filter_map(|(at, o)| Some((at.to_owned(), o.get("compose_hash")?.as_str()?.to_owned())))
        .collect();
    Ok(Some(DstackAttestation {
        path: path.to_owned(),
        app_compose: app_compose.to_owned(),
        stated_compose_hashes,
        quote,
        event_log: object.get("event_log").cloned(),
    }))
}

/// A value [`compare`] checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MeasureField {
    /// The computed compose hash against one the report states.
    ComposeHash,
    /// The computed compose hash against the `compose-hash` event of the verified event log.
    EventLogComposeHash,
    /// The computed MR_CONFIG_ID against the quote's.
    MrConfigId,
    /// The digest from the quote's MRTD/RTMR0..2 and the computed MR_CONFIG_ID against the
    /// quote's own measurement digest.
    MeasurementDigest,
}

impl fmt::Display for MeasureField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ComposeHash => "compose hash",
            Self::EventLogComposeHash => "compose hash (event log)",
            Self::MrConfigId => "MR_CONFIG_ID",
            Self::MeasurementDigest => "measurement digest",
        })
    }
}

/// One computed value next to the reported one.
#[derive(Clone, Debug, Serialize)]
pub struct FieldCheck {
    /// What is compared.
    pub field: MeasureField,
    /// Where the reported value comes from (`quote`, `info.tcb_info.compose_hash`, `event_log`).
    pub reported_in: String,
    /// The computed value, lower-case hex.
    pub computed: String,
    /// The reported value, lower-case hex.
    pub reported: String,
    /// Whether they are equal.
    pub matches: bool,
}

/// What [`compare`] found for one attestation.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    /// [`DstackAttestation::path`].
    pub path: String,
    /// What was computed from `app_compose` and the quote's OS registers.
    pub expected: Expected,
    /// Every comparison made.
    pub fields: Vec<FieldCheck>,
}

impl Comparison {
    /// Every compared value matched.
    pub fn matches(&self) -> bool {
        !self.fields.is_empty() && self.fields.iter().all(|f| f.matches)
    }
}

fn check(field: MeasureField, reported_in: &str, computed: &[u8], reported: String) -> FieldCheck {
    let computed = hex::encode(computed);
    let reported = reported.trim_start_matches("0x").to_ascii_lowercase();
    FieldCheck {
        field,
        reported_in: reported_in.to_owned(),
        matches: computed == reported,
        computed,
        reported,
    }
}

/// Computes the expected values from the attestation's `app_compose` (and the OS registers of
/// its own quote) and compares them with the stated compose hashes, the quote's MR_CONFIG_ID, the
/// quote's measurement digest and, where the event log verifies against the quote, its
/// `compose-hash` event. [`Error::NoRtmrs`] for an SGX quote.
pub fn compare(att: &DstackAttestation) -> Result<Comparison> {
    let measured = Measurements::from_quote(&att.quote).ok_or(Error::NoRtmrs)?;
    let os = OsMeasurements::from_quote(&att.quote).ok_or(Error::NoRtmrs)?;
    let expected = expected(att.app_compose.as_bytes(), Some(&os));
    let mut fields: Vec<FieldCheck> = att
        .stated_compose_hashes
        .iter()
        .map(|(at, hash)| {
            check(
                MeasureField::ComposeHash,
                at,
                &expected.compose_hash,
                hash.clone(),
            )
        })
        .collect();
    if let Some(log) = &att.event_log {
        // Only a log that replays to the quote's RTMRs vouches for its compose-hash event.
        if let Some(app) = verify_event_log(log, &att.quote).app {
            fields.push(check(
                MeasureField::EventLogComposeHash,
                "event_log",
                &expected.compose_hash,
                app.compose_hash,
            ));
        }
    }
    fields.push(check(
        MeasureField::MrConfigId,
        "quote",
        &expected.mr_config_id,
        hex::encode(measured.mr_config_id),
    ));
    if let Some(digest) = expected.measurement_digest {
        fields.push(check(
            MeasureField::MeasurementDigest,
            "quote",
            &digest,
            hex::encode(measured.digest()),
        ));
    }
    Ok(Comparison {
        path: att.path.clone(),
        expected,
        fields,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;
    use crate::simulated::simulated_quote;
    use cloister_types::{Address, Nonce, ReportData};

    fn quote_hex() -> String {
        hex::encode(simulated_quote(&ReportData::new(
            Address::repeat_byte(1),
            Nonce([2; 32]),
        )))
    }

    #[test]
    fn finds_attestations_in_every_report_shape() {
        let compose = r#"{"manifest_version":2}"#;
        let tcb = json!({"app_compose": compose, "compose_hash": "00"});
        let report = json!({
            "gateway_attestation": {"intel_quote": quote_hex(), "info": {"tcb_info": tcb}},
            "model_attestations": [
                {"intel_quote": quote_hex(), "info": {"tcb_info": tcb.to_string()}},
            ],
            "evidence": {"quote": quote_hex(), "info": json!({"tcb_info": tcb}).to_string()},
            "other": {"quote": quote_hex(), "info": {}},
        });
        let found = dstack_attestations(&report).unwrap();
        let mut paths: Vec<&str> = found.iter().map(|a| a.path.as_str()).collect();
        paths.sort_unstable();
        assert_eq!(
            paths,
            ["evidence", "gateway_attestation", "model_attestations[0]"]
        );
        assert!(found.iter().all(|a| a.app_compose == compose));
        assert!(
            found
                .iter()
                .all(|a| a.stated_compose_hashes[0].0 == "info.tcb_info.compose_hash")
        );
        assert_eq!(quotes(&report).unwrap().len(), 4);
    }

    #[test]
    fn no_attestation_and_bad_quotes_are_errors() {
        let err = dstack_attestations(&json!({"info": {"tcb_info": {"app_compose": "{}"}}}));
        assert!(matches!(err, Err(Error::NoDstackAttestation)));
        let bad = json!({"quote": "zz", "info": {"tcb_info": {"app_compose": "{}"}}});
        assert!(dstack_attestations(&bad).is_err());
        assert!(dstack_attestations(&json!("[")).is_err());
    }

    #[test]
    fn comparison_names_each_mismatch() {
        let compose = r#"{"manifest_version":2}"#;
        let hash = hex::encode(super::super::compose_hash(compose.as_bytes()));
        let report = json!({"quote": quote_hex(), "info": {"tcb_info": {
            "app_compose": compose, "compose_hash": hash }, "compose_hash": "0x00"}});
        let att = dstack_attestations(&report).unwrap().remove(0);
        let c = compare(&att).unwrap();
        let by_field = |f: MeasureField| -> Vec<bool> {
            c.fields
                .iter()
                .filter(|x| x.field == f)
                .map(|x| x.matches)
                .collect()
        };
        assert_eq!(by_field(MeasureField::ComposeHash), [true, false]);
        // The simulated quote's MR_CONFIG_ID is not dstack's, so the digest differs too.
        assert_eq!(by_field(MeasureField::MrConfigId), [false]);
        assert_eq!(by_field(MeasureField::MeasurementDigest), [false]);
        assert!(!c.matches());
    }
}
