// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {NodeRegistry} from "./NodeRegistry.sol";

/// @title Escrow
/// @notice Client deposits paying nodes through signed vouchers (DESIGN "Money").
///
/// A client deposits tokens and signs an EIP-712 `SpendAuthorization{client, node, maxAmount, expiry,
/// salt}` (its base64 form is the API key). `node` is the node's OPERATOR address. The node meters
/// usage and has its enclave key sign EIP-712 `UsageVoucher{authorization, cumulativeAmount}`, where
/// `authorization = authorizationId(auth)`. `settle` takes many vouchers in one transaction and pays
/// the operator the difference since the last settlement of that authorization.
///
/// Rules:
/// - The client signature is checked with OpenZeppelin SignatureChecker (EOA or ERC-1271 wallet).
/// - The voucher must be signed by the node's CURRENT signer (`registry.signerOf(auth.node)`). A node
///   that rotated its key re-signs its ledger with the new key before settling. The signer stays
///   known while the node unbonds, so a deregistering node can still settle.
/// - `cumulativeAmount <= maxAmount`; a voucher not above what was already settled reverts
///   `VoucherAlreadySettled`, so nothing is ever paid twice. A node must only submit fresh vouchers:
///   one stale item reverts the whole batch.
/// - Expiry: `expiry` bounds when the NODE may accept the key for new requests (checked off chain).
///   Vouchers settle regardless of expiry, so usage served before expiry can be claimed later.
/// - Short balance: the client is charged what it has; `settled` advances only by what was paid and
///   `SettlementShort` is emitted. The rest stays claimable by a later voucher after a re-deposit.
/// - Withdrawal waits `withdrawDelay`; the requested funds stay settle-able until `withdraw`.
contract Escrow is EIP712("Cloister Escrow", "1"), ReentrancyGuard {
    using SafeERC20 for IERC20;

    /// @notice What a client allows one node to charge.
    struct SpendAuthorization {
        address client;
        address node;
        uint256 maxAmount;
        uint64 expiry;
        bytes32 salt;
    }

    /// @notice A node's running total for one authorization.
    struct UsageVoucher {
        bytes32 authorization;
        uint256 cumulativeAmount;
    }

    /// @notice One voucher to settle, with the authorization it refers to.
    struct SettleItem {
        SpendAuthorization auth;
        bytes clientSignature;
        uint256 cumulativeAmount;
        bytes voucherSignature;
    }

    struct Withdrawal {
        uint256 amount;
        uint64 readyAt;
    }

    bytes32 public constant SPEND_AUTHORIZATION_TYPEHASH =
        keccak256("SpendAuthorization(address client,address node,uint256 maxAmount,uint64 expiry,bytes32 salt)");
    bytes32 public constant USAGE_VOUCHER_TYPEHASH =
        keccak256("UsageVoucher(bytes32 authorization,uint256 cumulativeAmount)");

    /// @notice Payment token.
    IERC20 public immutable token;
    /// @notice Node registry (voucher signers).
    NodeRegistry public immutable registry;
    /// @notice Delay between `requestWithdrawal` and `withdraw`.
    uint64 public immutable withdrawDelay;

    mapping(address client => uint256) private _balances;
    mapping(address client => Withdrawal) private _withdrawals;
    mapping(bytes32 authorization => uint256) private _settled;

    event Deposited(address indexed client, uint256 amount);
    event WithdrawalRequested(address indexed client, uint256 amount, uint64 readyAt);
    event Withdrawn(address indexed client, uint256 amount);
    event Settled(
        bytes32 indexed authorization, address indexed node, address indexed client, uint256 cumulativeAmount, uint256 paid
    );
    event SettlementShort(bytes32 indexed authorization, uint256 due, uint256 paid);

    /// @notice The client's signature over `authorizationId(auth)` is invalid.
    error BadClientSignature();
    /// @notice The voucher is not signed by the node's current signer.
    error BadVoucherSignature();
    /// @notice `cumulativeAmount > auth.maxAmount`.
    error AmountAboveMax();
    /// @notice `cumulativeAmount` is not above what was already settled.
    error VoucherAlreadySettled(bytes32 authorization);
    /// @notice Zero amount.
    error ZeroAmount();
    /// @notice A zero address where one is not allowed.
    error ZeroAddress();
    /// @notice Withdrawal request above the balance.
    error InsufficientBalance(uint256 balance, uint256 requested);
    /// @notice `withdraw` without a request.
    error NoWithdrawalPending();
    /// @notice `withdraw` before `readyAt`.
    error WithdrawalNotReady(uint64 readyAt);
    /// @notice `settle` with no items.
    error EmptyBatch();

    /// @param token_ Payment token.
    /// @param registry_ Node registry.
    /// @param withdrawDelay_ Client withdrawal delay (give nodes time to settle).
    constructor(IERC20 token_, NodeRegistry registry_, uint64 withdrawDelay_) {
        if (address(token_) == address(0) || address(registry_) == address(0)) revert ZeroAddress();
        token = token_;
        registry = registry_;
        withdrawDelay = withdrawDelay_;
    }

    // ---------------------------------------------------------------- clients

    /// @notice Deposits `amount` for the caller (approve first).
    function deposit(uint256 amount) external nonReentrant {
        _deposit(msg.sender, amount);
    }

    /// @notice Deposits `amount` from the caller for `client`.
    function depositFor(address client, uint256 amount) external nonReentrant {
        if (client == address(0)) revert ZeroAddress();
        _deposit(client, amount);
    }

    /// @notice Asks to withdraw `amount` after `withdrawDelay`. Replaces any earlier request and
    ///         restarts the delay. The funds stay settle-able until `withdraw`.
    function requestWithdrawal(uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        uint256 bal = _balances[msg.sender];
        if (amount > bal) revert InsufficientBalance(bal, amount);
        uint64 readyAt = uint64(block.timestamp) + withdrawDelay;
        _withdrawals[msg.sender] = Withdrawal(amount, readyAt);
        emit WithdrawalRequested(msg.sender, amount, readyAt);
    }

    /// @notice Pays out the pending request once ready: min(requested, current balance).
    function withdraw() external nonReentrant {
        Withdrawal memory w = _withdrawals[msg.sender];
        if (w.amount == 0) revert NoWithdrawalPending();
        if (block.timestamp < w.readyAt) revert WithdrawalNotReady(w.readyAt);
        delete _withdrawals[msg.sender];
        uint256 bal = _balances[msg.sender];
        uint256 amount = w.amount < bal ? w.amount : bal;
        _balances[msg.sender] = bal - amount;
        if (amount > 0) token.safeTransfer(msg.sender, amount);
        emit Withdrawn(msg.sender, amount);
    }

    /// @notice A client's settle-able balance.
    function balanceOf(address client) external view returns (uint256) {
        return _balances[client];
    }

    /// @notice A client's pending withdrawal request (zero if none).
    function pendingWithdrawal(address client) external view returns (uint256 amount, uint64 readyAt) {
        Withdrawal memory w = _withdrawals[client];
        return (w.amount, w.readyAt);
    }

    // ---------------------------------------------------------------- EIP-712

    /// @notice The EIP-712 digest of `auth` (what the client signs); identifies the authorization.
    function authorizationId(SpendAuthorization calldata auth) public view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(
                abi.encode(SPEND_AUTHORIZATION_TYPEHASH, auth.client, auth.node, auth.maxAmount, auth.expiry, auth.salt)
            )
        );
    }

    /// @notice The EIP-712 digest of a UsageVoucher (what the node's signer signs).
    function voucherDigest(bytes32 authorization, uint256 cumulativeAmount) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(USAGE_VOUCHER_TYPEHASH, authorization, cumulativeAmount)));
    }

    /// @notice Cumulative amount already paid for an authorization.
    function settled(bytes32 authorization) external view returns (uint256) {
        return _settled[authorization];
    }

    /// @notice The EIP-712 domain separator.
    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    // ---------------------------------------------------------------- settlement

    /// @notice Settles a batch of vouchers; see the contract notes for the rules. Consecutive items for
    ///         the same node are paid in one transfer.
    function settle(SettleItem[] calldata items) external nonReentrant {
        uint256 len = items.length;
        if (len == 0) revert EmptyBatch();
        address payNode;
        uint256 payAmount;
        address signer;
        for (uint256 i; i < len; ++i) {
            address node = items[i].auth.node;
            if (node != payNode || i == 0) {
                if (payAmount > 0) token.safeTransfer(payNode, payAmount);
                payNode = node;
                payAmount = 0;
                signer = registry.signerOf(node);
            }
            payAmount += _settleOne(items[i], signer);
        }
        if (payAmount > 0) token.safeTransfer(payNode, payAmount);
    }

    /// @dev Checks one item against `signer` (the node's current signer), books it, returns what it pays.
    function _settleOne(SettleItem calldata it, address signer) private returns (uint256 paid) {
        uint256 cumulative = it.cumulativeAmount;
        if (cumulative > it.auth.maxAmount) revert AmountAboveMax();
        bytes32 id = authorizationId(it.auth);
        uint256 already = _settled[id];
        if (cumulative <= already) revert VoucherAlreadySettled(id);
        address client = it.auth.client;
        if (!SignatureChecker.isValidSignatureNow(client, id, it.clientSignature)) revert BadClientSignature();
        (address recovered, ECDSA.RecoverError err,) = ECDSA.tryRecover(voucherDigest(id, cumulative), it.voucherSignature);
        if (err != ECDSA.RecoverError.NoError || recovered != signer || signer == address(0)) {
            revert BadVoucherSignature();
        }
        uint256 due = cumulative - already;
        uint256 bal = _balances[client];
        paid = due <= bal ? due : bal;
        if (paid > 0) {
            _balances[client] = bal - paid;
            _settled[id] = already + paid;
        }
        if (paid < due) emit SettlementShort(id, due, paid);
        emit Settled(id, it.auth.node, client, cumulative, paid);
    }

    function _deposit(address client, uint256 amount) private {
        if (amount == 0) revert ZeroAmount();
        _balances[client] += amount;
        token.safeTransferFrom(msg.sender, address(this), amount);
        emit Deposited(client, amount);
    }
}
