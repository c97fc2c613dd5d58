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
}
