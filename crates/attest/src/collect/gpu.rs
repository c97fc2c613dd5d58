//! GPU evidence collection: the [`GpuEvidence`] trait, the `nvidia_payload` it produces, and
//! [`detect`], which finds a source or names what is missing.
//!
//! The payload is the layout the Phala and NEAR verifiers read, and that [`crate::gpu`] verifies:
//! `{"nonce": hex, "evidence_list": [{"certificate", "evidence", "arch"}], "arch"}`, where each
//! `certificate` is base64 of the device's PEM chain and each `evidence` base64 of its SPDM
//! `GET_MEASUREMENTS` exchange for the nonce.
//!
//! Sources:
//! - [`nvml::NvmlGpuEvidence`]: this machine's GPUs, through `libnvidia-ml` loaded at run time.
//! - [`replay::ReplayGpuEvidence`]: a TEST DOUBLE that serves evidence captured from a real
//!   machine (development and tests only).
//!
//! A node asks for the payload with the same 32-byte nonce its report_data binds, so one nonce
//! ties the CPU quote and every GPU's signed measurements to the client's request.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::gpu::EvidenceItem;

pub mod nvml;
pub mod replay;

/// Why GPU evidence could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GpuError {
    /// No NVIDIA driver: its management library could not be loaded.
    #[error("no NVIDIA driver: {} could not be loaded", path.display())]
    NoDriver {
        /// The library looked for (the first name tried).
        path: PathBuf,
    },
    /// The driver is loaded but reports no GPU.
    #[error("no NVIDIA GPU: the driver reports none")]
    NoGpu,
    /// The GPUs are not in confidential-computing mode.
    #[error("GPU confidential computing is off ({count} GPUs)")]
    CcOff {
        /// GPUs found.
        count: usize,
    },
    /// CC mode is on but the GPUs do not yet accept work (the ready state is off).
    #[error("GPU confidential computing is on but not ready ({count} GPUs)")]
    NotReady {
        /// GPUs found.
        count: usize,
    },
    /// The GPUs run in protected-PCIe (multi-GPU) mode, whose trust also rests on the NVSwitches'
    /// evidence, and this build does not collect it (that needs NVIDIA's NSCQ library): the GPUs
    /// are not attested rather than attested without their switches.
    #[error(
        "GPUs are in protected-PCIe multi-GPU mode ({count} GPUs): the NVSwitch evidence it needs is not collected by this build"
    )]
    ProtectedPcieUnsupported {
        /// GPUs found.
        count: usize,
    },
    /// An NVML call failed.
    #[error("NVML {call}: {detail}")]
    Nvml {
        /// The NVML function.
        call: &'static str,
        /// Its error code and NVML's text for it.
        detail: String,
    },
    /// A replay file could not be read or holds no usable `nvidia_payload`.
    #[error("GPU evidence replay file {}: {reason}", path.display())]
    Replay {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The payload could not be serialized.
    #[error("serializing nvidia_payload: {0}")]
    Serialize(#[source] serde_json::Error),
}

/// The confidential-computing mode of the GPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CcMode {
    /// Confidential computing on: memory encrypted, evidence signed by the device key.
    On,
    /// Off: no protection, evidence proves nothing about confidentiality.
    Off,
    /// Developer-tools mode: CC on but debuggable (not for production).
    Devtools,
    /// Protected PCIe: the GPUs and NVSwitches of a multi-GPU system protected together (the
    /// per-GPU CC feature reads off in this mode).
    #[serde(rename = "ppcie")]
    ProtectedPcie,
}

/// What a source says about its GPUs: the node puts it in the report's `info.gpu` and `/metrics`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GpuSummary {
    /// GPUs (evidence entries) this source attests.
    pub count: usize,
    /// CC mode, when the source can read it (a replay cannot: `None`).
    pub cc_mode: Option<CcMode>,
    /// CC ready state, when the source can read it (a replay cannot: `None`).
    pub ready: Option<bool>,
    /// The architecture the evidence names, e.g. `HOPPER`.
    pub arch: Option<String>,
    /// Which source: `replay` or `nvml`.
    pub source: &'static str,
}

impl GpuSummary {
    /// `Ok` when these GPUs can attest; otherwise what is missing (no GPU, CC off, not ready).
    /// Unknown CC state (a replay) is not held against the source.
    pub fn usable(&self) -> Result<(), GpuError> {
        let count = self.count;
        if count == 0 {
            return Err(GpuError::NoGpu);
        }
        match self.cc_mode {
            Some(CcMode::Off) => return Err(GpuError::CcOff { count }),
            Some(CcMode::ProtectedPcie) => return Err(GpuError::ProtectedPcieUnsupported { count }),
            _ => {}
        }
        if self.ready == Some(false) {
            return Err(GpuError::NotReady { count });
        }
        Ok(())
    }
}

/// A source of NVIDIA GPU evidence.
#[async_trait]
pub trait GpuEvidence: Send + Sync {
    /// GPU count, CC mode and ready state, as read when the source was made.
    fn summary(&self) -> GpuSummary;

    /// The `nvidia_payload` JSON for `nonce`: every GPU's certificate chain and SPDM measurements
    /// for a request carrying `nonce`.
    async fn nvidia_payload(&self, nonce: &[u8; 32]) -> Result<String, GpuError>;
}

