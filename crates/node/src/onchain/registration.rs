//! Registration at start: a fresh quote binding this chain, the registry, the operator and the
//! enclave key; `register` on first start (with the stake), `reattest` after (and `updateModels` if
//! the prices changed). Then the ledger's vouchers of this operator's earlier enclave keys are
//! signed again with the new key, which the chain now names as the signer.

use std::sync::Arc;

use alloy_primitives::{Address, Bytes};
use cloister_attest::collect::Attester;
use cloister_chain::{ChainError, ModelPrice, Registry};
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
    let signer = Address::from(key.address());
    let rd: ReportData = registry.report_data_for(operator, signer).await?;
    let evidence = attester.evidence(&rd).await?;
    let quote = Bytes::from(evidence.quote);
    let models = registered_models(config);
    let (action, tx) = match registry.get_node(operator).await {
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
    };
    tracing::info!(%operator, %signer, action, tx = %tx.tx_hash, gas = tx.gas_used, "node on chain");

    // Vouchers signed by this operator's earlier enclave keys (restarts) are signed again with
    // this key, which the chain now names as the signer; anything else is set aside.
    let signers = registered_signers(registry, operator).await?;
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

/// Every signer `operator` has registered or reattested with (on-chain history, not the disk).
async fn registered_signers(registry: &Registry, operator: Address) -> Result<Vec<Address>, ChainError> {
    let b = registry.binding();
    let mut out = Vec::new();
    let registered = b
        .NodeRegistered_filter()
        .topic1(operator)
        .from_block(0)
        .query()
        .await
        .map_err(ChainError::Contract)?;
    out.extend(registered.into_iter().map(|(e, _)| e.signer));
    let reattested = b
        .NodeReattested_filter()
        .topic1(operator)
        .from_block(0)
        .query()
        .await
        .map_err(ChainError::Contract)?;
    out.extend(reattested.into_iter().map(|(e, _)| e.signer));
    Ok(out)
}
