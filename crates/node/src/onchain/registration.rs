//! Registration at start: a fresh quote binding this chain, the registry, the operator and the
//! enclave key; `register` on first start (with the stake), `reattest` after (and `updateModels` if
//! the prices changed). Then the ledger's vouchers of this operator's earlier enclave keys are
//! signed again with the new key, which the chain now names as the signer.
//!
//! The earlier keys come from the registry's `NodeRegistered`/`NodeReattested` logs, read in
//! bounded windows from the deployment block ([`cloister_chain::Registry::signer_history`]). The
//! part of that history buried under the network's confirmations is kept in a small JSON file
//! beside the ledger (`<ledger>.signers.json`), so a restart reads only the blocks since; the
//! unconfirmed tail is read again at every start and never stored.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use alloy_primitives::{Address, Bytes};
use cloister_attest::collect::Attester;
use cloister_chain::alloy::providers::Provider as _;
use cloister_chain::{ChainConfig, ChainError, ModelPrice, Registry, SignerHistory};
use cloister_crypto::EnclaveKey;
use cloister_types::ReportData;
use cloister_types::eip712::Domain;

use super::{OnChainConfig, OnChainError, RegistrationOutcome};
use crate::billing::Ledger;

/// The registered prices, sorted by model id (the order `getNode` returns them in).
fn registered_models(config: &OnChainConfig) -> Vec<ModelPrice> {
    let mut models: Vec<ModelPrice> = config
        .prices
        .iter()
        .map(|(id, p)| ModelPrice {
            id: id.clone(),
            input_price: p.input,
            output_price: p.output,
        })
        .collect();
    models.sort_by(|a, b| a.id.cmp(&b.id));
    models
}

/// Registers or reattests `key` for the operator of `config`, then re-signs the ledger under
/// `escrow`.
pub(super) async fn register(
    registry: &Registry,
    config: &OnChainConfig,
    attester: &dyn Attester,
    key: &Arc<EnclaveKey>,
    ledger: &Ledger,
    escrow: &Domain,
) -> Result<RegistrationOutcome, OnChainError> {
    let operator = config.operator.address();
    let signer = key.address();
    let confirmations = config.chain.confirmations();
    // Final only under the network's confirmations; a transaction a reorg removed is sent again
    // (with a fresh quote: the registry binds its own nonce into report_data).
    let mut attempt = 0;
    let (action, tx) = loop {
        attempt += 1;
        let (action, tx) = send_registration(registry, config, attester, operator, signer).await?;
        if await_final(registry, tx.tx_hash, confirmations).await? {
            break (action, tx);
        }
        if attempt >= MAX_REGISTRATION_ATTEMPTS {
            return Err(OnChainError::RegistrationNotFinal(format!(
                "{action} transaction removed by a reorg {attempt} times"
            )));
        }
        tracing::warn!(tx = %tx.tx_hash, attempt, "the {action} transaction was removed by a reorg; sending it again");
    };
    tracing::info!(%operator, %signer, action, tx = %tx.tx_hash, gas = tx.gas_used, "node on chain");

    // Vouchers signed by this operator's earlier enclave keys (restarts) are signed again with
    // this key, which the chain now names as the signer; anything else is set aside.
    let signers = registered_signers(registry, &config.chain, operator, &config.ledger_path).await?;
    let resign = ledger.resign(key, escrow, &signers).await?;
    if resign.resigned + resign.rejected > 0 {
        tracing::info!(
            resigned = resign.resigned,
            rejected = resign.rejected,
            "ledger re-signed"
        );
    }
    Ok(RegistrationOutcome {
        action,
        tx_hash: tx.tx_hash,
        gas_used: tx.gas_used,
        resigned: resign.resigned,
        rejected: resign.rejected,
    })
}

/// How many times a registration removed by reorgs is sent before the node gives up.
const MAX_REGISTRATION_ATTEMPTS: u32 = 3;
/// How often a registration waiting for its confirmations is looked at.
const FINALITY_POLL: std::time::Duration = std::time::Duration::from_secs(1);
/// The longest wait for a registration to become final.
const FINALITY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1800);

/// Sends `register` (first start) or `reattest` (after), with a fresh quote.
async fn send_registration(
    registry: &Registry,
    config: &OnChainConfig,
    attester: &dyn Attester,
    operator: alloy_primitives::Address,
    signer: alloy_primitives::Address,
) -> Result<(&'static str, cloister_chain::TxOutcome), OnChainError> {
    let rd: ReportData = registry.report_data_for(operator, signer).await?;
    let evidence = attester.evidence(&rd).await?;
    let quote = Bytes::from(evidence.quote);
    let models = registered_models(config);
    Ok(match registry.get_node(operator).await {
        Ok(info) if info.unbonding_ends != 0 => return Err(OnChainError::Unbonding(operator)),
        Ok(info) => {
            let tx = registry.reattest(quote).await?;
            if info.models != models {
                registry.update_models(&models).await?;
            }
            ("reattested", tx)
        }
        Err(ChainError::NotRegistered(_)) => {
            let stake = match config.stake {
                Some(s) => s,
                None => registry.min_stake().await?,
            };
            (
                "registered",
                registry.register(quote, &config.endpoint, &models, stake).await?,
            )
        }
        Err(e) => return Err(e.into()),
    })
}

