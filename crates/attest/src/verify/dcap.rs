//! Turning dcap-qvl's single `verify` call into the named DCAP checks.
//!
//! dcap-qvl 0.5.2 verifies in a fixed order and stops at the first error, which it reports as text.
//! [`classify`] maps that text to the stage that failed and the check it belongs to; every check
//! whose stages all ran before it passed, the one that failed fails, and the rest were not
//! reached. The order (dcap-qvl `verify_impl`): root CA CRL and CRL parsing, quote header, TCB
//! info (dates, chain, signature), QE identity (dates, chain, signature), PCK chain (from the
//! quote), QE report signature and hash, QE report against the QE identity, attestation-key
//! signature over the quote, platform TCB level, TD/enclave attributes.

use super::names;
use dcap_qvl::QuoteCollateralV3;

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
pub(super) const CHECK_STAGES: [(&str, &[Stage]); 6] = [
    (names::PCK_CHAIN, &[Stage::PckChain]),
    // Revocation is checked for the root CA first, then within every chain.
    (
        names::CRLS,
        &[Stage::RootCrl, Stage::TcbInfo, Stage::QeIdentity, Stage::PckChain],
    ),
    (names::TCB_INFO, &[Stage::TcbInfo]),
    // The QE report's match against the QE identity (a later stage) fails this check too, but
    // the check's own stage is the identity's dates, chain and signature.
    (names::QE_IDENTITY, &[Stage::QeIdentity]),
    (
        names::QUOTE_SIGNATURE,
        &[Stage::QuoteHeader, Stage::QeReport, Stage::IsvSignature],
    ),
    (names::TCB_LEVEL, &[Stage::TcbMatch]),
];

/// What dcap-qvl says for each stage when it passes.
pub(super) fn pass_detail(name: &str, now_unix: u64) -> String {
    match name {
        n if n == names::PCK_CHAIN => {
            "the quote's PCK certificate chains to the Intel SGX Root CA".to_owned()
        }
        n if n == names::CRLS => {
            format!(
                "root CA and PCK CA CRLs parse, are current at {now_unix}, and revoke nothing in the chains"
            )
        }
        n if n == names::TCB_INFO => {
            format!("signed by Intel SGX TCB Signing, valid at {now_unix}")
        }
        n if n == names::QE_IDENTITY => {
            format!("signed by Intel SGX TCB Signing, valid at {now_unix}")
        }
        n if n == names::QUOTE_SIGNATURE => {
            "the PCK key signs the QE report, which binds the attestation key that signs the quote".to_owned()
        }
        _ => String::new(),
    }
}

fn has_any(text: &str, needles: &[&str]) -> bool {
    needles.iter().any(|n| text.contains(n))
}

fn is_crl_error(text: &str) -> bool {
    has_any(text, &["Crl", "CRL", "Revoked", "Revocation"])
}

/// The stage that produced dcap-qvl's error `text` and the name of the check it fails.
pub(super) fn classify(text: &str, collateral: &QuoteCollateralV3, now_unix: u64) -> (Stage, &'static str) {
    const CHAIN: &str = "Failed to verify certificate chain";
    if text.starts_with(CHAIN) {
        let stage = chain_stage(text, collateral, now_unix);
        let check = if is_crl_error(text) {
            names::CRLS
        } else {
            match stage {
                Stage::TcbInfo => names::TCB_INFO,
                Stage::QeIdentity => names::QE_IDENTITY,
                _ => names::PCK_CHAIN,
            }
        };
        return (stage, check);
    }
    // Platform TCB matching mentions "TCB info" too: test it before the TCB info step.
    if has_any(
        text,
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
    ) {
        return (Stage::TcbMatch, names::TCB_LEVEL);
    }
    if has_any(text, &["QE ISVSVN", "No TCB levels found in QE Identity"]) {
        return (Stage::QePolicy, names::TCB_LEVEL);
    }
    if has_any(
        text,
        &[
            "QE MRSIGNER",
            "QE ISVPRODID",
            "QE MISCSELECT",
            "QE ATTRIBUTES",
            "QE report validation failed",
        ],
    ) {
        return (Stage::QePolicy, names::QE_IDENTITY);
    }
    if has_any(text, &["TCBInfo", "TCB Info", "TcbInfo", "tcb_info"]) {
        return (Stage::TcbInfo, names::TCB_INFO);
    }
    if has_any(text, &["QE Identity", "QeIdentity", "qe_identity"]) {
        return (Stage::QeIdentity, names::QE_IDENTITY);
    }
    if has_any(text, &["qe_report", "QE report", "Invalid QE auth data length"]) {
        return (Stage::QeReport, names::QUOTE_SIGNATURE);
    }
    if has_any(text, &["ISV enclave report signature", "signed quote scope"]) {
        return (Stage::IsvSignature, names::QUOTE_SIGNATURE);
    }
    if has_any(
        text,
        &[
            "Failed to decode quote",
            "quote version",
            "QE vendor ID",
            "quote must have version",
            "attestation key type",
            "Unsupported TEE type",
        ],
    ) {
        return (Stage::QuoteHeader, names::QUOTE_SIGNATURE);
    }
    if has_any(
        text,
        &["Debug mode", "TD attributes", "SEPT_VE_DISABLE", "MR service TD"],
    ) {
        return (Stage::Attributes, names::DEBUG_OFF);
    }
    if has_any(text, &["Failed to parse CRL", "CRLs required", "root ca"]) || is_crl_error(text) {
        return (Stage::RootCrl, names::CRLS);
    }
    // PCK certificate parsing and its Intel SGX extension (FMSPC, CPUSVN, PCESVN), and anything
    // else dcap-qvl reports while reading the quote's certification data.
    (Stage::PckChain, names::PCK_CHAIN)
}

