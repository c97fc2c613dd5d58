//! Verification of a whole attestation report (`GET /v1/attestation/report`): the quote, and the
//! bindings between the quote, the signing address, the client's nonce and the GPU evidence.
//!
//! Like [`crate::verify`], this is pure and fails closed: [`ReportVerdict::passed`] is
//! [`Checks::passed`] over every check, the quote's and the event log's (listed under their
//! [`crate::check::Scoped`] ids, e.g. `quote: not simulated`) included.

use cloister_types::{Address, AttestationReport, Nonce, ReportData, Signer, TeeKind};
use dcap_qvl::QuoteCollateralV3;
use serde::Serialize;

use crate::check::{Check, Checks, GpuCheck, QuoteCheck, ReportCheck, Scoped};
use crate::gpu;
use crate::verify::{Policy, QuoteVerdict, verify_quote};

mod binding;
mod key_binding;

pub use binding::ed25519_report_data_prefix;

/// How a report reached the verifier: what the checks that depend on the connection can see.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// Not over TLS, or not known (a file, plain HTTP): connection checks are skipped.
    #[default]
    Unverified,
    /// Over TLS: the SHA-256 of the DER SubjectPublicKeyInfo of the certificate the server
    /// presented ([`crate::tls::spki_sha256`]).
    Tls {
        /// SHA-256 of the presented certificate's SubjectPublicKeyInfo.
        spki_sha256: [u8; 32],
    },
}

/// The E2EE key a verified report binds (see docs/protocol.md §8).
#[derive(Clone, Debug, Serialize)]
pub struct BoundE2eeKey {
    /// The node's X25519 HPKE public key.
    #[serde(serialize_with = "hex_ser")]
    pub public_key: [u8; 32],
    /// The models the binding names.
    pub models: Vec<cloister_types::e2ee::BoundModel>,
    /// Unix seconds after which the binding must be fetched again.
    pub expires_at: u64,
}

fn hex_ser<S: serde::Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(v))
}

/// The result of [`verify_report`].
#[derive(Clone, Debug, Serialize)]
pub struct ReportVerdict {
    /// Every check, in order, including the quote's and the event log's, scoped
    /// ([`crate::check::CheckId::scoped`]: shown as `quote: …`, `event log: …`).
    pub checks: Checks,
    /// The verdict on the report's `intel_quote`.
    pub quote: QuoteVerdict,
    /// The signing key, when it parsed and the quote's report_data binds it. Trust it only when
    /// [`ReportVerdict::passed`] is true.
    #[serde(serialize_with = "opt_signer_ser")]
    pub signer: Option<Signer>,
    /// The evidence source the report claims (`tee` field), if any.
    pub tee: Option<TeeKind>,
    /// The dstack app identity read from a verified event log, when the report carries one.
    pub app: Option<crate::eventlog::DstackApp>,
    /// The registry's measurement digest of the quote (hex, see docs/protocol.md §7), when it parsed.
    pub measurement_digest: Option<String>,
    /// The HPKE key, when the report offers one and its key binding checks passed. Trust it only
    /// when [`ReportVerdict::passed`] is true.
    pub e2ee: Option<BoundE2eeKey>,
}

impl ReportVerdict {
    /// [`Checks::passed`] over every check, the quote's included.
    pub fn passed(&self) -> bool {
        self.checks.passed()
    }

    /// The first failing check, if any.
    pub fn first_failure(&self) -> Option<&Check> {
        self.checks.first_failure()
    }

    /// The bound signer's Ethereum address, for an `ecdsa` report.
    pub fn signing_address(&self) -> Option<Address> {
        self.signer.as_ref().and_then(Signer::address)
    }
}

/// Verifies `report` for a request that sent `expected_nonce`, with `collateral` for its quote,
/// at `now_unix`, under `policy`, not knowing how it was fetched ([`Transport::Unverified`]).
pub fn verify_report(
    report: &AttestationReport,
    expected_nonce: &Nonce,
    collateral: Option<&QuoteCollateralV3>,
    now_unix: u64,
    policy: &Policy,
) -> ReportVerdict {
    verify_report_over(
        report,
        expected_nonce,
        collateral,
        now_unix,
        policy,
        &Transport::Unverified,
    )
}

