//! Plain-text tables of named checks.

use cloister_attest::verify::{Check, Outcome};

/// Renders checks as an aligned table: CHECK, RESULT, DETAIL.
pub(crate) fn render_checks(checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(5).max(5);
    let mut out = format!("{:<width$}  {:<6}  DETAIL\n", "CHECK", "RESULT");
    for c in checks {
        let result = match c.outcome {
            Outcome::Pass => "pass",
            Outcome::Fail => "FAIL",
            Outcome::Warn => "warn",
            Outcome::Skip => "skip",
        };
        out.push_str(&format!("{:<width$}  {:<6}  {}\n", c.name, result, c.detail));
    }
    out
}
