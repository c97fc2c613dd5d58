//! The simulated TEE: development only, NOT SECURE.
//!
//! It returns [`crate::simulated::simulated_quote`]s, which every verifier refuses unless its
//! policy explicitly allows simulated evidence. [`super::detect`] picks it only when asked to
//! (`--dev-simulated-tee`) and no real TEE is present, and says so loudly.

use async_trait::async_trait;
use cloister_types::{ReportData, TeeKind};
use serde_json::json;

use super::{Attester, Evidence};
use crate::Result;

/// A TEE that is not one. Its evidence proves nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct SimulatedAttester;

#[async_trait]
impl Attester for SimulatedAttester {
    fn tee(&self) -> TeeKind {
        TeeKind::Simulated
    }

    async fn evidence(&self, report_data: &ReportData) -> Result<Evidence> {
        Ok(Evidence {
            quote: crate::simulated::simulated_quote(report_data),
            event_log: json!([]),
            info: json!({
                "tee": "simulated",
                "warning": "SIMULATED TEE, NOT SECURE: development evidence that proves nothing",
            }),
        })
    }
}

/// The environment variable that gives the simulated TEE a MR_CONFIG_ID (hex, at most 48 bytes,
/// zero-padded): DEVELOPMENT ONLY, read only when the simulated TEE is chosen
/// (`--dev-simulated-tee`), so that tests can run simulated nodes of two different measurements.
pub const DEV_CONFIG_ID_ENV: &str = "CLOISTER_DEV_SIMULATED_CONFIG_ID";

/// DEVELOPMENT ONLY, NOT SECURE: a [`SimulatedAttester`] whose quotes carry `mr_config_id` (so a
/// different measurement digest). Its evidence proves nothing.
#[derive(Clone, Copy, Debug)]
pub struct SimulatedConfigAttester {
    /// The MR_CONFIG_ID its quotes carry.
    pub mr_config_id: [u8; 48],
}

impl SimulatedConfigAttester {
    /// The attester [`DEV_CONFIG_ID_ENV`] asks for: `None` when unset or empty, an error when it
    /// is not hex of at most 48 bytes.
    pub fn from_env() -> Result<Option<Self>> {
        let Ok(text) = std::env::var(DEV_CONFIG_ID_ENV) else {
            return Ok(None);
        };
        let text = text.trim().trim_start_matches("0x");
        if text.is_empty() {
            return Ok(None);
        }
        let bytes = hex::decode(text)?;
        let mut mr_config_id = [0u8; 48];
        let slot = mr_config_id
            .get_mut(..bytes.len())
            .ok_or(hex::FromHexError::InvalidStringLength)?;
        slot.copy_from_slice(&bytes);
        Ok(Some(Self { mr_config_id }))
    }
}

#[async_trait]
impl Attester for SimulatedConfigAttester {
    fn tee(&self) -> TeeKind {
        TeeKind::Simulated
    }

    async fn evidence(&self, report_data: &ReportData) -> Result<Evidence> {
        let mut evidence = SimulatedAttester.evidence(report_data).await?;
        evidence.quote = crate::simulated::simulated_quote_with_config_id(report_data, &self.mr_config_id);
        Ok(evidence)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[tokio::test]
    async fn evidence_is_a_simulated_quote_for_the_report_data() {
        let rd = ReportData([0x5a; 64]);
        let ev = SimulatedAttester.evidence(&rd).await.unwrap();
        assert!(crate::simulated::is_simulated(&ev.quote));
        assert_eq!(crate::quote::parse_quote(&ev.quote).unwrap().report_data(), rd.0);
        assert!(SimulatedAttester.derived_signing_key().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_config_id_changes_the_measurement_and_keeps_the_dev_signature() {
        use crate::measurements::Measurements;
        let rd = ReportData([0x5a; 64]);
        let digest = |quote: &[u8]| {
            Measurements::from_quote(&crate::quote::parse_quote(quote).unwrap())
                .unwrap()
                .digest()
        };
        let plain = SimulatedAttester.evidence(&rd).await.unwrap().quote;
        let variant = SimulatedConfigAttester {
            mr_config_id: [7; 48],
        };
        let other = variant.evidence(&rd).await.unwrap().quote;
        assert!(crate::simulated::dev_signature_matches(&other));
        assert_ne!(digest(&plain), digest(&other));
        assert_eq!(crate::quote::parse_quote(&other).unwrap().report_data(), rd.0);
    }
}
