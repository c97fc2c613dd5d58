//! The timelocked measurement allowlist on real anvil: a registry deployed with a 60 s delay only
//! announces the simulated measurement; executing early, a one-step change, cancelled changes and
//! a stranger's announcement are refused by name; after the delay anyone executes and nodes register.

use alloy::primitives::B256;
use cloister_chain::devnet::{self, DeployParams, Devnet, DevnetOptions};
use cloister_chain::{ChainError, PendingChange, PendingDelayChange};

use crate::{anvil_available, connect, register_node};

const DELAY: u64 = 60;

#[tokio::test]
async fn announce_wait_execute_and_cancel() {
    if !anvil_available() {
        return;
    }
    let dn = Devnet::spawn(DevnetOptions::default()).await.unwrap();
    let params = DeployParams {
        measurement_delay: DELAY,
        ..DeployParams::default()
    };
    let file = devnet::deploy_devnet(dn.rpc_url(), &params).await.unwrap();
    let gov = connect(&file, "governance").await;
    let op = connect(&file, "operator").await;
    let gov_registry = gov.registry().unwrap();
    let op_registry = op.registry().unwrap();
    let simulated = devnet::simulated_measurement().unwrap();

    assert_eq!(gov_registry.measurement_delay().await.unwrap(), DELAY);
    // The deployment announced the simulated measurement; it is pending, not yet allowed.
    let pending = op_registry.pending_measurement_changes().await.unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    let announced = pending[0];
    assert_eq!((announced.measurement, announced.allowed), (simulated, true));
    let now = chain_time(&gov).await;
    assert!(
        announced.eta > now && announced.eta <= now + DELAY,
        "{announced:?} at {now}"
    );
    assert!(announced.seconds_left(now) > 0);
    assert!(
        !op_registry
            .allowed_measurements()
            .await
            .unwrap()
            .contains(&simulated)
    );

    // Executing early is refused by name; so is the one-step helper on a timelocked registry.
    let err = op_registry.execute_measurement(simulated).await.unwrap_err();
    assert_eq!(err.revert_name(), Some("TooEarly"), "{err}");
    let err = gov_registry.set_measurement(simulated, true).await.unwrap_err();
    assert!(
        matches!(err, ChainError::MeasurementTimelocked { delay: DELAY }),
        "{err}"
    );
    // A second announcement for the same measurement, and one by a stranger, are refused.
    let err = gov_registry
        .announce_measurement(simulated, false)
        .await
        .unwrap_err();
    assert_eq!(err.revert_name(), Some("ChangeAlreadyPending"), "{err}");
    let other = B256::repeat_byte(0x42);
    let err = op_registry.announce_measurement(other, true).await.unwrap_err();
    assert_eq!(err.revert_name(), Some("OwnableUnauthorizedAccount"), "{err}");

    // Announce and cancel another one: gone from the list, and executing it fails.
    gov_registry.announce_measurement(other, true).await.unwrap();
    let listed = op_registry.pending_measurement_changes().await.unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.iter().any(|p| p.measurement == other && p.allowed));
    let err = op_registry.cancel_measurement(other).await.unwrap_err();
    assert_eq!(err.revert_name(), Some("OwnableUnauthorizedAccount"), "{err}");
    gov_registry.cancel_measurement(other).await.unwrap();
    assert_eq!(
        op_registry.pending_measurement_changes().await.unwrap(),
        vec![announced]
    );

    // Before the execution no node can register with the simulated measurement.
    let quote = op_registry
        .simulated_quote_for(op.address().unwrap(), alloy::primitives::Address::repeat_byte(7))
        .await
        .unwrap();
    let stake = op_registry.min_stake().await.unwrap();
    let err = op_registry
        .register(quote, "https://x", &[], stake)
        .await
        .unwrap_err();
    assert_eq!(err.revert_name(), Some("UnapprovedMeasurement"), "{err}");

    // After the delay anyone (here the operator) executes it, and registration works.
    devnet::increase_time(gov.provider(), DELAY + 1).await.unwrap();
    op_registry.execute_measurement(simulated).await.unwrap();
    assert_eq!(
        op_registry.pending_measurement_changes().await.unwrap(),
        Vec::<PendingChange>::new()
    );
    assert!(
        op_registry
            .allowed_measurements()
            .await
            .unwrap()
            .contains(&simulated)
    );
    let err = op_registry.execute_measurement(other).await.unwrap_err();
    assert_eq!(err.revert_name(), Some("NoPendingChange"), "{err}");
    register_node(&file).await;

    // Lowering the delay is itself timelocked by the current one; raising is immediate.
    gov_registry.announce_measurement_delay(0).await.unwrap();
    let lowering = gov_registry.pending_measurement_delay().await.unwrap();
    let now = chain_time(&gov).await;
    assert!(
        matches!(lowering, Some(PendingDelayChange { delay: 0, eta }) if eta > now),
        "{lowering:?}"
    );
    assert_eq!(gov_registry.measurement_delay().await.unwrap(), DELAY);
    let err = op_registry.execute_measurement_delay().await.unwrap_err();
    assert_eq!(err.revert_name(), Some("TooEarly"), "{err}");
    devnet::increase_time(gov.provider(), DELAY + 1).await.unwrap();
    op_registry.execute_measurement_delay().await.unwrap();
    assert_eq!(gov_registry.measurement_delay().await.unwrap(), 0);
    assert_eq!(gov_registry.pending_measurement_delay().await.unwrap(), None);
    // With a zero delay the one-step helper works again.
    gov_registry.set_measurement(other, true).await.unwrap();
    assert!(op_registry.allowed_measurements().await.unwrap().contains(&other));
}

/// The latest block's timestamp.
async fn chain_time(chain: &cloister_chain::Chain) -> u64 {
    use alloy::providers::Provider as _;
    let block = chain
        .provider()
        .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
        .await
        .unwrap()
        .unwrap();
    block.header.timestamp
}
