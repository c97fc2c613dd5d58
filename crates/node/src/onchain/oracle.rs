//! The oracle: `InferenceOracle` requests for a served model, open ones and those designated to this
//! node's operator, are answered with the engine's completion, signed by the enclave key under the
//! oracle's EIP-712 domain, and fulfilled on chain. An input sealed to this node's E2EE key
//! (`docs/protocol.md` §9, "Sealed oracle inputs") is opened first; one that does not open (sealed
//! to another key, e.g. before a restart, or under another AAD) is skipped and refunds after its
//! deadline. Requests designated to other operators are left alone.
//!
//! The scan resumes where it stopped: after each poll's requests are handled, the first block not
//! yet read is saved in the ledger ([`ScanPosition`]), so requests made while the node was down are
//! answered at the next start. A request is answered only while the contract holds it pending: one
//! already fulfilled (by this node before a crash, or by another) is skipped, and a `fulfill` the
//! contract refuses with `RequestNotPending` counts as done, never retried.

use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::{Address, Bytes};
use cloister_chain::{Backoff, Chain, InferenceRequest, Oracle};
use cloister_crypto::EnclaveKey;
use cloister_crypto::e2ee::{E2eeKeyPair, SealedRequest, open_request};
use cloister_engine::Engine;
use cloister_types::e2ee::{ORACLE_SEALED_MAGIC, oracle_input_aad};
use cloister_types::eip712::{Domain, result_digest};
use cloister_types::openai::{ChatCompletionRequest, ChatMessage};
use tokio::sync::watch;

use super::OnChainError;
use crate::billing::Ledger;

/// The revert of a `fulfill` for a request no longer pending (fulfilled or refunded).
const NOT_PENDING: &str = "RequestNotPending";

/// What the oracle loop answers with.
pub(super) struct OracleNode {
    pub(super) oracle: Oracle,
    pub(super) engine: Arc<dyn Engine>,
    /// Signs results (the registered signer).
    pub(super) key: Arc<EnclaveKey>,
    /// Opens sealed inputs; `None`: they are skipped.
    pub(super) e2ee: Option<Arc<E2eeKeyPair>>,
    /// This node's registry key: requests designated to another operator are not ours.
    pub(super) operator: Address,
}

/// Why a request's input gives no prompt.
#[derive(Debug, thiserror::Error)]
enum InputError {
    #[error("the input is sealed but this node has no E2EE key")]
    NoE2eeKey,
    #[error("the sealed input does not open with this node's key and the request's AAD: {0}")]
    Unopened(cloister_crypto::Error),
    #[error("the input is not UTF-8 text")]
    NotText,
}

/// Whether the node run by `operator` should answer `r`: a served model, and open or designated
/// to `operator` (the contract refuses anyone else's `fulfill` of a designated request).
fn answers(operator: Address, served: &[String], r: &InferenceRequest) -> bool {
    (r.node == Address::ZERO || r.node == operator) && served.contains(&r.model)
}

impl OracleNode {
    /// The request's prompt text: the input itself, or the opened envelope when it is sealed.
    fn prompt_text(&self, r: &InferenceRequest) -> Result<String, InputError> {
        let bytes = match r.input.strip_prefix(ORACLE_SEALED_MAGIC) {
            None => r.input.to_vec(),
            Some(envelope) => {
                let e2ee = self.e2ee.as_ref().ok_or(InputError::NoE2eeKey)?;
                let sealed = SealedRequest::from_bytes(envelope).map_err(InputError::Unopened)?;
                let aad = oracle_input_aad(
                    self.oracle.chain_id(),
                    &self.oracle.address(),
                    &r.requester,
                    &r.model,
                );
                // The response keys go unused: the answer is public on chain.
                let (plaintext, _) =
                    open_request(e2ee, &self.key.address(), &sealed, &aad).map_err(InputError::Unopened)?;
                plaintext
            }
        };
        String::from_utf8(bytes).map_err(|_| InputError::NotText)
    }
}

/// The prompt of an oracle request: its text, one user message.
fn oracle_prompt(model: &str, text: String) -> ChatCompletionRequest {
    let mut req = ChatCompletionRequest {
        model: model.to_owned(),
        ..ChatCompletionRequest::default()
    };
    req.messages = vec![ChatMessage::text("user", text)];
    req.max_tokens = Some(64);
    req.temperature = Some(0.0);
    req
}

/// Where the oracle's log scan resumes, kept in the ledger across restarts.
pub(super) struct ScanPosition {
    ledger: Arc<Ledger>,
    /// The ledger key, one per chain and oracle contract: a ledger reused on another chain (a new
    /// devnet) does not resume at a block of the first.
    name: String,
    /// The position last written, not to write the same one at every poll.
    saved: Option<u64>,
}

impl ScanPosition {
    /// The position of `oracle`'s scan in `ledger`.
    pub(super) fn of(oracle: &Oracle, ledger: Arc<Ledger>) -> Self {
        Self {
            ledger,
            name: format!("oracle:{}:{:#x}", oracle.chain_id(), oracle.address()),
            saved: None,
        }
    }

