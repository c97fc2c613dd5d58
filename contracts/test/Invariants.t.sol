// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Fixture} from "./utils/Fixture.sol";
import {Vm} from "./utils/Vm.sol";
import {Escrow} from "../src/Escrow.sol";
import {DevToken} from "../src/DevToken.sol";
import {NodeRegistry} from "../src/NodeRegistry.sol";

/// @notice Random escrow operations for the invariant runner: deposits, withdrawals, fresh and
///         replayed vouchers, time jumps. Keeps ghost totals to compare with the contract.
contract EscrowHandler {
    Vm internal constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));

    Escrow public immutable escrow;
    DevToken public immutable token;
    uint256 public immutable signerPk;
    address public immutable node;

    uint256[3] internal clientPks = [uint256(0xC1), 0xC2, 0xC3];
    address[3] public clients;

    /// Authorizations used so far (index = client * 4 + salt).
    mapping(uint256 => bool) public used;
    bytes32[] public authIds;
    mapping(bytes32 => uint256) public maxOf;
    mapping(bytes32 => uint256) public ghostPaid;
    uint256 public ghostPaidTotal;
    bool public paidTwice;
    uint256 public settleCalls;
    uint256 public replayCalls;

    Escrow.SettleItem internal _last;
    bool internal _hasLast;

    constructor(Escrow e, DevToken t, address node_, uint256 signerPk_) {
        escrow = e;
        token = t;
        node = node_;
        signerPk = signerPk_;
        for (uint256 i; i < 3; ++i) clients[i] = vm.addr(clientPks[i]);
    }

    function _b(uint256 x, uint256 lo, uint256 hi) internal pure returns (uint256) {
        return lo + x % (hi - lo + 1);
    }

    function deposit(uint256 who, uint256 amount) external {
        address c = clients[who % 3];
        amount = _b(amount, 1, 1_000 ether);
        token.mint(c, amount);
        vm.startPrank(c);
        token.approve(address(escrow), amount);
        escrow.deposit(amount);
        vm.stopPrank();
    }

    function requestWithdrawal(uint256 who, uint256 amount) external {
        address c = clients[who % 3];
        uint256 bal = escrow.balanceOf(c);
        if (bal == 0) return;
        vm.prank(c);
        escrow.requestWithdrawal(_b(amount, 1, bal));
    }

    function withdraw(uint256 who) external {
        address c = clients[who % 3];
        (uint256 amt, uint64 readyAt) = escrow.pendingWithdrawal(c);
        if (amt == 0) return;
        if (block.timestamp < readyAt) vm.warp(readyAt);
        vm.prank(c);
        escrow.withdraw();
    }

    function warp(uint256 secs) external {
        vm.warp(block.timestamp + _b(secs, 1, 3 days));
    }

    /// Settles a voucher for (client, salt) at a random cumulative amount (possibly stale or above
    /// max, which must revert).
    function settle(uint256 who, uint256 salt, uint256 cumulative) external {
        uint256 ci = who % 3;
        salt = salt % 4;
        Escrow.SpendAuthorization memory a =
            Escrow.SpendAuthorization(clients[ci], node, 500 ether * (salt + 1), 0, bytes32(salt));
        bytes32 id = escrow.authorizationId(a);
        if (!used[ci * 4 + salt]) {
            used[ci * 4 + salt] = true;
            authIds.push(id);
            maxOf[id] = a.maxAmount;
        }
        cumulative = _b(cumulative, 0, a.maxAmount + 10 ether);
        Escrow.SettleItem[] memory items = new Escrow.SettleItem[](1);
        items[0] = Escrow.SettleItem(a, _sig(clientPks[ci], id), cumulative, _sig(signerPk, escrow.voucherDigest(id, cumulative)));
        uint256 before = token.balanceOf(node);
        uint256 prevSettled = escrow.settled(id);
        try escrow.settle(items) {
            uint256 paid = token.balanceOf(node) - before;
            ghostPaid[id] += paid;
            ghostPaidTotal += paid;
            settleCalls++;
            if (paid > 0) {
                _last = items[0];
                _hasLast = true;
            }
        } catch {
            // stale (<= settled) or above max: must be exactly those cases
            require(cumulative <= prevSettled || cumulative > a.maxAmount, "valid voucher rejected");
        }
    }

    /// Re-submits the last voucher that paid: it may only pay again if it was short-paid.
    function replay() external {
        if (!_hasLast) return;
        Escrow.SettleItem[] memory items = new Escrow.SettleItem[](1);
        items[0] = _last;
        bytes32 id = escrow.authorizationId(_last.auth);
        uint256 prevSettled = escrow.settled(id);
        uint256 before = token.balanceOf(node);
        replayCalls++;
        try escrow.settle(items) {
            uint256 paid = token.balanceOf(node) - before;
            if (paid > _last.cumulativeAmount - prevSettled) paidTwice = true;
            ghostPaid[id] += paid;
            ghostPaidTotal += paid;
        } catch {}
    }

    function authCount() external view returns (uint256) {
        return authIds.length;
    }

    function _sig(uint256 pk, bytes32 d) internal pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(pk, d);
        return abi.encodePacked(r, s, v);
    }
}

contract EscrowInvariantTest is Fixture {
    EscrowHandler internal handler;

    function setUp() public override {
        super.setUp();
        registerNode(OPERATOR_PK, SIGNER_PK);
        handler = new EscrowHandler(escrow, token, operator, SIGNER_PK);
        targetContract(address(handler));
    }

    /// Escrow solvency: tokens held >= the sum of client balances.
    function invariant_escrowSolvent() public view {
        uint256 sum;
        for (uint256 i; i < 3; ++i) sum += escrow.balanceOf(handler.clients(i));
        assertGe(token.balanceOf(address(escrow)), sum, "escrow insolvent");
        assertEq(token.balanceOf(address(escrow)), sum, "no tokens stranded either");
    }

    /// Per authorization: paid == settled <= maxAmount, and no voucher ever paid twice.
    function invariant_vouchersNeverOverpay() public view {
        uint256 n = handler.authCount();
        uint256 total;
        for (uint256 i; i < n; ++i) {
            bytes32 id = handler.authIds(i);
            uint256 s = escrow.settled(id);
            assertLe(s, handler.maxOf(id), "settled above max");
            assertEq(handler.ghostPaid(id), s, "paid != settled");
            total += s;
        }
        assertEq(token.balanceOf(operator), total, "node received exactly the settled sum");
        assertFalse(handler.paidTwice(), "a voucher paid twice");
    }

    /// The runner really exercised settlement (guards against a vacuous pass).
    function afterInvariant() public view {
        assertTrue(handler.ghostPaidTotal() > 0, "nothing ever paid");
    }
}
