//! The only `unsafe` in this crate: calls into `libnvidia-ml`, loaded at run time so the same
//! binary starts on hosts without a driver. Each call is wrapped in a safe function that checks
//! NVML's return code; the caller ([`super`]) never sees a raw pointer.
//!
//! Prototypes and struct layouts are those of `nvml.h` (R535 and later).

#![allow(unsafe_code)]

use std::ffi::{OsStr, c_char, c_int, c_uint, c_void};

use libloading::{Library, Symbol};

/// `nvmlReturn_t`: 0 is success.
type NvmlReturn = c_int;
/// `nvmlDevice_t`: an opaque handle.
type Device = *mut c_void;

/// `NVML_GPU_ATTESTATION_CERT_CHAIN_SIZE` (`NVML_GPU_CERT_CHAIN_SIZE` is 0x1000).
const CERT_CHAIN_SIZE: usize = 0x1000;
const ATTESTATION_CERT_CHAIN_SIZE: usize = 0x1400;
const NONCE_SIZE: usize = 0x20;
const ATTESTATION_REPORT_SIZE: usize = 0x2000;
const CEC_ATTESTATION_REPORT_SIZE: usize = 0x1000;

/// `nvmlConfComputeSystemState_t`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct SystemState {
    pub(super) environment: c_uint,
    pub(super) cc_feature: c_uint,
    pub(super) dev_tools_mode: c_uint,
}

/// `nvmlSystemConfComputeSettings_v1_t` (R550 and later): the system state plus the multi-GPU mode.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct SystemSettings {
    pub(super) version: c_uint,
    pub(super) environment: c_uint,
    pub(super) cc_feature: c_uint,
    pub(super) dev_tools_mode: c_uint,
    pub(super) multi_gpu_mode: c_uint,
}

/// `nvmlSystemConfComputeSettings_v1`: `NVML_STRUCT_VERSION(SystemConfComputeSettings, 1)`, the
/// struct's size with the version number in the top byte.
const SYSTEM_SETTINGS_V1: c_uint = (std::mem::size_of::<SystemSettings>() as c_uint) | (1 << 24);

/// `nvmlConfComputeGpuCertificate_t`.
#[repr(C)]
#[allow(dead_code)] // Every field is part of the C layout; NVML writes some we do not read.
struct GpuCertificate {
    cert_chain_size: c_uint,
    attestation_cert_chain_size: c_uint,
    cert_chain: [u8; CERT_CHAIN_SIZE],
    attestation_cert_chain: [u8; ATTESTATION_CERT_CHAIN_SIZE],
}

/// `nvmlConfComputeGpuAttestationReport_t`: `nonce` is the input.
#[repr(C)]
#[allow(dead_code)] // Every field is part of the C layout; NVML writes some we do not read.
struct GpuAttestationReport {
    is_cec_attestation_report_present: c_uint,
    attestation_report_size: c_uint,
    cec_attestation_report_size: c_uint,
    nonce: [u8; NONCE_SIZE],
    attestation_report: [u8; ATTESTATION_REPORT_SIZE],
    cec_attestation_report: [u8; CEC_ATTESTATION_REPORT_SIZE],
}

/// A failed NVML call: the function and its return code.
#[derive(Debug)]
pub(super) struct CallError {
    pub(super) call: &'static str,
    /// The `nvmlReturn_t`, or `None` when the symbol is missing from the library.
    pub(super) code: Option<i32>,
}

/// A loaded, initialised `libnvidia-ml`. Shut down on drop.
pub(super) struct Nvml {
    lib: Library,
}

impl std::fmt::Debug for Nvml {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Nvml")
    }
}

fn check(call: &'static str, code: NvmlReturn) -> Result<(), CallError> {
    if code == 0 {
        Ok(())
    } else {
        Err(CallError {
            call,
            code: Some(code),
        })
    }
}

impl Nvml {
    /// Loads the library `name` (a soname searched the usual way, or a path) and calls
    /// `nvmlInit_v2`. `Err(None)`: the library could not be loaded.
    pub(super) fn load(name: &OsStr) -> Result<Self, Option<CallError>> {
        // SAFETY: loading runs the library's initialisers; libnvidia-ml is NVIDIA's driver
        // library, whose initialisers are safe to run in any process (it is what nvidia-smi does).
        let lib = unsafe { Library::new(name) }.map_err(|_| None)?;
        let nvml = Self { lib };
        // SAFETY: `nvmlInit_v2` takes no arguments and returns nvmlReturn_t, as declared.
        let init =
            unsafe { nvml.symbol::<unsafe extern "C" fn() -> NvmlReturn>(c"nvmlInit_v2") }.map_err(Some)?;
        // SAFETY: calling the declared prototype; no pointers are passed.
        check("nvmlInit_v2", unsafe { init() }).map_err(Some)?;
        Ok(nvml)
    }

