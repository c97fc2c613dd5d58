//! [`NvmlGpuEvidence`]: the GPUs of this machine, through NVIDIA's management library
//! (`libnvidia-ml`, loaded at run time: a host without a driver gets [`GpuError::NoDriver`]).
//!
//! At start it reads the GPU count and the confidential-computing state (CC feature, devtools
//! mode, ready state). For each report it asks every GPU for an SPDM `GET_MEASUREMENTS` signed
//! over the request's nonce, and for its attestation certificate chain.

mod ffi;

use std::ffi::OsStr;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::{CcMode, GpuError, GpuEvidence, GpuSummary, build_payload};
use crate::gpu::EvidenceItem;

/// The library names tried, in order.
pub const LIBRARY_NAMES: &[&str] = &["libnvidia-ml.so.1", "libnvidia-ml.so"];

/// `NVML_CC_SYSTEM_FEATURE_ENABLED`.
const CC_FEATURE_ENABLED: u32 = 1;
/// `NVML_CC_SYSTEM_DEVTOOLS_MODE_ON`.
const DEVTOOLS_MODE_ON: u32 = 1;
/// `NVML_CC_SYSTEM_MULTIGPU_PROTECTED_PCIE`.
const MULTIGPU_PROTECTED_PCIE: u32 = 1;

/// The GPUs of this machine, through NVML.
#[derive(Debug, Clone)]
pub struct NvmlGpuEvidence {
    nvml: Arc<ffi::Nvml>,
    summary: GpuSummary,
}

impl NvmlGpuEvidence {
    /// Loads NVML (`library`, else [`LIBRARY_NAMES`]), counts the GPUs and reads their CC state.
    /// The summary says whether they can attest ([`GpuSummary::usable`]).
    pub fn open(library: Option<&OsStr>) -> Result<Self, GpuError> {
        let names: Vec<&OsStr> = match library {
            Some(l) => vec![l],
            None => LIBRARY_NAMES.iter().map(OsStr::new).collect(),
        };
        let mut failed_init = None;
        let mut loaded = None;
        for name in &names {
            match ffi::Nvml::load(name) {
                Ok(nvml) => {
                    loaded = Some(nvml);
                    break;
                }
                Err(Some(e)) => failed_init = Some(e),
                Err(None) => {}
            }
        }
        let nvml = match (loaded, failed_init) {
            (Some(n), _) => Arc::new(n),
            (None, Some(e)) => return Err(nvml_error(None, e)),
            (None, None) => {
                return Err(GpuError::NoDriver {
                    path: names.first().map(Into::into).unwrap_or_default(),
                });
            }
        };
        let count = nvml.device_count().map_err(|e| nvml_error(Some(&nvml), e))?;
        // R550+ drivers also say whether the system runs in protected-PCIe mode; older ones have
        // only the per-GPU state.
        let cc_mode = match nvml.cc_settings() {
            Ok(s) => cc_mode(s.cc_feature, s.dev_tools_mode, s.multi_gpu_mode),
            Err(ffi::CallError { code: None, .. }) => {
                let state = nvml.cc_state().map_err(|e| nvml_error(Some(&nvml), e))?;
                cc_mode(state.cc_feature, state.dev_tools_mode, 0)
            }
            Err(e) => return Err(nvml_error(Some(&nvml), e)),
        };
        // The ready state means nothing with CC off; NVML may refuse to report it then.
        let ready = match cc_mode {
            CcMode::Off => Some(false),
            // Not attested in this build either way (see `GpuError::ProtectedPcieUnsupported`).
            CcMode::ProtectedPcie => nvml.cc_ready().ok(),
            _ => Some(nvml.cc_ready().map_err(|e| nvml_error(Some(&nvml), e))?),
        };
        let arch = if count > 0 {
            nvml.architecture(0).ok().map(arch_name)
        } else {
            None
        };
        Ok(Self {
            summary: GpuSummary {
                count: count as usize,
                cc_mode: Some(cc_mode),
                ready,
                arch,
                source: "nvml",
            },
            nvml,
        })
    }
}

/// The CC mode NVML's `ccFeature`, `devToolsMode` and `multiGpuMode` describe.
fn cc_mode(cc_feature: u32, dev_tools_mode: u32, multi_gpu_mode: u32) -> CcMode {
    match (cc_feature, dev_tools_mode, multi_gpu_mode) {
        (_, _, MULTIGPU_PROTECTED_PCIE) => CcMode::ProtectedPcie,
        (CC_FEATURE_ENABLED, DEVTOOLS_MODE_ON, _) => CcMode::Devtools,
        (CC_FEATURE_ENABLED, _, _) => CcMode::On,
        _ => CcMode::Off,
    }
}

