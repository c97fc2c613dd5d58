//! Quote verification: DCAP through dcap-qvl, plus Cloister's policy, as a list of named checks
//! ([`QuoteCheck`]s).
//!
//! [`verify_quote`] never panics and never returns an error: whatever goes wrong becomes a failing
//! [`Check`] in the [`QuoteVerdict`], and the verdict fails closed ([`QuoteVerdict::passed`] is
//! true only when the DCAP chain verified, or a simulated quote was explicitly allowed, and no
//! check failed). The verification time is always the caller's `now_unix`; this module never reads
//! the clock, the network or the file system.

use dcap_qvl::QuoteCollateralV3;
use serde::{Deserialize, Serialize};

use crate::check::{Check, Checks, Outcome, QuoteCheck};
use crate::quote::{self, Quote};
use crate::simulated;

mod dcap;

/// What a verifier accepts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Policy {
    /// TCB statuses (dcap-qvl's names, e.g. `UpToDate`, `SWHardeningNeeded`, `OutOfDate`) that
    /// pass. Default: only `UpToDate`.
    pub accepted_tcb_statuses: Vec<String>,
    /// Accept debug TDs/enclaves (their memory is readable by the host). Default: false, which is
    /// also dcap-qvl's own default; when true, dcap-qvl is told to allow them too.
    pub allow_debug: bool,
    /// Accept Cloister simulated quotes, with a loud warning. Development only. Default: false.
    pub allow_simulated: bool,
    /// Intel security advisories (e.g. `INTEL-SA-00615`) that fail verification even when the
    /// TCB status is accepted. Default: none (advisories are listed as a warning).
    pub rejected_advisories: Vec<String>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            accepted_tcb_statuses: vec!["UpToDate".to_owned()],
            allow_debug: false,
            allow_simulated: false,
            rejected_advisories: Vec::new(),
        }
    }
}

impl Policy {
    /// The default policy, but simulated quotes pass (with a warning). Development only.
    pub fn dev_allow_simulated() -> Self {
        Self {
            allow_simulated: true,
            ..Self::default()
        }
    }

    /// This policy, accepting exactly these TCB statuses.
    pub fn with_accepted_tcb_statuses<I, S>(mut self, statuses: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.accepted_tcb_statuses = statuses.into_iter().map(Into::into).collect();
        self
    }

    /// This policy, rejecting quotes to which any of these Intel advisories applies.
    pub fn with_rejected_advisories<I, S>(mut self, advisories: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.rejected_advisories = advisories.into_iter().map(Into::into).collect();
        self
    }
}

/// The result of [`verify_quote`].
#[derive(Clone, Debug, Default, Serialize)]
pub struct QuoteVerdict {
    /// Every check, in order.
    pub checks: Checks,
    /// Combined TCB status from dcap-qvl (`"Simulated"` for an allowed simulated quote).
    pub tcb_status: Option<String>,
    /// Intel security advisories that apply to the platform or QE.
    pub advisory_ids: Vec<String>,
    /// The QE's own TCB status.
    pub qe_status: Option<String>,
    /// The platform's TCB status.
    pub platform_status: Option<String>,
    /// The decoded quote, when it parsed.
    pub quote: Option<Quote>,
    /// Whether the quote is a Cloister simulated quote.
    pub simulated: bool,
    /// dcap-qvl's (or the decoder's) error text, verbatim, when verification failed.
    pub error: Option<String>,
}

impl QuoteVerdict {
    /// [`Checks::passed`]: no check failed, and the quote was verified (by DCAP, or as an
    /// explicitly allowed simulated quote: every other path fails a check).
    pub fn passed(&self) -> bool {
        self.checks.passed()
    }

    /// The first failing check, if any.
    pub fn first_failure(&self) -> Option<&Check> {
        self.checks.first_failure()
    }
}

