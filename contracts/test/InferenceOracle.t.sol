// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Fixture} from "./utils/Fixture.sol";
import {InferenceOracle} from "../src/InferenceOracle.sol";
import {ExampleConsumer} from "../src/ExampleConsumer.sol";
import {IInferenceConsumer} from "../src/IInferenceConsumer.sol";
import {NodeRegistry} from "../src/NodeRegistry.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";

contract RevertingConsumer is IInferenceConsumer {
    function onInferenceResult(uint256, bytes calldata) external pure {
        revert("no thanks");
    }
}

contract GasBurner is IInferenceConsumer {
    uint256 public gasSeen;

    function onInferenceResult(uint256, bytes calldata) external {
        gasSeen = gasleft();
        while (true) {}
    }
}

contract GasProbe is IInferenceConsumer {
    uint256 public gasSeen;

    function onInferenceResult(uint256, bytes calldata) external {
        gasSeen = gasleft();
    }
}

/// Tries to re-enter the oracle from its callback.
contract Reenterer is IInferenceConsumer {
    InferenceOracle public oracle;
    bool public reentered;

    constructor(InferenceOracle o) {
        oracle = o;
    }

    /// A zero-fee request would succeed from outside; from inside `fulfill` the guard stops it.
    function onInferenceResult(uint256, bytes calldata) external {
        try oracle.request("m", "", 0, address(0), 0) {
            reentered = true;
        } catch {}
    }
}