    /// # Safety
    /// `T` must be the exact function-pointer type of the C symbol `name`.
    unsafe fn symbol<T>(&self, name: &'static std::ffi::CStr) -> Result<Symbol<'_, T>, CallError> {
        // SAFETY: the caller guarantees `T` matches the symbol's prototype.
        unsafe { self.lib.get::<T>(name.to_bytes_with_nul()) }.map_err(|_| CallError {
            call: name.to_str().unwrap_or("?"),
            code: None,
        })
    }

    /// `nvmlDeviceGetCount_v2`.
    pub(super) fn device_count(&self) -> Result<u32, CallError> {
        let mut count: c_uint = 0;
        // SAFETY: prototype `nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *)`.
        let f = unsafe {
            self.symbol::<unsafe extern "C" fn(*mut c_uint) -> NvmlReturn>(c"nvmlDeviceGetCount_v2")
        }?;
        // SAFETY: `count` is a valid, writable unsigned int for the duration of the call.
        check("nvmlDeviceGetCount_v2", unsafe { f(&raw mut count) })?;
        Ok(count)
    }

    /// `nvmlSystemGetConfComputeState`.
    pub(super) fn cc_state(&self) -> Result<SystemState, CallError> {
        let mut state = SystemState::default();
        // SAFETY: prototype `nvmlReturn_t nvmlSystemGetConfComputeState(nvmlConfComputeSystemState_t *)`.
        let f = unsafe {
            self.symbol::<unsafe extern "C" fn(*mut SystemState) -> NvmlReturn>(
                c"nvmlSystemGetConfComputeState",
            )
        }?;
        // SAFETY: `state` is a valid, writable struct with the C layout (#[repr(C)]).
        check("nvmlSystemGetConfComputeState", unsafe { f(&raw mut state) })?;
        Ok(state)
    }

    /// `nvmlSystemGetConfComputeSettings`: CC feature, devtools and multi-GPU mode. A driver older
    /// than R550 lacks it (`CallError` with no code); [`Nvml::cc_state`] is the fallback.
    pub(super) fn cc_settings(&self) -> Result<SystemSettings, CallError> {
        let mut settings = SystemSettings {
            version: SYSTEM_SETTINGS_V1,
            ..SystemSettings::default()
        };
        // SAFETY: prototype `nvmlReturn_t nvmlSystemGetConfComputeSettings(nvmlSystemConfComputeSettings_t *)`.
        let f = unsafe {
            self.symbol::<unsafe extern "C" fn(*mut SystemSettings) -> NvmlReturn>(
                c"nvmlSystemGetConfComputeSettings",
            )
        }?;
        // SAFETY: `settings` is a valid, writable struct with the v1 C layout (#[repr(C)]) and its
        // `version` field says so, so NVML writes no more than its size.
        check("nvmlSystemGetConfComputeSettings", unsafe {
            f(&raw mut settings)
        })?;
        Ok(settings)
    }

    /// `nvmlSystemGetConfComputeGpusReadyState`: whether the GPUs accept work.
    pub(super) fn cc_ready(&self) -> Result<bool, CallError> {
        let mut ready: c_uint = 0;
        // SAFETY: prototype `nvmlReturn_t nvmlSystemGetConfComputeGpusReadyState(unsigned int *)`.
        let f = unsafe {
            self.symbol::<unsafe extern "C" fn(*mut c_uint) -> NvmlReturn>(
                c"nvmlSystemGetConfComputeGpusReadyState",
            )
        }?;
        // SAFETY: `ready` is a valid, writable unsigned int for the duration of the call.
        check("nvmlSystemGetConfComputeGpusReadyState", unsafe {
            f(&raw mut ready)
        })?;
        Ok(ready == 1)
    }

    fn device(&self, index: u32) -> Result<Device, CallError> {
        let mut device: Device = std::ptr::null_mut();
        // SAFETY: prototype `nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int, nvmlDevice_t *)`.
        let f = unsafe {
            self.symbol::<unsafe extern "C" fn(c_uint, *mut Device) -> NvmlReturn>(
                c"nvmlDeviceGetHandleByIndex_v2",
            )
        }?;
        // SAFETY: `device` is a valid, writable handle slot; NVML checks the index.
        check("nvmlDeviceGetHandleByIndex_v2", unsafe {
            f(index, &raw mut device)
        })?;
        Ok(device)
    }

    /// `nvmlDeviceGetArchitecture` of device `index` (9 Hopper, 10 Blackwell).
    pub(super) fn architecture(&self, index: u32) -> Result<u32, CallError> {
        let device = self.device(index)?;
        let mut arch: c_uint = 0;
        // SAFETY: prototype `nvmlReturn_t nvmlDeviceGetArchitecture(nvmlDevice_t, unsigned int *)`.
        let f = unsafe {
            self.symbol::<unsafe extern "C" fn(Device, *mut c_uint) -> NvmlReturn>(
                c"nvmlDeviceGetArchitecture",
            )
        }?;
        // SAFETY: `device` came from NVML for this library; `arch` is valid and writable.
        check("nvmlDeviceGetArchitecture", unsafe { f(device, &raw mut arch) })?;
        Ok(arch)
    }

    /// `nvmlDeviceGetConfComputeGpuAttestationReport` for `nonce`: the SPDM evidence (request ||
    /// response || signature), exactly `attestationReportSize` bytes.
    pub(super) fn attestation_report(&self, index: u32, nonce: &[u8; 32]) -> Result<Vec<u8>, CallError> {
        const CALL: &str = "nvmlDeviceGetConfComputeGpuAttestationReport";
        let device = self.device(index)?;
        let mut report = Box::new(GpuAttestationReport {
            is_cec_attestation_report_present: 0,
            attestation_report_size: 0,
            cec_attestation_report_size: 0,
            nonce: *nonce,
            attestation_report: [0; ATTESTATION_REPORT_SIZE],
            cec_attestation_report: [0; CEC_ATTESTATION_REPORT_SIZE],
        });
        // SAFETY: prototype `nvmlReturn_t nvmlDeviceGetConfComputeGpuAttestationReport(nvmlDevice_t,
        // nvmlConfComputeGpuAttestationReport_t *)`.
        let f = unsafe {
            self.symbol::<unsafe extern "C" fn(Device, *mut GpuAttestationReport) -> NvmlReturn>(
                c"nvmlDeviceGetConfComputeGpuAttestationReport",
            )
        }?;
        // SAFETY: `device` came from NVML; `report` is a valid, writable, #[repr(C)] struct of
        // the size NVML writes, boxed so its 12 KiB are not on the stack.
        check(CALL, unsafe { f(device, &raw mut *report) })?;
        let len = report.attestation_report_size as usize;
        report
            .attestation_report
            .get(..len)
            .map(<[u8]>::to_vec)
            .ok_or(CallError {
                call: CALL,
                code: None,
            })
    }

    /// `nvmlDeviceGetConfComputeGpuCertificate`: the attestation certificate chain (PEM),
    /// exactly `attestationCertChainSize` bytes.
    pub(super) fn certificate_chain(&self, index: u32) -> Result<Vec<u8>, CallError> {
        const CALL: &str = "nvmlDeviceGetConfComputeGpuCertificate";
        let device = self.device(index)?;
        let mut cert = Box::new(GpuCertificate {
            cert_chain_size: 0,
            attestation_cert_chain_size: 0,
            cert_chain: [0; CERT_CHAIN_SIZE],
            attestation_cert_chain: [0; ATTESTATION_CERT_CHAIN_SIZE],
        });
        // SAFETY: prototype `nvmlReturn_t nvmlDeviceGetConfComputeGpuCertificate(nvmlDevice_t,
        // nvmlConfComputeGpuCertificate_t *)`.
        let f = unsafe {
            self.symbol::<unsafe extern "C" fn(Device, *mut GpuCertificate) -> NvmlReturn>(
                c"nvmlDeviceGetConfComputeGpuCertificate",
            )
        }?;
        // SAFETY: `device` came from NVML; `cert` is a valid, writable, #[repr(C)] struct of the
        // size NVML writes.
        check(CALL, unsafe { f(device, &raw mut *cert) })?;
        let len = cert.attestation_cert_chain_size as usize;
        cert.attestation_cert_chain
            .get(..len)
            .map(<[u8]>::to_vec)
            .ok_or(CallError {
                call: CALL,
                code: None,
            })
    }

    /// `nvmlErrorString` for `code`.
    pub(super) fn error_string(&self, code: i32) -> Option<String> {
        // SAFETY: prototype `const char *nvmlErrorString(nvmlReturn_t)`.
        let f =
            unsafe { self.symbol::<unsafe extern "C" fn(NvmlReturn) -> *const c_char>(c"nvmlErrorString") }
                .ok()?;
        // SAFETY: any nvmlReturn_t value may be passed; the result is a static string or null.
        let text = unsafe { f(code) };
        if text.is_null() {
            return None;
        }
        // SAFETY: non-null results of nvmlErrorString are NUL-terminated static C strings.
        Some(
            unsafe { std::ffi::CStr::from_ptr(text) }
                .to_string_lossy()
                .into_owned(),
        )
    }
}

impl Drop for Nvml {
    fn drop(&mut self) {
        // SAFETY: prototype `nvmlReturn_t nvmlShutdown(void)`; balances the nvmlInit_v2 of `load`.
        if let Ok(f) = unsafe { self.symbol::<unsafe extern "C" fn() -> NvmlReturn>(c"nvmlShutdown") } {
            // SAFETY: calling the declared prototype; no pointers are passed.
            let _ = unsafe { f() };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_version_is_nvml_h_s() {
        // nvml.h: nvmlSystemConfComputeSettings_v1 == 0x1000014 (20-byte struct, version 1).
        assert_eq!(SYSTEM_SETTINGS_V1, 0x0100_0014);
    }
}
