//! Step 5 of [`super::verify_quote`]: dcap-qvl's single `verify` call, reported as the named
//! DCAP checks ([`QuoteCheck::DCAP`]).
//!
//! dcap-qvl 0.5.2 verifies in a fixed order and stops at the first error. It has no error enum of
//! its own (its errors are `anyhow` text), but the certificate and CRL failures carry webpki's
//! typed [`webpki::Error`] as their source: [`classify`] maps those by variant, and only the rest
//! by message text ([`MESSAGE_RULES`], each needle pinned against dcap-qvl's source by a test).
//! Every check whose stages all ran before the failing one passed, the one that failed fails,
//! and the rest were not reached. The order (dcap-qvl `verify_impl`): root CA CRL and CRL
//! parsing, quote header, TCB info (dates, chain, signature), QE identity (dates, chain,
//! signature), PCK chain (from the quote), QE report signature and hash, QE report against the
//! QE identity, attestation-key signature over the quote, platform TCB level, TD/enclave
//! attributes.

use std::error::Error as StdError;

use dcap_qvl::QuoteCollateralV3;
use dcap_qvl::verify::ring::RingConfig;
use dcap_qvl::verify::{QuoteVerifier, VerifiedReport};

use super::{Policy, QuoteVerdict};
use crate::check::{Check, Checks, QuoteCheck};

/// A step of dcap-qvl's verification, in the order it runs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Stage {
    RootCrl,
    QuoteHeader,
    TcbInfo,
    QeIdentity,
    PckChain,
    QeReport,
    QePolicy,
    IsvSignature,
    TcbMatch,
    Attributes,
}

/// The DCAP checks with the stages each covers (the advisories are decided after a success, and
/// the debug attribute is read from the quote by Cloister too).
const CHECK_STAGES: [(QuoteCheck, &[Stage]); 6] = [
    (QuoteCheck::PckChain, &[Stage::PckChain]),
    // Revocation is checked for the root CA first, then within every chain.
    (
        QuoteCheck::Crls,
        &[Stage::RootCrl, Stage::TcbInfo, Stage::QeIdentity, Stage::PckChain],
    ),
    (QuoteCheck::TcbInfo, &[Stage::TcbInfo]),
    // The QE report's match against the QE identity (a later stage) fails this check too, but
    // the check's own stage is the identity's dates, chain and signature.
    (QuoteCheck::QeIdentity, &[Stage::QeIdentity]),
    (
        QuoteCheck::QuoteSignature,
        &[Stage::QuoteHeader, Stage::QeReport, Stage::IsvSignature],
    ),
    (QuoteCheck::TcbLevel, &[Stage::TcbMatch]),
];

