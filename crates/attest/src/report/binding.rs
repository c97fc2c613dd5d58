//! How a report's quote binds its signing key and the client's nonce (docs/protocol.md §3), for
//! both layouts seen in the field:
//!
//! - `ecdsa` (Cloister, Phala, NEAR): `report_data = address (20 bytes) ‖ 12 zero bytes ‖ nonce`;
//! - `ed25519` (NEAR AI's model servers): `report_data = SHA-256(public key ‖ TLS SPKI
//!   fingerprint) ‖ nonce`, where the fingerprint is the SHA-256 of the DER SubjectPublicKeyInfo
//!   of the TLS certificate the service presents. When the report came over TLS, that fingerprint
//!   is compared with the certificate the connection actually presented.

use cloister_types::{
    AttestationReport, Nonce, ReportData, Signer, SigningAlgo, parse_address, parse_ed25519_key,
};
use sha2::{Digest, Sha256};

use super::{Transport, truncate};
use crate::check::{Check, Checks, ReportCheck};

/// The `signing_algo` check; `None` when the scheme is not one this verifier binds.
pub(super) fn algo_check(report: &AttestationReport, checks: &mut Checks) -> Option<SigningAlgo> {
    let algo = SigningAlgo::parse(&report.signing_algo);
    checks.push(match algo {
        Some(SigningAlgo::Ecdsa) => Check::pass(ReportCheck::SigningAlgo, "secp256k1, EIP-191"),
        Some(SigningAlgo::Ed25519) => Check::pass(
            ReportCheck::SigningAlgo,
            "Ed25519; report_data binds SHA-256(public key ‖ TLS SPKI fingerprint)",
        ),
        None => Check::fail(
            ReportCheck::SigningAlgo,
            format!(
                "signing_algo is {:?}; only ecdsa and ed25519 reports bind a key",
                truncate(&report.signing_algo)
            ),
        ),
    });
    algo
}

/// The key, nonce and TLS checks over the quote's report_data `rd` (`None`: the quote did not
/// parse). Returns the signer the quote binds, when it binds one.
pub(super) fn binding_checks(
    report: &AttestationReport,
    algo: Option<SigningAlgo>,
    rd: Option<ReportData>,
    expected_nonce: &Nonce,
    transport: &Transport,
    checks: &mut Checks,
) -> Option<Signer> {
    let Some(rd) = rd else {
        checks.push(Check::fail(
            ReportCheck::BindsAddress,
            "no report_data: the quote did not parse",
        ));
        checks.push(Check::fail(
            ReportCheck::BindsNonce,
            "no report_data: the quote did not parse",
        ));
        return None;
    };
    let (signer, check) = match algo {
        Some(SigningAlgo::Ecdsa) | None => ecdsa_binding(report, &rd),
        Some(SigningAlgo::Ed25519) => ed25519_binding(report, &rd),
    };
    checks.push(check);
    checks.push(if rd.nonce() == *expected_nonce {
        Check::pass(ReportCheck::BindsNonce, "report_data[32..64] is our nonce")
    } else {
        Check::fail(
            ReportCheck::BindsNonce,
            format!("report_data[32..64] is {}, we sent {expected_nonce}", rd.nonce()),
        )
    });
    tls_check(report, algo, transport, checks);
    // An unknown scheme binds nothing, whatever report_data holds.
    if algo.is_none() { None } else { signer }
}

fn ecdsa_binding(report: &AttestationReport, rd: &ReportData) -> (Option<Signer>, Check) {
    let Ok(addr) = parse_address(&report.signing_address) else {
        return (
            None,
            Check::fail(
                ReportCheck::BindsAddress,
                format!(
                    "signing_address {:?} is not a 20-byte hex address",
                    truncate(&report.signing_address)
                ),
            ),
        );
    };
    let check = if rd.signing_address() != addr {
        Check::fail(
            ReportCheck::BindsAddress,
            format!(
                "report_data[0..20] is 0x{}, the report's signing_address is 0x{}",
                hex::encode(rd.signing_address()),
                hex::encode(addr)
            ),
        )
    } else if !rd.padding_is_zero() {
        Check::fail(
            ReportCheck::BindsAddress,
            format!(
                "report_data[20..32] must be zero, is {}",
                hex::encode(&rd.0[20..32])
            ),
        )
    } else {
        return (
            Some(Signer::Ecdsa(addr)),
            Check::pass(
                ReportCheck::BindsAddress,
                format!("0x{} zero-padded to 32 bytes", hex::encode(addr)),
            ),
        );
    };
    (None, check)
}