/// dcap-qvl's chain error does not say which of the three chains failed. A validity-time error
/// belongs to the first chain (in dcap-qvl's order) with a certificate outside its validity at
/// `now`; any other error belongs to a collateral chain only when that chain does not even parse,
/// and otherwise to the PCK chain (the one chain that is not served signed by Intel PCS).
fn chain_stage(text: &str, collateral: &QuoteCollateralV3, now_unix: u64) -> Stage {
    let time_error = has_any(text, &["CertExpired", "CertNotValidYet"]);
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
mod tests {
    use super::*;

    fn stage_of(text: &str) -> (Stage, &'static str) {
        let c = QuoteCollateralV3 {
            pck_crl_issuer_chain: String::new(),
            root_ca_crl: Vec::new(),
            pck_crl: Vec::new(),
            tcb_info_issuer_chain: String::new(),
            tcb_info: String::new(),
            tcb_info_signature: Vec::new(),
            qe_identity_issuer_chain: String::new(),
            qe_identity: String::new(),
            qe_identity_signature: Vec::new(),
            pck_certificate_chain: None,
        };
        classify(text, &c, 0)
    }

    #[test]
    fn every_dcap_qvl_error_maps_to_its_check() {
        let cases: &[(&str, Stage, &str)] = &[
            ("TCBInfo expired", Stage::TcbInfo, names::TCB_INFO),
            (
                "TCBInfo issue date is in the future",
                Stage::TcbInfo,
                names::TCB_INFO,
            ),
            (
                "Signature is invalid for tcb_info in quote_collateral",
                Stage::TcbInfo,
                names::TCB_INFO,
            ),
            ("QE Identity expired", Stage::QeIdentity, names::QE_IDENTITY),
            (
                "Signature is invalid for qe_identity in quote_collateral",
                Stage::QeIdentity,
                names::QE_IDENTITY,
            ),
            (
                "Unsupported QE Identity id/version for the quote TEE type: QE version 2 (expected TD_QE version [2, 3])",
                Stage::QeIdentity,
                names::QE_IDENTITY,
            ),
            (
                "Failed to parse PCK certificate: BadDer",
                Stage::PckChain,
                names::PCK_CHAIN,
            ),
            (
                "Certificate chain is too short in quote",
                Stage::PckChain,
                names::PCK_CHAIN,
            ),
            ("Intel extension not found", Stage::PckChain, names::PCK_CHAIN),
            (
                "Signature is invalid for qe_report in quote",
                Stage::QeReport,
                names::QUOTE_SIGNATURE,
            ),
            ("QE report hash mismatch", Stage::QeReport, names::QUOTE_SIGNATURE),
            (
                "QE MRSIGNER mismatch: expected A, got B",
                Stage::QePolicy,
                names::QE_IDENTITY,
            ),
            (
                "QE ISVSVN 1 is below minimum required 2 from QE Identity",
                Stage::QePolicy,
                names::TCB_LEVEL,
            ),
            (
                "ISV enclave report signature is invalid",
                Stage::IsvSignature,
                names::QUOTE_SIGNATURE,
            ),
            (
                "Unsupported DCAP quote version",
                Stage::QuoteHeader,
                names::QUOTE_SIGNATURE,
            ),
            ("No matching TCB level found", Stage::TcbMatch, names::TCB_LEVEL),
            ("Fmspc mismatch", Stage::TcbMatch, names::TCB_LEVEL),
            (
                "TDX quote with non-TDX TCB info in the collateral",
                Stage::TcbMatch,
                names::TCB_LEVEL,
            ),
            (
                "TCB status is invalid: Revoked",
                Stage::TcbMatch,
                names::TCB_LEVEL,
            ),
            ("Debug mode is enabled", Stage::Attributes, names::DEBUG_OFF),
            ("Invalid MR service TD", Stage::Attributes, names::DEBUG_OFF),
            ("Failed to parse CRL: BadDer", Stage::RootCrl, names::CRLS),
            (
                "CrlExpired { time: UnixTime(1), next_update: UnixTime(0) }",
                Stage::RootCrl,
                names::CRLS,
            ),
        ];
        for (text, stage, check) in cases {
            assert_eq!(stage_of(text), (*stage, *check), "{text}");
        }
        // A chain error with an empty collateral chain is the TCB info's; a revocation error
        // inside a chain is the CRL check's.
        assert_eq!(
            stage_of("Failed to verify certificate chain: CertRevoked"),
            (Stage::TcbInfo, names::CRLS)
        );
    }
}