contract InferenceOracleTest is Fixture {
    event InferenceRequested(
        uint256 indexed id,
        address indexed requester,
        address indexed node,
        string model,
        bytes input,
        uint256 maxFee,
        address callback,
        uint32 callbackGasLimit,
        uint64 deadline
    );
    event InferenceFulfilled(uint256 indexed id, address indexed node, bytes32 outputHash, bool callbackOk);
    event Refunded(uint256 indexed id, address indexed requester, uint256 amount);

    address internal requester;
    uint256 internal constant FEE = 3 ether;

    function setUp() public override {
        super.setUp();
        registerNode(OPERATOR_PK, SIGNER_PK);
        requester = vm.addr(0xEE);
        token.mint(requester, 100 ether);
        vm.prank(requester);
        token.approve(address(oracle), type(uint256).max);
    }

    function ask(address callback, uint32 gasLimit) internal returns (uint256 id) {
        vm.prank(requester);
        id = oracle.request(MODEL, "hello", FEE, callback, gasLimit);
    }

    function resultSig(uint256 pk, uint256 id, bytes memory output) internal view returns (bytes memory) {
        return sig(pk, oracle.resultDigest(id, keccak256(output), MODEL));
    }

    function fulfillAs(address op, uint256 pk, uint256 id, bytes memory output) internal {
        bytes memory s = resultSig(pk, id, output);
        vm.prank(op);
        oracle.fulfill(id, output, s);
    }

    function test_eip712Digest() public view {
        bytes32 domain = keccak256(
            abi.encode(
                keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
                keccak256("Cloister InferenceOracle"),
                keccak256("1"),
                block.chainid,
                address(oracle)
            )
        );
        assertEq(oracle.domainSeparator(), domain, "domain");
        bytes32 sh = keccak256(
            abi.encode(
                keccak256("InferenceResult(uint256 requestId,bytes32 outputHash,string model)"),
                uint256(5),
                keccak256("out"),
                keccak256(bytes(MODEL))
            )
        );
        assertEq(
            oracle.resultDigest(5, keccak256("out"), MODEL), keccak256(abi.encodePacked(hex"1901", domain, sh)), "digest"
        );
    }

    function test_request() public {
        uint64 deadline = uint64(block.timestamp) + TIMEOUT;
        vm.expectEmit(address(oracle));
        emit InferenceRequested(1, requester, address(0), MODEL, "hello", FEE, address(0), 0, deadline);
        uint256 id = ask(address(0), 0);
        assertEq(id, 1, "first id");
        assertEq(token.balanceOf(address(oracle)), FEE, "fee escrowed");
        InferenceOracle.Request memory r = oracle.getRequest(id);
        assertEq(r.requester, requester, "requester");
        assertEq(uint256(r.deadline), deadline, "deadline");
        assertEq(uint256(r.status), 1, "pending");
        assertEq(r.maxFee, FEE, "fee");
        assertEq(r.model, MODEL, "model");
        assertEq(r.node, address(0), "open: no designated node");
        assertEq(ask(address(0), 0), 2, "ids increase");
    }

    function test_revert_request() public {
        vm.startPrank(requester);
        vm.expectRevert(InferenceOracle.BadModel.selector);
        oracle.request("", "x", 1, address(0), 0);
        vm.expectRevert(InferenceOracle.BadModel.selector);
        oracle.request(string(new bytes(129)), "x", 1, address(0), 0);
        vm.expectRevert(abi.encodeWithSelector(InferenceOracle.CallbackGasTooHigh.selector, uint32(5_000_001)));
        oracle.request(MODEL, "x", 1, address(0), 5_000_001);
        vm.stopPrank();
        vm.prank(address(0x1234)); // no tokens / allowance
        vm.expectRevert();
        oracle.request(MODEL, "x", 1, address(0), 0);
    }

    function test_fulfill_paysAndCallsBack() public {
        ExampleConsumer consumer = new ExampleConsumer(oracle);
        vm.prank(requester);
        token.approve(address(consumer), FEE);
        vm.prank(requester);
        uint256 id = consumer.ask(MODEL, "what is 2+2?", FEE);
        assertEq(consumer.askedBy(id), requester, "asker");
        bytes memory output = "4";
        vm.expectEmit(address(oracle));
        emit InferenceFulfilled(id, operator, keccak256(output), true);
        fulfillAs(operator, SIGNER_PK, id, output);
        assertEq(token.balanceOf(operator), FEE, "node paid maxFee");
        assertTrue(consumer.answered(id), "answered");
        assertEq(consumer.answers(id), output, "answer stored");
        InferenceOracle.Request memory r = oracle.getRequest(id);
        assertEq(uint256(r.status), 2, "fulfilled");
        vm.expectRevert(ExampleConsumer.NotOracle.selector);
        consumer.onInferenceResult(id, "forged");
    }

    function test_fulfill_noCallback() public {
        uint256 id = ask(address(0), 0);
        vm.expectEmit(address(oracle));
        emit InferenceFulfilled(id, operator, keccak256("x"), false);
        fulfillAs(operator, SIGNER_PK, id, "x");
        assertEq(token.balanceOf(operator), FEE, "paid");
    }

    function test_fulfill_callbackWithoutCode() public {
        uint256 id = ask(address(0xC0DE), 100_000);
        vm.expectEmit(address(oracle));
        emit InferenceFulfilled(id, operator, keccak256("x"), false);
        fulfillAs(operator, SIGNER_PK, id, "x");
    }

    function test_fulfill_failingCallbackDoesNotBlockPayment() public {
        RevertingConsumer rc = new RevertingConsumer();
        uint256 id = ask(address(rc), 100_000);
        vm.expectEmit(address(oracle));
        emit InferenceFulfilled(id, operator, keccak256("x"), false);
        fulfillAs(operator, SIGNER_PK, id, "x");
        assertEq(token.balanceOf(operator), FEE, "paid anyway");

        GasBurner gb = new GasBurner();
        id = ask(address(gb), 200_000);
        fulfillAs(operator, SIGNER_PK, id, "y");
        assertEq(token.balanceOf(operator), 2 * FEE, "paid despite out-of-gas callback");
    }

    function test_callbackGetsExactGas() public {
        GasProbe p = new GasProbe();
        uint256 id = ask(address(p), 300_000);
        fulfillAs(operator, SIGNER_PK, id, "x");
        // the callee sees the limit minus its own dispatch (a few hundred gas)
        assertLe(p.gasSeen(), 300_000, "not more than the limit");
        assertGe(p.gasSeen(), 299_000, "essentially all of it");
    }

    function test_revert_InsufficientGasForCallback() public {
        GasProbe p = new GasProbe();
        uint256 id = ask(address(p), 5_000_000);
        bytes memory s = resultSig(SIGNER_PK, id, "x");
        vm.prank(operator);
        vm.expectRevert(InferenceOracle.InsufficientGasForCallback.selector);
        oracle.fulfill{gas: 1_000_000}(id, "x", s);
        vm.prank(operator);
        oracle.fulfill{gas: 6_000_000}(id, "x", s);
        assertGe(p.gasSeen(), 4_990_000, "full limit given");
    }

    function test_callbackCannotReenter() public {
        Reenterer re = new Reenterer(oracle);
        uint256 id = ask(address(re), 500_000);
        vm.warp(block.timestamp + TIMEOUT); // still fulfillable (deadline inclusive)
        vm.expectEmit(address(oracle));
        emit InferenceFulfilled(id, operator, keccak256("x"), true);
        fulfillAs(operator, SIGNER_PK, id, "x");
        assertFalse(re.reentered(), "nonReentrant");
        vm.prank(address(re));
        oracle.request("m", "", 0, address(0), 0); // the same call from outside works
    }

    function test_revert_NodeNotActive() public {
        uint256 id = ask(address(0), 0);
        bytes memory s = resultSig(SIGNER_PK, id, "x");
        vm.prank(client);
        vm.expectRevert(InferenceOracle.NodeNotActive.selector);
        oracle.fulfill(id, "x", s);
        vm.prank(operator);
        registry.deregister();
        vm.prank(operator);
        vm.expectRevert(InferenceOracle.NodeNotActive.selector);
        oracle.fulfill(id, "x", s);
    }

    function test_revert_NodeNotActive_staleAttestation() public {
        vm.warp(block.timestamp + MAX_AGE + 1);
        uint256 id = ask(address(0), 0);
        bytes memory s = resultSig(SIGNER_PK, id, "x");
        vm.prank(operator);
        vm.expectRevert(InferenceOracle.NodeNotActive.selector);
        oracle.fulfill(id, "x", s);
    }

    function test_revert_ModelNotServed() public {
        vm.prank(requester);
        uint256 id = oracle.request("other-model", "x", FEE, address(0), 0);
        bytes memory s = sig(SIGNER_PK, oracle.resultDigest(id, keccak256("x"), "other-model"));
        vm.prank(operator);
        vm.expectRevert(InferenceOracle.ModelNotServed.selector);
        oracle.fulfill(id, "x", s);
    }

    function test_revert_BadResultSignature() public {
        uint256 id = ask(address(0), 0);
        bytes memory s = resultSig(OPERATOR_PK, id, "x");
        vm.prank(operator);
        vm.expectRevert(InferenceOracle.BadResultSignature.selector);
        oracle.fulfill(id, "x", s);
        s = resultSig(SIGNER_PK, id, "x");
        vm.prank(operator);
        vm.expectRevert(InferenceOracle.BadResultSignature.selector);
        oracle.fulfill(id, "y", s); // output swapped
        s = resultSig(SIGNER_PK, id + 1, "x");
        vm.prank(operator);
        vm.expectRevert(InferenceOracle.BadResultSignature.selector);
        oracle.fulfill(id, "x", s); // signed for another request
    }

    /// A second node cannot submit the first node's signed result as its own.
    function test_revert_BadResultSignature_otherNodesSigner() public {
        address op2 = registerNode(0x0BE6, 0x5167E6);
        uint256 id = ask(address(0), 0);
        bytes memory s = resultSig(SIGNER_PK, id, "x");
        vm.prank(op2);
        vm.expectRevert(InferenceOracle.BadResultSignature.selector);
        oracle.fulfill(id, "x", s);
    }

    function test_revert_RequestNotPending_RequestExpired() public {
        vm.prank(operator);
        vm.expectRevert(abi.encodeWithSelector(InferenceOracle.RequestNotPending.selector, uint256(42)));
        oracle.fulfill(42, "x", "");
        uint256 id = ask(address(0), 0);
        fulfillAs(operator, SIGNER_PK, id, "x");
        bytes memory s = resultSig(SIGNER_PK, id, "x");
        vm.prank(operator);
        vm.expectRevert(abi.encodeWithSelector(InferenceOracle.RequestNotPending.selector, id));
        oracle.fulfill(id, "x", s);
        vm.expectRevert(abi.encodeWithSelector(InferenceOracle.RequestNotPending.selector, id));
        oracle.refund(id);

        id = ask(address(0), 0);
        vm.warp(block.timestamp + TIMEOUT + 1);
        s = resultSig(SIGNER_PK, id, "x");
        vm.prank(operator);
        vm.expectRevert(abi.encodeWithSelector(InferenceOracle.RequestExpired.selector, id));
        oracle.fulfill(id, "x", s);
    }

    function test_refund() public {
        uint256 id = ask(address(0), 0);
        uint64 deadline = oracle.getRequest(id).deadline;
        vm.warp(deadline);
        vm.expectRevert(abi.encodeWithSelector(InferenceOracle.NotExpired.selector, deadline));
        oracle.refund(id);
        vm.warp(uint256(deadline) + 1);
        vm.expectEmit(address(oracle));
        emit Refunded(id, requester, FEE);
        vm.prank(address(0xABC)); // anyone may trigger; the requester is paid
        oracle.refund(id);
        assertEq(token.balanceOf(requester), 100 ether, "refunded");
        assertEq(uint256(oracle.getRequest(id).status), 3, "refunded status");
        vm.expectRevert(abi.encodeWithSelector(InferenceOracle.RequestNotPending.selector, id));
        oracle.refund(id);
    }

    function test_revert_constructor_ZeroAddress() public {
        vm.expectRevert(InferenceOracle.ZeroAddress.selector);
        new InferenceOracle(IERC20(address(0)), registry, 1);
        vm.expectRevert(InferenceOracle.ZeroAddress.selector);
        new InferenceOracle(token, NodeRegistry(address(0)), 1);
    }

    function testFuzz_forgedResultNeverPays(uint256 pk, bytes calldata output) public {
        pk = bound(pk, 1, 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364140);
        vm.assume(pk != SIGNER_PK);
        uint256 id = ask(address(0), 0);
        bytes memory s = resultSig(pk, id, output);
        vm.prank(operator);
        vm.expectRevert(InferenceOracle.BadResultSignature.selector);
        oracle.fulfill(id, output, s);
    }

    function testFuzz_feeFlows(uint256 fee, bool fulfil) public {
        fee = bound(fee, 0, 100 ether);
        vm.prank(requester);
        uint256 id = oracle.request(MODEL, "x", fee, address(0), 0);
        if (fulfil) {
            fulfillAs(operator, SIGNER_PK, id, "out");
            assertEq(token.balanceOf(operator), fee, "node paid");
        } else {
            vm.warp(block.timestamp + TIMEOUT + 1);
            oracle.refund(id);
        }
        assertEq(token.balanceOf(address(oracle)), 0, "oracle keeps nothing");
        assertEq(token.balanceOf(requester) + token.balanceOf(operator), 100 ether, "conserved");
    }

    function askFor(address node) internal returns (uint256 id) {
        vm.prank(requester);
        id = oracle.requestFor(node, MODEL, "sealed", FEE, address(0), 0);
    }

    function test_requestFor() public {
        uint64 deadline = uint64(block.timestamp) + TIMEOUT;
        vm.expectEmit(address(oracle));
        emit InferenceRequested(1, requester, operator, MODEL, "sealed", FEE, address(0), 0, deadline);
        uint256 id = askFor(operator);
        assertEq(id, 1, "shares the id sequence");
        InferenceOracle.Request memory r = oracle.getRequest(id);
        assertEq(r.node, operator, "designated node stored");
        assertEq(r.requester, requester, "requester");
        assertEq(uint256(r.status), 1, "pending");
        assertEq(token.balanceOf(address(oracle)), FEE, "fee escrowed");
    }

    function test_requestFor_onlyTheDesignatedNodeFulfils() public {
        address op2 = registerNode(0x0BE6, 0x5167E6);
        uint256 id = askFor(operator);
        // Another active node serving the model, with a valid signature of its own, is refused.
        bytes memory s2 = resultSig(0x5167E6, id, "x");
        vm.prank(op2);
        vm.expectRevert(abi.encodeWithSelector(InferenceOracle.NotDesignatedNode.selector, operator));
        oracle.fulfill(id, "x", s2);
        // So is anyone submitting the designated node's own signed result.
        bytes memory s = resultSig(SIGNER_PK, id, "x");
        vm.prank(client);
        vm.expectRevert(abi.encodeWithSelector(InferenceOracle.NotDesignatedNode.selector, operator));
        oracle.fulfill(id, "x", s);
        vm.expectEmit(address(oracle));
        emit InferenceFulfilled(id, operator, keccak256("x"), false);
        fulfillAs(operator, SIGNER_PK, id, "x");
        assertEq(token.balanceOf(operator), FEE, "designated node paid");
        assertEq(token.balanceOf(op2), 0, "other node unpaid");
    }

    /// Designation adds a check; the others still apply to the designated node.
    function test_requestFor_designatedNodeStillChecked() public {
        uint256 id = askFor(operator);
        bytes memory bad = resultSig(OPERATOR_PK, id, "x");
        vm.prank(operator);
        vm.expectRevert(InferenceOracle.BadResultSignature.selector);
        oracle.fulfill(id, "x", bad);
        bytes memory s = resultSig(SIGNER_PK, id, "x");
        vm.prank(operator);
        registry.deregister();
        vm.prank(operator);
        vm.expectRevert(InferenceOracle.NodeNotActive.selector);
        oracle.fulfill(id, "x", s);
    }

    function test_requestFor_refundAfterDeadline() public {
        address op2 = registerNode(0x0BE6, 0x5167E6);
        uint256 id = askFor(op2);
        uint64 deadline = oracle.getRequest(id).deadline;
        vm.expectRevert(abi.encodeWithSelector(InferenceOracle.NotExpired.selector, deadline));
        oracle.refund(id);
        vm.warp(uint256(deadline) + 1);
        vm.expectEmit(address(oracle));
        emit Refunded(id, requester, FEE);
        oracle.refund(id);
        assertEq(token.balanceOf(requester), 100 ether, "refunded");
    }

    function test_revert_requestFor() public {
        vm.startPrank(requester);
        vm.expectRevert(InferenceOracle.ZeroAddress.selector);
        oracle.requestFor(address(0), MODEL, "x", FEE, address(0), 0);
        vm.expectRevert(InferenceOracle.NodeNotActive.selector);
        oracle.requestFor(client, MODEL, "x", FEE, address(0), 0); // never registered
        vm.expectRevert(InferenceOracle.ModelNotServed.selector);
        oracle.requestFor(operator, "other-model", "x", FEE, address(0), 0);
        vm.expectRevert(InferenceOracle.ModelNotServed.selector); // no node serves an empty id
        oracle.requestFor(operator, "", "x", FEE, address(0), 0);
        vm.expectRevert(abi.encodeWithSelector(InferenceOracle.CallbackGasTooHigh.selector, uint32(5_000_001)));
        oracle.requestFor(operator, MODEL, "x", FEE, address(0), 5_000_001);
        vm.stopPrank();
        vm.prank(operator);
        registry.deregister();
        vm.prank(requester);
        vm.expectRevert(InferenceOracle.NodeNotActive.selector);
        oracle.requestFor(operator, MODEL, "x", FEE, address(0), 0);
        vm.warp(block.timestamp + MAX_AGE + 1);
        registerNode(0x0BE6, 0x5167E6);
        vm.warp(block.timestamp + MAX_AGE + 1); // its attestation goes stale
        vm.prank(requester);
        vm.expectRevert(InferenceOracle.NodeNotActive.selector);
        oracle.requestFor(vm.addr(0x0BE6), MODEL, "x", FEE, address(0), 0);
        assertEq(token.balanceOf(address(oracle)), 0, "nothing escrowed");
    }

    /// What designation costs, open against designated, in one run: logged, and bounded. Before
    /// each measured call every account it touches is cooled (`vm.cool`), as in a transaction of
    /// its own; both requests find the oracle's token balance non-zero and both fulfilments the
    /// operator's, so the difference is designation alone: at request the node's fresh slot and the
    /// registry reads (`isActive`, `priceOf`); at fulfil only a comparison (both read the node's slot).
    function test_gas_designatedAgainstOpen() public {
        ask(address(0), 0); // keeps the oracle's balance non-zero
        fulfillAs(operator, SIGNER_PK, ask(address(0), 0), "x"); // makes the operator's non-zero
        coolAll();
        vm.prank(requester);
        uint256 g = gasleft();
        uint256 open = oracle.request(MODEL, "sealed", FEE, address(0), 0);
        uint256 gOpen = g - gasleft();
        coolAll();
        vm.prank(requester);
        g = gasleft();
        uint256 designated = oracle.requestFor(operator, MODEL, "sealed", FEE, address(0), 0);
        uint256 gDesignated = g - gasleft();
        emit log_named_uint("request (open)", gOpen);
        emit log_named_uint("requestFor (designated)", gDesignated);
        assertGe(gDesignated, gOpen + 22_100, "designation stores the node in a fresh slot");
        assertLe(gDesignated, gOpen + 50_000, "one fresh slot and two registry reads");

        bytes memory s = resultSig(SIGNER_PK, open, "x");
        coolAll();
        vm.prank(operator);
        g = gasleft();
        oracle.fulfill(open, "x", s);
        uint256 fOpen = g - gasleft();
        s = resultSig(SIGNER_PK, designated, "x");
        coolAll();
        vm.prank(operator);
        g = gasleft();
        oracle.fulfill(designated, "x", s);
        uint256 fDesignated = g - gasleft();
        emit log_named_uint("fulfill (open)", fOpen);
        emit log_named_uint("fulfill (designated)", fDesignated);
        // Both read the node's slot (zero for an open request); only the comparison differs.
        assertGe(fDesignated, fOpen, "compares the caller with the node");
        assertLe(fDesignated, fOpen + 100, "no other work");
    }

    function coolAll() internal {
        CoolVm(address(vm)).cool(address(oracle));
        CoolVm(address(vm)).cool(address(registry));
        CoolVm(address(vm)).cool(address(token));
    }
}

/// The one cheatcode this file needs beyond `Test.sol`'s `Vm`.
interface CoolVm {
    function cool(address target) external;
}