/// Runs dcap-qvl and records the DCAP checks. Returns its report when it verified; on failure
/// the advisories and the TCB policy are skipped and `v.error` holds dcap-qvl's text.
pub(super) fn dcap_step(
    bytes: &[u8],
    collateral: &QuoteCollateralV3,
    now_unix: u64,
    policy: &Policy,
    v: &mut QuoteVerdict,
) -> Option<VerifiedReport> {
    let verifier = QuoteVerifier::new_prod().allow_debug(policy.allow_debug);
    match verifier.verify_with::<RingConfig>(bytes, collateral, now_unix) {
        Err(e) => {
            let text = format!("{e:#}");
            let err: &(dyn StdError + 'static) = &*e;
            let (stage, failed) = classify(err, collateral, now_unix);
            record_failure(&mut v.checks, stage, failed, &text, now_unix);
            v.error = Some(text);
            None
        }
        Ok(report) => {
            for (id, _) in CHECK_STAGES {
                if id != QuoteCheck::TcbLevel {
                    v.checks.push(Check::pass(id, pass_detail(id, now_unix)));
                }
            }
            v.checks.push(Check::pass(
                QuoteCheck::TcbLevel,
                format!(
                    "{} (QE {}; platform {})",
                    report.status, report.qe_status.status, report.platform_status.status
                ),
            ));
            Some(report)
        }
    }
}

/// The checks after dcap-qvl stopped at `stage` with `text`, failing `failed`.
fn record_failure(checks: &mut Checks, stage: Stage, failed: QuoteCheck, text: &str, now_unix: u64) {
    let reason = format!("dcap-qvl at {now_unix}: {text}");
    for (id, stages) in CHECK_STAGES {
        checks.push(if id == failed {
            Check::fail(id, reason.clone())
        } else if stages.iter().all(|s| *s < stage) {
            Check::pass(id, pass_detail(id, now_unix))
        } else {
            Check::skip(id, format!("not reached: dcap-qvl stopped at {failed}"))
        });
    }
    if failed == QuoteCheck::DebugOff {
        // The quote's attributes are what dcap-qvl refused: the debug check says so, whatever
        // Cloister's own reading of the debug bit was.
        let all: Vec<Check> = std::mem::take(checks).into_vec();
        checks.extend(all.into_iter().map(|c| {
            if c.id == QuoteCheck::DebugOff.into() {
                Check::fail(QuoteCheck::DebugOff, reason.clone())
            } else {
                c
            }
        }));
    }
    checks.push(Check::skip(
        QuoteCheck::Advisories,
        format!("not reached: dcap-qvl stopped at {failed}"),
    ));
    checks.push(Check::skip(QuoteCheck::TcbAccepted, "DCAP verification failed"));
}

/// What dcap-qvl says for each stage when it passes.
fn pass_detail(id: QuoteCheck, now_unix: u64) -> String {
    match id {
        QuoteCheck::PckChain => "the quote's PCK certificate chains to the Intel SGX Root CA".to_owned(),
        QuoteCheck::Crls => format!(
            "root CA and PCK CA CRLs parse, are current at {now_unix}, and revoke nothing in the chains"
        ),
        QuoteCheck::TcbInfo | QuoteCheck::QeIdentity => {
            format!("signed by Intel SGX TCB Signing, valid at {now_unix}")
        }
        QuoteCheck::QuoteSignature => {
            "the PCK key signs the QE report, which binds the attestation key that signs the quote".to_owned()
        }
        _ => String::new(),
    }
}

/// dcap-qvl's context around a certificate-chain failure (`utils::verify_certificate_chain`).
pub(super) const CHAIN_CONTEXT: &str = "Failed to verify certificate chain";
/// dcap-qvl's context around a CRL that does not parse (`utils::parse_crls`).
pub(super) const CRL_PARSE_CONTEXT: &str = "Failed to parse CRL";
/// dcap-qvl's context around a PCK leaf certificate that does not parse.
pub(super) const PCK_PARSE_CONTEXT: &str = "Failed to parse PCK certificate";

/// The mappings that depend on dcap-qvl's message text, tried in order: (needles, stage, check).
/// Platform TCB matching mentions "TCB info" too, so it comes before the TCB info step.
pub(super) const MESSAGE_RULES: &[(&[&str], Stage, QuoteCheck)] = &[
    (
        &[
            "No matching TCB level",
            "Fmspc mismatch",
            "Failed to decode TCB FMSPC",
            "non-TDX TCB info",
            "non-SGX TCB info",
            "component count mismatch",
            "TDX module",
            "tdxModule",
            "TCB status is invalid",
            "Failed to get TD10 report",
        ],
        Stage::TcbMatch,
        QuoteCheck::TcbLevel,
    ),
    (
        &["QE ISVSVN", "No TCB levels found in QE Identity"],
        Stage::QePolicy,
        QuoteCheck::TcbLevel,
    ),
    (
        &[
            "QE MRSIGNER",
            "QE ISVPRODID",
            "QE MISCSELECT",
            "QE ATTRIBUTES",
            "QE report validation failed",
        ],
        Stage::QePolicy,
        QuoteCheck::QeIdentity,
    ),
    (
        &["TCBInfo", "TCB Info", "TcbInfo", "tcb_info"],
        Stage::TcbInfo,
        QuoteCheck::TcbInfo,
    ),
    (
        &["QE Identity", "QeIdentity", "qe_identity"],
        Stage::QeIdentity,
        QuoteCheck::QeIdentity,
    ),
    (
        &["qe_report", "QE report", "Invalid QE auth data length"],
        Stage::QeReport,
        QuoteCheck::QuoteSignature,
    ),
    (
        &["ISV enclave report signature", "signed quote scope"],
        Stage::IsvSignature,
        QuoteCheck::QuoteSignature,
    ),
    (
        &[
            "Failed to decode quote",
            "quote version",
            "QE vendor ID",
            "quote must have version",
            "attestation key type",
            "Unsupported TEE type",
        ],
        Stage::QuoteHeader,
        QuoteCheck::QuoteSignature,
    ),
    (
        &["Debug mode", "TD attributes", "SEPT_VE_DISABLE", "MR service TD"],
        Stage::Attributes,
        QuoteCheck::DebugOff,
    ),
    (
        &[CRL_PARSE_CONTEXT, "CRLs required", "root ca"],
        Stage::RootCrl,
        QuoteCheck::Crls,
    ),
];

/// Whether webpki's error is about revocation (a CRL), not the certificate chain itself.
fn is_revocation_error(e: &webpki::Error) -> bool {
    use webpki::Error as E;
    matches!(
        e,
        E::CertRevoked
            | E::CrlExpired { .. }
            | E::UnknownRevocationStatus
            | E::InvalidCrlSignatureForPublicKey
            | E::IssuerNotCrlSigner
            | E::InvalidCrlNumber
            | E::UnsupportedCrlVersion
            | E::UnsupportedDeltaCrl
            | E::UnsupportedIndirectCrl
            | E::UnsupportedRevocationReason
            | E::UnsupportedRevocationReasonsPartitioning
            | E::UnsupportedCrlIssuingDistributionPoint
            | E::UnsupportedCrlSignatureAlgorithm
            | E::UnsupportedCrlSignatureAlgorithmForPublicKey
    )
}

/// Whether webpki's error is a certificate outside its validity period.
fn is_validity_error(e: &webpki::Error) -> bool {
    matches!(
        e,
        webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. }
    )
}

