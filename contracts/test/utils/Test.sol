// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Vm} from "./Vm.sol";

/// @notice Tiny test base: the cheatcode handle, assertions that revert with a message, logging
///         events forge prints (`log*`), a `bound` helper and the invariant-target hooks.
abstract contract Test {
    Vm internal constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));

    /// @dev forge reads this to know it is a test contract (ds-test convention).
    bool public IS_TEST = true;

    event log(string);
    event log_named_uint(string key, uint256 val);
    event log_named_bytes32(string key, bytes32 val);

    address[] private _targets;

    /// @dev Forge's invariant runner calls this (selector convention) to find the contracts to fuzz.
    function targetContracts() public view returns (address[] memory) {
        return _targets;
    }

    function targetContract(address t) internal {
        _targets.push(t);
    }

    function fail(string memory m) internal pure {
        revert(string.concat("assertion failed: ", m));
    }

    function assertTrue(bool c, string memory m) internal pure {
        if (!c) fail(m);
    }

    function assertFalse(bool c, string memory m) internal pure {
        if (c) fail(m);
    }

    function assertEq(uint256 a, uint256 b, string memory m) internal pure {
        if (a != b) fail(string.concat(m, " (", _u(a), " != ", _u(b), ")"));
    }

    function assertEq(address a, address b, string memory m) internal pure {
        if (a != b) fail(string.concat(m, " (address mismatch)"));
    }

    function assertEq(bytes32 a, bytes32 b, string memory m) internal pure {
        if (a != b) fail(string.concat(m, " (bytes32 mismatch)"));
    }

    function assertEq(bool a, bool b, string memory m) internal pure {
        if (a != b) fail(m);
    }

    function assertEq(bytes memory a, bytes memory b, string memory m) internal pure {
        if (keccak256(a) != keccak256(b)) fail(string.concat(m, " (bytes mismatch)"));
    }

    function assertEq(string memory a, string memory b, string memory m) internal pure {
        if (keccak256(bytes(a)) != keccak256(bytes(b))) fail(string.concat(m, " (", a, " != ", b, ")"));
    }

    function assertLe(uint256 a, uint256 b, string memory m) internal pure {
        if (a > b) fail(string.concat(m, " (", _u(a), " > ", _u(b), ")"));
    }

    function assertGe(uint256 a, uint256 b, string memory m) internal pure {
        if (a < b) fail(string.concat(m, " (", _u(a), " < ", _u(b), ")"));
    }

    /// @dev Maps `x` into [lo, hi] (uniform enough for fuzzing; keeps edge values reachable).
    function bound(uint256 x, uint256 lo, uint256 hi) internal pure returns (uint256) {
        require(lo <= hi, "bound: lo > hi");
        if (x >= lo && x <= hi) return x;
        uint256 size = hi - lo;
        if (size == type(uint256).max) return x;
        return lo + (x % (size + 1));
    }

    function _u(uint256 v) internal pure returns (string memory) {
        if (v == 0) return "0";
        uint256 n;
        for (uint256 t = v; t != 0; t /= 10) ++n;
        bytes memory b = new bytes(n);
        for (; v != 0; v /= 10) b[--n] = bytes1(uint8(48 + v % 10));
        return string(b);
    }
}
