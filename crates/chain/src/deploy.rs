//! A production deployment on a named network (`cloister deploy`): the Automata DCAP quote
//! verifier adapter, `NodeRegistry`, `Escrow` and `InferenceOracle`, paid in an existing ERC-20,
//! written as a chain file that `node run --chain`, `proxy --chain` and the escrow/key commands
//! read (with the network's confirmations, log range and fee caps, and the deployment block that
//! log scans start from). Every deployment transaction is sent the way every other transaction is
//! ([`crate::send`]): EIP-1559 fees within the network's caps (a base fee above the cap sends
//! nothing), replaced at a higher fee when stuck.

use alloy::primitives::{Address, U256};
use alloy::providers::Provider as _;
use alloy::signers::local::PrivateKeySigner;

use crate::bindings::automata::AutomataDcapAdapter;
use crate::bindings::{Escrow, InferenceOracle, NodeRegistry};
use crate::{ChainConfig, ChainError, Failover, Network, Result, SendPolicy, send, wallet_provider_on};

/// What a deployment is made with besides the network.
#[derive(Clone, Debug)]
pub struct DeploySpec {
    /// JSON-RPC endpoint of the network.
    pub rpc_url: String,
    /// The payment and stake token (an existing ERC-20, e.g. the network's USDC).
    pub token: Address,
    /// Automata's DCAP attestation contract; `None`: the network file's.
    pub automata: Option<Address>,
    /// The registry's owner (governance); `None`: the deployer.
    pub governance: Option<Address>,
    /// `NodeRegistry.minStake`, in the token's base units.
    pub min_stake: U256,
    /// `NodeRegistry.maxAge` (seconds between reattestations).
    pub max_age: u64,
    /// `NodeRegistry.unbondingDelay` (seconds).
    pub unbonding_delay: u64,
    /// `NodeRegistry.measurementDelay` (seconds): the timelock on measurement allowlist changes.
    pub measurement_delay: u64,
    /// `Escrow.withdrawDelay` (seconds).
    pub withdraw_delay: u64,
    /// `InferenceOracle.timeout` (seconds).
    pub oracle_timeout: u64,
}

/// A finished deployment.
#[derive(Clone, Debug)]
pub struct Deployment {
    /// The chain file (write it with [`ChainConfig::save`]).
    pub config: ChainConfig,
    /// The `AutomataDcapAdapter` the registry verifies quotes with.
    pub quote_verifier: Address,
}

/// Deploys to `network` as `deployer`. Refuses an endpoint whose chain id is not the network's, and
/// a network without an Automata verifier address (unless `spec.automata` gives one): the
/// simulated verifier is never deployed here.
pub async fn deploy_network(
    network: &Network,
    spec: &DeploySpec,
    deployer: PrivateKeySigner,
) -> Result<Deployment> {
    let automata = spec
        .automata
        .or(network.automata_dcap_verifier)
        .ok_or_else(|| ChainError::NoQuoteVerifier(network.name.clone()))?;
    let governance = spec.governance.unwrap_or_else(|| deployer.address());
    let policy = SendPolicy {
        caps: Some(network.fee_caps()),
        resend: crate::ResendPolicy::default(),
    };
    let p = wallet_provider_on(Failover::new(&[spec.rpc_url.as_str()], policy)?, deployer)?;
    let actual = p.get_chain_id().await?;
    if actual != network.chain_id {
        return Err(ChainError::WrongChain {
            expected: network.chain_id,
            actual,
        });
    }
    let deploy_block = p.get_block_number().await?;

    let verifier = created(
        send(AutomataDcapAdapter::deploy_builder(&p, automata)).await?,
        "AutomataDcapAdapter",
    )?;
    let registry = created(
        send(NodeRegistry::deploy_builder(
            &p,
            governance,
            spec.token,
            verifier,
            spec.min_stake,
            spec.max_age,
            spec.unbonding_delay,
            spec.measurement_delay,
        ))
        .await?,
        "NodeRegistry",
    )?;
    let escrow = created(
        send(Escrow::deploy_builder(
            &p,
            spec.token,
            registry,
            spec.withdraw_delay,
        ))
        .await?,
        "Escrow",
    )?;
    let oracle = created(
        send(InferenceOracle::deploy_builder(
            &p,
            spec.token,
            registry,
            spec.oracle_timeout,
        ))
        .await?,
        "InferenceOracle",
    )?;

    Ok(Deployment {
        config: ChainConfig {
            rpc_url: spec.rpc_url.clone(),
            chain_id: network.chain_id,
            token: spec.token,
            registry,
            escrow,
            oracle,
            consumer: None,
            deploy_block,
            network: Some(network.clone()),
            rpc_urls_fallback: Vec::new(),
            resend: crate::ResendPolicy::default(),
        },
        quote_verifier: verifier,
    })
}

/// The address a deployment transaction created.
fn created(outcome: crate::TxOutcome, name: &'static str) -> Result<Address> {
    outcome
        .receipt
        .contract_address
        .ok_or(ChainError::NoContractAddress(name))
}
