//! Quote verification: DCAP through dcap-qvl, plus Cloister's policy, as a list of named checks.
//!
//! [`verify_quote`] never panics and never returns an error: whatever goes wrong becomes a failing
//! [`Check`] in the [`QuoteVerdict`], and the verdict fails closed ([`QuoteVerdict::passed`] is
//! true only when the DCAP chain verified, or a simulated quote was explicitly allowed, and no
//! check failed). The verification time is always the caller's `now_unix`; this module never reads
//! the clock, the network or the file system.

use std::fmt;

use dcap_qvl::QuoteCollateralV3;
use dcap_qvl::verify::QuoteVerifier;
use dcap_qvl::verify::ring::RingConfig;
use serde::{Deserialize, Serialize};

use crate::quote::{self, Quote};
use crate::simulated;

mod dcap;

/// Check names used by [`verify_quote`] (the CLI and tests match on them).
pub mod names {
    /// The input decodes and parses as a quote.
    pub const QUOTE_PARSES: &str = "quote parses";
    /// The quote is not a Cloister simulated quote (or simulation is allowed, with a warning).
    pub const NOT_SIMULATED: &str = "not simulated";
    /// A simulated quote's development signature matches its body.
    pub const SIMULATED_DEV_SIGNATURE: &str = "simulated dev signature";
    /// The TD / enclave is not in debug mode.
    pub const DEBUG_OFF: &str = "debug attribute off";
    /// Collateral was supplied.
    pub const COLLATERAL_PRESENT: &str = "collateral present";
    /// Label of the DCAP checks as a group ([`DCAP_CHECKS`]); no single check carries it.
    pub const DCAP: &str = "DCAP signature, certificate chain, CRLs and QE identity";
    /// The quote's PCK certificate chains to the Intel SGX Root CA.
    pub const PCK_CHAIN: &str = "PCK certificate chain";
    /// The root CA and PCK CA CRLs are current and revoke nothing in the chains.
    pub const CRLS: &str = "CRLs";
    /// The TCB info is signed by Intel and valid at the verification time.
    pub const TCB_INFO: &str = "TCB info signature and validity";
    /// The QE identity is signed by Intel, valid, and the quote's QE matches it.
    pub const QE_IDENTITY: &str = "QE identity signature and validity";
    /// The PCK key signs the QE report, which binds the attestation key that signs the quote.
    pub const QUOTE_SIGNATURE: &str = "quote signature (QE report and attestation key)";
    /// dcap-qvl found the platform's TCB level; its status is in the detail.
    pub const TCB_LEVEL: &str = "TCB level and status";
    /// Intel security advisories for the platform or QE (a warning when any apply).
    pub const ADVISORIES: &str = "advisories";
    /// The resulting TCB status is one the policy accepts.
    pub const TCB_ACCEPTED: &str = "TCB status accepted";
    /// The checks dcap-qvl's single call decides, in the order [`super::verify_quote`] lists
    /// them (the debug attribute, which Cloister also reads itself, comes earlier).
    pub const DCAP_CHECKS: [&str; 7] = [
        PCK_CHAIN,
        CRLS,
        TCB_INFO,
        QE_IDENTITY,
        QUOTE_SIGNATURE,
        TCB_LEVEL,
        ADVISORIES,
    ];
}

/// The outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The check held.
    Pass,
    /// The check failed: the verdict fails.
    Fail,
    /// The check held only because the policy allowed something risky; read the detail.
    Warn,
    /// The check could not run (an earlier check failed, or it does not apply).
    Skip,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pass => "PASS",
            Self::Fail => "FAIL",
            Self::Warn => "WARN",
            Self::Skip => "SKIP",
        })
    }
}

/// One named check and what it found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// Stable name, e.g. `"TCB status accepted"`.
    pub name: String,
    /// What happened.
    pub outcome: Outcome,
    /// Human-readable explanation (for failures: why).
    pub detail: String,
}

impl Check {
    /// A check with the given outcome.
    pub fn new(name: impl Into<String>, outcome: Outcome, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            outcome,
            detail: detail.into(),
        }
    }

    /// A passing check.
    pub fn pass(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(name, Outcome::Pass, detail)
    }

    /// A failing check.
    pub fn fail(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(name, Outcome::Fail, detail)
    }

    /// A warning.
    pub fn warn(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(name, Outcome::Warn, detail)
    }

    /// A skipped check.
    pub fn skip(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(name, Outcome::Skip, detail)
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}: {}", self.outcome, self.name, self.detail)
    }
}

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
    pub checks: Vec<Check>,
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
    /// True when no check failed and the quote was verified: by DCAP, or as an explicitly
    /// allowed simulated quote.
    pub fn passed(&self) -> bool {
        self.tcb_status.is_some()
            && !self.checks.is_empty()
            && self.checks.iter().all(|c| c.outcome != Outcome::Fail)
    }

    /// The first failing check, if any.
    pub fn first_failure(&self) -> Option<&Check> {
        self.checks.iter().find(|c| c.outcome == Outcome::Fail)
    }
}

