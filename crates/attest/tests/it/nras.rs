//! NRAS responses captured by teep (neardirect 2026-06-29, nearcloud 2026-04-24) against the
//! JWKS captured with them, plus negatives that fail by name.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cloister_attest::check::{CheckId, NrasCheck, Outcome};
use cloister_attest::nras::{NrasVerdict, verify_nras_response};

use crate::corpus::{self, corpus_or_skip};

pub(crate) struct Session {
    pub(crate) dir: &'static str,
    pub(crate) nonce: &'static str,
    /// `iat` of the tokens; they are valid for an hour.
    pub(crate) iat: u64,
}

pub(crate) const NEARDIRECT: Session = Session {
    dir: "teep/neardirect_qwen3.5-122b_20260629",
    nonce: "541b6523f9446dcd170e67ac8171eb9226bee5e3f192de4900b74f0ef293500b",
    iat: 1_782_698_794,
};
pub(crate) const NEARCLOUD: Session = Session {
    dir: "teep/nearcloud_qwen3.5-122b_20260424",
    nonce: "7c4b89c7c794886908702155bc671b6214269ed4a4bffaaf751449dba01e27da",
    iat: 1_776_996_364,
};

pub(crate) fn files(dir: &std::path::Path, s: &Session) -> (Vec<u8>, Vec<u8>) {
    (
        corpus::read(
            dir,
            &format!("{}/0006_nras.attestation.nvidia.com_v3_attest_gpu.body", s.dir),
        ),
        corpus::read(
            dir,
            &format!(
                "{}/0007_nras.attestation.nvidia.com_.well-known_jwks.json.body",
                s.dir
            ),
        ),
    )
}

pub(crate) fn nonce(s: &Session) -> [u8; 32] {
    let mut n = [0; 32];
    hex::decode_to_slice(s.nonce, &mut n).unwrap();
    n
}

fn print(label: &str, v: &NrasVerdict) {
    println!("{label}: passed={}", v.passed());
    for c in &v.checks {
        println!("  {c}");
    }
}

fn worst(v: &NrasVerdict, id: NrasCheck) -> Option<Outcome> {
    let id = CheckId::from(id);
    let named: Vec<Outcome> = v
        .checks
        .iter()
        .filter(|c| c.id == id)
        .map(|c| c.outcome)
        .collect();
    named
        .iter()
        .find(|o| **o == Outcome::Fail)
        .or(named.first())
        .copied()
}

#[test]
fn captured_nras_responses_verify() {
    let dir = corpus_or_skip!();
    for (label, s) in [("neardirect", NEARDIRECT), ("nearcloud", NEARCLOUD)] {
        let (body, jwks) = files(&dir, &s);
        let v = verify_nras_response(&body, &jwks, &nonce(&s), s.iat + 60);
        print(label, &v);
        assert!(v.passed(), "{label}: {:?}", v.first_failure());
        assert_eq!(v.tokens.len(), 9, "overall + 8 GPUs");
        assert_eq!(v.tokens[0].claims["x-nvidia-overall-att-result"], true);
        assert_eq!(v.tokens[0].claims["exp"].as_u64(), Some(s.iat + 3600));
        for t in &v.tokens[1..] {
            assert_eq!(t.claims["measres"], "success");
            assert_eq!(t.claims["hwmodel"], "GH100");
        }
        for name in [
            NrasCheck::Signature,
            NrasCheck::Validity,
            NrasCheck::Nonce,
            NrasCheck::Measurements,
        ] {
            assert_eq!(worst(&v, name), Some(Outcome::Pass), "{label}: {name}");
        }
        assert_eq!(worst(&v, NrasCheck::Submods), Some(Outcome::Pass));
    }
}

