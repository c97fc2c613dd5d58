//! Negative cases built from real corpus quotes: each must fail the check named for its reason.

use cloister_attest::check::{CheckId, Outcome, QuoteCheck};
use cloister_attest::verify::{Policy, QuoteVerdict, verify_quote};

use crate::corpus::{self, corpus_or_skip};

const TDX_QUOTE: &str = "dcap-qvl/tdx_quote";
const TDX_COLLATERAL: &str = "dcap-qvl/tdx_quote_collateral.json";
const TDX_AT: u64 = 1_752_919_234;

fn outcome(v: &QuoteVerdict, id: QuoteCheck) -> Option<Outcome> {
    v.checks.outcome(id)
}

/// The first failing check's id.
fn first_failure(v: &QuoteVerdict) -> Option<CheckId> {
    v.first_failure().map(|c| c.id)
}

fn print(label: &str, v: &QuoteVerdict) {
    println!("{label}: passed={} error={:?}", v.passed(), v.error);
    for c in &v.checks {
        println!("  {c}");
    }
}

#[test]
fn debug_td_fails_the_debug_check() {
    let dir = corpus_or_skip!();
    let mut quote = corpus::read(&dir, TDX_QUOTE);
    let collateral = corpus::collateral(&dir, TDX_COLLATERAL);
    // TD_ATTRIBUTES: 48-byte header, then TEE_TCB_SVN (16), MRSEAM (48), MRSIGNERSEAM (48) and
    // SEAMATTRIBUTES (8); bit 0 is DEBUG.
    const TD_ATTRIBUTES: usize = 48 + 16 + 48 + 48 + 8;
    assert_eq!(quote[TD_ATTRIBUTES] & 1, 0, "the corpus quote is a production TD");
    quote[TD_ATTRIBUTES] |= 1;
    let v = verify_quote(&quote, Some(&collateral), TDX_AT, &Policy::default());
    print("debug TD", &v);
    assert!(!v.passed());
    assert_eq!(outcome(&v, QuoteCheck::DebugOff), Some(Outcome::Fail));
    // The bit is inside the signed body, so the attestation key's signature no longer holds.
    assert_eq!(outcome(&v, QuoteCheck::QuoteSignature), Some(Outcome::Fail));
    assert_eq!(outcome(&v, QuoteCheck::PckChain), Some(Outcome::Pass));
}

#[test]
fn corrupted_pck_certificate_fails_the_chain_check() {
    let dir = corpus_or_skip!();
    let mut quote = corpus::read(&dir, TDX_QUOTE);
    let collateral = corpus::collateral(&dir, TDX_COLLATERAL);
    // The quote embeds the PCK chain as PEM; change one base64 digit of the leaf's signature (its
    // last bytes, a few digits before the end marker). Nothing else signs these bytes.
    let end = b"-----END CERTIFICATE-----";
    let at = quote
        .windows(end.len())
        .position(|w| w == end)
        .expect("PEM chain in the quote");
    let i = (at - 12..at)
        .find(|&i| quote[i].is_ascii_alphanumeric())
        .expect("a base64 digit");
    quote[i] = if quote[i] == b'A' { b'B' } else { b'A' };
    let v = verify_quote(&quote, Some(&collateral), TDX_AT, &Policy::default());
    print("corrupted PCK certificate", &v);
    assert!(!v.passed());
    assert_eq!(first_failure(&v), Some(QuoteCheck::PckChain.into()));
    assert_eq!(outcome(&v, QuoteCheck::TcbInfo), Some(Outcome::Pass));
    assert_eq!(outcome(&v, QuoteCheck::QeIdentity), Some(Outcome::Pass));
    assert_eq!(outcome(&v, QuoteCheck::QuoteSignature), Some(Outcome::Skip));
    assert_eq!(outcome(&v, QuoteCheck::TcbLevel), Some(Outcome::Skip));
}