/// [`verify_report`] for a report that came over `transport`: a report that binds a TLS key is
/// also checked against the certificate the connection presented.
pub fn verify_report_over(
    report: &AttestationReport,
    expected_nonce: &Nonce,
    collateral: Option<&QuoteCollateralV3>,
    now_unix: u64,
    policy: &Policy,
    transport: &Transport,
) -> ReportVerdict {
    let mut checks = Checks::default();

    checks.push(match report.request_nonce.parse::<Nonce>() {
        Ok(n) if n == *expected_nonce => Check::pass(ReportCheck::NonceEcho, expected_nonce.to_hex()),
        Ok(n) => Check::fail(
            ReportCheck::NonceEcho,
            format!("report says {n}, we sent {expected_nonce}"),
        ),
        Err(_) => Check::fail(
            ReportCheck::NonceEcho,
            format!(
                "request_nonce {:?} is not 64 hex digits",
                truncate(&report.request_nonce)
            ),
        ),
    });

    let algo = binding::algo_check(report, &mut checks);

    match report.tee {
        Some(TeeKind::Simulated) if policy.allow_simulated => checks.push(Check::warn(
            ReportCheck::TeeNotSimulated,
            "the node says its TEE is SIMULATED (NOT SECURE); accepted only because the policy allows it",
        )),
        Some(TeeKind::Simulated) => checks.push(Check::fail(
            ReportCheck::TeeNotSimulated,
            "the node says its TEE is simulated (development only); refused",
        )),
        Some(kind) => checks.push(Check::pass(ReportCheck::TeeNotSimulated, format!("tee {kind}"))),
        None => {}
    }

    let quote = verify_quote(report.intel_quote.as_bytes(), collateral, now_unix, policy);
    checks.absorb(
        quote.checks.clone(),
        true,
        Scoped::Quote(QuoteCheck::TcbAccepted),
        "the quote did not verify",
    );

    let rd = quote.quote.as_ref().map(|q| ReportData(q.report_data()));
    let signer = binding::binding_checks(report, algo, rd, expected_nonce, transport, &mut checks);

    gpu_checks(
        report.nvidia_payload.as_deref(),
        expected_nonce,
        now_unix,
        &mut checks,
    );

    let bound_address = signer.as_ref().and_then(Signer::address);
    let e2ee = key_binding::key_binding_checks(report, bound_address, now_unix, &mut checks);
    let app = event_log_checks(report, quote.quote.as_ref(), &mut checks);
    let measurement_digest = quote
        .quote
        .as_ref()
        .and_then(crate::measurements::Measurements::from_quote)
        .map(|m| hex::encode(m.digest()));

    ReportVerdict {
        checks,
        quote,
        signer,
        tee: report.tee,
        app,
        measurement_digest,
        e2ee,
    }
}

/// Whether the report's `event_log` holds anything (a non-empty list, or a string that is not `[]`).
fn has_event_log(log: &serde_json::Value) -> bool {
    match log {
        serde_json::Value::Array(a) => !a.is_empty(),
        serde_json::Value::String(s) => {
            let t = s.trim();
            !t.is_empty() && t != "[]"
        }
        serde_json::Value::Null => false,
        _ => true,
    }
}

/// Event log: when present it must replay into the quote's RTMRs (its checks scoped, shown as
/// `event log: …`); a
/// dstack report must carry one. Returns the app identity when the log verified.
fn event_log_checks(
    report: &AttestationReport,
    quote: Option<&crate::quote::Quote>,
    checks: &mut Checks,
) -> Option<crate::eventlog::DstackApp> {
    if !has_event_log(&report.event_log) {
        checks.push(if report.tee == Some(TeeKind::Dstack) {
            Check::fail(ReportCheck::EventLog, "a dstack report must carry its event log")
        } else {
            Check::skip(ReportCheck::EventLog, "no event log in the report")
        });
        return None;
    }
    let Some(quote) = quote else {
        checks.push(Check::fail(
            ReportCheck::EventLog,
            "no quote to replay the event log against",
        ));
        return None;
    };
    let verdict = crate::eventlog::verify_event_log(&report.event_log, quote);
    let passed = verdict.passed();
    checks.absorb(
        verdict.checks,
        true,
        ReportCheck::EventLog,
        "the event log did not verify",
    );
    if passed { verdict.app } else { None }
}

/// GPU evidence: when present, every device's SPDM signature, certificate chain and request nonce
/// must verify ([`crate::gpu`]), and the payload's nonce must be ours. Absent evidence is a skip.
fn gpu_checks(payload: Option<&str>, expected_nonce: &Nonce, now_unix: u64, checks: &mut Checks) {
    let payload = payload.map(str::trim).filter(|p| !p.is_empty() && *p != "null");
    let Some(payload) = payload else {
        checks.push(Check::skip(
            GpuCheck::PayloadNonce,
            "no nvidia_payload: the report carries no GPU evidence",
        ));
        return;
    };
    let verdict = gpu::verify_gpu_payload(payload, &expected_nonce.0, now_unix);
    // A payload that failed verification fails the report even if no check says Fail (e.g.
    // nothing passed).
    checks.absorb(
        verdict.checks,
        false,
        GpuCheck::DevicesPresent,
        "GPU evidence did not verify",
    );
}