/// The name verifiers use for `nvmlDeviceArchitecture_t`.
fn arch_name(arch: u32) -> String {
    match arch {
        9 => "HOPPER".to_owned(),
        10 => "BLACKWELL".to_owned(),
        other => format!("ARCH_{other}"),
    }
}

fn nvml_error(nvml: Option<&ffi::Nvml>, e: ffi::CallError) -> GpuError {
    let detail = match (e.code, nvml) {
        (None, _) => "missing from the library (driver too old?)".to_owned(),
        (Some(code), Some(n)) => match n.error_string(code) {
            Some(text) => format!("error {code}: {text}"),
            None => format!("error {code}"),
        },
        (Some(code), None) => format!("error {code}"),
    };
    GpuError::Nvml { call: e.call, detail }
}

/// Every GPU's evidence for `nonce`, blocking.
fn collect(nvml: &ffi::Nvml, count: usize, nonce: &[u8; 32]) -> Result<Vec<EvidenceItem>, GpuError> {
    let mut items = Vec::with_capacity(count);
    for index in 0..u32::try_from(count).unwrap_or(u32::MAX) {
        let e = |e| nvml_error(Some(nvml), e);
        let evidence = nvml.attestation_report(index, nonce).map_err(e)?;
        let chain = nvml.certificate_chain(index).map_err(e)?;
        let arch = nvml.architecture(index).ok().map(arch_name);
        items.push(EvidenceItem {
            certificate: STANDARD.encode(chain),
            evidence: STANDARD.encode(evidence),
            arch,
        });
    }
    Ok(items)
}

#[async_trait]
impl GpuEvidence for NvmlGpuEvidence {
    fn summary(&self) -> GpuSummary {
        self.summary.clone()
    }

    async fn nvidia_payload(&self, nonce: &[u8; 32]) -> Result<String, GpuError> {
        let nvml = Arc::clone(&self.nvml);
        let count = self.summary.count;
        let nonce_copy = *nonce;
        let items = tokio::task::spawn_blocking(move || collect(&nvml, count, &nonce_copy))
            .await
            .map_err(|e| GpuError::Nvml {
                call: "collecting evidence",
                detail: e.to_string(),
            })??;
        build_payload(nonce, items, self.summary.arch.clone())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn cc_state_and_architecture_names() {
        assert_eq!(cc_mode(1, 0, 0), CcMode::On);
        assert_eq!(cc_mode(1, 1, 0), CcMode::Devtools);
        assert_eq!(cc_mode(0, 0, 0), CcMode::Off);
        assert_eq!(cc_mode(0, 1, 0), CcMode::Off);
        assert_eq!(cc_mode(7, 0, 0), CcMode::Off);
        // Protected PCIe: the per-GPU feature reads off, the system mode says PPCIe.
        assert_eq!(cc_mode(0, 0, 1), CcMode::ProtectedPcie);
        assert_eq!(cc_mode(1, 0, 1), CcMode::ProtectedPcie);
        // NVLink encryption (2) is not protected PCIe; the GPUs' own state decides.
        assert_eq!(cc_mode(1, 0, 2), CcMode::On);
        assert_eq!(arch_name(9), "HOPPER");
        assert_eq!(arch_name(10), "BLACKWELL");
        assert_eq!(arch_name(7), "ARCH_7");
    }

    #[test]
    fn a_missing_library_is_no_driver() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("libnvidia-ml.so.1");
        let err = NvmlGpuEvidence::open(Some(path.as_os_str())).err().unwrap();
        assert!(matches!(err, GpuError::NoDriver { .. }), "{err}");
        assert!(err.to_string().contains("libnvidia-ml.so.1"), "{err}");
        // Not a shared library at all: also no driver, never a crash.
        std::fs::write(&path, b"not an ELF file").unwrap();
        let err = NvmlGpuEvidence::open(Some(path.as_os_str())).err().unwrap();
        assert!(matches!(err, GpuError::NoDriver { .. }), "{err}");
    }

    /// On a machine without an NVIDIA driver (this CI), the default search says so by name; on
    /// one with a driver, it prints what NVML returned.
    #[test]
    fn this_machine_answers_by_name() {
        match NvmlGpuEvidence::open(None) {
            Err(GpuError::NoDriver { path }) => {
                assert_eq!(path, std::path::Path::new(LIBRARY_NAMES[0]));
            }
            Ok(source) => eprintln!("NVML: {:?}", source.summary()),
            Err(other) => eprintln!("NVML: {other}"),
        }
    }
}
