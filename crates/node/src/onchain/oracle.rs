//! The oracle: `InferenceOracle` requests for a served model are answered with the engine's
//! completion, signed by the enclave key under the oracle's EIP-712 domain, and fulfilled on chain.

use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::Bytes;
use cloister_chain::{Backoff, Oracle};
use cloister_crypto::EnclaveKey;
use cloister_engine::Engine;
use cloister_types::eip712::result_digest;
use cloister_types::openai::{ChatCompletionRequest, ChatMessage};
use tokio::sync::watch;

/// The prompt of an oracle request: its input as UTF-8 text, one user message.
fn oracle_prompt(model: &str, input: &[u8]) -> Option<ChatCompletionRequest> {
    let text = std::str::from_utf8(input).ok()?;
    let mut req = ChatCompletionRequest {
        model: model.to_owned(),
        ..ChatCompletionRequest::default()
    };
    req.messages = vec![ChatMessage::text("user", text)];
    req.max_tokens = Some(64);
    req.temperature = Some(0.0);
    Some(req)
}

pub(super) async fn oracle_loop(
    oracle: Oracle,
    engine: Arc<dyn Engine>,
    key: Arc<EnclaveKey>,
    poll: Duration,
    from_block: u64,
    mut stop: watch::Receiver<bool>,
) {
    let served: Vec<String> = engine.models().into_iter().map(|m| m.id).collect();
    let domain = oracle.domain();
    let mut watcher = oracle.watch_requests(from_block);
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
        for r in requests.into_iter().filter(|r| served.contains(&r.model)) {
            let Some(req) = oracle_prompt(&r.model, &r.input) else {
                tracing::warn!(id = %r.id, "oracle input is not UTF-8 text; skipped");
                continue;
            };
            let output = match engine.complete(req).await {
                Ok(c) => c
                    .choices
                    .first()
                    .map(|c| c.message.text_content())
                    .unwrap_or_default(),
                Err(err) => {
                    tracing::warn!(id = %r.id, %err, "oracle inference failed");
                    continue;
                }
            };
            let digest = result_digest(&domain, r.id, output.as_bytes(), &r.model);
            let signature = key.sign_prehash(&digest.0);
            match oracle
                .fulfill(r.id, Bytes::from(output.into_bytes()), signature)
                .await
            {
                Ok(o) => {
                    tracing::info!(id = %r.id, tx = %o.tx.tx_hash, callback_ok = o.callback_ok, "oracle request fulfilled")
                }
                Err(err) => tracing::warn!(id = %r.id, %err, "fulfilling an oracle request failed"),
            }
        }
    }
}