pub(crate) fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

fn opt_signer_ser<S: serde::Serializer>(a: &Option<Signer>, s: S) -> Result<S::Ok, S::Error> {
    match a {
        Some(a) => s.serialize_some(&a.to_string()),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::check::{CheckId, Outcome};
    use crate::simulated::simulated_quote;

    fn report(addr: Address, nonce: Nonce, rd: ReportData, tee: Option<TeeKind>) -> AttestationReport {
        AttestationReport {
            signing_address: format!("0x{}", hex::encode(addr)),
            signing_algo: "ecdsa".to_owned(),
            request_nonce: nonce.to_hex(),
            intel_quote: hex::encode(simulated_quote(&rd)),
            nvidia_payload: None,
            event_log: serde_json::Value::Null,
            info: serde_json::Value::Null,
            tee,
            hpke_public_key: None,
            key_binding: None,
            signing_public_key: None,
            tls_cert_fingerprint: None,
        }
    }

    fn outcome(v: &ReportVerdict, id: impl Into<CheckId>) -> Option<Outcome> {
        v.checks.outcome(id)
    }

    #[test]
    fn simulated_report_passes_only_with_the_dev_policy() {
        let (addr, nonce) = (Address::repeat_byte(9), Nonce([7; 32]));
        let r = report(
            addr,
            nonce,
            ReportData::new(addr, nonce),
            Some(TeeKind::Simulated),
        );
        let v = verify_report(&r, &nonce, None, 0, &Policy::dev_allow_simulated());
        assert!(v.passed(), "{:#?}", v.checks);
        assert_eq!(v.signing_address(), Some(addr));
        assert_eq!(v.signer, Some(Signer::Ecdsa(addr)));
        assert_eq!(outcome(&v, ReportCheck::TeeNotSimulated), Some(Outcome::Warn));
        assert_eq!(outcome(&v, GpuCheck::PayloadNonce), Some(Outcome::Skip));
        let v = verify_report(&r, &nonce, None, 0, &Policy::default());
        assert!(!v.passed());
        assert_eq!(outcome(&v, ReportCheck::TeeNotSimulated), Some(Outcome::Fail));
        assert_eq!(
            outcome(&v, Scoped::Quote(QuoteCheck::NotSimulated)),
            Some(Outcome::Fail)
        );
    }

    #[test]
    fn gpu_payload_nonce() {
        let (addr, nonce) = (Address::repeat_byte(9), Nonce([7; 32]));
        let mut r = report(addr, nonce, ReportData::new(addr, nonce), None);
        r.nvidia_payload = Some(format!(
            r#"{{"nonce":"{nonce}","evidence_list":[{{}}],"arch":"HOPPER"}}"#
        ));
        // Our nonce, but evidence that does not decode: the report fails on the GPU evidence.
        let v = verify_report(&r, &nonce, None, 0, &Policy::dev_allow_simulated());
        assert!(!v.passed(), "{:#?}", v.checks);
        assert_eq!(outcome(&v, GpuCheck::PayloadNonce), Some(Outcome::Pass));
        assert_eq!(
            v.first_failure().map(|c| c.id),
            Some(GpuCheck::DeviceDecodes.into())
        );

        r.nvidia_payload = Some(format!(r#"{{"nonce":"{}","evidence_list":[]}}"#, Nonce([1; 32])));
        let v = verify_report(&r, &nonce, None, 0, &Policy::dev_allow_simulated());
        assert!(!v.passed());
        assert_eq!(
            v.first_failure().map(|c| c.id),
            Some(GpuCheck::PayloadNonce.into())
        );

        r.nvidia_payload = Some("not json".to_owned());
        assert!(!verify_report(&r, &nonce, None, 0, &Policy::dev_allow_simulated()).passed());
        r.nvidia_payload = Some("null".to_owned());
        assert!(verify_report(&r, &nonce, None, 0, &Policy::dev_allow_simulated()).passed());
    }

    /// An ed25519 report in NEAR AI's layout, over a simulated quote binding `rd_key`/`rd_fp`.
    fn ed25519_report(key: [u8; 32], fp: [u8; 32], rd_fp: [u8; 32], nonce: Nonce) -> AttestationReport {
        let mut rd = [0u8; 64];
        rd[..32].copy_from_slice(&ed25519_report_data_prefix(&key, &rd_fp));
        rd[32..].copy_from_slice(&nonce.0);
        let mut r = report(Address::ZERO, nonce, ReportData(rd), None);
        r.signing_algo = "ed25519".to_owned();
        r.signing_address = hex::encode(key);
        r.signing_public_key = Some(hex::encode(key));
        r.tls_cert_fingerprint = Some(hex::encode(fp));
        r
    }

    #[test]
    fn ed25519_reports_bind_key_and_tls_fingerprint() {
        use sha2::{Digest, Sha256};
        let (key, fp, nonce) = ([5u8; 32], [6u8; 32], Nonce([7; 32]));
        let want: [u8; 32] = Sha256::digest([[5u8; 32], [6u8; 32]].concat()).into();
        assert_eq!(ed25519_report_data_prefix(&key, &fp), want);
        let dev = Policy::dev_allow_simulated();

        let r = ed25519_report(key, fp, fp, nonce);
        let v = verify_report(&r, &nonce, None, 0, &dev);
        assert!(v.passed(), "{:#?}", v.checks);
        assert_eq!(v.signer, Some(Signer::Ed25519(key)));
        assert_eq!(v.signing_address(), None);
        assert_eq!(outcome(&v, ReportCheck::SigningAlgo), Some(Outcome::Pass));
        assert_eq!(outcome(&v, ReportCheck::TlsFingerprint), Some(Outcome::Skip));

        // Fetched over TLS: the presented certificate must be the bound one.
        let tls = |spki_sha256| Transport::Tls { spki_sha256 };
        let v = verify_report_over(&r, &nonce, None, 0, &dev, &tls(fp));
        assert!(v.passed(), "{:#?}", v.checks);
        assert_eq!(outcome(&v, ReportCheck::TlsFingerprint), Some(Outcome::Pass));
        let v = verify_report_over(&r, &nonce, None, 0, &dev, &tls([9; 32]));
        assert!(!v.passed());
        assert_eq!(
            v.first_failure().map(|c| c.id),
            Some(ReportCheck::TlsFingerprint.into())
        );

        // A report claiming another fingerprint than report_data binds, or none, or another
        // public key than its address: the binding fails by name.
        let forged = ed25519_report(key, [9; 32], fp, nonce);
        let v = verify_report(&forged, &nonce, None, 0, &dev);
        assert_eq!(
            v.first_failure().map(|c| c.id),
            Some(ReportCheck::BindsAddress.into())
        );
        assert_eq!(v.signer, None);
        let mut no_fp = r.clone();
        no_fp.tls_cert_fingerprint = None;
        let v = verify_report(&no_fp, &nonce, None, 0, &dev);
        assert_eq!(
            v.first_failure().map(|c| c.id),
            Some(ReportCheck::BindsAddress.into())
        );
        let mut other_pk = r.clone();
        other_pk.signing_public_key = Some(hex::encode([1u8; 32]));
        assert!(!verify_report(&other_pk, &nonce, None, 0, &dev).passed());
        // The same report_data read as ecdsa binds nothing.
        let mut as_ecdsa = r;
        as_ecdsa.signing_algo = "ecdsa".to_owned();
        let v = verify_report(&as_ecdsa, &nonce, None, 0, &dev);
        assert_eq!(
            v.first_failure().map(|c| c.id),
            Some(ReportCheck::BindsAddress.into())
        );
    }

    #[test]
    fn bad_fields_fail_by_name() {
        let (addr, nonce) = (Address::repeat_byte(9), Nonce([7; 32]));
        let mut r = report(addr, nonce, ReportData::new(addr, nonce), None);
        r.signing_algo = "ed448".to_owned();
        r.request_nonce = "zz".to_owned();
        r.signing_address = "nope".to_owned();
        let v = verify_report(&r, &nonce, None, 0, &Policy::dev_allow_simulated());
        assert!(!v.passed());
        assert_eq!(outcome(&v, ReportCheck::SigningAlgo), Some(Outcome::Fail));
        assert_eq!(outcome(&v, ReportCheck::NonceEcho), Some(Outcome::Fail));
        assert_eq!(outcome(&v, ReportCheck::BindsAddress), Some(Outcome::Fail));
        assert_eq!(v.signer, None);

        r.intel_quote = "00".to_owned();
        let v = verify_report(&r, &nonce, None, 0, &Policy::dev_allow_simulated());
        assert_eq!(outcome(&v, ReportCheck::BindsNonce), Some(Outcome::Fail));
        assert_eq!(
            outcome(&v, Scoped::Quote(QuoteCheck::QuoteParses)),
            Some(Outcome::Fail)
        );
    }
}
