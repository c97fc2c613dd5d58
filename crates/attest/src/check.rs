//! Named checks and the one verdict type every verifier of this crate returns.
//!
//! A verifier never returns an error: it returns [`Checks`], a list of [`Check`]s, each naming
//! what it checked with a [`CheckId`] and saying what it found ([`Outcome`]) and why (its
//! detail). A caller matches on the [`CheckId`] (rustls's `CertificateError` is the model); a
//! person reads its [`Display`](fmt::Display), which is the stable human name shown in tables and
//! in JSON (`"name"`). [`Checks::passed`] is the only definition of "passed" in Cloister: at least
//! one check passed and none failed.
//!
//! ```
//! use cloister_attest::check::{Check, CheckId, Checks, QuoteCheck};
//!
//! let mut checks = Checks::default();
//! checks.push(Check::pass(QuoteCheck::QuoteParses, "TDX v4"));
//! checks.push(Check::fail(QuoteCheck::NotSimulated, "a simulated quote"));
//! assert!(!checks.passed());
//! let failed = checks.first_failure().unwrap();
//! assert_eq!(failed.id, CheckId::Quote(QuoteCheck::NotSimulated));
//! assert_eq!(failed.id.to_string(), "not simulated");
//! // Inside a report verdict the same check is listed under the quote's scope.
//! assert_eq!(failed.id.scoped().to_string(), "quote: not simulated");
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

/// The outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

mod id;

pub use id::{
    AciCheck, CheckId, EventLogCheck, GpuCheck, NrasCheck, PolicyCheck, QuoteCheck, ReportCheck, Scoped,
    UnknownCheck,
};

/// One check and what it found. Serialises as `{"name", "outcome", "detail"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// What was checked (serialised as its human name, `"name"`).
    #[serde(rename = "name")]
    pub id: CheckId,
    /// What happened.
    pub outcome: Outcome,
    /// Human-readable explanation (for failures: why).
    pub detail: String,
}

impl Check {
    /// A check with the given outcome.
    pub fn new(id: impl Into<CheckId>, outcome: Outcome, detail: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            outcome,
            detail: detail.into(),
        }
    }

    /// A passing check.
    pub fn pass(id: impl Into<CheckId>, detail: impl Into<String>) -> Self {
        Self::new(id, Outcome::Pass, detail)
    }

    /// A failing check.
    pub fn fail(id: impl Into<CheckId>, detail: impl Into<String>) -> Self {
        Self::new(id, Outcome::Fail, detail)
    }

    /// A warning.
    pub fn warn(id: impl Into<CheckId>, detail: impl Into<String>) -> Self {
        Self::new(id, Outcome::Warn, detail)
    }

    /// A skipped check.
    pub fn skip(id: impl Into<CheckId>, detail: impl Into<String>) -> Self {
        Self::new(id, Outcome::Skip, detail)
    }

    /// A passing check when `result` is `Ok(detail)`, else a failing one with the error as detail.
    pub fn from_result(id: impl Into<CheckId>, result: Result<String, String>) -> Self {
        match result {
            Ok(detail) => Self::pass(id, detail),
            Err(detail) => Self::fail(id, detail),
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}: {}", self.outcome, self.id, self.detail)
    }
}

/// The checks of a verdict, in order: the one verdict type shared by the quote, GPU, NRAS,
/// event-log and report verdicts. Serialises as a list of [`Check`]s.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Checks(Vec<Check>);

impl Checks {
    /// True when at least one check passed and none failed. This is the only definition of
    /// "passed": every verdict's `passed()` is this.
    pub fn passed(&self) -> bool {
        self.0.iter().any(|c| c.outcome == Outcome::Pass) && self.0.iter().all(|c| c.outcome != Outcome::Fail)
    }

    /// The first failing check, if any.
    pub fn first_failure(&self) -> Option<&Check> {
        self.0.iter().find(|c| c.outcome == Outcome::Fail)
    }

    /// The first check with this id, if it ran.
    pub fn get(&self, id: impl Into<CheckId>) -> Option<&Check> {
        let id = id.into();
        self.0.iter().find(|c| c.id == id)
    }

    /// The outcome of the first check with this id, if it ran.
    pub fn outcome(&self, id: impl Into<CheckId>) -> Option<Outcome> {
        self.get(id).map(|c| c.outcome)
    }

    /// For a check that runs once per device or token: the outcome of the first check with this
    /// id that did not pass, else of the first with this id.
    pub fn worst(&self, id: impl Into<CheckId>) -> Option<Outcome> {
        let id = id.into();
        let mut named = self.0.iter().filter(|c| c.id == id);
        let first = named.clone().next()?.outcome;
        Some(
            named
                .find(|c| c.outcome != Outcome::Pass)
                .map_or(first, |c| c.outcome),
        )
    }

    /// Whether some check with this id failed.
    pub fn failed(&self, id: impl Into<CheckId>) -> bool {
        let id = id.into();
        self.0.iter().any(|c| c.id == id && c.outcome == Outcome::Fail)
    }

