//! The quote parser on every quote in the corpus (binary, hex, `0x` hex, trailing bytes, quotes
//! inside JSON), on every truncation of each, and on random bytes: it never panics.

use cloister_attest::quote::{QuoteBody, QuoteTee, decode_quote_bytes, parse_quote};
use cloister_attest::simulated::simulated_quote;
use cloister_attest::verify::{Policy, verify_quote};
use cloister_types::ReportData;
use proptest::prelude::*;

use crate::corpus::{self, corpus_or_skip};

/// Quote files not named by any conformance case, with (version, body, total_len, trailing).
const EXTRA_QUOTE_FILES: &[(&str, u16, &str, usize, usize)] = &[
    ("go-tdx-guest/cos-113-tdx-quote.dat", 4, "td10", 4935, 3065),
    (
        "teep/nearcloud_qwen3.5-122b_20260424/derived/model_compose_manager_quote.bin",
        4,
        "td10",
        0,
        0,
    ),
];

/// Quotes inside JSON documents: (file, JSON pointer to the hex).
const JSON_QUOTES: &[(&str, &str)] = &[
    ("dstack/verifier_quote-report.json", "/quote"),
    ("dstack/verifier_tdx-lite-getquote.json", "/quote"),
    (corpus::NEARAI_REPORT, "/gateway_attestation/intel_quote"),
    (corpus::NEARAI_REPORT, "/model_attestations/0/intel_quote"),
];

fn body_name(b: &QuoteBody) -> &'static str {
    match b {
        QuoteBody::Td10(_) => "td10",
        QuoteBody::Td15(_) => "td15",
        QuoteBody::Sgx(_) => "sgx",
    }
}

/// Every quote file of the corpus, decoded to binary.
fn corpus_quotes(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let outcomes = corpus::json(dir, "expected_outcomes.json");
    let mut files: Vec<String> = outcomes["tdx_sgx_cases"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["quote"].as_str().map(str::to_owned))
        .chain(EXTRA_QUOTE_FILES.iter().map(|e| e.0.to_owned()))
        .collect();
    files.sort();
    files.dedup();
    let mut out: Vec<(String, Vec<u8>)> = files
        .into_iter()
        .map(|f| (f.clone(), decode_quote_bytes(&corpus::read(dir, &f)).unwrap()))
        .collect();
    for (file, pointer) in JSON_QUOTES {
        let doc = corpus::json(dir, file);
        let hex = doc
            .pointer(pointer)
            .and_then(|v| v.as_str())
            .unwrap_or_else(|| panic!("{file}{pointer}"));
        out.push((
            format!("{file}#{pointer}"),
            decode_quote_bytes(hex.as_bytes()).unwrap(),
        ));
    }
    out
}

#[test]
fn every_corpus_quote_parses_as_its_case_says() {
    let dir = corpus_or_skip!();
    let outcomes = corpus::json(&dir, "expected_outcomes.json");
    let mut seen = 0;
    for case in outcomes["tdx_sgx_cases"].as_array().unwrap() {
        let file = case["quote"].as_str().unwrap();
        let info = &case["quote_info"];
        let raw = corpus::read(&dir, file);
        let bytes = decode_quote_bytes(&raw).unwrap_or_else(|e| panic!("{file}: {e}"));
        let q = parse_quote(&bytes).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(
            u64::from(q.version),
            info["quote_version"].as_u64().unwrap(),
            "{file}"
        );
        let tee = if info["tee_type"] == "SGX" {
            QuoteTee::Sgx
        } else {
            QuoteTee::Tdx
        };
        assert_eq!(q.tee, tee, "{file}");
        let body = match info["body_type"].as_str().unwrap() {
            "SgxEnclave" => "sgx",
            "TD10" => "td10",
            "TD15" => "td15",
            other => panic!("unknown body type {other}"),
        };
        assert_eq!(body_name(&q.body), body, "{file}");
        assert_eq!(q.total_len + q.trailing_len, bytes.len(), "{file}");
        assert!(!q.is_debug(), "{file} is a production quote");
        println!(
            "parsed {file}: {} ({} + {} trailing bytes)",
            q.describe(),
            q.total_len,
            q.trailing_len
        );
        seen += 1;
    }
    assert!(seen >= 19, "only {seen} cases");
}