/// Verifies a quote (binary, or hex as [`quote::decode_quote_bytes`] accepts) against collateral
/// at time `now_unix` (seconds), under `policy`.
///
/// The steps, each its own function composed here: parse (`parse_step`), the simulation marker
/// (`simulated_step`), the debug attribute (`debug_check`), collateral (`collateral_step`),
/// dcap-qvl's chain and signature checks (`dcap::dcap_step`) and the TCB policy
/// (`tcb_policy_step`).
pub fn verify_quote(
    raw: &[u8],
    collateral: Option<&QuoteCollateralV3>,
    now_unix: u64,
    policy: &Policy,
) -> QuoteVerdict {
    let mut v = QuoteVerdict::default();
    let Some((parsed, bytes)) = parse_step(raw, &mut v) else {
        return v;
    };
    v.simulated = parsed.signature_data.starts_with(simulated::SIMULATED_MARKER);
    let debug = debug_check(&parsed, policy);
    if v.simulated {
        simulated_step(&bytes, debug, policy, &mut v);
    } else {
        v.checks.push(Check::pass(
            QuoteCheck::NotSimulated,
            "the quote carries no simulation marker",
        ));
        let debug_failed = debug.outcome == Outcome::Fail;
        v.checks.push(debug);
        if let Some(collateral) = collateral_step(collateral, &mut v) {
            if let Some(report) = dcap::dcap_step(&bytes, collateral, now_unix, policy, &mut v) {
                tcb_policy_step(report, policy, &mut v);
            }
            if debug_failed && v.error.is_none() {
                v.error = Some("Debug mode is enabled".to_owned());
            }
        }
    }
    v.quote = Some(parsed);
    v
}

/// Step 1: the input decodes and parses. Returns the quote and its bytes, or records why not.
fn parse_step(raw: &[u8], v: &mut QuoteVerdict) -> Option<(Quote, Vec<u8>)> {
    let parsed = quote::decode_quote_bytes(raw).and_then(|bytes| Ok((quote::parse_quote(&bytes)?, bytes)));
    match parsed {
        Ok((parsed, bytes)) => {
            let trailing = match parsed.trailing_len {
                0 => String::new(),
                n => format!(", {n} trailing bytes ignored"),
            };
            v.checks.push(Check::pass(
                QuoteCheck::QuoteParses,
                format!("{}, {} bytes{trailing}", parsed.describe(), parsed.total_len),
            ));
            Some((parsed, bytes))
        }
        Err(e) => {
            let text = e.to_string();
            v.checks.push(Check::fail(QuoteCheck::QuoteParses, text.clone()));
            v.error = Some(text);
            None
        }
    }
}

/// Step 2 for a Cloister simulated quote: refused unless the policy allows simulated evidence,
/// and then accepted (with a warning) only if its development signature matches.
fn simulated_step(bytes: &[u8], debug: Check, policy: &Policy, v: &mut QuoteVerdict) {
    if !policy.allow_simulated {
        v.checks.push(Check::fail(
            QuoteCheck::NotSimulated,
            "this is a development quote from a SIMULATED TEE (CLOISTER-SIMULATED-TEE-NOT-SECURE): \
             it proves nothing about the code or the hardware; refused unless the verifier \
             explicitly allows simulated evidence",
        ));
        v.checks.push(debug);
        skip_dcap(&mut v.checks, "a simulated quote has no DCAP signature");
        v.error = Some("simulated quote refused by policy".to_owned());
        return;
    }
    v.checks.push(Check::warn(
        QuoteCheck::NotSimulated,
        "SIMULATED TEE, NOT SECURE: accepted only because the policy allows simulated evidence \
         (development); no DCAP check is possible and nothing about the code, the hardware or \
         the secrecy of prompts is proven",
    ));
    v.checks.push(if simulated::dev_signature_matches(bytes) {
        Check::pass(
            QuoteCheck::SimulatedDevSignature,
            "sha256(header ‖ body) matches (integrity only, anyone can compute it)",
        )
    } else {
        Check::fail(
            QuoteCheck::SimulatedDevSignature,
            "the simulated quote was altered after it was made: its development signature \
             does not match its header and body",
        )
    });
    v.checks.push(debug);
    skip_dcap(&mut v.checks, "a simulated quote has no DCAP signature");
    v.tcb_status = Some("Simulated".to_owned());
}

