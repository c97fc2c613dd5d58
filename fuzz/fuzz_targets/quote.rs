//! Quote parsing and verification of arbitrary bytes: binary and hex decoding, the TDX/SGX parser,
//! and the full verifier (which must refuse, never panic).
#![no_main]

use cloister_attest::verify::{Policy, verify_quote};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(bytes) = cloister_attest::quote::decode_quote_bytes(data) {
        if let Ok(q) = cloister_attest::quote::parse_quote(&bytes) {
            let _ = q.report_data();
            let _ = q.is_debug();
            let _ = cloister_attest::measurements::Measurements::from_quote(&q);
        }
    }
    let verdict = verify_quote(data, None, 1_750_000_000, &Policy::default());
    assert!(!verdict.passed() || cloister_attest::simulated::is_simulated(data));
});
