//! Local verification of NVIDIA GPU (and NVSwitch) attestation evidence, as a list of
//! [`GpuCheck`]s that fails closed.
//!
//! For each device: the SPDM 1.1 `GET_MEASUREMENTS` exchange parses, its ECDSA P-384 / SHA-384
//! signature over `request || response` verifies with the leaf certificate's key, the certificate
//! chain verifies link by link up to NVIDIA's Device Identity CA ([`cert::NVIDIA_DEVICE_IDENTITY_CA_PEM`])
//! at the caller's `now_unix`, and the request nonce is the verifier's. Like [`crate::verify`],
//! this never reads the clock, the network or the file system, and never panics.
//!
//! Not checked here (a warning says so): measurements against NVIDIA's RIMs, and certificate
//! revocation (OCSP). Both need NVIDIA's online services.

pub mod cert;
pub mod spdm;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use p384::ecdsa::Signature;
use p384::ecdsa::signature::Verifier;
use serde::{Deserialize, Serialize};

use crate::check::{Check, Checks, GpuCheck, Outcome};

/// The largest `nvidia_payload` accepted, in bytes.
pub const MAX_PAYLOAD_BYTES: usize = 4 << 20;
/// The most devices one payload may list.
pub const MAX_DEVICES: usize = 64;

/// One entry of `evidence_list`.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct EvidenceItem {
    /// Base64 of the PEM certificate chain, leaf first (missing: fails as undecodable).
    #[serde(default)]
    pub certificate: String,
    /// Base64 of the SPDM evidence (missing: fails as undecodable).
    #[serde(default)]
    pub evidence: String,
    /// Architecture, e.g. `HOPPER` or `LS10`.
    #[serde(default)]
    pub arch: Option<String>,
}

#[derive(Deserialize)]
struct Payload {
    nonce: Option<String>,
    evidence_list: Vec<EvidenceItem>,
}

/// What one device's evidence says (trust it only when the verdict passed).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GpuEvidenceSummary {
    /// Position in the evidence list.
    pub index: usize,
    /// Architecture as the payload names it.
    pub arch: Option<String>,
    /// SPDM version byte (0x11 for 1.1).
    pub spdm_version: u8,
    /// The request nonce, hex.
    pub request_nonce: String,
    /// Certificates in the device's chain.
    pub n_certs: usize,
    /// Measurement blocks in the response.
    pub n_measurement_blocks: usize,
    /// Length of the measurement record.
    pub measurement_record_length: usize,
    /// Length of the opaque data.
    pub opaque_length: usize,
    /// Driver version (GPUs only).
    pub driver_version: Option<String>,
    /// VBIOS version, e.g. `96.00.9F.00.01` (GPUs only).
    pub vbios_version: Option<String>,
    /// Project.
    pub project: Option<String>,
    /// Project SKU.
    pub project_sku: Option<String>,
    /// Chip SKU.
    pub chip_sku: Option<String>,
    /// Firmware ID, hex.
    pub fwid: Option<String>,
}

/// The result of [`verify_gpu_payload`].
#[derive(Clone, Debug, Default, Serialize)]
pub struct GpuVerdict {
    /// Every check, in order; per-device checks name the device in their detail.
    pub checks: Checks,
    /// One summary per device whose evidence decoded.
    pub gpus: Vec<GpuEvidenceSummary>,
}

impl GpuVerdict {
    /// [`Checks::passed`]: at least one check passed and none failed.
    pub fn passed(&self) -> bool {
        self.checks.passed()
    }

    /// The first failing check, if any.
    pub fn first_failure(&self) -> Option<&Check> {
        self.checks.first_failure()
    }

    /// The outcome of the first `id` check (one per device) that did not pass, else of the first.
    pub fn worst(&self, id: GpuCheck) -> Option<Outcome> {
        self.checks.worst(id)
    }
}

