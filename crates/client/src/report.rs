//! Fetching and verifying attestation reports, and turning a verdict into an accepted node.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use cloister_attest::check::{CheckId, Outcome, PolicyCheck, QuoteCheck, ReportCheck};
use cloister_attest::report::{BoundE2eeKey, ReportVerdict, Transport, verify_report_over};
use cloister_types::wire::{ATTESTATION_REPORT_PATH, QUERY_MODEL, QUERY_NONCE};
use cloister_types::{AttestationReport, Nonce, TeeKind};
use serde::Serialize;
use serde::ser::SerializeStruct;

use crate::policy::{E2eeMode, Policy, collateral_for};
use crate::{Error, Result, node_base};

mod policy_checks;

/// One verified (or refused) attestation report, with everything needed to show why. Whether it
/// passed is `proof.verdict.passed()` (serialised as `passed`).
#[derive(Clone, Debug)]
pub struct ReportProof {
    /// Which report of the answer this is: `report` for a single report, else `gateway`,
    /// `model[0]`, ... (NEAR AI cloud).
    pub label: String,
    /// The node's base URL.
    pub url: String,
    /// The nonce we sent (hex).
    pub nonce: String,
    /// The report as received.
    pub report: AttestationReport,
    /// Where the quote's collateral came from (or why there is none).
    pub collateral: String,
    /// The verdict: the report's checks, and the checks the client's policy added (measurement
    /// allowlist, NRAS).
    pub verdict: ReportVerdict,
}

impl Serialize for ReportProof {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut out = s.serialize_struct("ReportProof", 6)?;
        out.serialize_field("label", &self.label)?;
        out.serialize_field("url", &self.url)?;
        out.serialize_field("nonce", &self.nonce)?;
        out.serialize_field("report", &self.report)?;
        out.serialize_field("collateral", &self.collateral)?;
        out.serialize_field("passed", &self.verdict.passed())?;
        out.end()
    }
}

/// A node whose report passed verification and the client's policy.
#[derive(Clone, Debug)]
pub struct VerifiedNode {
    /// The node's base URL.
    pub url: String,
    /// The attested signing address.
    pub signer: cloister_types::Signer,
    /// The attested signing address, `0x` + lower-case hex.
    pub signer_hex: String,
    /// The TEE the report states.
    pub tee: Option<TeeKind>,
    /// The quote's measurement digest (hex).
    pub measurement: Option<String>,
    /// The attested E2EE key, when the report binds one.
    pub e2ee: Option<BoundE2eeKey>,
    /// The full proof.
    pub proof: ReportProof,
    /// When it was verified (for the verdict TTL).
    pub verified_at: Instant,
}

impl VerifiedNode {
    /// The TEE as text (`tdx`, `dstack`, `simulated`, or `unstated`).
    pub fn tee_name(&self) -> String {
        self.tee.map_or_else(|| "unstated".to_owned(), |t| t.to_string())
    }

    /// Whether the key binding (if any) names `model`. A binding with no models names none.
    pub fn binds_model(&self, model: &str) -> bool {
        self.e2ee
            .as_ref()
            .is_some_and(|k| k.models.iter().any(|m| m.id == model))
    }

    /// Whether the cached verdict can still be used at `now_unix`.
    pub(crate) fn fresh(&self, policy: &Policy, now_unix: u64) -> bool {
        self.verified_at.elapsed() < policy.verdict_ttl
            && self.e2ee.as_ref().is_none_or(|k| k.expires_at > now_unix)
    }
}

/// Fetches `GET {base}/v1/attestation/report?nonce=..[&model=..]` and returns the body.
pub(crate) async fn fetch_report_body(
    http: &reqwest::Client,
    base: &str,
    nonce: &Nonce,
    model: Option<&str>,
) -> Result<(Bytes, Transport)> {
    let endpoint = format!("{base}{ATTESTATION_REPORT_PATH}");
    let mut query = vec![(QUERY_NONCE, nonce.to_hex())];
    if let Some(model) = model {
        query.push((QUERY_MODEL, model.to_owned()));
    }
    crate::body::fetch(http.get(&endpoint).query(&query), &endpoint).await
}

