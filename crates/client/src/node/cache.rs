//! The verdict cache: a node is verified with a fresh nonce, and the verdict is reused while the
//! policy's TTL and the key binding's expiry allow. Concurrent callers share one verification.

use std::sync::Arc;

use cloister_types::{Nonce, SignatureRecord};

use super::NodeClient;
use crate::report::{ReportProof, VerifiedNode, accept, verify_endpoint};
use crate::signature::check_record;
use crate::{Error, Result, unix_now};

impl NodeClient {
    /// Fetches and verifies the node's report with `nonce`, without applying the client policy
    /// (for callers that show every check, then call [`Self::adopt`]).
    pub async fn fetch_proof(&self, nonce: Nonce) -> Result<ReportProof> {
        let mut proofs = verify_endpoint(
            &self.inner.http,
            &self.inner.base,
            &self.inner.policy,
            nonce,
            None,
        )
        .await?;
        match proofs.pop() {
            Some(proof) if proofs.is_empty() => Ok(proof),
            _ => Err(Error::BadReport {
                url: self.inner.base.clone(),
                detail: "several attestation reports in one answer; a Cloister node sends one".into(),
            }),
        }
    }

    /// Applies the policy to `proof` and, when it passes, caches the node.
    pub async fn adopt(&self, proof: ReportProof) -> Result<Arc<VerifiedNode>> {
        let mut cached = self.inner.cached.lock().await;
        *cached = None;
        let node = self.check_route(accept(proof, &self.inner.policy)?)?;
        *cached = Some(Arc::clone(&node));
        Ok(node)
    }

    /// Verifies the node now with a fresh random nonce (replacing the cached verdict).
    pub async fn verify_now(&self) -> Result<Arc<VerifiedNode>> {
        let mut cached = self.inner.cached.lock().await;
        *cached = None;
        let node = self.verify_locked().await?;
        *cached = Some(Arc::clone(&node));
        Ok(node)
    }

    async fn verify_locked(&self) -> Result<Arc<VerifiedNode>> {
        let nonce = self
            .inner
            .policy
            .dev_fixed_nonce
            .unwrap_or_else(|| Nonce(rand::random()));
        let proof = self.fetch_proof(nonce).await?;
        let node = accept(proof, &self.inner.policy).and_then(|n| self.check_route(n));
        match &node {
            Ok(n) => tracing::debug!(node = %self.inner.base, signer = %n.signer_hex, "node verified"),
            Err(e) => tracing::warn!(node = %self.inner.base, code = e.code(), "node refused: {e}"),
        }
        node
    }

    /// The cached verdict while it is fresh (TTL, key binding expiry), else a new verification.
    /// Concurrent callers share one verification.
    pub async fn verified(&self) -> Result<Arc<VerifiedNode>> {
        let mut cached = self.inner.cached.lock().await;
        if let Some(node) = cached.as_ref()
            && node.fresh(&self.inner.policy, unix_now())
        {
            return Ok(Arc::clone(node));
        }
        *cached = None;
        let node = self.verify_locked().await?;
        *cached = Some(Arc::clone(&node));
        Ok(node)
    }

    /// Through a gateway, the verified node must be the one named.
    fn check_route(&self, node: Arc<VerifiedNode>) -> Result<Arc<VerifiedNode>> {
        match self.inner.routed_to {
            Some(named) if node.signer.address() != Some(named) => Err(Error::GatewayMisrouted {
                named: format!("{named:#x}"),
                attested: node.signer_hex.clone(),
            }),
            _ => Ok(node),
        }
    }

    /// Forgets the cached verdict.
    pub async fn invalidate(&self) {
        *self.inner.cached.lock().await = None;
    }

    /// Checks `record` over `request`/`response` against the attested signer. When it recovers to
    /// another address, the node may have restarted with a new key: it is verified again, and the
    /// signature is accepted only if the new attestation names that signer.
    pub(super) async fn check_signer(
        &self,
        node: Arc<VerifiedNode>,
        record: &SignatureRecord,
        request: &[u8],
        response: &[u8],
    ) -> Result<Arc<VerifiedNode>> {
        let recovered = check_record(record, request, response)?;
        if recovered == node.signer {
            return Ok(node);
        }
        tracing::info!(node = %self.inner.base, "answer signed by another key than the cached signer; verifying the node again");
        let fresh = self.verify_now().await?;
        if recovered == fresh.signer {
            return Ok(fresh);
        }
        Err(Error::SignatureFromAnotherKey {
            attested: fresh.signer_hex.clone(),
            recovered: recovered.to_string(),
        })
    }
}
