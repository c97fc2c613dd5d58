//! Attestation report JSON from arbitrary bytes through the whole report verifier.
#![no_main]

use cloister_attest::report::verify_report;
use cloister_attest::verify::Policy;
use cloister_types::{AttestationReport, Nonce};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(report) = serde_json::from_slice::<AttestationReport>(data) else { return };
    let v = verify_report(&report, &Nonce([0u8; 32]), None, 1_750_000_000, &Policy::default());
    // Without collateral and without the dev flag nothing may verify.
    assert!(!v.passed());
});