#[test]
fn corrupted_collateral_issuer_chain_fails_the_tcb_info_check() {
    let dir = corpus_or_skip!();
    let quote = corpus::read(&dir, TDX_QUOTE);
    let mut collateral = corpus::collateral(&dir, TDX_COLLATERAL);
    // Cut the TCB signing certificate short: the collateral chain no longer parses.
    let chain = collateral.tcb_info_issuer_chain.clone();
    let cut = chain.find("-----END CERTIFICATE-----").expect("PEM") - 40;
    collateral.tcb_info_issuer_chain = format!("{}{}", &chain[..cut], &chain[cut + 4..]);
    let v = verify_quote(&quote, Some(&collateral), TDX_AT, &Policy::default());
    print("corrupted TCB info issuer chain", &v);
    assert!(!v.passed());
    assert_eq!(first_failure(&v), Some(QuoteCheck::TcbInfo.into()));
    assert_eq!(outcome(&v, QuoteCheck::PckChain), Some(Outcome::Skip));
}

#[test]
fn expired_and_not_yet_valid_collateral_fail_by_name() {
    let dir = corpus_or_skip!();
    let quote = corpus::read(&dir, TDX_QUOTE);
    let collateral = corpus::collateral(&dir, TDX_COLLATERAL);
    for (label, at) in [("expired", 1_753_005_635), ("not yet issued", 1_750_242_747)] {
        let v = verify_quote(&quote, Some(&collateral), at, &Policy::default());
        print(label, &v);
        assert_eq!(first_failure(&v), Some(QuoteCheck::TcbInfo.into()));
        assert_eq!(outcome(&v, QuoteCheck::QuoteSignature), Some(Outcome::Skip));
    }
    // A PCK certificate issued after the verification time.
    let quote = corpus::read(&dir, "dstack/derived/tdx-lite-getquote.quote.bin");
    let collateral = corpus::collateral(&dir, "dcap-qvl/tdx_quote_outdated_collateral.json");
    let v = verify_quote(&quote, Some(&collateral), 1_772_323_200, &Policy::default());
    print("PCK not yet valid", &v);
    assert_eq!(first_failure(&v), Some(QuoteCheck::PckChain.into()));
    assert!(v.error.as_deref().unwrap_or("").contains("CertNotValidYet"));
    assert_eq!(outcome(&v, QuoteCheck::TcbInfo), Some(Outcome::Pass));
    assert_eq!(outcome(&v, QuoteCheck::QeIdentity), Some(Outcome::Pass));
}

#[test]
fn tcb_status_outside_the_policy_fails_only_the_policy_check() {
    let dir = corpus_or_skip!();
    let quote = corpus::read(
        &dir,
        "teep/nearcloud_qwen3.5-122b_20260424/derived/gateway_intel_quote.bin",
    );
    let collateral = corpus::collateral(
        &dir,
        "teep/nearcloud_qwen3.5-122b_20260424/derived/collateral_b0c06f000000.json",
    );
    let v = verify_quote(&quote, Some(&collateral), 1_776_996_365, &Policy::default());
    print("OutOfDate under the default policy", &v);
    assert!(!v.passed());
    assert_eq!(v.tcb_status.as_deref(), Some("OutOfDate"));
    assert_eq!(first_failure(&v), Some(QuoteCheck::TcbAccepted.into()));
    assert_eq!(outcome(&v, QuoteCheck::TcbLevel), Some(Outcome::Pass));
    assert_eq!(outcome(&v, QuoteCheck::Advisories), Some(Outcome::Warn));
}

#[test]
fn a_rejected_advisory_fails_an_accepted_status() {
    let dir = corpus_or_skip!();
    let quote = corpus::read(&dir, "dcap-qvl/sgx_quote");
    let collateral = corpus::collateral(&dir, "dcap-qvl/sgx_quote_collateral.json");
    let at = 1_752_919_277;
    let accepting = Policy::default().with_accepted_tcb_statuses(["ConfigurationAndSWHardeningNeeded"]);
    let v = verify_quote(&quote, Some(&collateral), at, &accepting);
    assert!(v.passed(), "{:?}", v.first_failure());
    assert_eq!(outcome(&v, QuoteCheck::Advisories), Some(Outcome::Warn));

    let rejecting = accepting.with_rejected_advisories(["INTEL-SA-00615"]);
    let v = verify_quote(&quote, Some(&collateral), at, &rejecting);
    print("rejected advisory", &v);
    assert!(!v.passed());
    assert_eq!(first_failure(&v), Some(QuoteCheck::Advisories.into()));
    assert_eq!(outcome(&v, QuoteCheck::TcbAccepted), Some(Outcome::Pass));
    assert!(v.error.is_none(), "dcap-qvl itself succeeded");
}
