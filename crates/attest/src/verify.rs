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
    /// dcap-qvl verified the quote against the collateral.
    pub const DCAP: &str = "DCAP signature, certificate chain, CRLs and QE identity";
    /// The resulting TCB status is one the policy accepts.
    pub const TCB_ACCEPTED: &str = "TCB status accepted";
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
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            accepted_tcb_statuses: vec!["UpToDate".to_owned()],
            allow_debug: false,
            allow_simulated: false,
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
            v.checks.push(Check::skip(
                names::DCAP,
                "a simulated quote has no DCAP signature",
            ));
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
        v.checks.push(Check::skip(
            names::DCAP,
            "a simulated quote has no DCAP signature",
        ));
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
        v.checks.push(Check::skip(names::DCAP, "no collateral"));
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
            v.checks.push(Check::fail(
                names::DCAP,
                format!("dcap-qvl at {now_unix}: {text}"),
            ));
            v.checks
                .push(Check::skip(names::TCB_ACCEPTED, "DCAP verification failed"));
            v.error = Some(text);
        }
        Ok(report) => {
            v.checks.push(Check::pass(
                names::DCAP,
                format!(
                    "quote signed by a QE whose PCK chain leads to the Intel SGX Root CA, none revoked, \
                     collateral valid at {now_unix}"
                ),
            ));
            let status = report.status.clone();
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
        assert_eq!(outcome(&v, names::DCAP), Some(Outcome::Skip));
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
    }
}
