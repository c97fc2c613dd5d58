// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Fixture} from "./utils/Fixture.sol";
import {Escrow} from "../src/Escrow.sol";
import {NodeRegistry} from "../src/NodeRegistry.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";

/// @notice ERC-1271 wallet whose owner key signs for it.
contract Wallet1271 {
    address public immutable keyOwner;

    constructor(address k) {
        keyOwner = k;
    }

    function isValidSignature(bytes32 hash, bytes memory signature) external view returns (bytes4) {
        (bytes32 r, bytes32 s) = abi.decode(signature, (bytes32, bytes32));
        uint8 v = uint8(signature[64]);
        return ecrecover(hash, v, r, s) == keyOwner ? bytes4(0x1626ba7e) : bytes4(0xffffffff);
    }
}

contract EscrowTest is Fixture {
    event Deposited(address indexed client, uint256 amount);
    event WithdrawalRequested(address indexed client, uint256 amount, uint64 readyAt);
    event Withdrawn(address indexed client, uint256 amount);
    event Settled(
        bytes32 indexed authorization, address indexed node, address indexed client, uint256 cumulativeAmount, uint256 paid
    );
    event SettlementShort(bytes32 indexed authorization, uint256 due, uint256 paid);

    uint256 internal constant SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;

    function setUp() public override {
        super.setUp();
        registerNode(OPERATOR_PK, SIGNER_PK);
        fundClient(client, 1000 ether);
    }

    function fundClient(address c, uint256 amount) internal {
        token.mint(c, amount);
        vm.startPrank(c);
        token.approve(address(escrow), amount);
        escrow.deposit(amount);
        vm.stopPrank();
    }

    function auth(uint256 max, bytes32 salt) internal view returns (Escrow.SpendAuthorization memory) {
        return Escrow.SpendAuthorization(client, operator, max, uint64(block.timestamp + 30 days), salt);
    }

    function item(Escrow.SpendAuthorization memory a, uint256 cum) internal view returns (Escrow.SettleItem memory) {
        bytes32 id = escrow.authorizationId(a);
        return Escrow.SettleItem(a, sig(CLIENT_PK, id), cum, sig(SIGNER_PK, escrow.voucherDigest(id, cum)));
    }

    function one(Escrow.SettleItem memory it) internal pure returns (Escrow.SettleItem[] memory items) {
        items = new Escrow.SettleItem[](1);
        items[0] = it;
    }

    // ------------------------------------------------------------ EIP-712

    function test_eip712Digests() public view {
        bytes32 domain = keccak256(
            abi.encode(
                keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
                keccak256("Cloister Escrow"),
                keccak256("1"),
                block.chainid,
                address(escrow)
            )
        );
        assertEq(escrow.domainSeparator(), domain, "domain");
        Escrow.SpendAuthorization memory a = auth(5 ether, bytes32(uint256(9)));
        bytes32 sh = keccak256(
            abi.encode(
                keccak256("SpendAuthorization(address client,address node,uint256 maxAmount,uint64 expiry,bytes32 salt)"),
                a.client,
                a.node,
                a.maxAmount,
                a.expiry,
                a.salt
            )
        );
        bytes32 id = keccak256(abi.encodePacked(hex"1901", domain, sh));
        assertEq(escrow.authorizationId(a), id, "authorizationId");
        bytes32 vh = keccak256(abi.encode(keccak256("UsageVoucher(bytes32 authorization,uint256 cumulativeAmount)"), id, uint256(7)));
        assertEq(escrow.voucherDigest(id, 7), keccak256(abi.encodePacked(hex"1901", domain, vh)), "voucherDigest");
    }

    // ------------------------------------------------------------ deposits and withdrawals

    function test_deposit_depositFor() public {
        token.mint(operator, 10);
        vm.startPrank(operator);
        token.approve(address(escrow), 10);
        vm.expectEmit(address(escrow));
        emit Deposited(operator, 4);
        escrow.deposit(4);
        vm.expectEmit(address(escrow));
        emit Deposited(client, 6);
        escrow.depositFor(client, 6);
        vm.stopPrank();
        assertEq(escrow.balanceOf(operator), 4, "own");
        assertEq(escrow.balanceOf(client), 1000 ether + 6, "for client");
        assertEq(token.balanceOf(address(escrow)), 1000 ether + 10, "tokens held");
    }

    function test_revert_deposit_ZeroAmount_ZeroAddress() public {
        vm.expectRevert(Escrow.ZeroAmount.selector);
        escrow.deposit(0);
        vm.expectRevert(Escrow.ZeroAddress.selector);
        escrow.depositFor(address(0), 1);
        vm.expectRevert(); // no allowance
        escrow.deposit(1);
    }

    function test_withdrawal() public {
        uint64 readyAt = uint64(block.timestamp) + WITHDRAW_DELAY;
        vm.expectEmit(address(escrow));
        emit WithdrawalRequested(client, 300 ether, readyAt);
        vm.prank(client);
        escrow.requestWithdrawal(300 ether);
        (uint256 amt, uint64 ra) = escrow.pendingWithdrawal(client);
        assertEq(amt, 300 ether, "pending amount");
        assertEq(uint256(ra), readyAt, "readyAt");

        vm.warp(readyAt - 1);
        vm.prank(client);
        vm.expectRevert(abi.encodeWithSelector(Escrow.WithdrawalNotReady.selector, readyAt));
        escrow.withdraw();

        vm.warp(readyAt);
        vm.expectEmit(address(escrow));
        emit Withdrawn(client, 300 ether);
        vm.prank(client);
        escrow.withdraw();
        assertEq(token.balanceOf(client), 300 ether, "paid out");
        assertEq(escrow.balanceOf(client), 700 ether, "rest stays");
        (amt,) = escrow.pendingWithdrawal(client);
        assertEq(amt, 0, "request cleared");
    }

    function test_withdrawal_fundsStaySettleable_paysMin() public {
        vm.prank(client);
        escrow.requestWithdrawal(1000 ether);
        Escrow.SpendAuthorization memory a = auth(900 ether, 0);
        escrow.settle(one(item(a, 900 ether)));
        assertEq(token.balanceOf(operator), 900 ether, "node settled during the delay");
        vm.warp(block.timestamp + WITHDRAW_DELAY);
        vm.prank(client);
        escrow.withdraw();
        assertEq(token.balanceOf(client), 100 ether, "min(requested, balance)");
        assertEq(escrow.balanceOf(client), 0, "empty");
    }

    function test_revert_withdrawal() public {
        vm.startPrank(client);
        vm.expectRevert(Escrow.ZeroAmount.selector);
        escrow.requestWithdrawal(0);
        vm.expectRevert(abi.encodeWithSelector(Escrow.InsufficientBalance.selector, 1000 ether, 1000 ether + 1));
        escrow.requestWithdrawal(1000 ether + 1);
        vm.expectRevert(Escrow.NoWithdrawalPending.selector);
        escrow.withdraw();
        vm.stopPrank();
    }

    // ------------------------------------------------------------ settle

    function test_settle_paysDifference() public {
        Escrow.SpendAuthorization memory a = auth(100 ether, bytes32("s"));
        bytes32 id = escrow.authorizationId(a);
        vm.expectEmit(address(escrow));
        emit Settled(id, operator, client, 10 ether, 10 ether);
        escrow.settle(one(item(a, 10 ether)));
        assertEq(escrow.settled(id), 10 ether, "settled");
        assertEq(token.balanceOf(operator), 10 ether, "paid");
        vm.expectEmit(address(escrow));
        emit Settled(id, operator, client, 25 ether, 15 ether);
        escrow.settle(one(item(a, 25 ether)));
        assertEq(token.balanceOf(operator), 25 ether, "paid the difference");
        assertEq(escrow.balanceOf(client), 975 ether, "client charged");
        assertEq(escrow.settled(id), 25 ether, "settled total");
    }

    function test_revert_VoucherAlreadySettled() public {
        Escrow.SpendAuthorization memory a = auth(100 ether, 0);
        bytes32 id = escrow.authorizationId(a);
        Escrow.SettleItem[] memory items = one(item(a, 10 ether));
        escrow.settle(items);
        vm.expectRevert(abi.encodeWithSelector(Escrow.VoucherAlreadySettled.selector, id));
        escrow.settle(items);
        items = one(item(a, 9 ether));
        vm.expectRevert(abi.encodeWithSelector(Escrow.VoucherAlreadySettled.selector, id));
        escrow.settle(items);
        // the same voucher twice in one batch
        Escrow.SettleItem[] memory two = new Escrow.SettleItem[](2);
        two[0] = item(a, 20 ether);
        two[1] = two[0];
        vm.expectRevert(abi.encodeWithSelector(Escrow.VoucherAlreadySettled.selector, id));
        escrow.settle(two);
        // zero voucher is never payable
        items = one(item(auth(100 ether, bytes32("z")), 0));
        vm.expectRevert(abi.encodeWithSelector(Escrow.VoucherAlreadySettled.selector, escrow.authorizationId(auth(100 ether, bytes32("z")))));
        escrow.settle(items);
    }

    function test_revert_AmountAboveMax() public {
        Escrow.SpendAuthorization memory a = auth(100 ether, 0);
        Escrow.SettleItem[] memory items = one(item(a, 100 ether + 1));
        vm.expectRevert(Escrow.AmountAboveMax.selector);
        escrow.settle(items);
        escrow.settle(one(item(a, 100 ether)));
    }

    function test_revert_BadClientSignature() public {
        Escrow.SpendAuthorization memory a = auth(100 ether, 0);
        Escrow.SettleItem memory it = item(a, 1 ether);
        it.clientSignature = sig(OPERATOR_PK, escrow.authorizationId(a));
        vm.expectRevert(Escrow.BadClientSignature.selector);
        escrow.settle(one(it));
        // a field changed after signing
        it = item(a, 1 ether);
        it.auth.maxAmount = 200 ether;
        vm.expectRevert(Escrow.BadClientSignature.selector);
        escrow.settle(one(it));
        // empty signature
        it = item(a, 1 ether);
        it.clientSignature = "";
        vm.expectRevert(Escrow.BadClientSignature.selector);
        escrow.settle(one(it));
    }

    function test_revert_BadVoucherSignature() public {
        Escrow.SpendAuthorization memory a = auth(100 ether, 0);
        bytes32 id = escrow.authorizationId(a);
        Escrow.SettleItem memory it = item(a, 1 ether);
        it.voucherSignature = sig(OPERATOR_PK, escrow.voucherDigest(id, 1 ether)); // operator key is not the signer
        vm.expectRevert(Escrow.BadVoucherSignature.selector);
        escrow.settle(one(it));
        it = item(a, 1 ether);
        it.cumulativeAmount = 2 ether; // signed for 1
        vm.expectRevert(Escrow.BadVoucherSignature.selector);
        escrow.settle(one(it));
        it = item(a, 1 ether);
        it.voucherSignature = hex"00";
        vm.expectRevert(Escrow.BadVoucherSignature.selector);
        escrow.settle(one(it));
    }

    function test_revert_BadVoucherSignature_unknownNode() public {
        Escrow.SpendAuthorization memory a = auth(100 ether, 0);
        a.node = address(0xdead);
        Escrow.SettleItem[] memory items = one(item(a, 1 ether));
        vm.expectRevert(Escrow.BadVoucherSignature.selector);
        escrow.settle(items);
    }

    function test_revert_BadVoucherSignature_highS() public {
        Escrow.SpendAuthorization memory a = auth(100 ether, 0);
        bytes32 id = escrow.authorizationId(a);
        Escrow.SettleItem memory it = item(a, 1 ether);
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(SIGNER_PK, escrow.voucherDigest(id, 1 ether));
        it.voucherSignature = abi.encodePacked(r, bytes32(SECP256K1_N - uint256(s)), v == 27 ? uint8(28) : uint8(27));
        vm.expectRevert(Escrow.BadVoucherSignature.selector);
        escrow.settle(one(it));
    }

    /// Vouchers are checked against the node's CURRENT signer: after a key rotation old vouchers
    /// must be re-signed (DESIGN "Money").
    function test_settle_currentSignerOnly() public {
        Escrow.SpendAuthorization memory a = auth(100 ether, 0);
        Escrow.SettleItem memory old = item(a, 5 ether);
        uint256 newPk = 0x5EC0DD;
        bytes memory q = quoteFor(operator, vm.addr(newPk));
        vm.prank(operator);
        registry.reattest(q);
        vm.expectRevert(Escrow.BadVoucherSignature.selector);
        escrow.settle(one(old));
        old.voucherSignature = sig(newPk, escrow.voucherDigest(escrow.authorizationId(a), 5 ether));
        escrow.settle(one(old));
        assertEq(token.balanceOf(operator), 5 ether, "paid after re-signing");
    }

    function test_settle_shortBalance_thenRest() public {
        address poor = vm.addr(0x9002);
        fundClient(poor, 30 ether);
        Escrow.SpendAuthorization memory a = Escrow.SpendAuthorization(poor, operator, 100 ether, 0, 0);
        bytes32 id = escrow.authorizationId(a);
        Escrow.SettleItem memory it = Escrow.SettleItem(a, sig(0x9002, id), 50 ether, sig(SIGNER_PK, escrow.voucherDigest(id, 50 ether)));
        vm.expectEmit(address(escrow));
        emit SettlementShort(id, 50 ether, 30 ether);
        vm.expectEmit(address(escrow));
        emit Settled(id, operator, poor, 50 ether, 30 ether);
        escrow.settle(one(it));
        assertEq(escrow.settled(id), 30 ether, "advanced by what was paid");
        assertEq(escrow.balanceOf(poor), 0, "drained");
        // same voucher, nothing to pay: short by all of it, no revert
        escrow.settle(one(it));
        assertEq(escrow.settled(id), 30 ether, "unchanged");
        // re-deposit, same voucher pays the rest
        fundClient(poor, 100 ether);
        escrow.settle(one(it));
        assertEq(escrow.settled(id), 50 ether, "caught up");
        assertEq(token.balanceOf(operator), 50 ether, "node got all that was due");
        vm.expectRevert(abi.encodeWithSelector(Escrow.VoucherAlreadySettled.selector, id));
        escrow.settle(one(it));
    }

    function test_settle_ignoresExpiry() public {
        Escrow.SpendAuthorization memory a = auth(100 ether, 0);
        Escrow.SettleItem[] memory items = one(item(a, 3 ether));
        vm.warp(uint256(a.expiry) + 365 days);
        escrow.settle(items);
        assertEq(token.balanceOf(operator), 3 ether, "settled after expiry");
    }

    function test_settle_whileNodeUnbonding() public {
        Escrow.SpendAuthorization memory a = auth(100 ether, 0);
        vm.prank(operator);
        registry.deregister();
        escrow.settle(one(item(a, 3 ether)));
        assertEq(token.balanceOf(operator), 3 ether, "unbonding node settles");
    }

    function test_settle_batchManyClientsAndNodes() public {
        uint256 op2Pk = 0x0BE6;
        uint256 sig2Pk = 0x5167E6;
        address op2 = registerNode(op2Pk, sig2Pk);
        address c2 = vm.addr(0xC2);
        fundClient(c2, 50 ether);
        Escrow.SettleItem[] memory items = new Escrow.SettleItem[](4);
        items[0] = item(auth(10 ether, "1"), 1 ether);
        items[1] = item(auth(10 ether, "2"), 2 ether);
        Escrow.SpendAuthorization memory b = Escrow.SpendAuthorization(c2, op2, 10 ether, 0, "3");
        bytes32 bid = escrow.authorizationId(b);
        items[2] = Escrow.SettleItem(b, sig(0xC2, bid), 4 ether, sig(sig2Pk, escrow.voucherDigest(bid, 4 ether)));
        items[3] = item(auth(10 ether, "4"), 8 ether);
        escrow.settle(items);
        assertEq(token.balanceOf(operator), 11 ether, "node 1");
        assertEq(token.balanceOf(op2), 4 ether, "node 2");
        assertEq(escrow.balanceOf(client), 989 ether, "client 1");
        assertEq(escrow.balanceOf(c2), 46 ether, "client 2");
        // a node's voucher cannot be passed off as another node's
        Escrow.SettleItem memory forged = items[2];
        forged.auth.node = operator;
        forged.clientSignature = sig(0xC2, escrow.authorizationId(forged.auth));
        vm.expectRevert(Escrow.BadVoucherSignature.selector);
        escrow.settle(one(forged));
    }

    function test_settle_erc1271Client() public {
        Wallet1271 w = new Wallet1271(client);
        token.mint(address(this), 5 ether);
        token.approve(address(escrow), 5 ether);
        escrow.depositFor(address(w), 5 ether);
        Escrow.SpendAuthorization memory a = Escrow.SpendAuthorization(address(w), operator, 5 ether, 0, 0);
        Escrow.SettleItem memory it = item(a, 2 ether);
        escrow.settle(one(it));
        assertEq(escrow.balanceOf(address(w)), 3 ether, "wallet charged");
    }

    function test_revert_EmptyBatch() public {
        vm.expectRevert(Escrow.EmptyBatch.selector);
        escrow.settle(new Escrow.SettleItem[](0));
    }

    function test_revert_constructor_ZeroAddress() public {
        vm.expectRevert(Escrow.ZeroAddress.selector);
        new Escrow(IERC20(address(0)), registry, 1);
        vm.expectRevert(Escrow.ZeroAddress.selector);
        new Escrow(token, NodeRegistry(address(0)), 1);
    }

    // ------------------------------------------------------------ fuzz

    function testFuzz_settleAccounting(uint256 dep, uint256 max, uint256 c1, uint256 c2) public {
        address c = vm.addr(0x9003);
        dep = bound(dep, 1, 1e30);
        max = bound(max, 1, 1e30);
        c1 = bound(c1, 1, max);
        c2 = bound(c2, c1, max);
        fundClient(c, dep);
        Escrow.SpendAuthorization memory a = Escrow.SpendAuthorization(c, operator, max, 0, 0);
        bytes32 id = escrow.authorizationId(a);
        Escrow.SettleItem memory it = Escrow.SettleItem(a, sig(0x9003, id), c1, sig(SIGNER_PK, escrow.voucherDigest(id, c1)));
        escrow.settle(one(it));
        uint256 p1 = c1 < dep ? c1 : dep;
        assertEq(escrow.settled(id), p1, "settled 1");
        if (c2 > p1) {
            it.cumulativeAmount = c2;
            it.voucherSignature = sig(SIGNER_PK, escrow.voucherDigest(id, c2));
            escrow.settle(one(it));
        }
        uint256 total = c2 < dep ? c2 : dep;
        assertEq(escrow.settled(id), total, "settled total = min(cumulative, deposit)");
        assertEq(token.balanceOf(operator), total, "node paid exactly that");
        assertEq(escrow.balanceOf(c), dep - total, "client charged exactly that");
        assertLe(escrow.settled(id), max, "never above max");
    }

    function testFuzz_forgedVoucherSignerNeverPays(uint256 pk, uint256 cum) public {
        pk = bound(pk, 1, SECP256K1_N - 1);
        vm.assume(pk != SIGNER_PK);
        cum = bound(cum, 1, 100 ether);
        Escrow.SpendAuthorization memory a = auth(100 ether, 0);
        Escrow.SettleItem memory it = item(a, cum);
        it.voucherSignature = sig(pk, escrow.voucherDigest(escrow.authorizationId(a), cum));
        vm.expectRevert(Escrow.BadVoucherSignature.selector);
        escrow.settle(one(it));
    }

    function testFuzz_forgedClientSignerNeverPays(uint256 pk) public {
        pk = bound(pk, 1, SECP256K1_N - 1);
        vm.assume(pk != CLIENT_PK);
        Escrow.SpendAuthorization memory a = auth(100 ether, 0);
        Escrow.SettleItem memory it = item(a, 1 ether);
        it.clientSignature = sig(pk, escrow.authorizationId(a));
        vm.expectRevert(Escrow.BadClientSignature.selector);
        escrow.settle(one(it));
    }

    function testFuzz_randomSignatureBytesNeverPay(bytes32 r, bytes32 s, uint8 v, bool voucher) public {
        Escrow.SpendAuthorization memory a = auth(100 ether, 0);
        Escrow.SettleItem memory it = item(a, 1 ether);
        if (voucher) it.voucherSignature = abi.encodePacked(r, s, v);
        else it.clientSignature = abi.encodePacked(r, s, v);
        vm.expectRevert(voucher ? Escrow.BadVoucherSignature.selector : Escrow.BadClientSignature.selector);
        escrow.settle(one(it));
    }
}
