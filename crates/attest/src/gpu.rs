//! Local verification of NVIDIA GPU (and NVSwitch) attestation evidence, as a list of named
//! [`Check`]s that fails closed.
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

use crate::verify::{Check, Outcome};

/// The largest `nvidia_payload` accepted, in bytes.
pub const MAX_PAYLOAD_BYTES: usize = 4 << 20;
/// The most devices one payload may list.
pub const MAX_DEVICES: usize = 64;

/// Check names used by [`verify_gpu_payload`] and [`verify_evidence_list`].
pub mod names {
    /// `nvidia_payload` is JSON of the expected shape, within the size limit.
    pub const PAYLOAD_PARSES: &str = "GPU evidence parses";
    /// The payload's `nonce` field is the verifier's nonce.
    pub const PAYLOAD_NONCE: &str = "GPU evidence nonce";
    /// The evidence list is non-empty and not too long.
    pub const DEVICES_PRESENT: &str = "GPU evidence present";
    /// A device's certificate and evidence decode (base64, PEM, SPDM).
    pub const DEVICE_DECODES: &str = "GPU evidence decodes";
    /// A device's certificate chain verifies up to NVIDIA's Device Identity CA.
    pub const CERT_CHAIN: &str = "GPU certificate chain to NVIDIA Device Identity CA";
    /// A device's SPDM signature verifies with its leaf certificate.
    pub const SPDM_SIGNATURE: &str = "GPU SPDM signature";
    /// A device's SPDM request nonce is the verifier's nonce.
    pub const SPDM_NONCE: &str = "GPU SPDM request nonce";
    /// Measurements (RIM) and revocation (OCSP) are not checked (always a warning).
    pub const NOT_CHECKED: &str = "GPU measurements (RIM) and revocation (OCSP) not verified by this build";
}

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
    pub checks: Vec<Check>,
    /// One summary per device whose evidence decoded.
    pub gpus: Vec<GpuEvidenceSummary>,
}

impl GpuVerdict {
    /// True when no check failed and at least one passed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.outcome != Outcome::Fail)
            && self.checks.iter().any(|c| c.outcome == Outcome::Pass)
    }

    /// The first failing check, if any.
    pub fn first_failure(&self) -> Option<&Check> {
        self.checks.iter().find(|c| c.outcome == Outcome::Fail)
    }

    /// The outcome of the first check named `name` that did not pass, else of the first so named.
    pub fn worst(&self, name: &str) -> Option<Outcome> {
        let mut named = self.checks.iter().filter(|c| c.name == name);
        let first = named.clone().next()?.outcome;
        Some(
            named
                .find(|c| c.outcome != Outcome::Pass)
                .map_or(first, |c| c.outcome),
        )
    }
}

/// Verifies an `nvidia_payload` (`{nonce, evidence_list: [{certificate, evidence, arch}], arch}`)
/// for a request that sent `expected_nonce`, at `now_unix`.
pub fn verify_gpu_payload(payload_json: &str, expected_nonce: &[u8; 32], now_unix: u64) -> GpuVerdict {
    let mut v = GpuVerdict::default();
    if payload_json.len() > MAX_PAYLOAD_BYTES {
        v.checks.push(Check::fail(
            names::PAYLOAD_PARSES,
            format!("{} bytes, at most {MAX_PAYLOAD_BYTES}", payload_json.len()),
        ));
        return v;
    }
    let payload: Payload = match serde_json::from_str(payload_json) {
        Ok(p) => p,
        Err(e) => {
            v.checks
                .push(Check::fail(names::PAYLOAD_PARSES, format!("nvidia_payload: {e}")));
            return v;
        }
    };
    v.checks.push(Check::pass(
        names::PAYLOAD_PARSES,
        format!("{} evidence entries", payload.evidence_list.len()),
    ));
    let expected_hex = hex::encode(expected_nonce);
    v.checks.push(match payload.nonce.as_deref().map(decode_nonce) {
        Some(Some(n)) if n == *expected_nonce => {
            Check::pass(names::PAYLOAD_NONCE, "nvidia_payload.nonce is our nonce")
        }
        Some(Some(n)) => Check::fail(
            names::PAYLOAD_NONCE,
            format!(
                "nvidia_payload.nonce is {}, we sent {expected_hex}",
                hex::encode(n)
            ),
        ),
        Some(None) => Check::fail(names::PAYLOAD_NONCE, "nvidia_payload.nonce is not 64 hex digits"),
        None => Check::fail(names::PAYLOAD_NONCE, "nvidia_payload has no nonce"),
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
            names::DEVICES_PRESENT,
            format!("{} evidence entries; need 1 to {MAX_DEVICES}", items.len()),
        ));
        return v;
    }
    v.checks.push(Check::pass(
        names::DEVICES_PRESENT,
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
        names::NOT_CHECKED,
        "SPDM signatures, certificate chains and nonces are checked; measurements are not compared \
         with NVIDIA's reference values (RIMs) and certificates are not checked for revocation (OCSP)",
    ));
    v
}

fn fail_device(checks: &mut Vec<Check>, label: &str, why: String) {
    checks.push(Check::fail(names::DEVICE_DECODES, format!("{label}: {why}")));
    for name in [names::CERT_CHAIN, names::SPDM_SIGNATURE, names::SPDM_NONCE] {
        checks.push(Check::skip(name, format!("{label}: evidence did not decode")));
    }
}

/// Verifies one device: `cert_chain_pem` (PEM, leaf first) and `spdm_evidence` (request ||
/// response || signature). Check details do not name the device; the summary's index is 0.
pub fn verify_device(
    cert_chain_pem: &[u8],
    spdm_evidence: &[u8],
    expected_nonce: &[u8; 32],
    now_unix: u64,
) -> (Vec<Check>, Option<GpuEvidenceSummary>) {
    let mut checks = Vec::new();
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
        names::DEVICE_DECODES,
        format!(
            "{} certificates, SPDM 0x{:02x}, {} measurement blocks",
            chain.len(),
            ev.version,
            ev.blocks.len()
        ),
    ));
    checks.push(match cert::verify_chain(&chain, now_unix) {
        Ok(()) => Check::pass(
            names::CERT_CHAIN,
            format!("{} certificates, ECDSA P-384", chain.len()),
        ),
        Err(e) => Check::fail(names::CERT_CHAIN, e),
    });
    checks.push(match verify_spdm_signature(&chain[0], &ev) {
        Ok(()) => Check::pass(
            names::SPDM_SIGNATURE,
            "ECDSA P-384/SHA-384 by the leaf certificate",
        ),
        Err(e) => Check::fail(names::SPDM_SIGNATURE, e),
    });
    checks.push(if ev.request_nonce == *expected_nonce {
        Check::pass(names::SPDM_NONCE, "the signed request carries our nonce")
    } else {
        Check::fail(
            names::SPDM_NONCE,
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
        assert_eq!(v.first_failure().unwrap().name, names::DEVICE_DECODES);
        let big = "x".repeat(MAX_PAYLOAD_BYTES + 1);
        assert_eq!(
            verify_gpu_payload(&big, &n, 0).first_failure().unwrap().name,
            names::PAYLOAD_PARSES
        );
    }
}