/// Verifies an `nvidia_payload` (`{nonce, evidence_list: [{certificate, evidence, arch}], arch}`)
/// for a request that sent `expected_nonce`, at `now_unix`.
pub fn verify_gpu_payload(payload_json: &str, expected_nonce: &[u8; 32], now_unix: u64) -> GpuVerdict {
    let mut v = GpuVerdict::default();
    if payload_json.len() > MAX_PAYLOAD_BYTES {
        v.checks.push(Check::fail(
            GpuCheck::PayloadParses,
            format!("{} bytes, at most {MAX_PAYLOAD_BYTES}", payload_json.len()),
        ));
        return v;
    }
    let payload: Payload = match serde_json::from_str(payload_json) {
        Ok(p) => p,
        Err(e) => {
            v.checks.push(Check::fail(
                GpuCheck::PayloadParses,
                format!("nvidia_payload: {e}"),
            ));
            return v;
        }
    };
    v.checks.push(Check::pass(
        GpuCheck::PayloadParses,
        format!("{} evidence entries", payload.evidence_list.len()),
    ));
    let expected_hex = hex::encode(expected_nonce);
    v.checks.push(match payload.nonce.as_deref().map(decode_nonce) {
        Some(Some(n)) if n == *expected_nonce => {
            Check::pass(GpuCheck::PayloadNonce, "nvidia_payload.nonce is our nonce")
        }
        Some(Some(n)) => Check::fail(
            GpuCheck::PayloadNonce,
            format!(
                "nvidia_payload.nonce is {}, we sent {expected_hex}",
                hex::encode(n)
            ),
        ),
        Some(None) => Check::fail(
            GpuCheck::PayloadNonce,
            "nvidia_payload.nonce is not 64 hex digits",
        ),
        None => Check::fail(GpuCheck::PayloadNonce, "nvidia_payload has no nonce"),
    });
    let rest = verify_evidence_list(&payload.evidence_list, expected_nonce, now_unix);
    v.checks.extend(rest.checks);
    v.gpus = rest.gpus;
    v
}

/// Verifies a bare evidence list (e.g. nvtrust's PPCIE evidence files).
pub fn verify_evidence_list(items: &[EvidenceItem], expected_nonce: &[u8; 32], now_unix: u64) -> GpuVerdict {
    let mut v = GpuVerdict::default();
    if items.is_empty() || items.len() > MAX_DEVICES {
        v.checks.push(Check::fail(
            GpuCheck::DevicesPresent,
            format!("{} evidence entries; need 1 to {MAX_DEVICES}", items.len()),
        ));
        return v;
    }
    v.checks.push(Check::pass(
        GpuCheck::DevicesPresent,
        format!("{} devices", items.len()),
    ));
    for (i, item) in items.iter().enumerate() {
        let label = format!("device {i} ({})", item.arch.as_deref().unwrap_or("unknown arch"));
        let cert_pem = STANDARD.decode(item.certificate.trim());
        let evidence = STANDARD.decode(item.evidence.trim());
        let (cert_pem, evidence) = match (cert_pem, evidence) {
            (Ok(c), Ok(e)) => (c, e),
            (Err(e), _) => {
                fail_device(&mut v.checks, &label, format!("certificate is not base64: {e}"));
                continue;
            }
            (_, Err(e)) => {
                fail_device(&mut v.checks, &label, format!("evidence is not base64: {e}"));
                continue;
            }
        };
        let (checks, summary) = verify_device(&cert_pem, &evidence, expected_nonce, now_unix);
        v.checks.extend(checks.into_iter().map(|c| Check {
            detail: format!("{label}: {}", c.detail),
            ..c
        }));
        if let Some(mut s) = summary {
            s.index = i;
            s.arch.clone_from(&item.arch);
            v.gpus.push(s);
        }
    }
    v.checks.push(Check::warn(
        GpuCheck::NotChecked,
        "SPDM signatures, certificate chains and nonces are checked; measurements are not compared \
         with NVIDIA's reference values (RIMs) and certificates are not checked for revocation (OCSP)",
    ));
    v
}

fn fail_device(checks: &mut Checks, label: &str, why: String) {
    checks.push(Check::fail(GpuCheck::DeviceDecodes, format!("{label}: {why}")));
    for id in [GpuCheck::CertChain, GpuCheck::SpdmSignature, GpuCheck::SpdmNonce] {
        checks.push(Check::skip(id, format!("{label}: evidence did not decode")));
    }
}