/// Step 3: the TD / enclave is not in debug mode (or the policy allows it, with a warning).
fn debug_check(q: &Quote, policy: &Policy) -> Check {
    match (q.is_debug(), policy.allow_debug) {
        (false, _) => Check::pass(QuoteCheck::DebugOff, "production TD/enclave (debug bit clear)"),
        (true, true) => Check::warn(
            QuoteCheck::DebugOff,
            "DEBUG TD/enclave: the host can read its memory; accepted only because the policy allows debug",
        ),
        (true, false) => Check::fail(
            QuoteCheck::DebugOff,
            "debug TD/enclave: the host can read its memory",
        ),
    }
}

/// Step 4: collateral was supplied; without it every DCAP check is skipped.
fn collateral_step<'c>(
    collateral: Option<&'c QuoteCollateralV3>,
    v: &mut QuoteVerdict,
) -> Option<&'c QuoteCollateralV3> {
    let Some(collateral) = collateral else {
        v.checks.push(Check::fail(
            QuoteCheck::CollateralPresent,
            "no collateral: the DCAP signature chain cannot be checked (fetch it from a PCCS, or pass a file)",
        ));
        skip_dcap(&mut v.checks, "no collateral");
        v.checks
            .push(Check::skip(QuoteCheck::TcbAccepted, "no collateral"));
        v.error = Some("no collateral".to_owned());
        return None;
    };
    v.checks.push(Check::pass(
        QuoteCheck::CollateralPresent,
        "TCB info, QE identity, CRLs and issuer chains",
    ));
    Some(collateral)
}

/// Step 6 (after dcap-qvl verified): the advisories and the TCB status under the policy.
fn tcb_policy_step(report: dcap_qvl::verify::VerifiedReport, policy: &Policy, v: &mut QuoteVerdict) {
    let status = report.status.clone();
    v.checks.push(advisories_check(
        &report.advisory_ids,
        &policy.rejected_advisories,
    ));
    let detail = format!(
        "status {status}; advisories: {}; QE {}; platform {}; policy accepts {}",
        list_or_none(&report.advisory_ids),
        status_with_advisories(&report.qe_status),
        status_with_advisories(&report.platform_status),
        list_or_none(&policy.accepted_tcb_statuses),
    );
    v.checks.push(if policy.accepted_tcb_statuses.contains(&status) {
        Check::pass(QuoteCheck::TcbAccepted, detail)
    } else {
        Check::fail(QuoteCheck::TcbAccepted, detail)
    });
    v.advisory_ids = report.advisory_ids;
    v.qe_status = Some(report.qe_status.status.to_string());
    v.platform_status = Some(report.platform_status.status.to_string());
    v.tcb_status = Some(status);
}

/// Every DCAP check skipped for `why` (no collateral, or a simulated quote).
fn skip_dcap(checks: &mut Checks, why: &str) {
    checks.extend(QuoteCheck::DCAP.iter().map(|id| Check::skip(*id, why)));
}