    /// Appends a check.
    pub fn push(&mut self, check: Check) {
        self.0.push(check);
    }

    /// Appends an inner verdict's checks, each under its scope ([`CheckId::scoped`]) when
    /// `scoped`. When the inner verdict did not pass but none of its checks failed (it has no
    /// passing check), appends `otherwise` as a failure with `why`, so this verdict fails too.
    pub fn absorb(&mut self, inner: Checks, scoped: bool, otherwise: impl Into<CheckId>, why: &str) {
        let passed = inner.passed();
        let any_fail = inner.first_failure().is_some();
        self.0.extend(inner.0.into_iter().map(|c| Check {
            id: if scoped { c.id.scoped() } else { c.id },
            ..c
        }));
        if !passed && !any_fail {
            self.0.push(Check::fail(otherwise, why));
        }
    }

    /// The checks as a slice.
    pub fn as_slice(&self) -> &[Check] {
        &self.0
    }

    /// The checks.
    pub fn into_vec(self) -> Vec<Check> {
        self.0
    }
}

impl std::ops::Deref for Checks {
    type Target = [Check];

    fn deref(&self) -> &[Check] {
        &self.0
    }
}

impl From<Vec<Check>> for Checks {
    fn from(checks: Vec<Check>) -> Self {
        Self(checks)
    }
}

impl Extend<Check> for Checks {
    fn extend<T: IntoIterator<Item = Check>>(&mut self, iter: T) {
        self.0.extend(iter);
    }
}

impl FromIterator<Check> for Checks {
    fn from_iter<T: IntoIterator<Item = Check>>(iter: T) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl IntoIterator for Checks {
    type Item = Check;
    type IntoIter = std::vec::IntoIter<Check>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Checks {
    type Item = &'a Check;
    type IntoIter = std::slice::Iter<'a, Check>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_name_is_unique_and_parses_back() {
        let mut seen = HashSet::new();
        for id in CheckId::all() {
            let name = id.to_string();
            assert!(seen.insert(name.clone()), "duplicate name {name:?}");
            assert_eq!(name.parse::<CheckId>().unwrap(), id);
            assert_eq!(id.scoped().unscoped(), id.unscoped());
        }
        assert!("no such check".parse::<CheckId>().is_err());
    }

    #[test]
    fn names_are_todays_human_names() {
        assert_eq!(CheckId::from(QuoteCheck::QuoteParses).to_string(), "quote parses");
        assert_eq!(GpuCheck::PayloadNonce.to_string(), "GPU evidence nonce");
        assert_eq!(
            CheckId::from(QuoteCheck::TcbAccepted).scoped().to_string(),
            "quote: TCB status accepted"
        );
        assert_eq!(
            CheckId::from(EventLogCheck::Rtmr3Replay).scoped().to_string(),
            "event log: RTMR3 replay"
        );
        assert_eq!(
            CheckId::from(NrasCheck::Nonce).scoped().to_string(),
            "NRAS: NRAS eat_nonce"
        );
        // Report and GPU checks keep their own names inside a report.
        assert_eq!(
            CheckId::from(GpuCheck::PayloadNonce).scoped(),
            CheckId::Gpu(GpuCheck::PayloadNonce)
        );
    }

    #[test]
    fn checks_serialise_with_their_name() {
        let c = Check::warn(QuoteCheck::Advisories, "y");
        let j = serde_json::to_value(&c).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"name": "advisories", "outcome": "warn", "detail": "y"})
        );
        assert_eq!(serde_json::from_value::<Check>(j).unwrap(), c);
        let list: Checks = vec![c].into();
        assert!(serde_json::to_value(&list).unwrap().is_array());
    }

    #[test]
    fn passed_needs_a_pass_and_no_failure() {
        let mut checks = Checks::default();
        assert!(!checks.passed());
        checks.push(Check::skip(QuoteCheck::Crls, "not reached"));
        checks.push(Check::warn(QuoteCheck::Advisories, "some"));
        assert!(!checks.passed(), "skips and warnings alone pass nothing");
        checks.push(Check::pass(QuoteCheck::QuoteParses, "ok"));
        assert!(checks.passed());
        checks.push(Check::fail(QuoteCheck::TcbAccepted, "no"));
        assert!(!checks.passed());
        assert_eq!(
            checks.first_failure().map(|c| c.id),
            Some(QuoteCheck::TcbAccepted.into())
        );
    }

    #[test]
    fn absorbing_a_verdict_that_did_not_pass_fails() {
        let mut outer = Checks::default();
        let inner: Checks = vec![Check::skip(EventLogCheck::AppIdentity, "x")].into();
        outer.absorb(inner, true, ReportCheck::EventLog, "did not verify");
        assert_eq!(
            outer.outcome(Scoped::EventLog(EventLogCheck::AppIdentity)),
            Some(Outcome::Skip)
        );
        assert_eq!(outer.outcome(ReportCheck::EventLog), Some(Outcome::Fail));
    }
}
