//! The gateway's own attestation report (`GET /v1/gateway/attestation?nonce=`): the same report
//! layout a node serves, binding the gateway's signing address and the client's nonce in the
//! quote's report_data. A client that verifies it may trust the gateway's routing (its node list
//! and order); nothing a client verifies about a node depends on it, and the report carries no
//! E2EE key: prompts are never sealed to the gateway.

use cloister_types::{AttestationReport, Nonce, ReportData};
use serde_json::json;

use crate::Gateway;

/// Why no report could be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The gateway runs without an attester.
    #[error("this gateway runs without a TEE attester and serves no attestation report")]
    NoAttester,
    /// The attester failed.
    #[error("collecting evidence: {0}")]
    Evidence(String),
}

/// The gateway's report for `nonce`.
pub async fn report(gw: &Gateway, nonce: Nonce) -> Result<AttestationReport, ReportError> {
    let attester = gw.inner.attester.as_ref().ok_or(ReportError::NoAttester)?;
    let signer = gw.inner.key.address();
    let evidence = attester
        .evidence(&ReportData::new(signer, nonce))
        .await
        .map_err(|e| ReportError::Evidence(e.to_string()))?;
    let tee = attester.tee();
    Ok(AttestationReport {
        signing_address: format!("{signer:#x}"),
        signing_algo: "ecdsa".to_owned(),
        request_nonce: nonce.to_hex(),
        intel_quote: hex::encode(&evidence.quote),
        nvidia_payload: None,
        event_log: evidence.event_log,
        info: json!({
            "role": "gateway",
            "gateway_version": env!("CARGO_PKG_VERSION"),
            "tee": tee.to_string(),
            "registry": format!("{:#x}", gw.inner.config.registry.registry),
            "chain_id": gw.inner.config.registry.chain_id,
            "tee_info": evidence.info,
        }),
        tee: Some(tee),
        hpke_public_key: None,
        key_binding: None,
        signing_public_key: None,
        tls_cert_fingerprint: None,
    })
}
