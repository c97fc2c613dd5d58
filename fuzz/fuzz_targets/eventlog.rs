//! dstack event log parsing and replay on arbitrary text, against a fixed simulated quote.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = cloister_attest::eventlog::parse_event_log_str(text);
    let rd = cloister_types::ReportData([0u8; 64]);
    let quote = cloister_attest::simulated::simulated_quote(&rd);
    if let Ok(q) = cloister_attest::quote::parse_quote(&quote) {
        let _ = cloister_attest::eventlog::verify_event_log_str(text, &q);
    }
});
