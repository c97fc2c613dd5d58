//! Plain-text tables of named checks.

use cloister_attest::check::{Check, Outcome};

/// Renders checks as an aligned table: CHECK, RESULT, DETAIL.
pub(crate) fn render_checks(checks: &[Check]) -> String {
    let names: Vec<String> = checks.iter().map(|c| c.id.to_string()).collect();
    let width = names.iter().map(String::len).max().unwrap_or(5).max(5);
    let mut out = format!("{:<width$}  {:<6}  DETAIL\n", "CHECK", "RESULT");
    for (c, name) in checks.iter().zip(&names) {
        let result = match c.outcome {
            Outcome::Pass => "pass",
            Outcome::Fail => "FAIL",
            Outcome::Warn => "warn",
            Outcome::Skip => "skip",
        };
        out.push_str(&format!("{name:<width$}  {result:<6}  {}\n", c.detail));
    }
    out
}
