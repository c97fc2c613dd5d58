// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {NodeRegistry} from "./NodeRegistry.sol";
import {IInferenceConsumer} from "./IInferenceConsumer.sol";

/// @title InferenceOracle
/// @notice On-chain inference requests (DESIGN "On-chain requests"). A requester escrows `maxFee`;
///         any active node serving the model may fulfil it before the deadline with an output signed
///         by its enclave key as EIP-712 `InferenceResult{requestId, outputHash, model}`; the node's
///         operator is paid `maxFee`, then the callback runs with exactly `callbackGasLimit` gas.
///         `requestFor` designates one node (by operator address): only it may fulfil, so the input
///         can be sealed to that node's attested HPKE key (docs/protocol.md §9, "Sealed oracle
///         inputs"). Unfulfilled requests are refundable after the deadline. Inputs are public
///         unless sealed; outputs are always public.
contract InferenceOracle is EIP712("Cloister InferenceOracle", "1"), ReentrancyGuard {
    using SafeERC20 for IERC20;

    /// @notice Request states.
    uint8 public constant STATUS_NONE = 0;
    uint8 public constant STATUS_PENDING = 1;
    uint8 public constant STATUS_FULFILLED = 2;
    uint8 public constant STATUS_REFUNDED = 3;

    /// @notice Largest callback gas limit a request may ask for.
    uint32 public constant MAX_CALLBACK_GAS = 5_000_000;
    /// @notice Longest model id, in bytes.
    uint256 public constant MAX_MODEL_LENGTH = 128;
    /// @dev Gas the exact-gas call needs beyond the callback's own limit (the CALL itself, value-free).
    uint256 internal constant CALL_OVERHEAD = 5_000;

    bytes32 public constant INFERENCE_RESULT_TYPEHASH =
        keccak256("InferenceResult(uint256 requestId,bytes32 outputHash,string model)");

    /// @notice One request. `status`: 0 none, 1 pending, 2 fulfilled, 3 refunded. The node that
    ///         fulfilled it is in the `InferenceFulfilled` event (not stored: saves a fresh slot).
    ///         `node`: the only operator that may fulfil it, or zero for any. Field order packs
    ///         storage: 4 fresh slots per open request; `node` takes a fifth, written only when set.
    struct Request {
        address requester;
        uint8 status;
        uint64 deadline;
        address callback;
        uint32 callbackGasLimit;
        uint256 maxFee;
        string model;
        address node;
    }

    /// @notice Payment token.
    IERC20 public immutable token;
    /// @notice Node registry.
    NodeRegistry public immutable registry;
    /// @notice Seconds a request stays open.
    uint64 public immutable timeout;

    /// @notice Number of requests made; ids start at 1.
    uint256 public requestCount;
    mapping(uint256 id => Request) private _requests;

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

    /// @notice The caller (or, at `requestFor`, the designated node) is not an active node.
    error NodeNotActive();
    /// @notice The caller (or, at `requestFor`, the designated node) does not serve the model.
    error ModelNotServed();
    /// @notice The request is designated to `node`; no other caller may fulfil it.
    error NotDesignatedNode(address node);
    /// @notice The result is not signed by the caller's current signer.
    error BadResultSignature();
    /// @notice The request is not pending (unknown, fulfilled or refunded).
    error RequestNotPending(uint256 id);
    /// @notice The request's deadline has passed.
    error RequestExpired(uint256 id);
    /// @notice Refund before the deadline.
    error NotExpired(uint64 deadline);
    /// @notice Model id empty or too long.
    error BadModel();
    /// @notice `callbackGasLimit` above MAX_CALLBACK_GAS.
    error CallbackGasTooHigh(uint32 callbackGasLimit);
    /// @notice Not enough gas left to give the callback exactly `callbackGasLimit`.
    error InsufficientGasForCallback();
    /// @notice A zero address where one is not allowed.
    error ZeroAddress();

    /// @param token_ Payment token.
    /// @param registry_ Node registry.
    /// @param timeout_ Seconds until an unfulfilled request becomes refundable.
    constructor(IERC20 token_, NodeRegistry registry_, uint64 timeout_) {
        if (address(token_) == address(0) || address(registry_) == address(0)) revert ZeroAddress();
        token = token_;
        registry = registry_;
        timeout = timeout_;
    }

    /// @notice Requests an inference any active node serving `model` may fulfil; pulls `maxFee` from
    ///         the caller (approve first).
    /// @param model Model id as nodes list it in the registry.
    /// @param input Request body (public: any node may answer, so none can be sealed to).
    /// @param maxFee Fee paid to the fulfilling node's operator.
    /// @param callback IInferenceConsumer to call with the result, or zero for none.
    /// @param callbackGasLimit Exact gas for the callback.
    /// @return id The request id.
    function request(
        string calldata model,
        bytes calldata input,
        uint256 maxFee,
        address callback,
        uint32 callbackGasLimit
    ) external nonReentrant returns (uint256 id) {
        id = _request(address(0), model, input, maxFee, callback, callbackGasLimit);
    }

    /// @notice Requests an inference only `node` may fulfil; pulls `maxFee` from the caller.
    ///         `node` must be active and serve `model` now (it may still stop before fulfilling;
    ///         the fee is then refundable after the deadline).
    /// @param node The designated node's operator address (its registry key).
    /// @param model Model id as nodes list it in the registry.
    /// @param input Request body: plain text, or sealed to the node's attested HPKE key.
    /// @param maxFee Fee paid to the node's operator.
    /// @param callback IInferenceConsumer to call with the result, or zero for none.
    /// @param callbackGasLimit Exact gas for the callback.
    /// @return id The request id.
    function requestFor(
        address node,
        string calldata model,
        bytes calldata input,
        uint256 maxFee,
        address callback,
        uint32 callbackGasLimit
    ) external nonReentrant returns (uint256 id) {
        if (node == address(0)) revert ZeroAddress();
        if (!registry.isActive(node)) revert NodeNotActive();
        (bool served,,) = registry.priceOf(node, model);
        if (!served) revert ModelNotServed();
        id = _request(node, model, input, maxFee, callback, callbackGasLimit);
    }

    function _request(
        address node,
        string calldata model,
        bytes calldata input,
        uint256 maxFee,
        address callback,
        uint32 callbackGasLimit
    ) private returns (uint256 id) {
        uint256 mlen = bytes(model).length;
        if (mlen == 0 || mlen > MAX_MODEL_LENGTH) revert BadModel();
        if (callbackGasLimit > MAX_CALLBACK_GAS) revert CallbackGasTooHigh(callbackGasLimit);
        id = ++requestCount;
        uint64 deadline = uint64(block.timestamp) + timeout;
        Request storage r = _requests[id];
        r.requester = msg.sender;
        r.callback = callback;
        r.callbackGasLimit = callbackGasLimit;
        r.deadline = deadline;
        r.status = STATUS_PENDING;
        r.maxFee = maxFee;
        r.model = model;
        // Open requests leave the slot untouched (zero): they pay no fifth slot.
        if (node != address(0)) r.node = node;
        if (maxFee > 0) token.safeTransferFrom(msg.sender, address(this), maxFee);
        emit InferenceRequested(id, msg.sender, node, model, input, maxFee, callback, callbackGasLimit, deadline);
    }

    /// @notice Fulfils request `id` (caller: an active node operator serving the model, and the
    ///         designated node when the request names one).
    /// @param output The result bytes.
    /// @param signature EIP-712 signature of `resultDigest(id, keccak256(output), model)` by the
    ///        caller's registered signer.
    function fulfill(uint256 id, bytes calldata output, bytes calldata signature) external nonReentrant {
        Request storage r = _requests[id];
        bytes32 outputHash = _checkResult(r, id, output, signature);

        r.status = STATUS_FULFILLED;
        uint256 fee = r.maxFee;
        if (fee > 0) token.safeTransfer(msg.sender, fee);

        bool callbackOk;
        address callback = r.callback;
        if (callback != address(0)) {
            callbackOk = _callWithExactGas(
                callback, r.callbackGasLimit, abi.encodeCall(IInferenceConsumer.onInferenceResult, (id, output))
            );
        }
        emit InferenceFulfilled(id, msg.sender, outputHash, callbackOk);
    }

    /// @notice Refunds an unfulfilled request to its requester after the deadline (anyone may call).
    function refund(uint256 id) external nonReentrant {
        Request storage r = _requests[id];
        if (r.status != STATUS_PENDING) revert RequestNotPending(id);
        if (block.timestamp <= r.deadline) revert NotExpired(r.deadline);
        r.status = STATUS_REFUNDED;
        uint256 fee = r.maxFee;
        address requester = r.requester;
        if (fee > 0) token.safeTransfer(requester, fee);
        emit Refunded(id, requester, fee);
    }

    /// @notice The EIP-712 digest a node signs for a result.
    function resultDigest(uint256 requestId, bytes32 outputHash, string calldata model) external view returns (bytes32) {
        return _resultDigest(requestId, outputHash, keccak256(bytes(model)));
    }

    /// @notice A request (all zero if unknown).
    function getRequest(uint256 id) external view returns (Request memory) {
        return _requests[id];
    }

    /// @notice The EIP-712 domain separator.
    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    /// @dev All checks of `fulfill`; returns keccak256(output).
    function _checkResult(Request storage r, uint256 id, bytes calldata output, bytes calldata signature)
        private
        view
        returns (bytes32 outputHash)
    {
        if (r.status != STATUS_PENDING) revert RequestNotPending(id);
        if (block.timestamp > r.deadline) revert RequestExpired(id);
        address node = r.node;
        if (node != address(0) && node != msg.sender) revert NotDesignatedNode(node);
        if (!registry.isActive(msg.sender)) revert NodeNotActive();
        string memory model = r.model;
        (bool served,,) = registry.priceOf(msg.sender, model);
        if (!served) revert ModelNotServed();
        outputHash = keccak256(output);
        bytes32 digest = _resultDigest(id, outputHash, keccak256(bytes(model)));
        (address recovered, ECDSA.RecoverError err,) = ECDSA.tryRecover(digest, signature);
        address signer = registry.signerOf(msg.sender);
        if (err != ECDSA.RecoverError.NoError || recovered != signer || signer == address(0)) {
            revert BadResultSignature();
        }
    }

    function _resultDigest(uint256 requestId, bytes32 outputHash, bytes32 modelHash) private view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(INFERENCE_RESULT_TYPEHASH, requestId, outputHash, modelHash)));
    }

    /// @dev Calls `target` with exactly `gasAmount` gas, or reverts if that much cannot be given
    ///      (EIP-150 passes at most 63/64 of what is left). Return data is not copied. A target without
    ///      code is not called (returns false).
    function _callWithExactGas(address target, uint256 gasAmount, bytes memory data) private returns (bool ok) {
        if (target.code.length == 0) return false;
        bytes4 insufficient = InsufficientGasForCallback.selector;
        assembly ("memory-safe") {
            let g := gas()
            if lt(g, CALL_OVERHEAD) {
                mstore(0x00, insufficient)
                revert(0x00, 0x04)
            }
            g := sub(g, CALL_OVERHEAD)
            if iszero(gt(sub(g, div(g, 64)), gasAmount)) {
                mstore(0x00, insufficient)
                revert(0x00, 0x04)
            }
            ok := call(gasAmount, target, 0, add(data, 0x20), mload(data), 0, 0)
        }
    }
}