#[test]
fn encodings_and_trailing_bytes() {
    let dir = corpus_or_skip!();
    // Hex with 0x and no newline, and hex with a trailing newline, decode to the same kind of quote.
    for file in [
        "dcap-qvl/tdx-quote.hex",
        "dcap-qvl/quote-from-tappd.hex",
        "dcap-qvl/near_gas_test_quote_hex.txt",
    ] {
        let q = parse_quote(&decode_quote_bytes(&corpus::read(&dir, file)).unwrap()).unwrap();
        assert_eq!((q.version, q.tee), (4, QuoteTee::Tdx), "{file}");
    }
    // go-tdx-guest appended ASCII text; dcap-qvl's sample has 70 zero bytes after the quote.
    let spr = parse_quote(&corpus::read(&dir, "go-tdx-guest/tdx_prod_quote_SPR_E4.dat")).unwrap();
    assert_eq!((spr.total_len, spr.trailing_len), (4935, 39));
    let tdx = parse_quote(&corpus::read(&dir, "dcap-qvl/tdx_quote")).unwrap();
    assert_eq!((tdx.total_len, tdx.trailing_len), (4936, 70));
    let v5 = parse_quote(&corpus::read(&dir, "dcap-qvl/tdx_quote_outdated")).unwrap();
    let QuoteBody::Td15(td15) = &v5.body else {
        panic!("not TD 1.5")
    };
    assert_eq!(td15.mr_service_td, [0; 48]);
    assert_eq!(hex::encode(&td15.base.tee_tcb_svn[..4]), "07010300");
    assert_eq!(hex::encode(&td15.tee_tcb_svn2[..4]), "0d010300");
    assert_eq!(v5.signed_len, 48 + 6 + 648);
    for (file, version, body, total, trailing) in EXTRA_QUOTE_FILES {
        let q = parse_quote(&corpus::read(&dir, file)).unwrap();
        assert_eq!(q.version, *version, "{file}");
        assert_eq!(body_name(&q.body), *body, "{file}");
        if *total != 0 {
            assert_eq!((q.total_len, q.trailing_len), (*total, *trailing), "{file}");
        }
    }
    // The SGX sample's report_data is ASCII "Hello, world!".
    let sgx = parse_quote(&corpus::read(&dir, "dcap-qvl/sgx_quote")).unwrap();
    assert!(sgx.report_data().starts_with(b"Hello, world!"));
    // Quotes embedded in JSON carry the report_data the JSON says.
    let doc = corpus::json(&dir, "dstack/verifier_quote-report.json");
    let q = parse_quote(&decode_quote_bytes(doc["quote"].as_str().unwrap().as_bytes()).unwrap()).unwrap();
    let rd = doc["report_data"].as_str().unwrap().trim_start_matches("0x");
    assert_eq!(hex::encode(q.report_data()), rd.to_lowercase());
}

#[test]
fn every_truncation_of_every_corpus_quote_fails_cleanly() {
    let dir = corpus_or_skip!();
    let quotes = corpus_quotes(&dir);
    assert!(quotes.len() >= 20);
    for (name, bytes) in &quotes {
        let q = parse_quote(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        for n in 0..q.total_len {
            assert!(
                parse_quote(&bytes[..n]).is_err(),
                "{name}: {n}-byte prefix parsed"
            );
        }
        // The unverifiable prefix also fails verification, by name, without panicking.
        let v = verify_quote(&bytes[..q.total_len / 2], None, 0, &Policy::default());
        assert!(!v.passed());
    }
    println!("checked every truncation of {} corpus quotes", quotes.len());
}

#[test]
fn mutated_corpus_quotes_never_pass_and_never_panic() {
    let dir = corpus_or_skip!();
    let quote = decode_quote_bytes(&corpus::read(&dir, "dcap-qvl/tdx_quote")).unwrap();
    let collateral = corpus::collateral(&dir, "dcap-qvl/tdx_quote_collateral.json");
    let at = 1_752_919_234;
    assert!(verify_quote(&quote, Some(&collateral), at, &Policy::default()).passed());
    // Flip one bit at offsets spread over header, body, signature, QE report and certificates.
    let mut offsets: Vec<usize> = (0..quote.len()).step_by(97).collect();
    offsets.extend([0, 1, 2, 4, 8, 120, 631, 632, 636, 700, 1100, 1500]);
    for at_offset in offsets {
        let mut m = quote.clone();
        m[at_offset] ^= 0x01;
        let v = verify_quote(&m, Some(&collateral), at, &Policy::default());
        // Header and body are covered by the attestation key's signature: every flip there fails.
        // (Elsewhere some bytes, like PEM line breaks of the certificates, carry no meaning.)
        if at_offset < 48 + 584 {
            assert!(!v.passed(), "bit flip at {at_offset} still verified");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_quote(&bytes);
        let _ = decode_quote_bytes(&bytes);
        prop_assert!(!verify_quote(&bytes, None, 0, &Policy::default()).passed());
    }

    #[test]
    fn corrupted_simulated_quotes_never_panic(
        edits in proptest::collection::vec((0usize..800, any::<u8>()), 1..8),
        cut in 0usize..800,
    ) {
        let mut q = simulated_quote(&ReportData([0x33; 64]));
        for (i, b) in edits {
            if let Some(slot) = q.get_mut(i) {
                *slot = b;
            }
        }
        q.truncate(cut.max(1));
        let _ = parse_quote(&q);
        let _ = verify_quote(&q, None, 0, &Policy::dev_allow_simulated());
    }

    #[test]
    fn hex_round_trip(rd in proptest::array::uniform32(any::<u8>())) {
        let mut full = [0u8; 64];
        full[..32].copy_from_slice(&rd);
        let q = simulated_quote(&ReportData(full));
        let hexed = format!("0x{}\n", hex::encode(&q));
        prop_assert_eq!(&decode_quote_bytes(hexed.as_bytes()).unwrap(), &q);
        prop_assert_eq!(parse_quote(&q).unwrap().report_data(), full);
    }
}
