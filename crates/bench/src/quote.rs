//! Quote verification through Cloister's layer ([`cloister_attest::verify::verify_quote`]: decode,
//! parse, policy, named checks) against dcap-qvl's `verify::ring::verify` (the DCAP verification
//! that layer calls) on the same quote and in-memory collateral.
//!
//! ```no_run
//! # fn demo() -> cloister_bench::Result<()> {
//! use cloister_bench::quote::{QuoteBench, corpus_dir};
//! let bench = QuoteBench::load(&corpus_dir(None))?;
//! let (direct, ours) = (bench.time_direct(1000)?, bench.time_ours(1000)?);
//! # Ok(()) }
//! ```

use std::hint::black_box;
use std::path::{Path, PathBuf};

use cloister_attest::verify::{Policy, verify_quote};
use dcap_qvl::QuoteCollateralV3;

use crate::stats::time_calls;
use crate::{Error, Result};

/// The corpus quote measured (path relative to the corpus).
pub const QUOTE: &str = "dcap-qvl/tdx_quote";
/// Its collateral (path relative to the corpus).
pub const COLLATERAL: &str = "dcap-qvl/tdx_quote_collateral.json";

/// The attestation corpus: `given`, else `$CLOISTER_ATTESTATION_TESTDATA`, else
/// `../shared/testdata/attestation`.
pub fn corpus_dir(given: Option<PathBuf>) -> PathBuf {
    given
        .or_else(|| std::env::var_os("CLOISTER_ATTESTATION_TESTDATA").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("../shared/testdata/attestation"))
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))
}

/// The case's verification time from expected_outcomes.json (its collateral expired long ago).
fn verify_time(dir: &Path) -> Result<u64> {
    let path = dir.join("expected_outcomes.json");
    let expected: serde_json::Value = serde_json::from_slice(&read(&path)?)
        .map_err(|e| Error::json(format!("parsing {}", path.display()), e))?;
    expected["tdx_sgx_cases"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["quote"] == QUOTE && c["collateral"] == COLLATERAL)
        .and_then(|c| c["verify_at_unix"].as_u64())
        .ok_or_else(|| {
            Error::NotWorking(format!(
                "no case for {QUOTE} with {COLLATERAL} in {}",
                path.display()
            ))
        })
}

/// The quote, its collateral and the time at which both verify, loaded from the corpus and checked.
#[derive(Debug)]
pub struct QuoteBench {
    /// The quote's bytes.
    pub quote: Vec<u8>,
    /// Its collateral.
    pub collateral: QuoteCollateralV3,
    /// When it verifies (Unix seconds).
    pub at: u64,
    policy: Policy,
}

impl QuoteBench {
    /// Loads [`QUOTE`] and [`COLLATERAL`] from the corpus `dir`, and checks that both paths verify
    /// them (timing a fast failure would measure nothing).
    pub fn load(dir: &Path) -> Result<Self> {
        let quote_path = dir.join(QUOTE);
        let quote = cloister_attest::quote::decode_quote_bytes(&read(&quote_path)?)?;
        let collateral_path = dir.join(COLLATERAL);
        let collateral = cloister_attest::collateral::load_collateral_json(&read(&collateral_path)?)?;
        let at = verify_time(dir)?;
        let bench = Self {
            quote,
            collateral,
            at,
            policy: Policy::default(),
        };
        let verdict = verify_quote(&bench.quote, Some(&bench.collateral), at, &bench.policy);
        if !verdict.passed() {
            return Err(Error::NotWorking(format!(
                "{QUOTE} does not verify at {at}: {}",
                verdict.error.unwrap_or_default()
            )));
        }
        if let Err(e) = dcap_qvl::verify::ring::verify(&bench.quote, &bench.collateral, at) {
            return Err(Error::NotWorking(format!(
                "dcap-qvl refuses {QUOTE} at {at}: {e:#}"
            )));
        }
        Ok(bench)
    }

    /// `iterations` verifications by dcap-qvl directly: latencies in µs, sorted.
    pub fn time_direct(&self, iterations: usize) -> Result<Vec<f64>> {
        time_calls(iterations, || {
            dcap_qvl::verify::ring::verify(black_box(&self.quote), black_box(&self.collateral), self.at)
                .is_ok()
        })
    }

    /// `iterations` verifications through Cloister's layer: latencies in µs, sorted.
    pub fn time_ours(&self, iterations: usize) -> Result<Vec<f64>> {
        time_calls(iterations, || {
            verify_quote(
                black_box(&self.quote),
                Some(black_box(&self.collateral)),
                self.at,
                &self.policy,
            )
            .passed()
        })
    }
}
