// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Fixture} from "./utils/Fixture.sol";
import {SimQuote} from "./utils/SimQuote.sol";
import {NodeRegistry} from "../src/NodeRegistry.sol";
import {IQuoteVerifier} from "../src/IQuoteVerifier.sol";
import {SimulatedQuoteVerifier} from "../src/SimulatedQuoteVerifier.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @notice A verifier returning whatever the test sets (to reach every registry branch).
contract StubVerifier is IQuoteVerifier {
    QuoteInfo internal _info;

    function set(uint8 tcb, bytes32 m, bytes memory rd) external {
        _info = QuoteInfo(tcb, m, rd);
    }

    function verifyQuote(bytes calldata) external view returns (QuoteInfo memory) {
        return _info;
    }
}

contract NodeRegistryTest is Fixture {
    event MeasurementSet(bytes32 indexed measurement, bool allowed);
    event TcbStatusSet(uint8 status, bool accepted);
    event MaxAgeSet(uint64 maxAge);
    event VerifierSet(address indexed verifier);
    event MinStakeSet(uint256 minStake);
    event NodeRegistered(address indexed operator, address indexed signer, bytes32 measurement, string endpoint);
    event NodeReattested(address indexed operator, address indexed signer, bytes32 measurement);
    event ModelsUpdated(address indexed operator);
    event Deregistered(address indexed operator, uint64 unbondingEnds);
    event StakeWithdrawn(address indexed operator, uint256 amount);
    event Slashed(address indexed operator, uint256 amount, address indexed to, string reason);

    string internal constant EP = "https://node.example:8443";

    function fund(address op, uint256 amount) internal {
        token.mint(op, amount);
        vm.prank(op);
        token.approve(address(registry), amount);
    }

    function doRegister(bytes memory quote) internal {
        vm.prank(operator);
        registry.register(quote, EP, models1(), MIN_STAKE);
    }

    // ------------------------------------------------------------ register

    function test_register() public {
        fund(operator, MIN_STAKE);
        bytes32 nonce0 = registry.attestationNonce(operator);
        assertEq(nonce0, keccak256(abi.encode(block.chainid, address(registry), operator, uint256(0))), "nonce formula");
        vm.expectEmit(address(registry));
        emit NodeRegistered(operator, signer, SimQuote.MEASUREMENT, EP);
        doRegister(quoteFor(operator, signer));

        NodeRegistry.NodeInfo memory n = registry.getNode(operator);
        assertEq(n.operator, operator, "operator");
        assertEq(n.signer, signer, "signer");
        assertEq(n.endpoint, EP, "endpoint");
        assertEq(n.measurement, SimQuote.MEASUREMENT, "measurement");
        assertEq(uint256(n.tcbStatus), 0, "tcb");
        assertEq(uint256(n.attestedAt), block.timestamp, "attestedAt");
        assertEq(n.stake, MIN_STAKE, "stake");
        assertEq(uint256(n.unbondingEnds), 0, "not unbonding");
        assertTrue(n.active, "active flag");
        assertEq(n.models.length, 1, "models");
        assertEq(n.models[0].id, MODEL, "model id");
        assertEq(token.balanceOf(address(registry)), MIN_STAKE, "stake pulled");
        assertEq(registry.attestCount(operator), 1, "attest count");
        assertTrue(registry.attestationNonce(operator) != nonce0, "nonce moves on");
        assertTrue(registry.isActive(operator), "isActive");
        assertEq(registry.signerOf(operator), signer, "signerOf");
        assertEq(registry.nodeCount(), 1, "count");
        (bool served, uint256 ip, uint256 op) = registry.priceOf(operator, MODEL);
        assertTrue(served, "served");
        assertEq(ip, 1e12, "input price");
        assertEq(op, 2e12, "output price");
        (served,,) = registry.priceOf(operator, "other");
        assertFalse(served, "not served");
    }

    function test_revert_AlreadyRegistered() public {
        fund(operator, 2 * MIN_STAKE);
        doRegister(quoteFor(operator, signer));
        bytes memory q = quoteFor(operator, signer);
        vm.expectRevert(NodeRegistry.AlreadyRegistered.selector);
        doRegister(q);
    }

    function test_revert_UnapprovedMeasurement() public {
        fund(operator, MIN_STAKE);
        vm.prank(owner);
        registry.announceMeasurement(SimQuote.MEASUREMENT, false);
        registry.executeMeasurement(SimQuote.MEASUREMENT);
        bytes memory q = quoteFor(operator, signer);
        vm.expectRevert(abi.encodeWithSelector(NodeRegistry.UnapprovedMeasurement.selector, SimQuote.MEASUREMENT));
        doRegister(q);
    }

    function test_revert_TcbStatusNotAccepted() public {
        StubVerifier stub = new StubVerifier();
        vm.prank(owner);
        registry.setVerifier(stub);
        stub.set(4, SimQuote.MEASUREMENT, SimQuote.reportData(signer, registry.attestationNonce(operator)));
        fund(operator, MIN_STAKE);
        vm.expectRevert(abi.encodeWithSelector(NodeRegistry.TcbStatusNotAccepted.selector, uint8(4)));
        doRegister(hex"00");
        vm.prank(owner);
        registry.setTcbStatus(4, true);
        doRegister(hex"00");
        assertEq(uint256(registry.getNode(operator).tcbStatus), 4, "OutOfDate accepted by policy");
    }

    function test_revert_BadReportData() public {
        StubVerifier stub = new StubVerifier();
        vm.prank(owner);
        registry.setVerifier(stub);
        fund(operator, MIN_STAKE);
        bytes32 nonce = registry.attestationNonce(operator);
        // padding not zero
        stub.set(0, SimQuote.MEASUREMENT, abi.encodePacked(signer, bytes12(uint96(1)), nonce));
        vm.expectRevert(NodeRegistry.BadReportData.selector);
        doRegister(hex"00");
        // zero signer
        stub.set(0, SimQuote.MEASUREMENT, abi.encodePacked(address(0), bytes12(0), nonce));
        vm.expectRevert(NodeRegistry.BadReportData.selector);
        doRegister(hex"00");
        // wrong length
        stub.set(0, SimQuote.MEASUREMENT, abi.encodePacked(signer, bytes12(0), nonce, hex"00"));
        vm.expectRevert(NodeRegistry.BadReportData.selector);
        doRegister(hex"00");
    }

    function test_revert_BadNonce() public {
        fund(operator, MIN_STAKE);
        // nonce for another operator, another count, another registry or another chain
        bytes memory q = SimQuote.build(SimQuote.reportData(signer, registry.attestationNonce(client)));
        vm.expectRevert(NodeRegistry.BadNonce.selector);
        doRegister(q);
        q = SimQuote.build(
            SimQuote.reportData(signer, keccak256(abi.encode(block.chainid, address(registry), operator, uint256(1))))
        );
        vm.expectRevert(NodeRegistry.BadNonce.selector);
        doRegister(q);
        q = SimQuote.build(
            SimQuote.reportData(signer, keccak256(abi.encode(uint256(1), address(registry), operator, uint256(0))))
        );
        vm.expectRevert(NodeRegistry.BadNonce.selector);
        doRegister(q);
    }

    function test_revert_quoteReplayAfterRegistration() public {
        fund(operator, MIN_STAKE);
        bytes memory q = quoteFor(operator, signer);
        doRegister(q);
        vm.prank(operator);
        vm.expectRevert(NodeRegistry.BadNonce.selector);
        registry.reattest(q);
    }

    function test_revert_invalidQuoteFromVerifier() public {
        fund(operator, MIN_STAKE);
        bytes memory q = quoteFor(operator, signer);
        q[100] = 0xff;
        vm.expectRevert(SimulatedQuoteVerifier.BadDevSignature.selector);
        doRegister(q);
    }

    function test_revert_StakeTooLow() public {
        fund(operator, MIN_STAKE);
        bytes memory q = quoteFor(operator, signer);
        vm.prank(operator);
        vm.expectRevert(abi.encodeWithSelector(NodeRegistry.StakeTooLow.selector, MIN_STAKE - 1, MIN_STAKE));
        registry.register(q, EP, models1(), MIN_STAKE - 1);
    }

    function test_revert_stakeNotApproved() public {
        token.mint(operator, MIN_STAKE);
        bytes memory q = quoteFor(operator, signer);
        vm.expectRevert();
        doRegister(q);
    }

    function test_revert_BadEndpoint() public {
        fund(operator, MIN_STAKE);
        bytes memory q = quoteFor(operator, signer);
        vm.prank(operator);
        vm.expectRevert(NodeRegistry.BadEndpoint.selector);
        registry.register(q, "", models1(), MIN_STAKE);
        vm.prank(operator);
        vm.expectRevert(NodeRegistry.BadEndpoint.selector);
        registry.register(q, string(new bytes(257)), models1(), MIN_STAKE);
        vm.prank(operator);
        registry.register(q, string(new bytes(256)), models1(), MIN_STAKE);
    }

    function test_revert_TooManyModels() public {
        fund(operator, MIN_STAKE);
        NodeRegistry.ModelPrice[] memory m = new NodeRegistry.ModelPrice[](17);
        for (uint256 i; i < 17; ++i) m[i] = NodeRegistry.ModelPrice(string(abi.encodePacked("m", bytes1(uint8(65 + i)))), i, i);
        bytes memory q = quoteFor(operator, signer);
        vm.prank(operator);
        vm.expectRevert(abi.encodeWithSelector(NodeRegistry.TooManyModels.selector, uint256(17)));
        registry.register(q, EP, m, MIN_STAKE);
        NodeRegistry.ModelPrice[] memory m16 = new NodeRegistry.ModelPrice[](16);
        for (uint256 i; i < 16; ++i) m16[i] = m[i];
        vm.prank(operator);
        registry.register(q, EP, m16, MIN_STAKE);
        assertEq(registry.getNode(operator).models.length, 16, "16 models");
        (bool served, uint256 ip,) = registry.priceOf(operator, "mP");
        assertTrue(served, "last model served");
        assertEq(ip, 15, "its price");
    }

    function test_revert_BadModelId_and_DuplicateModel() public {
        fund(operator, MIN_STAKE);
        bytes memory q = quoteFor(operator, signer);
        NodeRegistry.ModelPrice[] memory m = new NodeRegistry.ModelPrice[](2);
        m[0] = NodeRegistry.ModelPrice("a", 1, 1);
        m[1] = NodeRegistry.ModelPrice("", 1, 1);
        vm.prank(operator);
        vm.expectRevert(abi.encodeWithSelector(NodeRegistry.BadModelId.selector, ""));
        registry.register(q, EP, m, MIN_STAKE);
        string memory long = string(new bytes(129));
        m[1] = NodeRegistry.ModelPrice(long, 1, 1);
        vm.prank(operator);
        vm.expectRevert(abi.encodeWithSelector(NodeRegistry.BadModelId.selector, long));
        registry.register(q, EP, m, MIN_STAKE);
        m[1] = NodeRegistry.ModelPrice("a", 2, 2);
        vm.prank(operator);
        vm.expectRevert(abi.encodeWithSelector(NodeRegistry.DuplicateModel.selector, "a"));
        registry.register(q, EP, m, MIN_STAKE);
    }

    // ------------------------------------------------------------ lifecycle

    function test_reattest() public {
        fund(operator, MIN_STAKE);
        doRegister(quoteFor(operator, signer));
        vm.warp(block.timestamp + MAX_AGE + 1);
        assertFalse(registry.isActive(operator), "stale attestation");
        address newSigner = vm.addr(0x5EC0DD);
        bytes memory q = quoteFor(operator, newSigner);
        vm.expectEmit(address(registry));
        emit NodeReattested(operator, newSigner, SimQuote.MEASUREMENT);
        vm.prank(operator);
        registry.reattest(q);
        assertTrue(registry.isActive(operator), "fresh again");
        assertEq(registry.signerOf(operator), newSigner, "new signer");
        assertEq(uint256(registry.getNode(operator).attestedAt), block.timestamp, "attestedAt");
        assertEq(registry.attestCount(operator), 2, "count");
    }

    function test_isActive_maxAgeBoundary() public {
        fund(operator, MIN_STAKE);
        doRegister(quoteFor(operator, signer));
        vm.warp(block.timestamp + MAX_AGE);
        assertTrue(registry.isActive(operator), "attestedAt + maxAge == now is active");
        vm.warp(block.timestamp + 1);
        assertFalse(registry.isActive(operator), "one second later inactive");
        vm.prank(owner);
        registry.setMaxAge(2 * MAX_AGE);
        assertTrue(registry.isActive(operator), "longer maxAge");
        assertFalse(registry.isActive(client), "unknown operator");
    }

    function test_revert_reattest_NotRegistered_and_NodeUnbonding() public {
        bytes memory q = quoteFor(operator, signer);
        vm.prank(operator);
        vm.expectRevert(NodeRegistry.NotRegistered.selector);
        registry.reattest(q);
        fund(operator, MIN_STAKE);
        doRegister(q);
        vm.prank(operator);
        registry.deregister();
        q = quoteFor(operator, signer);
        vm.prank(operator);
        vm.expectRevert(NodeRegistry.NodeUnbonding.selector);
        registry.reattest(q);
        vm.prank(operator);
        vm.expectRevert(NodeRegistry.NodeUnbonding.selector);
        registry.updateModels(models1());
        vm.prank(operator);
        vm.expectRevert(NodeRegistry.NodeUnbonding.selector);
        registry.deregister();
    }

    function test_updateModels() public {
        fund(operator, MIN_STAKE);
        doRegister(quoteFor(operator, signer));
        NodeRegistry.ModelPrice[] memory m = new NodeRegistry.ModelPrice[](2);
        m[0] = NodeRegistry.ModelPrice("x", 3, 4);
        m[1] = NodeRegistry.ModelPrice("y", 5, 6);
        vm.expectEmit(address(registry));
        emit ModelsUpdated(operator);
        vm.prank(operator);
        registry.updateModels(m);
        (bool served,,) = registry.priceOf(operator, MODEL);
        assertFalse(served, "old model gone");
        (bool s2, uint256 ip, uint256 op) = registry.priceOf(operator, "y");
        assertTrue(s2, "y served");
        assertEq(ip + op, 11, "y prices");
        vm.prank(client);
        vm.expectRevert(NodeRegistry.NotRegistered.selector);
        registry.updateModels(m);
    }

    function test_deregister_withdrawStake() public {
        fund(operator, MIN_STAKE);
        doRegister(quoteFor(operator, signer));
        uint64 ends = uint64(block.timestamp) + UNBONDING;
        vm.expectEmit(address(registry));
        emit Deregistered(operator, ends);
        vm.prank(operator);
        registry.deregister();
        assertFalse(registry.isActive(operator), "inactive at once");
        assertEq(registry.signerOf(operator), signer, "signer kept while unbonding");
        NodeRegistry.NodeInfo memory n = registry.getNode(operator);
        assertFalse(n.active, "active flag cleared");
        assertEq(uint256(n.unbondingEnds), ends, "ends");

        vm.warp(ends - 1);
        vm.prank(operator);
        vm.expectRevert(abi.encodeWithSelector(NodeRegistry.StillUnbonding.selector, ends));
        registry.withdrawStake();

        vm.warp(ends);
        vm.expectEmit(address(registry));
        emit StakeWithdrawn(operator, MIN_STAKE);
        vm.prank(operator);
        registry.withdrawStake();
        assertEq(token.balanceOf(operator), MIN_STAKE, "stake back");
        assertEq(registry.nodeCount(), 0, "removed");
        assertEq(registry.signerOf(operator), address(0), "signer gone");
        assertEq(registry.getNode(operator).models.length, 0, "models gone");

        // can come back with a fresh nonce
        fund(operator, MIN_STAKE);
        doRegister(quoteFor(operator, signer));
        assertTrue(registry.isActive(operator), "re-registered");
    }

    function test_revert_withdrawStake_NotRegistered_NotUnbonding() public {
        vm.prank(operator);
        vm.expectRevert(NodeRegistry.NotRegistered.selector);
        registry.withdrawStake();
        fund(operator, MIN_STAKE);
        doRegister(quoteFor(operator, signer));
        vm.prank(operator);
        vm.expectRevert(NodeRegistry.NotUnbonding.selector);
        registry.withdrawStake();
        vm.prank(client);
        vm.expectRevert(NodeRegistry.NotRegistered.selector);
        registry.deregister();
    }

    function test_slash() public {
        fund(operator, MIN_STAKE);
        doRegister(quoteFor(operator, signer));
        vm.expectEmit(address(registry));
        emit Slashed(operator, 40 ether, client, "bad voucher");
        vm.prank(owner);
        registry.slash(operator, 40 ether, client, "bad voucher");
        assertEq(token.balanceOf(client), 40 ether, "to paid");
        assertEq(registry.getNode(operator).stake, 60 ether, "stake reduced");
        vm.prank(operator);
        registry.deregister();
        vm.prank(owner);
        registry.slash(operator, 10 ether, client, "during unbonding");
        vm.warp(block.timestamp + UNBONDING);
        vm.prank(operator);
        registry.withdrawStake();
        assertEq(token.balanceOf(operator), 50 ether, "rest returned");
    }

    function test_revert_slash() public {
        vm.prank(owner);
        vm.expectRevert(NodeRegistry.NotRegistered.selector);
        registry.slash(operator, 1, client, "x");
        fund(operator, MIN_STAKE);
        doRegister(quoteFor(operator, signer));
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(NodeRegistry.SlashTooLarge.selector, MIN_STAKE + 1, MIN_STAKE));
        registry.slash(operator, MIN_STAKE + 1, client, "x");
        vm.prank(owner);
        vm.expectRevert(NodeRegistry.ZeroAddress.selector);
        registry.slash(operator, 1, address(0), "x");
        vm.prank(client);
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, client));
        registry.slash(operator, 1, client, "x");
    }

    // ------------------------------------------------------------ governance

    function test_governance_setters_and_events() public {
        StubVerifier stub = new StubVerifier();
        vm.startPrank(owner);
        registry.announceMeasurement(bytes32(uint256(7)), true);
        vm.expectEmit(address(registry));
        emit MeasurementSet(bytes32(uint256(7)), true);
        registry.executeMeasurement(bytes32(uint256(7)));
        assertTrue(registry.measurementAllowed(bytes32(uint256(7))), "measurement");
        vm.expectEmit(address(registry));
        emit TcbStatusSet(3, true);
        registry.setTcbStatus(3, true);
        assertTrue(registry.tcbStatusAccepted(3), "tcb");
        vm.expectEmit(address(registry));
        emit MaxAgeSet(5);
        registry.setMaxAge(5);
        assertEq(uint256(registry.maxAge()), 5, "maxAge");
        vm.expectEmit(address(registry));
        emit VerifierSet(address(stub));
        registry.setVerifier(stub);
        assertEq(address(registry.verifier()), address(stub), "verifier");
        vm.expectEmit(address(registry));
        emit MinStakeSet(1);
        registry.setMinStake(1);
        assertEq(registry.minStake(), 1, "minStake");
        vm.expectRevert(NodeRegistry.ZeroAddress.selector);
        registry.setVerifier(IQuoteVerifier(address(0)));
        vm.stopPrank();
    }

    function test_revert_governance_onlyOwner() public {
        bytes memory err = abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, operator);
        vm.startPrank(operator);
        vm.expectRevert(err);
        registry.announceMeasurement(bytes32(0), true);
        vm.expectRevert(err);
        registry.cancelMeasurement(bytes32(0));
        vm.expectRevert(err);
        registry.announceMeasurementDelay(1);
        vm.expectRevert(err);
        registry.cancelMeasurementDelay();
        vm.expectRevert(err);
        registry.setTcbStatus(0, true);
        vm.expectRevert(err);
        registry.setMaxAge(1);
        vm.expectRevert(err);
        registry.setVerifier(IQuoteVerifier(address(1)));
        vm.expectRevert(err);
        registry.setMinStake(1);
        vm.stopPrank();
    }

    function test_ownable2Step() public {
        vm.prank(owner);
        registry.transferOwnership(client);
        assertEq(registry.owner(), owner, "still owner until accepted");
        vm.prank(client);
        registry.acceptOwnership();
        assertEq(registry.owner(), client, "new owner");
    }

    function test_revert_constructor_ZeroAddress() public {
        vm.expectRevert(NodeRegistry.ZeroAddress.selector);
        new NodeRegistry(owner, token, IQuoteVerifier(address(0)), 0, 0, 0, 0);
    }

    // ------------------------------------------------------------ discovery

    function test_listNodes_paging_and_removal() public {
        address[] memory ops = new address[](5);
        for (uint256 i; i < 5; ++i) ops[i] = registerNode(0x1000 + i, 0x2000 + i);
        assertEq(registry.nodeCount(), 5, "count");
        NodeRegistry.NodeInfo[] memory p = registry.listNodes(0, 2);
        assertEq(p.length, 2, "page 1");
        assertEq(p[0].operator, ops[0], "first");
        assertEq(p[0].signer, vm.addr(0x2000), "signer in page");
        p = registry.listNodes(4, 10);
        assertEq(p.length, 1, "last page");
        assertEq(p[0].operator, ops[4], "last");
        assertEq(registry.listNodes(5, 10).length, 0, "past the end");
        vm.expectRevert(abi.encodeWithSelector(NodeRegistry.PageTooLarge.selector, uint256(101)));
        registry.listNodes(0, 101);

        vm.prank(ops[1]);
        registry.deregister();
        vm.warp(block.timestamp + UNBONDING);
        vm.prank(ops[1]);
        registry.withdrawStake();
        p = registry.listNodes(0, 100);
        assertEq(p.length, 4, "one removed");
        assertEq(p[1].operator, ops[4], "last moved into the gap");
        assertEq(registry.getNode(ops[1]).operator, address(0), "gone");
    }

    function testFuzz_registerStake(uint256 stake) public {
        stake = bound(stake, 0, 1e30);
        fund(operator, stake);
        bytes memory q = quoteFor(operator, signer);
        vm.prank(operator);
        if (stake < MIN_STAKE) {
            vm.expectRevert(abi.encodeWithSelector(NodeRegistry.StakeTooLow.selector, stake, MIN_STAKE));
        }
        registry.register(q, EP, models1(), stake);
        if (stake >= MIN_STAKE) assertEq(registry.getNode(operator).stake, stake, "stake");
    }

    /// A quote binding any other signer/nonce pair than (signer, attestationNonce) is refused.
    function testFuzz_reportDataMustBindNonce(bytes32 nonce) public {
        vm.assume(nonce != registry.attestationNonce(operator));
        fund(operator, MIN_STAKE);
        bytes memory q = SimQuote.build(SimQuote.reportData(signer, nonce));
        vm.expectRevert(NodeRegistry.BadNonce.selector);
        doRegister(q);
    }
}