/// Verifies one device: `cert_chain_pem` (PEM, leaf first) and `spdm_evidence` (request ||
/// response || signature). Check details do not name the device; the summary's index is 0.
pub fn verify_device(
    cert_chain_pem: &[u8],
    spdm_evidence: &[u8],
    expected_nonce: &[u8; 32],
    now_unix: u64,
) -> (Checks, Option<GpuEvidenceSummary>) {
    let mut checks = Checks::default();
    let chain = cert::parse_pem_chain(cert_chain_pem);
    let spdm = spdm::parse(spdm_evidence);
    let (chain, ev) = match (chain, spdm) {
        (Ok(c), Ok(e)) => (c, e),
        (Err(e), _) => {
            fail_device(&mut checks, "certificate chain", e);
            return (checks, None);
        }
        (_, Err(e)) => {
            fail_device(&mut checks, "SPDM evidence", e.to_string());
            return (checks, None);
        }
    };
    checks.push(Check::pass(
        GpuCheck::DeviceDecodes,
        format!(
            "{} certificates, SPDM 0x{:02x}, {} measurement blocks",
            chain.len(),
            ev.version,
            ev.blocks.len()
        ),
    ));
    checks.push(match cert::verify_chain(&chain, now_unix) {
        Ok(()) => Check::pass(
            GpuCheck::CertChain,
            format!("{} certificates, ECDSA P-384", chain.len()),
        ),
        Err(e) => Check::fail(GpuCheck::CertChain, e),
    });
    checks.push(match verify_spdm_signature(&chain[0], &ev) {
        Ok(()) => Check::pass(
            GpuCheck::SpdmSignature,
            "ECDSA P-384/SHA-384 by the leaf certificate",
        ),
        Err(e) => Check::fail(GpuCheck::SpdmSignature, e),
    });
    checks.push(if ev.request_nonce == *expected_nonce {
        Check::pass(GpuCheck::SpdmNonce, "the signed request carries our nonce")
    } else {
        Check::fail(
            GpuCheck::SpdmNonce,
            format!(
                "request nonce is {}, we sent {}",
                hex::encode(ev.request_nonce),
                hex::encode(expected_nonce)
            ),
        )
    });
    use spdm::opaque_field as f;
    let summary = GpuEvidenceSummary {
        index: 0,
        arch: None,
        spdm_version: ev.version,
        request_nonce: hex::encode(ev.request_nonce),
        n_certs: chain.len(),
        n_measurement_blocks: ev.blocks.len(),
        measurement_record_length: ev.record_len,
        opaque_length: ev.opaque.len(),
        driver_version: spdm::opaque_text(ev.opaque, f::DRIVER_VERSION),
        vbios_version: spdm::vbios_version(ev.opaque),
        project: spdm::opaque_text(ev.opaque, f::PROJECT),
        project_sku: spdm::opaque_text(ev.opaque, f::PROJECT_SKU),
        chip_sku: spdm::opaque_text(ev.opaque, f::CHIP_SKU),
        fwid: spdm::opaque_field(ev.opaque, f::FWID).map(hex::encode),
    };
    (checks, Some(summary))
}

fn verify_spdm_signature(leaf: &cert::ParsedCert, ev: &spdm::SpdmEvidence<'_>) -> Result<(), String> {
    let key = leaf.p384_key().map_err(|e| format!("leaf certificate: {e}"))?;
    let sig =
        Signature::from_slice(ev.signature).map_err(|_| "signature is not a P-384 r || s".to_owned())?;
    key.verify(ev.signed, &sig)
        .map_err(|_| format!("signature does not verify with the key of {}", leaf.subject()))
}

fn decode_nonce(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    let s = s.strip_prefix("0x").unwrap_or(s);
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn embedded_root_decodes_and_is_self_signed() {
        let root = cert::nvidia_root().unwrap();
        root.verify_signed_by(&root).unwrap();
        assert!(root.subject().contains("NVIDIA Device Identity CA"));
    }

    #[test]
    fn garbage_fails_closed_by_name() {
        let n = [0u8; 32];
        for p in [
            "",
            "null",
            "{}",
            "[]",
            "not json",
            r#"{"nonce":"00","evidence_list":[]}"#,
        ] {
            assert!(!verify_gpu_payload(p, &n, 0).passed(), "{p}");
        }
        let p = format!(
            r#"{{"nonce":"{}","evidence_list":[{{"certificate":"!!","evidence":"AA==","arch":"HOPPER"}}]}}"#,
            hex::encode(n)
        );
        let v = verify_gpu_payload(&p, &n, 0);
        assert!(!v.passed());
        assert_eq!(v.first_failure().unwrap().id, GpuCheck::DeviceDecodes.into());
        let big = "x".repeat(MAX_PAYLOAD_BYTES + 1);
        assert_eq!(
            verify_gpu_payload(&big, &n, 0).first_failure().unwrap().id,
            GpuCheck::PayloadParses.into()
        );
    }
}