fn ed25519_binding(report: &AttestationReport, rd: &ReportData) -> (Option<Signer>, Check) {
    let fail = |detail: String| (None, Check::fail(ReportCheck::BindsAddress, detail));
    let Ok(key) = parse_ed25519_key(&report.signing_address) else {
        return fail(format!(
            "signing_address {:?} is not a 32-byte hex Ed25519 public key",
            truncate(&report.signing_address)
        ));
    };
    if let Some(public) = report.signing_public_key.as_deref()
        && parse_ed25519_key(public).ok() != Some(key)
    {
        return fail(format!(
            "signing_public_key {:?} is not signing_address",
            truncate(public)
        ));
    }
    let Some(fingerprint) = tls_fingerprint(report) else {
        return fail(
            "an ed25519 report must carry tls_cert_fingerprint (32 bytes hex): report_data binds it"
                .to_owned(),
        );
    };
    let expected = ed25519_report_data_prefix(&key, &fingerprint);
    if rd.0[..32] != expected {
        return fail(format!(
            "report_data[0..32] is {}, SHA-256(signing_address ‖ tls_cert_fingerprint) is {}",
            hex::encode(&rd.0[..32]),
            hex::encode(expected)
        ));
    }
    (
        Some(Signer::Ed25519(key)),
        Check::pass(
            ReportCheck::BindsAddress,
            format!(
                "SHA-256({} ‖ tls_cert_fingerprint {})",
                hex::encode(key),
                hex::encode(fingerprint)
            ),
        ),
    )
}

/// The first half of an ed25519 report's report_data: `SHA-256(public key ‖ TLS SPKI fingerprint)`.
pub fn ed25519_report_data_prefix(public_key: &[u8; 32], tls_spki_sha256: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(public_key);
    h.update(tls_spki_sha256);
    h.finalize().into()
}

fn tls_fingerprint(report: &AttestationReport) -> Option<[u8; 32]> {
    let hex_fp = report.tls_cert_fingerprint.as_deref()?.trim();
    let hex_fp = hex_fp.strip_prefix("0x").unwrap_or(hex_fp);
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_fp, &mut out).ok()?;
    Some(out)
}

/// `tls_cert_fingerprint` against the connection: only an ed25519 report binds it, so only there
/// does a mismatch (a certificate the enclave does not hold) fail the report.
fn tls_check(
    report: &AttestationReport,
    algo: Option<SigningAlgo>,
    transport: &Transport,
    checks: &mut Checks,
) {
    if algo != Some(SigningAlgo::Ed25519) {
        if report.tls_cert_fingerprint.is_some() {
            checks.push(Check::skip(
                ReportCheck::TlsFingerprint,
                "an ecdsa report_data does not bind tls_cert_fingerprint",
            ));
        }
        return;
    }
    let Some(claimed) = tls_fingerprint(report) else {
        // The binding check already failed on it.
        return;
    };
    checks.push(match transport {
        Transport::Tls { spki_sha256 } if *spki_sha256 == claimed => Check::pass(
            ReportCheck::TlsFingerprint,
            format!("the server's certificate key hashes to {}", hex::encode(claimed)),
        ),
        Transport::Tls { spki_sha256 } => Check::fail(
            ReportCheck::TlsFingerprint,
            format!(
                "the connection presented a certificate whose key hashes to {}, the report binds {}",
                hex::encode(spki_sha256),
                hex::encode(claimed)
            ),
        ),
        Transport::Unverified => Check::skip(
            ReportCheck::TlsFingerprint,
            "not fetched over TLS: no certificate to compare (the quote still binds the key)",
        ),
    });
}