/// Splits an attestation answer into labelled reports: one report at top level (`report`), or
/// NEAR AI cloud's `{gateway_attestation, model_attestations: [..]}` (`gateway`, `model[0]`, ...).
pub fn split_reports(body: &[u8]) -> std::result::Result<Vec<(String, AttestationReport)>, String> {
    let mut value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("attestation report is not JSON: {e}"))?;
    let Some(obj) = value.as_object_mut() else {
        return Err("attestation report is not a JSON object".into());
    };
    if !obj.contains_key("gateway_attestation") && !obj.contains_key("model_attestations") {
        let report = serde_json::from_value(value)
            .map_err(|e| format!("attestation report is not valid report JSON: {e}"))?;
        return Ok(vec![("report".to_owned(), report)]);
    }
    let mut reports = Vec::new();
    if let Some(gateway) = obj.remove("gateway_attestation").filter(|g| !g.is_null()) {
        let report = serde_json::from_value(gateway)
            .map_err(|e| format!("gateway_attestation is not valid report JSON: {e}"))?;
        reports.push(("gateway".to_owned(), report));
    }
    match obj.remove("model_attestations") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::Array(models)) => {
            for (i, model) in models.into_iter().enumerate() {
                let report = serde_json::from_value(model)
                    .map_err(|e| format!("model_attestations[{i}] is not valid report JSON: {e}"))?;
                reports.push((format!("model[{i}]"), report));
            }
        }
        Some(_) => return Err("model_attestations is not a list".into()),
    }
    if reports.is_empty() {
        return Err("the answer has neither a gateway attestation nor model attestations".into());
    }
    Ok(reports)
}

/// Fetches the attestation answer at `url` with `nonce` and verifies every report in it under
/// `policy`: the quote policy and collateral, then the policy's own checks, added to the verdict
/// (NRAS when [`Policy::nras`] is set, the measurement allowlist when it is not "any"). [`accept`]
/// turns a verdict into an accepted node or a refusal.
pub async fn verify_endpoint(
    http: &reqwest::Client,
    url: &str,
    policy: &Policy,
    nonce: Nonce,
    model: Option<&str>,
) -> Result<Vec<ReportProof>> {
    let base = node_base(url);
    let (body, transport) = fetch_report_body(http, &base, &nonce, model).await?;
    let reports = split_reports(&body).map_err(|detail| Error::BadReport {
        url: base.clone(),
        detail,
    })?;
    let now = policy.now();
    let mut proofs = Vec::new();
    for (label, report) in reports {
        let (collateral, source) =
            collateral_for(report.intel_quote.as_bytes(), &policy.collateral, now).await;
        let mut verdict = verify_report_over(
            &report,
            &nonce,
            collateral.as_ref(),
            now,
            &policy.quote,
            &transport,
        );
        if let Some(nras) = &policy.nras {
            policy_checks::nras(&report, &nonce, nras, now, &mut verdict.checks).await;
        }
        policy_checks::measurement(&policy.allowed_measurements, &mut verdict);
        proofs.push(ReportProof {
            label,
            url: base.clone(),
            nonce: nonce.to_hex(),
            report,
            collateral: source,
            verdict,
        });
    }
    Ok(proofs)
}

