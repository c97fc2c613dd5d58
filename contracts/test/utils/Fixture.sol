// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Test} from "./Test.sol";
import {SimQuote} from "./SimQuote.sol";
import {DevToken} from "../../src/DevToken.sol";
import {SimulatedQuoteVerifier} from "../../src/SimulatedQuoteVerifier.sol";
import {IQuoteVerifier} from "../../src/IQuoteVerifier.sol";
import {NodeRegistry} from "../../src/NodeRegistry.sol";
import {Escrow} from "../../src/Escrow.sol";
import {InferenceOracle} from "../../src/InferenceOracle.sol";

/// @notice Deploys the whole system on a local chain id with one registered node.
abstract contract Fixture is Test {
    uint256 internal constant MIN_STAKE = 100 ether;
    uint64 internal constant MAX_AGE = 1 days;
    uint64 internal constant UNBONDING = 7 days;
    uint64 internal constant WITHDRAW_DELAY = 1 days;
    uint64 internal constant TIMEOUT = 1 hours;
    string internal constant MODEL = "smollm2-135m-instruct";

    uint256 internal constant OWNER_PK = 0xA11CE;
    uint256 internal constant OPERATOR_PK = 0x0BE5;
    uint256 internal constant SIGNER_PK = 0x5167E5;
    uint256 internal constant CLIENT_PK = 0xC11E17;

    address internal owner;
    address internal operator;
    address internal signer;
    address internal client;

    DevToken internal token;
    SimulatedQuoteVerifier internal simVerifier;
    NodeRegistry internal registry;
    Escrow internal escrow;
    InferenceOracle internal oracle;

    function setUp() public virtual {
        vm.warp(1_800_000_000);
        owner = vm.addr(OWNER_PK);
        operator = vm.addr(OPERATOR_PK);
        signer = vm.addr(SIGNER_PK);
        client = vm.addr(CLIENT_PK);
        token = new DevToken();
        simVerifier = new SimulatedQuoteVerifier();
        registry = new NodeRegistry(owner, token, simVerifier, MIN_STAKE, MAX_AGE, UNBONDING, 0);
        escrow = new Escrow(token, registry, WITHDRAW_DELAY);
        oracle = new InferenceOracle(token, registry, TIMEOUT);
        vm.startPrank(owner);
        registry.announceMeasurement(SimQuote.MEASUREMENT, true);
        registry.executeMeasurement(SimQuote.MEASUREMENT);
        registry.setTcbStatus(0, true);
        vm.stopPrank();
    }

    function models1() internal pure returns (NodeRegistry.ModelPrice[] memory m) {
        m = new NodeRegistry.ModelPrice[](1);
        m[0] = NodeRegistry.ModelPrice(MODEL, 1e12, 2e12);
    }

    function quoteFor(address op, address sgn) internal view returns (bytes memory) {
        return SimQuote.build(SimQuote.reportData(sgn, registry.attestationNonce(op)));
    }

    function registerNode(uint256 opPk, uint256 sigPk) internal returns (address op) {
        op = vm.addr(opPk);
        token.mint(op, MIN_STAKE);
        vm.startPrank(op);
        token.approve(address(registry), MIN_STAKE);
        registry.register(quoteFor(op, vm.addr(sigPk)), "https://node.example:8443", models1(), MIN_STAKE);
        vm.stopPrank();
    }

    function sig(uint256 pk, bytes32 digest) internal pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(pk, digest);
        return abi.encodePacked(r, s, v);
    }
}
