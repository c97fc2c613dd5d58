#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn empty_collateral() -> QuoteCollateralV3 {
    QuoteCollateralV3 {
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
    }
}

fn classify_anyhow(e: &anyhow::Error) -> (Stage, QuoteCheck) {
    classify(&**e, &empty_collateral(), 0)
}

#[test]
fn webpki_errors_map_by_variant() {
    use webpki::Error as E;
    // Uncontexted: the root CA's check against the CRLs.
    assert_eq!(
        classify_anyhow(&anyhow::Error::from(E::BadDer)),
        (Stage::RootCrl, QuoteCheck::Crls)
    );
    // A revocation error inside a chain is the CRL check's; an empty collateral chain is the
    // TCB info's (the first chain dcap-qvl verifies).
    let chain = |e: E| anyhow::Error::from(e).context(CHAIN_CONTEXT);
    assert_eq!(
        classify_anyhow(&chain(E::CertRevoked)),
        (Stage::TcbInfo, QuoteCheck::Crls)
    );
    assert_eq!(
        classify_anyhow(&chain(E::UnknownRevocationStatus)),
        (Stage::TcbInfo, QuoteCheck::Crls)
    );
    assert_eq!(
        classify_anyhow(&chain(E::UnknownIssuer)),
        (Stage::TcbInfo, QuoteCheck::TcbInfo)
    );
    assert_eq!(
        classify_anyhow(&anyhow::Error::from(E::BadDer).context(CRL_PARSE_CONTEXT)),
        (Stage::RootCrl, QuoteCheck::Crls)
    );
    assert_eq!(
        classify_anyhow(&anyhow::Error::from(E::BadDer).context(PCK_PARSE_CONTEXT)),
        (Stage::PckChain, QuoteCheck::PckChain)
    );
    // A webpki error under a context this module does not know falls back to the text.
    assert_eq!(
        classify_anyhow(&anyhow::Error::from(E::BadDer).context("Failed to parse TCB Info leaf certificate")),
        (Stage::TcbInfo, QuoteCheck::TcbInfo)
    );
}

#[test]
fn real_dcap_qvl_errors_carry_webpki_sources() {
    // Empty collateral: dcap-qvl's first step, the root CA against the CRLs, fails with a bare
    // webpki error.
    let e = QuoteVerifier::new_prod()
        .verify_with::<RingConfig>(b"", &empty_collateral(), 1_700_000_000)
        .expect_err("empty collateral cannot verify");
    assert!(e.downcast_ref::<webpki::Error>().is_some(), "{e:#}");
    assert_eq!(classify_anyhow(&e), (Stage::RootCrl, QuoteCheck::Crls));
}

