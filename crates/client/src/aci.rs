//! The client as an ACI verifier (`aci/1`): fetch a service's report with a fresh nonce and
//! verify it under the client's [`Policy`] (§9.1), then check each answer against its signed
//! receipt (§9.3). Works against any ACI service, a Cloister node included.
//!
//! The policy fails closed: the source provenance and key custody must be backed by a
//! measurement in [`Policy::allowed_measurements`] (an "any" allowlist backs nothing), except for
//! a simulated TEE the policy explicitly allows (development only).
//!
//! ```no_run
//! # async fn demo() -> cloister_client::Result<()> {
//! use cloister_client::{Policy, aci};
//! let http = cloister_client::default_http_client()?;
//! let nonce = cloister_types::Nonce(rand::random());
//! let proof = aci::verify_service(&http, "https://aci.example", &Policy::default(), nonce).await?;
//! println!("passed: {}", proof.verdict.passed());
//! # Ok(()) }
//! ```

use cloister_attest::aci::receipt::{ReceiptError, VerifiedReceipt, verify_receipt};
use cloister_attest::aci::{AciPolicy, AciVerdict, verify_aci_report};
use cloister_types::Nonce;
use cloister_types::wire::{ACI_ATTESTATION_PATH, ACI_RECEIPTS_PREFIX, QUERY_NONCE};
use serde_json::Value;

use crate::policy::{Policy, collateral_for};
use crate::{Error, Result, node_base};

/// A fetched and verified ACI report.
#[derive(Clone, Debug)]
pub struct AciProof {
    /// The service base URL.
    pub url: String,
    /// The nonce sent (hex).
    pub nonce: String,
    /// The report as served.
    pub report: Value,
    /// Where the quote's collateral came from.
    pub collateral: String,
    /// The §9.1 verdict.
    pub verdict: AciVerdict,
}

/// The ACI policy `policy` describes: its quote policy and its measurement allowlist.
pub fn aci_policy(policy: &Policy) -> AciPolicy {
    AciPolicy::new(policy.quote.clone(), policy.allowed_measurements.digests())
}

/// Fetches `GET /v1/aci/attestation?nonce=…` from `url` and verifies it (§9.1) under `policy`.
pub async fn verify_service(
    http: &reqwest::Client,
    url: &str,
    policy: &Policy,
    nonce: Nonce,
) -> Result<AciProof> {
    let base = node_base(url);
    let endpoint = format!("{base}{ACI_ATTESTATION_PATH}");
    let (body, transport) = crate::body::fetch(
        http.get(&endpoint).query(&[(QUERY_NONCE, nonce.to_hex())]),
        &endpoint,
    )
    .await?;
    let report: Value = serde_json::from_slice(&body).map_err(|e| Error::BadReport {
        url: base.clone(),
        detail: format!("the ACI report is not JSON: {e}"),
    })?;
    let now = policy.now();
    let quote = report["attestation"]["evidence"]["quote"]
        .as_str()
        .unwrap_or_default();
    let (collateral, source) = collateral_for(quote.as_bytes(), &policy.collateral, now).await;
    let verdict = verify_aci_report(
        &report,
        &nonce,
        collateral.as_ref(),
        now,
        &aci_policy(policy),
        &transport,
    );
    Ok(AciProof {
        url: base,
        nonce: nonce.to_hex(),
        report,
        collateral: source,
        verdict,
    })
}

impl AciProof {
    /// Fetches receipt `id` (the answer's `X-Receipt-Id`) with the API key that made the request,
    /// if any, and checks it (§9.3): signed by a receipt key of this verified keyset, naming it,
    /// committing to exactly `request` and `response` (the wire bytes sent and received).
    pub async fn check_receipt(
        &self,
        http: &reqwest::Client,
        id: &str,
        api_key: Option<&str>,
        request: &[u8],
        response: &[u8],
    ) -> Result<VerifiedReceipt> {
        let invalid = |e: ReceiptError| Error::SignatureInvalid {
            detail: format!("ACI receipt {id}: {e}"),
        };
        let (Some(keyset), Some(digest)) = (&self.verdict.keyset, &self.verdict.keyset_digest) else {
            return Err(Error::BadReport {
                url: self.url.clone(),
                detail: "no verified ACI keyset to check receipts against".into(),
            });
        };
        if !self.verdict.passed() {
            return Err(Error::BadReport {
                url: self.url.clone(),
                detail: "the ACI report did not verify".into(),
            });
        }
        let endpoint = format!("{}{ACI_RECEIPTS_PREFIX}{id}", self.url);
        let mut req = http.get(&endpoint);
        if let Some(key) = api_key {
            req = req.bearer_auth(key);
        }
        let (body, _) = crate::body::fetch(req, &endpoint).await?;
        let receipt: Value = serde_json::from_slice(&body).map_err(|e| Error::SignatureInvalid {
            detail: format!("ACI receipt {id} is not JSON: {e}"),
        })?;
        let verified = verify_receipt(&receipt, keyset, digest).map_err(invalid)?;
        verified.check_bodies(request, response).map_err(invalid)?;
        Ok(verified)
    }
}