/// Waits until `tx` is final under `confirmations` (true) or a reorg removed it (false). A read
/// that fails is retried: it never counts as final.
async fn await_final(
    registry: &Registry,
    tx: alloy_primitives::B256,
    confirmations: u64,
) -> Result<bool, OnChainError> {
    let deadline = tokio::time::Instant::now() + FINALITY_TIMEOUT;
    let mut last_depth = None;
    loop {
        match registry.finality(tx, confirmations).await {
            Ok(cloister_chain::Finality::Final { .. }) => return Ok(true),
            Ok(cloister_chain::Finality::Dropped) => return Ok(false),
            Ok(cloister_chain::Finality::Waiting { depth, .. }) => {
                if last_depth != Some(depth) {
                    tracing::info!(%tx, depth, confirmations, "registration waiting for confirmations");
                    last_depth = Some(depth);
                }
            }
            Err(e) => tracing::warn!(%tx, "reading the registration's standing failed (retrying): {e}"),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(OnChainError::RegistrationNotFinal(format!(
                "{tx} not {confirmations} blocks deep within {FINALITY_TIMEOUT:?}"
            )));
        }
        tokio::time::sleep(FINALITY_POLL).await;
    }
}

/// The stored, confirmed part of an operator's signer history: valid only for the chain,
/// registry and operator it names.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct StoredSigners {
    chain_id: u64,
    registry: Address,
    operator: Address,
    history: SignerHistory,
}

/// Where the confirmed signer history lives: beside the ledger.
fn history_path(ledger_path: &Path) -> PathBuf {
    let mut name = ledger_path.file_name().unwrap_or_default().to_os_string();
    name.push(".signers.json");
    ledger_path.with_file_name(name)
}

/// The stored history if it is this chain's, registry's and operator's; else a fresh one (from
/// the deployment block). A missing or unreadable file only costs a longer scan.
fn load_history(path: &Path, chain_id: u64, registry: Address, operator: Address) -> SignerHistory {
    let stored = std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<StoredSigners>(&bytes).ok());
    match stored {
        Some(s) if s.chain_id == chain_id && s.registry == registry && s.operator == operator => s.history,
        Some(_) => {
            tracing::info!(path = %path.display(), "signer history names another chain, registry or operator; scanning afresh");
            SignerHistory::default()
        }
        None => SignerHistory::default(),
    }
}

/// Writes the history (temporary file, then rename, so a crash leaves the old one or the new).
fn store_history(path: &Path, stored: &StoredSigners) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(stored).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Every signer `operator` has registered or reattested with (on-chain history, not the disk):
/// the confirmed history resumed from its stored cursor and stored again, plus the unconfirmed
/// tail up to the latest block.
async fn registered_signers(
    registry: &Registry,
    chain: &ChainConfig,
    operator: Address,
    ledger_path: &Path,
) -> Result<Vec<Address>, ChainError> {
    let latest = registry.binding().provider().get_block_number().await?;
    let confirmed_to = latest.saturating_sub(chain.confirmations());
    let path = history_path(ledger_path);
    let stored = load_history(&path, chain.chain_id, registry.address(), operator);
    let confirmed = registry.signer_history(operator, stored, confirmed_to).await?;
    let record = StoredSigners {
        chain_id: chain.chain_id,
        registry: registry.address(),
        operator,
        history: confirmed.clone(),
    };
    if let Err(err) = store_history(&path, &record) {
        tracing::warn!(path = %path.display(), %err, "could not store the signer history; the next start scans again");
    }
    let tail = SignerHistory {
        signers: Vec::new(),
        ..confirmed.clone()
    };
    let tail = registry.signer_history(operator, tail, latest).await?;
    let mut signers = confirmed.signers;
    for signer in tail.signers {
        if !signers.contains(&signer) {
            signers.push(signer);
        }
    }
    Ok(signers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_history_is_used_only_for_its_own_chain_registry_and_operator() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = history_path(&dir.path().join("ledger.sqlite"));
        assert!(path.ends_with("ledger.sqlite.signers.json"));
        let (registry, operator) = (Address::repeat_byte(1), Address::repeat_byte(2));
        assert_eq!(
            load_history(&path, 1, registry, operator),
            SignerHistory::default()
        );
        let history = SignerHistory {
            cursor: cloister_types::logscan::LogCursor::at(77),
            signers: vec![Address::repeat_byte(3)],
        };
        let stored = StoredSigners {
            chain_id: 1,
            registry,
            operator,
            history: history.clone(),
        };
        store_history(&path, &stored).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(load_history(&path, 1, registry, operator), history);
        assert_eq!(
            load_history(&path, 2, registry, operator),
            SignerHistory::default()
        );
        assert_eq!(
            load_history(&path, 1, operator, operator),
            SignerHistory::default()
        );
        assert_eq!(
            load_history(&path, 1, registry, registry),
            SignerHistory::default()
        );
        std::fs::write(&path, b"{not json").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            load_history(&path, 1, registry, operator),
            SignerHistory::default()
        );
    }
}