/// Applies the client policy to a verified report: simulated evidence, every check (the
/// measurement allowlist and NRAS among them, added by [`verify_endpoint`]), and the E2EE key
/// binding. Returns the accepted node or the refusal, which names the failed [`CheckId`].
pub fn accept(proof: ReportProof, policy: &Policy) -> Result<Arc<VerifiedNode>> {
    let verdict = &proof.verdict;
    let simulated = proof.report.tee == Some(TeeKind::Simulated)
        || cloister_attest::simulated::is_simulated(proof.report.intel_quote.as_bytes());
    if simulated && !policy.allow_simulated() {
        return Err(Error::SimulatedRefused);
    }
    if !verdict.passed() {
        return Err(match verdict.first_failure() {
            Some(failed) => refusal(failed.id, &failed.detail, verdict),
            // No check failed, and none passed.
            None => Error::AttestationRefused {
                check: CheckId::from(QuoteCheck::QuoteParses).scoped(),
                detail: verdict
                    .quote
                    .error
                    .clone()
                    .unwrap_or_else(|| "no check passed".into()),
            },
        });
    }
    // The allowlist is decided by its check alone; a verdict made without it (under another
    // policy) is refused rather than re-checked here.
    if !policy.allowed_measurements.is_any()
        && verdict.checks.outcome(PolicyCheck::MeasurementAllowed) != Some(Outcome::Pass)
    {
        return Err(Error::MeasurementNotAllowed {
            digest: verdict.measurement_digest.clone(),
        });
    }
    let Some(signer) = verdict.signer else {
        return Err(Error::AttestationRefused {
            check: ReportCheck::BindsAddress.into(),
            detail: "no attested signing address".into(),
        });
    };
    if policy.e2ee == E2eeMode::Required && verdict.e2ee.is_none() {
        return Err(Error::E2eeUnavailable);
    }
    Ok(Arc::new(VerifiedNode {
        url: proof.url.clone(),
        signer,
        signer_hex: signer.to_string(),
        tee: proof.report.tee,
        measurement: verdict.measurement_digest.clone(),
        e2ee: verdict.e2ee.clone(),
        proof,
        verified_at: Instant::now(),
    }))
}

/// The refusal for a failed check: by what it checked.
fn refusal(check: CheckId, detail: &str, verdict: &ReportVerdict) -> Error {
    match check {
        CheckId::Report(ReportCheck::KeyBinding | ReportCheck::KeyBindingFresh) => Error::KeyBindingInvalid {
            detail: format!("{check}: {detail}"),
        },
        CheckId::Policy(PolicyCheck::MeasurementAllowed) => Error::MeasurementNotAllowed {
            digest: verdict.measurement_digest.clone(),
        },
        _ => Error::AttestationRefused {
            check,
            detail: detail.to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report_json(address: &str) -> serde_json::Value {
        serde_json::json!({
            "signing_address": address,
            "signing_algo": "ecdsa",
            "request_nonce": "00",
            "intel_quote": "",
        })
    }

    #[test]
    fn a_single_report_is_labelled_report() {
        let body = serde_json::to_vec(&report_json("0x01")).unwrap_or_default();
        let reports = split_reports(&body).unwrap_or_default();
        let labels: Vec<&str> = reports.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(labels, ["report"]);
    }

    #[test]
    fn a_nearai_answer_splits_into_gateway_and_models() {
        let body = serde_json::json!({
            "gateway_attestation": report_json("0x01"),
            "model_attestations": [report_json("0x02"), report_json("0x03")],
        });
        let reports = split_reports(&serde_json::to_vec(&body).unwrap_or_default()).unwrap_or_default();
        let got: Vec<(&str, &str)> = reports
            .iter()
            .map(|(l, r)| (l.as_str(), r.signing_address.as_str()))
            .collect();
        assert_eq!(
            got,
            [("gateway", "0x01"), ("model[0]", "0x02"), ("model[1]", "0x03")]
        );
    }

    #[test]
    fn malformed_answers_are_errors() {
        for body in [
            &b"[]"[..],
            br#"{"gateway_attestation": null, "model_attestations": []}"#,
            br#"{"model_attestations": {}}"#,
            br#"{"model_attestations": [{"signing_address": 1}]}"#,
            b"not json",
        ] {
            assert!(split_reports(body).is_err(), "{}", String::from_utf8_lossy(body));
        }
    }
}