/// The `nvidia_payload` wire shape.
#[derive(Debug, Serialize, Deserialize)]
pub struct NvidiaPayload {
    /// The nonce, 64 hex digits.
    pub nonce: String,
    /// One entry per device.
    pub evidence_list: Vec<EvidenceItem>,
    /// The devices' architecture, e.g. `HOPPER`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
}

/// Serializes the payload for `nonce` over `items` (key order: `nonce`, `evidence_list`, `arch`).
pub fn build_payload(
    nonce: &[u8; 32],
    items: Vec<EvidenceItem>,
    arch: Option<String>,
) -> Result<String, GpuError> {
    serde_json::to_string(&NvidiaPayload {
        nonce: hex::encode(nonce),
        evidence_list: items,
        arch,
    })
    .map_err(GpuError::Serialize)
}

/// Where [`detect`] looks.
#[derive(Clone, Debug, Default)]
pub struct GpuDetectOptions {
    /// DEVELOPMENT ONLY: serve the evidence captured in this file ([`replay::ReplayGpuEvidence`]).
    pub dev_replay: Option<PathBuf>,
    /// The NVML library; default: [`nvml::LIBRARY_NAMES`], searched the usual way.
    pub nvml_library: Option<PathBuf>,
}

/// Finds a GPU evidence source: the replay file when given, else this machine's GPUs through
/// NVML. The caller checks [`GpuSummary::usable`] (CC on and ready); without GPUs the error names
/// what is missing (no driver, no GPU, or the NVML call that failed).
pub fn detect(opts: &GpuDetectOptions) -> Result<Arc<dyn GpuEvidence>, GpuError> {
    if let Some(path) = &opts.dev_replay {
        let source = replay::ReplayGpuEvidence::load(path)?;
        tracing::warn!(
            file = %path.display(),
            gpus = source.summary().count,
            "GPU evidence: REPLAYING captured evidence (development only, NOT SECURE); its nonce \
             matches only the captured request"
        );
        return Ok(Arc::new(source));
    }
    let source = nvml::NvmlGpuEvidence::open(opts.nvml_library.as_deref().map(|p| p.as_os_str()))?;
    Ok(Arc::new(source))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn detect_without_a_driver_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let opts = GpuDetectOptions {
            dev_replay: None,
            nvml_library: Some(dir.path().join("libnvidia-ml.so.1")),
        };
        let err = detect(&opts).err().unwrap();
        assert!(matches!(err, GpuError::NoDriver { .. }), "{err}");
        assert!(err.to_string().contains("no NVIDIA driver"), "{err}");
        let opts = GpuDetectOptions {
            dev_replay: Some(dir.path().join("replay.json")),
            ..opts
        };
        assert!(matches!(detect(&opts).err().unwrap(), GpuError::Replay { .. }));
    }

    #[test]
    fn summary_says_why_it_is_unusable() {
        let mut s = GpuSummary {
            count: 2,
            cc_mode: Some(CcMode::On),
            ready: Some(true),
            arch: None,
            source: "nvml",
        };
        assert!(s.usable().is_ok());
        s.ready = Some(false);
        assert!(matches!(s.usable(), Err(GpuError::NotReady { count: 2 })));
        s.cc_mode = Some(CcMode::ProtectedPcie);
        let err = s.usable().unwrap_err();
        assert!(
            matches!(err, GpuError::ProtectedPcieUnsupported { count: 2 }),
            "{err}"
        );
        assert!(err.to_string().contains("NVSwitch"), "{err}");
        s.cc_mode = Some(CcMode::Off);
        assert!(matches!(s.usable(), Err(GpuError::CcOff { count: 2 })));
        s.count = 0;
        assert!(matches!(s.usable(), Err(GpuError::NoGpu)));
        s = GpuSummary {
            count: 1,
            cc_mode: None,
            ready: None,
            arch: None,
            source: "replay",
        };
        assert!(s.usable().is_ok());
        assert_eq!(
            serde_json::to_value(CcMode::Devtools).unwrap(),
            serde_json::json!("devtools")
        );
        assert_eq!(
            serde_json::to_value(CcMode::ProtectedPcie).unwrap(),
            serde_json::json!("ppcie")
        );
    }

    #[test]
    fn built_payload_is_what_the_verifier_reads() {
        let nonce = [7u8; 32];
        let item = EvidenceItem {
            certificate: "Y2VydA==".into(),
            evidence: "ZXY=".into(),
            arch: Some("HOPPER".into()),
        };
        let text = build_payload(&nonce, vec![item], Some("HOPPER".into())).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["nonce"], hex::encode(nonce));
        assert_eq!(v["arch"], "HOPPER");
        assert_eq!(v["evidence_list"][0]["certificate"], "Y2VydA==");
        // The verifier reads it: the payload nonce passes, the garbage evidence fails by name.
        let verdict = crate::gpu::verify_gpu_payload(&text, &nonce, 0);
        assert_eq!(
            verdict.worst(crate::check::GpuCheck::PayloadNonce),
            Some(crate::check::Outcome::Pass)
        );
        assert!(!verdict.passed());
    }
}
