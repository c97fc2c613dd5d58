// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Fixture} from "./utils/Fixture.sol";
import {SimQuote} from "./utils/SimQuote.sol";
import {NodeRegistry} from "../src/NodeRegistry.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @notice The timelocked measurement allowlist: announce, execute from eta, cancel, delay changes.
contract GovernanceTest is Fixture {
    event MeasurementSet(bytes32 indexed measurement, bool allowed);
    event MeasurementChangeAnnounced(bytes32 indexed measurement, bool allowed, uint64 eta);
    event MeasurementChangeCancelled(bytes32 indexed measurement);
    event MeasurementDelaySet(uint64 delay);
    event MeasurementDelayChangeAnnounced(uint64 delay, uint64 eta);
    event MeasurementDelayChangeCancelled(uint64 delay);

    uint64 internal constant DELAY = 2 days;
    bytes32 internal constant M1 = bytes32(uint256(0x11));
    bytes32 internal constant M2 = bytes32(uint256(0x22));
    bytes32 internal constant M3 = bytes32(uint256(0x33));

    function setUp() public override {
        super.setUp();
        vm.prank(owner);
        registry.announceMeasurementDelay(DELAY); // raising: immediate
        assertEq(uint256(registry.measurementDelay()), DELAY, "delay raised at once");
    }

    function announce(bytes32 m, bool allowed) internal returns (uint64 eta) {
        vm.prank(owner);
        registry.announceMeasurement(m, allowed);
        (,, eta) = registry.pendingMeasurement(m);
    }

    // ------------------------------------------------------------ announce / execute

    function test_announce_then_execute_after_eta_by_anyone() public {
        uint64 expectedEta = uint64(block.timestamp) + DELAY;
        vm.expectEmit(address(registry));
        emit MeasurementChangeAnnounced(M1, true, expectedEta);
        vm.prank(owner);
        registry.announceMeasurement(M1, true);
        (bool pending, bool allowed, uint64 eta) = registry.pendingMeasurement(M1);
        assertTrue(pending && allowed, "pending allow");
        assertEq(uint256(eta), expectedEta, "eta = now + delay");
        assertFalse(registry.measurementAllowed(M1), "not applied on announce");

        vm.warp(eta);
        vm.expectEmit(address(registry));
        emit MeasurementSet(M1, true);
        vm.prank(client); // not the owner
        registry.executeMeasurement(M1);
        assertTrue(registry.measurementAllowed(M1), "applied");
        (pending,,) = registry.pendingMeasurement(M1);
        assertFalse(pending, "cleared");
        assertEq(registry.pendingMeasurements().length, 0, "list empty");
    }

    function test_revert_TooEarly() public {
        uint64 eta = announce(M1, true);
        vm.warp(eta - 1);
        vm.expectRevert(abi.encodeWithSelector(NodeRegistry.TooEarly.selector, eta));
        registry.executeMeasurement(M1);
    }

    function test_revert_NoPendingChange_execute_and_cancel() public {
        vm.expectRevert(abi.encodeWithSelector(NodeRegistry.NoPendingChange.selector, M1));
        registry.executeMeasurement(M1);
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(NodeRegistry.NoPendingChange.selector, M1));
        registry.cancelMeasurement(M1);
    }

    function test_revert_ChangeAlreadyPending() public {
        announce(M1, true);
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(NodeRegistry.ChangeAlreadyPending.selector, M1));
        registry.announceMeasurement(M1, false);
    }

    function test_revert_announce_and_cancel_onlyOwner() public {
        bytes memory err = abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, operator);
        vm.prank(operator);
        vm.expectRevert(err);
        registry.announceMeasurement(M1, true);
        announce(M1, true);
        vm.prank(operator);
        vm.expectRevert(err);
        registry.cancelMeasurement(M1);
    }

    function test_cancel_then_execute_fails() public {
        uint64 eta = announce(M1, true);
        vm.expectEmit(address(registry));
        emit MeasurementChangeCancelled(M1);
        vm.prank(owner);
        registry.cancelMeasurement(M1);
        vm.warp(eta);
        vm.expectRevert(abi.encodeWithSelector(NodeRegistry.NoPendingChange.selector, M1));
        registry.executeMeasurement(M1);
        assertFalse(registry.measurementAllowed(M1), "never applied");
        announce(M1, false); // a cancelled measurement can be announced again
    }

    function test_disallow_is_timelocked_too() public {
        uint64 eta = announce(SimQuote.MEASUREMENT, false);
        assertTrue(registry.measurementAllowed(SimQuote.MEASUREMENT), "still allowed while pending");
        vm.warp(eta);
        registry.executeMeasurement(SimQuote.MEASUREMENT);
        assertFalse(registry.measurementAllowed(SimQuote.MEASUREMENT), "disallowed after eta");
    }

    function test_registration_only_after_execute() public {
        // Governance first disallows the fixture's measurement, then re-allows it with the timelock.
        uint64 eta = announce(SimQuote.MEASUREMENT, false);
        vm.warp(eta);
        registry.executeMeasurement(SimQuote.MEASUREMENT);
        eta = announce(SimQuote.MEASUREMENT, true);
        token.mint(operator, MIN_STAKE);
        vm.prank(operator);
        token.approve(address(registry), MIN_STAKE);
        bytes memory q = quoteFor(operator, signer);
        vm.prank(operator);
        vm.expectRevert(abi.encodeWithSelector(NodeRegistry.UnapprovedMeasurement.selector, SimQuote.MEASUREMENT));
        registry.register(q, "https://n", models1(), MIN_STAKE);
        vm.warp(eta);
        registry.executeMeasurement(SimQuote.MEASUREMENT);
        q = quoteFor(operator, signer);
        vm.prank(operator);
        registry.register(q, "https://n", models1(), MIN_STAKE);
        assertEq(registry.signerOf(operator), signer, "registered after execute");
    }

    function test_zero_delay_announce_and_execute_in_one_block() public {
        // The fixture's registry is deployed with delay 0 (like dev chains); this one is not, so
        // deploy a fresh registry with delay 0.
        NodeRegistry r = new NodeRegistry(owner, token, simVerifier, MIN_STAKE, MAX_AGE, UNBONDING, 0);
        vm.prank(owner);
        r.announceMeasurement(M1, true);
        r.executeMeasurement(M1);
        assertTrue(r.measurementAllowed(M1), "same block");
    }

    // ------------------------------------------------------------ listing

    function test_pendingMeasurements_lists_and_removes() public {
        announce(M1, true);
        vm.warp(block.timestamp + 10);
        announce(M2, false);
        announce(M3, true);
        NodeRegistry.PendingMeasurement[] memory p = registry.pendingMeasurements();
        assertEq(p.length, 3, "three pending");
        assertEq(p[1].measurement, M2, "order of announcement");
        assertFalse(p[1].allowed, "M2 disallow");
        assertEq(uint256(p[1].eta), block.timestamp + DELAY, "M2 eta");
        vm.prank(owner);
        registry.cancelMeasurement(M1); // the last one moves into its place
        p = registry.pendingMeasurements();
        assertEq(p.length, 2, "two left");
        assertEq(p[0].measurement, M3, "moved");
        assertEq(p[1].measurement, M2, "kept");
        (bool pending, bool allowed,) = registry.pendingMeasurement(M3);
        assertTrue(pending && allowed, "index follows the move");
        vm.warp(block.timestamp + DELAY);
        registry.executeMeasurement(M3);
        registry.executeMeasurement(M2);
        assertEq(registry.pendingMeasurements().length, 0, "none left");
    }

    function test_revert_TooManyPendingChanges() public {
        uint256 max = registry.MAX_PENDING_MEASUREMENTS();
        for (uint256 i; i < max; ++i) {
            announce(bytes32(i + 1), true);
        }
        vm.prank(owner);
        vm.expectRevert(NodeRegistry.TooManyPendingChanges.selector);
        registry.announceMeasurement(bytes32(max + 1), true);
        // Executing one frees a slot.
        vm.warp(block.timestamp + DELAY);
        registry.executeMeasurement(bytes32(uint256(1)));
        announce(bytes32(max + 1), true);
    }

    // ------------------------------------------------------------ delay changes

    function test_raise_delay_is_immediate_and_keeps_earlier_etas() public {
        uint64 eta = announce(M1, true);
        vm.expectEmit(address(registry));
        emit MeasurementDelaySet(DELAY * 2);
        vm.prank(owner);
        registry.announceMeasurementDelay(DELAY * 2);
        assertEq(uint256(registry.measurementDelay()), DELAY * 2, "raised");
        assertEq(uint256(announce(M2, true)), block.timestamp + DELAY * 2, "new changes use the new delay");
        vm.warp(eta);
        registry.executeMeasurement(M1); // announced before the raise: its eta stands
    }

    function test_lower_delay_is_timelocked_by_current_delay() public {
        uint64 eta = uint64(block.timestamp) + DELAY;
        vm.expectEmit(address(registry));
        emit MeasurementDelayChangeAnnounced(1 hours, eta);
        vm.prank(owner);
        registry.announceMeasurementDelay(1 hours);
        assertEq(uint256(registry.measurementDelay()), DELAY, "not lowered yet");
        assertEq(uint256(registry.pendingMeasurementDelay()), 1 hours, "pending delay");
        assertEq(uint256(registry.pendingMeasurementDelayEta()), eta, "pending eta");
        vm.warp(eta - 1);
        vm.expectRevert(abi.encodeWithSelector(NodeRegistry.TooEarly.selector, eta));
        registry.executeMeasurementDelay();
        vm.warp(eta);
        vm.expectEmit(address(registry));
        emit MeasurementDelaySet(1 hours);
        vm.prank(client); // anyone
        registry.executeMeasurementDelay();
        assertEq(uint256(registry.measurementDelay()), 1 hours, "lowered");
        assertEq(uint256(registry.pendingMeasurementDelayEta()), 0, "cleared");
        vm.expectRevert(NodeRegistry.NoPendingDelayChange.selector);
        registry.executeMeasurementDelay();
    }

    function test_lower_delay_cancel_and_duplicate() public {
        vm.startPrank(owner);
        registry.announceMeasurementDelay(0);
        vm.expectRevert(NodeRegistry.DelayChangeAlreadyPending.selector);
        registry.announceMeasurementDelay(1);
        vm.expectEmit(address(registry));
        emit MeasurementDelayChangeCancelled(0);
        registry.cancelMeasurementDelay();
        vm.expectRevert(NodeRegistry.NoPendingDelayChange.selector);
        registry.cancelMeasurementDelay();
        vm.stopPrank();
        vm.warp(block.timestamp + DELAY);
        vm.expectRevert(NodeRegistry.NoPendingDelayChange.selector);
        registry.executeMeasurementDelay();
        assertEq(uint256(registry.measurementDelay()), DELAY, "unchanged");
    }

    function test_raise_drops_pending_lowering() public {
        vm.startPrank(owner);
        registry.announceMeasurementDelay(1);
        vm.expectEmit(address(registry));
        emit MeasurementDelayChangeCancelled(1);
        registry.announceMeasurementDelay(DELAY);
        vm.stopPrank();
        assertEq(uint256(registry.pendingMeasurementDelayEta()), 0, "lowering dropped");
        vm.warp(block.timestamp + DELAY);
        vm.expectRevert(NodeRegistry.NoPendingDelayChange.selector);
        registry.executeMeasurementDelay();
    }

    function test_revert_DelayTooLong() public {
        uint64 tooLong = registry.MAX_MEASUREMENT_DELAY() + 1;
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(NodeRegistry.DelayTooLong.selector, tooLong));
        registry.announceMeasurementDelay(tooLong);
        vm.expectRevert(abi.encodeWithSelector(NodeRegistry.DelayTooLong.selector, tooLong));
        new NodeRegistry(owner, token, simVerifier, MIN_STAKE, MAX_AGE, UNBONDING, tooLong);
    }

    function test_revert_delay_onlyOwner() public {
        vm.prank(owner);
        registry.announceMeasurementDelay(1);
        bytes memory err = abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, operator);
        vm.startPrank(operator);
        vm.expectRevert(err);
        registry.announceMeasurementDelay(DELAY * 2);
        vm.expectRevert(err);
        registry.cancelMeasurementDelay();
        vm.stopPrank();
    }
}