#[test]
fn wrong_nonce_fails_the_nonce_check() {
    let dir = corpus_or_skip!();
    let (body, jwks) = files(&dir, &NEARDIRECT);
    let mut wrong = nonce(&NEARDIRECT);
    wrong[0] ^= 1;
    let v = verify_nras_response(&body, &jwks, &wrong, NEARDIRECT.iat + 60);
    assert!(!v.passed());
    assert_eq!(v.first_failure().map(|c| c.id), Some(NrasCheck::Nonce.into()));
    assert_eq!(worst(&v, NrasCheck::Signature), Some(Outcome::Pass));
}

#[test]
fn expired_and_early_tokens_fail_the_time_check() {
    let dir = corpus_or_skip!();
    let (body, jwks) = files(&dir, &NEARDIRECT);
    for at in [NEARDIRECT.iat + 3600, NEARDIRECT.iat - 1, 1_900_000_000] {
        let v = verify_nras_response(&body, &jwks, &nonce(&NEARDIRECT), at);
        assert!(!v.passed(), "at {at}");
        assert_eq!(v.first_failure().map(|c| c.id), Some(NrasCheck::Validity.into()));
    }
}

#[test]
fn tampered_token_payload_fails_the_signature_check() {
    let dir = corpus_or_skip!();
    let (body, jwks) = files(&dir, &NEARDIRECT);
    let mut doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    // Make GPU-3 claim success it did not sign: re-encode its payload with measres changed.
    let token = doc[1]["GPU-3"].as_str().unwrap().to_owned();
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["dbgstat"] = "enabled".into();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap()),
        parts[2]
    );
    doc[1]["GPU-3"] = forged.into();
    let body = serde_json::to_vec(&doc).unwrap();
    let v = verify_nras_response(&body, &jwks, &nonce(&NEARDIRECT), NEARDIRECT.iat + 60);
    print("tampered GPU-3", &v);
    assert!(!v.passed());
    let first = v.first_failure().unwrap();
    assert_eq!(first.id, NrasCheck::Signature.into());
    assert!(first.detail.starts_with("GPU-3:"), "{}", first.detail);
}

#[test]
fn a_gpu_token_from_another_response_fails_the_submods_check() {
    let dir = corpus_or_skip!();
    let (body, jwks) = files(&dir, &NEARDIRECT);
    let (other, other_jwks) = files(&dir, &NEARCLOUD);
    // Same JWKS for both: merge the keys so both sessions' signatures verify.
    let mut keys: serde_json::Value = serde_json::from_slice(&jwks).unwrap();
    let more: serde_json::Value = serde_json::from_slice(&other_jwks).unwrap();
    keys["keys"]
        .as_array_mut()
        .unwrap()
        .extend(more["keys"].as_array().unwrap().iter().cloned());
    let mut doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let other: serde_json::Value = serde_json::from_slice(&other).unwrap();
    doc[1]["GPU-0"] = other[1]["GPU-0"].clone();
    let v = verify_nras_response(
        &serde_json::to_vec(&doc).unwrap(),
        &serde_json::to_vec(&keys).unwrap(),
        &nonce(&NEARDIRECT),
        NEARDIRECT.iat + 60,
    );
    assert!(!v.passed());
    // The spliced token is older and for another nonce; submods catches it regardless.
    assert_eq!(worst(&v, NrasCheck::Submods), Some(Outcome::Fail));
}

#[test]
fn an_unknown_kid_fails_the_signature_check() {
    let dir = corpus_or_skip!();
    let (body, _) = files(&dir, &NEARDIRECT);
    let (_, other_jwks) = files(&dir, &NEARCLOUD);
    let mut keys: serde_json::Value = serde_json::from_slice(&other_jwks).unwrap();
    keys["keys"]
        .as_array_mut()
        .unwrap()
        .retain(|k| !k["kid"].as_str().unwrap_or("").contains("20260628170349267"));
    let v = verify_nras_response(
        &body,
        &serde_json::to_vec(&keys).unwrap(),
        &nonce(&NEARDIRECT),
        NEARDIRECT.iat + 60,
    );
    assert!(!v.passed());
    assert_eq!(v.first_failure().map(|c| c.id), Some(NrasCheck::Signature.into()));
}