/// Verifies a quote (binary, or hex as [`quote::decode_quote_bytes`] accepts) against collateral
/// at time `now_unix` (seconds), under `policy`.
pub fn verify_quote(
    raw: &[u8],
    collateral: Option<&QuoteCollateralV3>,
    now_unix: u64,
    policy: &Policy,
) -> QuoteVerdict {
    let mut v = QuoteVerdict::default();

    let parsed = quote::decode_quote_bytes(raw).and_then(|bytes| Ok((quote::parse_quote(&bytes)?, bytes)));
    let (parsed, bytes) = match parsed {
        Ok(p) => p,
        Err(e) => {
            let text = e.to_string();
            v.checks.push(Check::fail(names::QUOTE_PARSES, text.clone()));
            v.error = Some(text);
            return v;
        }
    };
    let trailing = match parsed.trailing_len {
        0 => String::new(),
        n => format!(", {n} trailing bytes ignored"),
    };
    v.checks.push(Check::pass(
        names::QUOTE_PARSES,
        format!("{}, {} bytes{trailing}", parsed.describe(), parsed.total_len),
    ));

    v.simulated = parsed.signature_data.starts_with(simulated::SIMULATED_MARKER);
    let debug = debug_check(&parsed, policy);
    let debug_failed = debug.outcome == Outcome::Fail;

    if v.simulated {
        if !policy.allow_simulated {
            v.checks.push(Check::fail(
                names::NOT_SIMULATED,
                "this is a development quote from a SIMULATED TEE (CLOISTER-SIMULATED-TEE-NOT-SECURE): \
                 it proves nothing about the code or the hardware; refused unless the verifier \
                 explicitly allows simulated evidence",
            ));
            v.checks.push(debug);
            skip_dcap(&mut v.checks, "a simulated quote has no DCAP signature");
            v.error = Some("simulated quote refused by policy".to_owned());
            v.quote = Some(parsed);
            return v;
        }
        v.checks.push(Check::warn(
            names::NOT_SIMULATED,
            "SIMULATED TEE, NOT SECURE: accepted only because the policy allows simulated evidence \
             (development); no DCAP check is possible and nothing about the code, the hardware or \
             the secrecy of prompts is proven",
        ));
        if simulated::dev_signature_matches(&bytes) {
            v.checks.push(Check::pass(
                names::SIMULATED_DEV_SIGNATURE,
                "sha256(header ‖ body) matches (integrity only, anyone can compute it)",
            ));
        } else {
            v.checks.push(Check::fail(
                names::SIMULATED_DEV_SIGNATURE,
                "the simulated quote was altered after it was made: its development signature \
                 does not match its header and body",
            ));
        }
        v.checks.push(debug);
        skip_dcap(&mut v.checks, "a simulated quote has no DCAP signature");
        v.tcb_status = Some("Simulated".to_owned());
        v.quote = Some(parsed);
        return v;
    }
    v.checks.push(Check::pass(
        names::NOT_SIMULATED,
        "the quote carries no simulation marker",
    ));
    v.checks.push(debug);

    let Some(collateral) = collateral else {
        v.checks.push(Check::fail(
            names::COLLATERAL_PRESENT,
            "no collateral: the DCAP signature chain cannot be checked (fetch it from a PCCS, or pass a file)",
        ));
        skip_dcap(&mut v.checks, "no collateral");
        v.checks.push(Check::skip(names::TCB_ACCEPTED, "no collateral"));
        v.error = Some("no collateral".to_owned());
        v.quote = Some(parsed);
        return v;
    };
    v.checks.push(Check::pass(
        names::COLLATERAL_PRESENT,
        "TCB info, QE identity, CRLs and issuer chains",
    ));

    let verifier = QuoteVerifier::new_prod().allow_debug(policy.allow_debug);
    match verifier.verify_with::<RingConfig>(&bytes, collateral, now_unix) {
        Err(e) => {
            let text = format!("{e:#}");
            let (stage, failed) = dcap::classify(&text, collateral, now_unix);
            let reason = format!("dcap-qvl at {now_unix}: {text}");
            for (name, stages) in dcap::CHECK_STAGES {
                v.checks.push(if name == failed {
                    Check::fail(name, reason.clone())
                } else if stages.iter().all(|s| *s < stage) {
                    Check::pass(name, dcap::pass_detail(name, now_unix))
                } else {
                    Check::skip(name, format!("not reached: dcap-qvl stopped at {failed}"))
                });
            }
            if failed == names::DEBUG_OFF {
                // The quote's attributes are what dcap-qvl refused: the debug check says so,
                // whatever Cloister's own reading of the debug bit was.
                if let Some(c) = v.checks.iter_mut().find(|c| c.name == names::DEBUG_OFF) {
                    *c = Check::fail(names::DEBUG_OFF, reason);
                }
            }
            v.checks.push(Check::skip(
                names::ADVISORIES,
                format!("not reached: dcap-qvl stopped at {failed}"),
            ));
            v.checks
                .push(Check::skip(names::TCB_ACCEPTED, "DCAP verification failed"));
            v.error = Some(text);
        }
        Ok(report) => {
            for (name, _) in dcap::CHECK_STAGES {
                if name != names::TCB_LEVEL {
                    v.checks
                        .push(Check::pass(name, dcap::pass_detail(name, now_unix)));
                }
            }
            let status = report.status.clone();
            v.checks.push(Check::pass(
                names::TCB_LEVEL,
                format!(
                    "{status} (QE {}; platform {})",
                    report.qe_status.status, report.platform_status.status
                ),
            ));
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
            let check = if policy.accepted_tcb_statuses.contains(&status) {
                Check::pass(names::TCB_ACCEPTED, detail)
            } else {
                Check::fail(names::TCB_ACCEPTED, detail)
            };
            v.checks.push(check);
            v.advisory_ids = report.advisory_ids;
            v.qe_status = Some(report.qe_status.status.to_string());
            v.platform_status = Some(report.platform_status.status.to_string());
            v.tcb_status = Some(status);
        }
    }
    if debug_failed && v.error.is_none() {
        v.error = Some("Debug mode is enabled".to_owned());
    }
    v.quote = Some(parsed);
    v
}

