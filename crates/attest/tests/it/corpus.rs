//! Finding and reading the attestation corpus.

use std::path::{Path, PathBuf};

use dcap_qvl::QuoteCollateralV3;

/// The corpus directory: `$CLOISTER_ATTESTATION_TESTDATA`, else
/// `<workspace root>/../shared/testdata/attestation`. `None` (after saying why on stderr) when
/// absent; a panic instead when `CLOISTER_REQUIRE_CORPUS=1` (the test script sets it, so a
/// missing corpus fails the run instead of skipping it).
pub(crate) fn dir() -> Option<PathBuf> {
    let dir = std::env::var_os("CLOISTER_ATTESTATION_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/attestation")
        });
    if dir.join("expected_outcomes.json").is_file() {
        Some(dir)
    } else if std::env::var("CLOISTER_REQUIRE_CORPUS").as_deref() == Ok("1") {
        panic!(
            "attestation corpus not found at {} and CLOISTER_REQUIRE_CORPUS=1",
            dir.display()
        );
    } else {
        eprintln!("skipping: attestation corpus not found at {}", dir.display());
        None
    }
}

/// Returns from the calling test (after saying why on stderr) when the corpus is absent and not
/// required.
macro_rules! corpus_or_skip {
    () => {
        match $crate::corpus::dir() {
            Some(d) => d,
            None => return,
        }
    };
}
pub(crate) use corpus_or_skip;

pub(crate) fn read(dir: &Path, rel: &str) -> Vec<u8> {
    std::fs::read(dir.join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

pub(crate) fn json(dir: &Path, rel: &str) -> serde_json::Value {
    serde_json::from_slice(&read(dir, rel)).unwrap_or_else(|e| panic!("parsing {rel}: {e}"))
}

pub(crate) fn collateral(dir: &Path, rel: &str) -> QuoteCollateralV3 {
    cloister_attest::collateral::load_collateral_json(&read(dir, rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The NEAR AI cloud report fixture (ECDSA binding) and its client nonce.
pub(crate) const NEARAI_REPORT: &str = "nearai-cloud-verifier/nearai_cloud_report_openai_gpt_oss_120b.json";
pub(crate) const NEARAI_NONCE: &str = "deadbeef00000000000000000000000000000000000000000000000000000001";