fn advisories_check(ids: &[String], rejected: &[String]) -> Check {
    let hit: Vec<&str> = ids
        .iter()
        .filter(|id| rejected.iter().any(|r| r.eq_ignore_ascii_case(id)))
        .map(String::as_str)
        .collect();
    if !hit.is_empty() {
        Check::fail(
            QuoteCheck::Advisories,
            format!("the policy rejects {} (all: {})", hit.join(", "), ids.join(", ")),
        )
    } else if ids.is_empty() {
        Check::pass(QuoteCheck::Advisories, "none")
    } else {
        Check::warn(QuoteCheck::Advisories, ids.join(", "))
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

fn status_with_advisories(s: &dcap_qvl::tcb_info::TcbStatusWithAdvisory) -> String {
    if s.advisory_ids.is_empty() {
        s.status.to_string()
    } else {
        format!("{} ({})", s.status, s.advisory_ids.join(", "))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use cloister_types::{Nonce, ReportData};

    use super::*;
    use crate::simulated::simulated_quote;

    fn outcome(v: &QuoteVerdict, id: QuoteCheck) -> Option<Outcome> {
        v.checks.outcome(id)
    }

    #[test]
    fn garbage_fails_the_parse_check() {
        let v = verify_quote(b"\x04\x00garbage", None, 0, &Policy::default());
        assert!(!v.passed());
        assert_eq!(outcome(&v, QuoteCheck::QuoteParses), Some(Outcome::Fail));
        assert!(v.error.is_some());
        let v = verify_quote(b"", None, 0, &Policy::default());
        assert!(!v.passed());
    }

    #[test]
    fn production_policy_refuses_simulated_quotes() {
        let q = simulated_quote(&ReportData::new(
            cloister_types::Address::repeat_byte(1),
            Nonce([2; 32]),
        ));
        let v = verify_quote(&q, None, 0, &Policy::default());
        assert!(!v.passed());
        assert!(v.simulated);
        let c = v.first_failure().unwrap();
        assert_eq!(c.id, QuoteCheck::NotSimulated.into());
        assert!(c.detail.contains("development quote"), "{}", c.detail);
        assert_eq!(v.tcb_status, None);
    }

    #[test]
    fn dev_policy_accepts_simulated_quotes_loudly() {
        let q = simulated_quote(&ReportData::new(
            cloister_types::Address::repeat_byte(1),
            Nonce([2; 32]),
        ));
        let v = verify_quote(&q, None, 0, &Policy::dev_allow_simulated());
        assert!(v.passed(), "{:#?}", v.checks);
        assert_eq!(outcome(&v, QuoteCheck::NotSimulated), Some(Outcome::Warn));
        for id in QuoteCheck::DCAP {
            assert_eq!(outcome(&v, id), Some(Outcome::Skip), "{id}");
        }
        assert_eq!(v.tcb_status.as_deref(), Some("Simulated"));
        let warn = v.checks.iter().find(|c| c.outcome == Outcome::Warn).unwrap();
        assert!(warn.detail.contains("NOT SECURE"));
    }

    #[test]
    fn altered_simulated_quote_fails_even_in_dev() {
        let mut q = simulated_quote(&ReportData([3; 64]));
        q[100] ^= 0xff;
        let v = verify_quote(&q, None, 0, &Policy::dev_allow_simulated());
        assert!(!v.passed());
        assert_eq!(
            outcome(&v, QuoteCheck::SimulatedDevSignature),
            Some(Outcome::Fail)
        );
    }

    #[test]
    fn checks_serialise_for_json_output() {
        let c = Check::warn(QuoteCheck::Advisories, "y");
        let j = serde_json::to_value(&c).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"name": "advisories", "outcome": "warn", "detail": "y"})
        );
        let v = verify_quote(
            &simulated_quote(&ReportData([0; 64])),
            None,
            0,
            &Policy::default(),
        );
        let j = serde_json::to_value(&v).unwrap();
        assert_eq!(j["simulated"], true);
        assert_eq!(j["quote"]["version"], 4);
        assert_eq!(j["checks"][1]["name"], "not simulated");
    }

    #[test]
    fn policy_defaults() {
        let p = Policy::default();
        assert_eq!(p.accepted_tcb_statuses, vec!["UpToDate".to_owned()]);
        assert!(!p.allow_debug && !p.allow_simulated);
        assert!(Policy::dev_allow_simulated().allow_simulated);
        let p: Policy = serde_json::from_str(r#"{"allow_debug": true}"#).unwrap();
        assert_eq!(p.accepted_tcb_statuses, vec!["UpToDate".to_owned()]);
        let p = Policy::default().with_accepted_tcb_statuses(["UpToDate", "OutOfDate"]);
        assert_eq!(p.accepted_tcb_statuses.len(), 2);
        assert!(p.rejected_advisories.is_empty());
        let p: Policy = serde_json::from_str(r#"{"rejected_advisories": ["INTEL-SA-00615"]}"#).unwrap();
        assert_eq!(p.rejected_advisories, vec!["INTEL-SA-00615".to_owned()]);
    }

    #[test]
    fn advisories_warn_unless_rejected() {
        let ids = vec!["INTEL-SA-00289".to_owned(), "INTEL-SA-00615".to_owned()];
        assert_eq!(advisories_check(&[], &ids).outcome, Outcome::Pass);
        assert_eq!(advisories_check(&ids, &[]).outcome, Outcome::Warn);
        let c = advisories_check(&ids, &["intel-sa-00615".to_owned()]);
        assert_eq!(c.outcome, Outcome::Fail);
        assert!(c.detail.contains("rejects INTEL-SA-00615"), "{}", c.detail);
    }
}