/// Every DCAP check skipped for `why` (no collateral, or a simulated quote).
fn skip_dcap(checks: &mut Vec<Check>, why: &str) {
    checks.extend(names::DCAP_CHECKS.iter().map(|name| Check::skip(*name, why)));
}

fn advisories_check(ids: &[String], rejected: &[String]) -> Check {
    let hit: Vec<&str> = ids
        .iter()
        .filter(|id| rejected.iter().any(|r| r.eq_ignore_ascii_case(id)))
        .map(String::as_str)
        .collect();
    if !hit.is_empty() {
        Check::fail(
            names::ADVISORIES,
            format!("the policy rejects {} (all: {})", hit.join(", "), ids.join(", ")),
        )
    } else if ids.is_empty() {
        Check::pass(names::ADVISORIES, "none")
    } else {
        Check::warn(names::ADVISORIES, ids.join(", "))
    }
}

fn debug_check(q: &Quote, policy: &Policy) -> Check {
    match (q.is_debug(), policy.allow_debug) {
        (false, _) => Check::pass(names::DEBUG_OFF, "production TD/enclave (debug bit clear)"),
        (true, true) => Check::warn(
            names::DEBUG_OFF,
            "DEBUG TD/enclave: the host can read its memory; accepted only because the policy allows debug",
        ),
        (true, false) => Check::fail(names::DEBUG_OFF, "debug TD/enclave: the host can read its memory"),
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

    fn outcome(v: &QuoteVerdict, name: &str) -> Option<Outcome> {
        v.checks.iter().find(|c| c.name == name).map(|c| c.outcome)
    }

    #[test]
    fn garbage_fails_the_parse_check() {
        let v = verify_quote(b"\x04\x00garbage", None, 0, &Policy::default());
        assert!(!v.passed());
        assert_eq!(outcome(&v, names::QUOTE_PARSES), Some(Outcome::Fail));
        assert!(v.error.is_some());
        let v = verify_quote(b"", None, 0, &Policy::default());
        assert!(!v.passed());
    }

    #[test]
    fn production_policy_refuses_simulated_quotes() {
        let q = simulated_quote(&ReportData::new([1; 20], Nonce([2; 32])));
        let v = verify_quote(&q, None, 0, &Policy::default());
        assert!(!v.passed());
        assert!(v.simulated);
        let c = v.first_failure().unwrap();
        assert_eq!(c.name, names::NOT_SIMULATED);
        assert!(c.detail.contains("development quote"), "{}", c.detail);
        assert_eq!(v.tcb_status, None);
    }

    #[test]
    fn dev_policy_accepts_simulated_quotes_loudly() {
        let q = simulated_quote(&ReportData::new([1; 20], Nonce([2; 32])));
        let v = verify_quote(&q, None, 0, &Policy::dev_allow_simulated());
        assert!(v.passed(), "{:#?}", v.checks);
        assert_eq!(outcome(&v, names::NOT_SIMULATED), Some(Outcome::Warn));
        for name in names::DCAP_CHECKS {
            assert_eq!(outcome(&v, name), Some(Outcome::Skip), "{name}");
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
        assert_eq!(outcome(&v, names::SIMULATED_DEV_SIGNATURE), Some(Outcome::Fail));
    }

    #[test]
    fn checks_serialise_for_json_output() {
        let c = Check::warn("x", "y");
        let j = serde_json::to_value(&c).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"name": "x", "outcome": "warn", "detail": "y"})
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
