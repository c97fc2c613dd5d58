//! Evidence collection: the [`Attester`] trait and its sources.
//!
//! - [`tdx::ConfigfsTsm`]: a TDX guest's quote through Linux configfs-tsm.
//! - [`dstack::DstackAttester`]: a dstack CVM's guest agent (quote, event log, app info, and a
//!   KMS-derived signing key).
//! - [`simulated::SimulatedAttester`]: development only, NOT SECURE, refused by every verifier
//!   unless told otherwise.
//!
//! [`detect`] picks one for the machine it runs on.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use cloister_crypto::EnclaveKey;
use cloister_types::{ReportData, TeeKind};

use crate::{Error, Result};

pub mod dstack;
pub mod gpu;
pub mod simulated;
pub mod tdx;

/// What an evidence source returns for one report_data.
#[derive(Clone, Debug, PartialEq)]
pub struct Evidence {
    /// The quote, binary.
    pub quote: Vec<u8>,
    /// The event log (dstack: the RTMR event list; otherwise an empty list).
    pub event_log: serde_json::Value,
    /// Information about the TEE (dstack `Info`; otherwise a short description).
    pub info: serde_json::Value,
}

/// A source of TEE evidence.
#[async_trait]
pub trait Attester: Send + Sync {
    /// Which kind of TEE this is.
    fn tee(&self) -> TeeKind;

    /// A quote whose report_data is exactly `report_data`, with its event log and TEE info.
    async fn evidence(&self, report_data: &ReportData) -> Result<Evidence>;

    /// A signing key derived inside the TEE that survives restarts (dstack KMS), if this source
    /// has one. `None` means: generate a fresh key in memory.
    async fn derived_signing_key(&self) -> Result<Option<EnclaveKey>> {
        Ok(None)
    }
}

/// Where [`detect`] looks.
#[derive(Clone, Debug, Default)]
pub struct DetectOptions {
    /// Fall back to the simulated TEE when no real one is found. Development only.
    pub dev_simulated: bool,
    /// The dstack guest-agent socket; default: [`dstack::DEFAULT_SOCKETS`]. A given path replaces
    /// the defaults; if it does not exist, detection goes on to configfs-tsm.
    pub dstack_socket: Option<PathBuf>,
    /// The configfs-tsm report directory; default: [`tdx::DEFAULT_CONFIGFS_TSM_ROOT`]. A given
    /// path replaces the default.
    pub configfs_root: Option<PathBuf>,
}

/// Finds this machine's evidence source: a dstack guest-agent socket, else configfs-tsm, else
/// (only with `dev_simulated`) the simulated TEE, else [`Error::NoTee`].
pub async fn detect(opts: &DetectOptions) -> Result<Arc<dyn Attester>> {
    let sockets: Vec<&Path> = match &opts.dstack_socket {
        Some(p) => vec![p.as_path()],
        None => dstack::DEFAULT_SOCKETS.iter().map(Path::new).collect(),
    };
    if let Some(socket) = sockets.into_iter().find(|p| p.exists()) {
        tracing::info!(socket = %socket.display(), "TEE: dstack guest agent");
        return Ok(Arc::new(dstack::DstackAttester::new(socket)));
    }
    let root = opts
        .configfs_root
        .clone()
        .unwrap_or_else(|| PathBuf::from(tdx::DEFAULT_CONFIGFS_TSM_ROOT));
    if root.is_dir() {
        tracing::info!(root = %root.display(), "TEE: TDX through configfs-tsm");
        return Ok(Arc::new(tdx::ConfigfsTsm::new(root)));
    }
    if opts.dev_simulated {
        tracing::warn!(
            "NO TEE FOUND: running with a SIMULATED TEE (--dev-simulated-tee). Its quotes are NOT \
             SECURE, prove nothing, and every verifier refuses them unless told to accept simulated \
             evidence. Never use this in production."
        );
        if let Some(variant) = simulated::SimulatedConfigAttester::from_env()? {
            tracing::warn!(
                mr_config_id = %hex::encode(variant.mr_config_id),
                "DEVELOPMENT ONLY: the simulated TEE carries the MR_CONFIG_ID of {}",
                simulated::DEV_CONFIG_ID_ENV
            );
            return Ok(Arc::new(variant));
        }
        return Ok(Arc::new(simulated::SimulatedAttester));
    }
    Err(Error::NoTee)
}

/// Checks that a quote from an evidence source carries the report_data we asked for.
fn check_report_data(quote: &[u8], want: &ReportData) -> Result<()> {
    let got = crate::quote::parse_quote(quote)?.report_data();
    if got != want.0 {
        return Err(Error::ReportDataMismatch {
            want: hex::encode(want.0),
            got: hex::encode(got),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[tokio::test]
    async fn detect_falls_back_to_simulated_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = DetectOptions {
            dev_simulated: false,
            dstack_socket: Some(dir.path().join("no.sock")),
            configfs_root: Some(dir.path().join("no-tsm")),
        };
        let err = detect(&opts).await.err().unwrap();
        assert!(matches!(err, Error::NoTee));
        let text = err.to_string();
        assert!(
            text.contains("no TEE found") && text.contains("--dev-simulated-tee"),
            "{text}"
        );

        opts.dev_simulated = true;
        assert_eq!(detect(&opts).await.unwrap().tee(), TeeKind::Simulated);

        std::fs::create_dir(dir.path().join("no-tsm")).unwrap();
        assert_eq!(detect(&opts).await.unwrap().tee(), TeeKind::Tdx);

        std::fs::write(dir.path().join("no.sock"), b"").unwrap();
        assert_eq!(detect(&opts).await.unwrap().tee(), TeeKind::Dstack);
    }

    #[test]
    fn report_data_mismatch_is_caught() {
        let rd = ReportData([5; 64]);
        let q = crate::simulated::simulated_quote(&rd);
        assert!(check_report_data(&q, &rd).is_ok());
        assert!(matches!(
            check_report_data(&q, &ReportData([6; 64])),
            Err(Error::ReportDataMismatch { .. })
        ));
    }
}