/// The stage that produced dcap-qvl's error `err` and the check it fails: by webpki's typed
/// error where the chain carries one, else by [`MESSAGE_RULES`].
pub(super) fn classify(
    err: &(dyn StdError + 'static),
    collateral: &QuoteCollateralV3,
    now_unix: u64,
) -> (Stage, QuoteCheck) {
    let mut chain = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        chain.push(e);
        next = e.source();
    }
    if let Some(pki) = chain.iter().find_map(|e| e.downcast_ref::<webpki::Error>()) {
        // An uncontexted webpki error is the root CA's check against the CRLs.
        if err.downcast_ref::<webpki::Error>().is_some() {
            return (Stage::RootCrl, QuoteCheck::Crls);
        }
        let context = err.to_string();
        if context == CHAIN_CONTEXT {
            let stage = chain_stage(is_validity_error(pki), collateral, now_unix);
            let check = if is_revocation_error(pki) {
                QuoteCheck::Crls
            } else {
                match stage {
                    Stage::TcbInfo => QuoteCheck::TcbInfo,
                    Stage::QeIdentity => QuoteCheck::QeIdentity,
                    _ => QuoteCheck::PckChain,
                }
            };
            return (stage, check);
        }
        if context == CRL_PARSE_CONTEXT {
            return (Stage::RootCrl, QuoteCheck::Crls);
        }
        if context == PCK_PARSE_CONTEXT {
            return (Stage::PckChain, QuoteCheck::PckChain);
        }
    }
    let text = chain
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ");
    classify_text(&text)
}

/// The stage and check for an error known only by its text.
pub(super) fn classify_text(text: &str) -> (Stage, QuoteCheck) {
    for (needles, stage, check) in MESSAGE_RULES {
        if needles.iter().any(|n| text.contains(n)) {
            return (*stage, *check);
        }
    }
    // PCK certificate parsing and its Intel SGX extension (FMSPC, CPUSVN, PCESVN), and anything
    // else dcap-qvl reports while reading the quote's certification data.
    (Stage::PckChain, QuoteCheck::PckChain)
}

/// dcap-qvl's chain error does not say which of the three chains failed. A validity-time error
/// belongs to the first chain (in dcap-qvl's order) with a certificate outside its validity at
/// `now`; any other error belongs to a collateral chain only when that chain does not even parse,
/// and otherwise to the PCK chain (the one chain that is not served signed by Intel PCS).
fn chain_stage(time_error: bool, collateral: &QuoteCollateralV3, now_unix: u64) -> Stage {
    for (stage, pem) in [
        (Stage::TcbInfo, &collateral.tcb_info_issuer_chain),
        (Stage::QeIdentity, &collateral.qe_identity_issuer_chain),
    ] {
        match pem_chain_windows(pem.as_bytes()) {
            None => return stage,
            Some(windows) => {
                if time_error && windows.iter().any(|&(nb, na)| now_unix < nb || now_unix > na) {
                    return stage;
                }
            }
        }
    }
    Stage::PckChain
}

/// `(not_before, not_after)` in Unix seconds of each certificate of a PEM chain; `None` when the
/// chain is empty or a certificate does not parse.
fn pem_chain_windows(pem: &[u8]) -> Option<Vec<(u64, u64)>> {
    let certs = crate::gpu::cert::parse_pem_chain(pem).ok()?;
    Some(
        certs
            .iter()
            .map(|c| {
                let v = &c.cert.tbs_certificate.validity;
                (
                    v.not_before.to_unix_duration().as_secs(),
                    v.not_after.to_unix_duration().as_secs(),
                )
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests;