    /// The first block to read: the saved position; else the deployment block where the chain
    /// configuration knows it; else the current block (today's requests on, as before). A start
    /// without a saved position saves the one it chose, so a crash before the first poll loses
    /// nothing.
    pub(super) async fn start_block(&mut self, chain: &Chain) -> Result<u64, OnChainError> {
        if let Some(saved) = self.ledger.scan_position(&self.name).await? {
            self.saved = Some(saved);
            tracing::info!(from = saved, "oracle scan resumes at its saved position");
            return Ok(saved);
        }
        let from = if chain.config().deploy_block > 0 {
            chain.config().log_scan_limits().from_block
        } else {
            chain.block_number().await?
        };
        self.ledger.set_scan_position(&self.name, from).await?;
        self.saved = Some(from);
        Ok(from)
    }

    /// Saves `next_block` (after the requests before it were handled). A failed write is logged:
    /// the next start reads those blocks again, and answered requests are no longer pending.
    async fn save(&mut self, next_block: u64) {
        if self.saved == Some(next_block) {
            return;
        }
        match self.ledger.set_scan_position(&self.name, next_block).await {
            Ok(()) => self.saved = Some(next_block),
            Err(err) => {
                tracing::warn!(%err, next_block, "saving the oracle scan position failed; a restart reads these blocks again")
            }
        }
    }
}

/// Answers request `r` if the contract still holds it pending.
async fn answer(node: &OracleNode, domain: &Domain, r: &InferenceRequest) {
    match node.oracle.get_request(r.id).await {
        Ok(stored) if !stored.is_pending() => {
            tracing::debug!(id = %r.id, status = stored.status, "oracle request no longer pending; skipped");
            return;
        }
        Ok(_) => {}
        // Unknown: answer anyway; the contract refuses it if it is not pending.
        Err(err) => tracing::warn!(id = %r.id, %err, "reading an oracle request's status failed"),
    }
    let text = match node.prompt_text(r) {
        Ok(t) => t,
        Err(err) => {
            tracing::warn!(id = %r.id, %err, "oracle request skipped (refundable after its deadline)");
            return;
        }
    };
    let output = match node.engine.complete(oracle_prompt(&r.model, text)).await {
        Ok(c) => c
            .choices
            .first()
            .map(|c| c.message.text_content())
            .unwrap_or_default(),
        Err(err) => {
            tracing::warn!(id = %r.id, %err, "oracle inference failed");
            return;
        }
    };
    let digest = result_digest(domain, r.id, output.as_bytes(), &r.model);
    let signature = node.key.sign_prehash(&digest.0);
    match node
        .oracle
        .fulfill(r.id, Bytes::from(output.into_bytes()), signature)
        .await
    {
        Ok(o) => {
            tracing::info!(id = %r.id, tx = %o.tx.tx_hash, callback_ok = o.callback_ok, "oracle request fulfilled")
        }
        Err(err) if err.revert_name() == Some(NOT_PENDING) => {
            tracing::info!(id = %r.id, "oracle request was answered (or refunded) meanwhile; done")
        }
        Err(err) => tracing::warn!(id = %r.id, %err, "fulfilling an oracle request failed"),
    }
}

pub(super) async fn oracle_loop(
    node: OracleNode,
    poll: Duration,
    from_block: u64,
    mut scan: ScanPosition,
    mut stop: watch::Receiver<bool>,
) {
    let served: Vec<String> = node.engine.models().into_iter().map(|m| m.id).collect();
    let domain = node.oracle.domain();
    let mut watcher = node.oracle.watch_requests(from_block);
    // After a failed poll the next waits longer (poll, doubling to a minute), not to hammer a
    // failing RPC endpoint.
    let mut backoff = Backoff::new(poll, poll.max(Duration::from_secs(60)));
    let mut wait = poll;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        let requests = match watcher.poll().await {
            Ok(r) => {
                backoff.reset();
                wait = poll;
                r
            }
            Err(err) => {
                wait = backoff.next_delay().max(poll);
                tracing::warn!(%err, retry_in = ?wait, "polling oracle requests failed");
                continue;
            }
        };
        for r in requests
            .into_iter()
            .filter(|r| answers(node.operator, &served, r))
        {
            answer(&node, &domain, &r).await;
        }
        scan.save(watcher.next_block()).await;
    }
}

#[cfg(test)]
mod tests {
    use alloy_primitives::U256;

    use super::*;

    fn request(node: Address, model: &str) -> InferenceRequest {
        InferenceRequest {
            id: U256::from(1u64),
            requester: Address::repeat_byte(9),
            node,
            model: model.to_owned(),
            input: Bytes::new(),
            max_fee: U256::ZERO,
            callback: Address::ZERO,
            callback_gas_limit: 0,
            deadline: 0,
            block_number: None,
        }
    }

    #[test]
    fn answers_open_and_own_requests_for_served_models_only() {
        let (us, them) = (Address::repeat_byte(1), Address::repeat_byte(2));
        let served = vec!["m".to_owned()];
        assert!(answers(us, &served, &request(Address::ZERO, "m")), "open");
        assert!(answers(us, &served, &request(us, "m")), "designated to us");
        assert!(
            !answers(us, &served, &request(them, "m")),
            "designated to another operator"
        );
        assert!(
            !answers(us, &served, &request(us, "other")),
            "a model we do not serve"
        );
    }
}