#[test]
fn every_text_mapping_maps_to_its_check() {
    let cases: &[(&str, Stage, QuoteCheck)] = &[
        ("TCBInfo expired", Stage::TcbInfo, QuoteCheck::TcbInfo),
        (
            "TCBInfo issue date is in the future",
            Stage::TcbInfo,
            QuoteCheck::TcbInfo,
        ),
        (
            "Signature is invalid for tcb_info in quote_collateral",
            Stage::TcbInfo,
            QuoteCheck::TcbInfo,
        ),
        ("QE Identity expired", Stage::QeIdentity, QuoteCheck::QeIdentity),
        (
            "Signature is invalid for qe_identity in quote_collateral",
            Stage::QeIdentity,
            QuoteCheck::QeIdentity,
        ),
        (
            "Unsupported QE Identity id/version for the quote TEE type: QE version 2 (expected TD_QE version [2, 3])",
            Stage::QeIdentity,
            QuoteCheck::QeIdentity,
        ),
        (
            "Certificate chain is too short in quote",
            Stage::PckChain,
            QuoteCheck::PckChain,
        ),
        ("Intel extension not found", Stage::PckChain, QuoteCheck::PckChain),
        (
            "Signature is invalid for qe_report in quote",
            Stage::QeReport,
            QuoteCheck::QuoteSignature,
        ),
        (
            "QE report hash mismatch",
            Stage::QeReport,
            QuoteCheck::QuoteSignature,
        ),
        (
            "QE MRSIGNER mismatch: expected A, got B",
            Stage::QePolicy,
            QuoteCheck::QeIdentity,
        ),
        (
            "QE ISVSVN 1 is below minimum required 2 from QE Identity",
            Stage::QePolicy,
            QuoteCheck::TcbLevel,
        ),
        (
            "ISV enclave report signature is invalid",
            Stage::IsvSignature,
            QuoteCheck::QuoteSignature,
        ),
        (
            "Unsupported DCAP quote version",
            Stage::QuoteHeader,
            QuoteCheck::QuoteSignature,
        ),
        (
            "No matching TCB level found",
            Stage::TcbMatch,
            QuoteCheck::TcbLevel,
        ),
        ("Fmspc mismatch", Stage::TcbMatch, QuoteCheck::TcbLevel),
        (
            "TDX quote with non-TDX TCB info in the collateral",
            Stage::TcbMatch,
            QuoteCheck::TcbLevel,
        ),
        (
            "TCB status is invalid: Revoked",
            Stage::TcbMatch,
            QuoteCheck::TcbLevel,
        ),
        ("Debug mode is enabled", Stage::Attributes, QuoteCheck::DebugOff),
        ("Invalid MR service TD", Stage::Attributes, QuoteCheck::DebugOff),
        ("Failed to parse CRL: BadDer", Stage::RootCrl, QuoteCheck::Crls),
        (
            "Failed to create RevocationOptionsBuilder - CRLs required",
            Stage::RootCrl,
            QuoteCheck::Crls,
        ),
    ];
    for (text, stage, check) in cases {
        assert_eq!(classify_text(text), (*stage, *check), "{text}");
        // The same text without a typed source classifies the same way.
        let e = anyhow::anyhow!("{text}");
        assert_eq!(classify_anyhow(&e), (*stage, *check), "{text}");
    }
}

/// The source directory of the dcap-qvl package this build uses: its version from the
/// workspace's Cargo.lock, its source where cargo unpacked it (`$CARGO_HOME/registry/src/*/`).
fn dcap_qvl_source() -> std::path::PathBuf {
    let lock_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock");
    let lock = std::fs::read_to_string(lock_path).expect("reading Cargo.lock");
    let version = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"dcap-qvl\"\n"))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
        .map(|v| v.trim_matches('"').to_owned())
        .expect("dcap-qvl in Cargo.lock");
    assert_eq!(
        version, "0.5.2",
        "dcap-qvl changed: review MESSAGE_RULES and the contexts in verify/dcap.rs, then this pin"
    );
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cargo")))
        .expect("CARGO_HOME or HOME");
    let registries = std::fs::read_dir(cargo_home.join("registry/src")).expect("cargo's registry sources");
    registries
        .filter_map(|r| Some(r.ok()?.path().join(format!("dcap-qvl-{version}/src"))))
        .find(|p| p.is_dir())
        .unwrap_or_else(|| {
            panic!(
                "dcap-qvl {version}'s source is not under {}",
                cargo_home.display()
            )
        })
}

/// Every mapping that still depends on dcap-qvl's message text names text that dcap-qvl's source
/// contains: a dcap-qvl upgrade that rewords a message fails here, not silently in the field.
#[test]
fn every_text_mapping_is_pinned_to_dcap_qvl_source() {
    let dir = dcap_qvl_source();
    let mut source = String::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            source.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
    let contexts = [CHAIN_CONTEXT, CRL_PARSE_CONTEXT, PCK_PARSE_CONTEXT];
    let needles = MESSAGE_RULES
        .iter()
        .flat_map(|(needles, _, _)| needles.iter())
        .chain(contexts.iter());
    for needle in needles {
        assert!(
            source.contains(needle),
            "dcap-qvl's source in {} no longer says {needle:?}: update MESSAGE_RULES",
            dir.display()
        );
    }
    // The contexts are whole messages (`.context("...")`), compared for equality.
    for context in contexts {
        assert!(source.contains(&format!("context(\"{context}\")")), "{context}");
    }
}
