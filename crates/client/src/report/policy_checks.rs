//! The checks a client's [`Policy`](crate::Policy) adds to a report verdict: the measurement
//! allowlist and NRAS. Each is applied here and only here; [`super::accept`] reads their outcome.

use cloister_attest::check::{Check, Checks, NrasCheck, PolicyCheck, Scoped};
use cloister_attest::report::ReportVerdict;
use cloister_types::{AttestationReport, Nonce};

use crate::policy::{MeasurementAllowlist, NrasPolicy};

/// The allowlist check (`measurement in the allowed list`), when the allowlist is not "any".
pub(super) fn measurement(allowlist: &MeasurementAllowlist, verdict: &mut ReportVerdict) {
    if allowlist.is_any() {
        return;
    }
    let digest = verdict.measurement_digest.clone();
    let allowed = allowlist.allows(digest.as_deref());
    let digest = digest.unwrap_or_else(|| "(unreadable)".into());
    verdict.checks.push(if allowed {
        Check::pass(PolicyCheck::MeasurementAllowed, digest)
    } else {
        Check::fail(
            PolicyCheck::MeasurementAllowed,
            format!("{digest} is not in the allowed list"),
        )
    });
}

/// The online GPU check: posts the report's GPU evidence to NRAS and verifies its JWTs at `now`.
/// Appends NRAS's checks, scoped (`NRAS: …`); a report without GPU evidence has nothing to send
/// (a skip), and an NRAS that cannot be reached fails `NRAS: service answered`.
pub(super) async fn nras(
    report: &AttestationReport,
    nonce: &Nonce,
    nras: &NrasPolicy,
    now: u64,
    checks: &mut Checks,
) {
    let Some(payload) = report
        .nvidia_payload
        .as_deref()
        .filter(|p| !p.trim().is_empty() && p.trim() != "null")
    else {
        checks.push(Check::skip(PolicyCheck::NrasEvidence, "no GPU evidence to send"));
        return;
    };
    match cloister_attest::nras::attest_remote(&nras.url, payload, &nras.jwks_url).await {
        Ok((body, jwks)) => {
            let v = cloister_attest::nras::verify_nras_response(&body, &jwks, &nonce.0, now);
            checks.absorb(
                v.checks,
                true,
                Scoped::Nras(NrasCheck::OverallResult),
                "NRAS's answer did not verify",
            );
        }
        Err(e) => checks.push(Check::fail(
            PolicyCheck::NrasServiceAnswered,
            format!("{}: {e}", nras.url),
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use cloister_attest::check::{CheckId, Outcome};

    use super::*;

    fn report(nvidia_payload: Option<&str>) -> AttestationReport {
        let mut r: AttestationReport = serde_json::from_value(serde_json::json!({
            "signing_address": "", "signing_algo": "", "request_nonce": "", "intel_quote": ""
        }))
        .unwrap();
        r.nvidia_payload = nvidia_payload.map(str::to_owned);
        r
    }

    fn verdict(digest: Option<&str>) -> ReportVerdict {
        let policy = cloister_attest::verify::Policy::default();
        let mut v = cloister_attest::report::verify_report(&report(None), &Nonce([0; 32]), None, 0, &policy);
        v.measurement_digest = digest.map(str::to_owned);
        v
    }

    #[test]
    fn the_allowlist_is_a_check() {
        let d = "ab".repeat(32);
        let mut v = verdict(Some(&d));
        measurement(&MeasurementAllowlist::any(), &mut v);
        assert_eq!(v.checks.outcome(PolicyCheck::MeasurementAllowed), None);
        measurement(&MeasurementAllowlist::of([d.clone()]), &mut v);
        assert_eq!(
            v.checks.outcome(PolicyCheck::MeasurementAllowed),
            Some(Outcome::Pass)
        );
        let mut v = verdict(None);
        measurement(&MeasurementAllowlist::of([d]), &mut v);
        let c = v.checks.get(PolicyCheck::MeasurementAllowed).cloned().unwrap();
        assert_eq!(c.id, CheckId::Policy(PolicyCheck::MeasurementAllowed));
        assert_eq!(c.outcome, Outcome::Fail);
        assert_eq!(c.detail, "(unreadable) is not in the allowed list");
        assert_eq!(c.id.to_string(), "measurement in the allowed list");
    }

    #[tokio::test]
    async fn a_report_without_gpu_evidence_sends_nothing_to_nras() {
        let mut v = verdict(None);
        // Never contacted: there is no evidence to send.
        let unreachable = NrasPolicy {
            url: "http://127.0.0.1:1/".into(),
            jwks_url: "http://127.0.0.1:1/".into(),
        };
        nras(
            &report(Some("null")),
            &Nonce([0; 32]),
            &unreachable,
            0,
            &mut v.checks,
        )
        .await;
        assert_eq!(v.checks.outcome(PolicyCheck::NrasEvidence), Some(Outcome::Skip));
        // With evidence, an NRAS that cannot be reached fails by name.
        nras(
            &report(Some("{}")),
            &Nonce([0; 32]),
            &unreachable,
            0,
            &mut v.checks,
        )
        .await;
        let failed = v.checks.get(PolicyCheck::NrasServiceAnswered).unwrap();
        assert_eq!(failed.outcome, Outcome::Fail);
        assert_eq!(failed.id.to_string(), "NRAS: service answered");
    }
}
