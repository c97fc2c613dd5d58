// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {InferenceOracle} from "./InferenceOracle.sol";
import {IInferenceConsumer} from "./IInferenceConsumer.sol";

/// @title ExampleConsumer
/// @notice Minimal InferenceOracle client: `ask` takes the fee from the caller, requests an inference
///         with itself as callback, and keeps the last answer per request id.
contract ExampleConsumer is IInferenceConsumer {
    using SafeERC20 for IERC20;

    /// @notice Gas given to `onInferenceResult` (enough to store a few KiB of output).
    uint32 public constant CALLBACK_GAS = 2_000_000;

    /// @notice The oracle.
    InferenceOracle public immutable oracle;
    /// @notice The oracle's payment token.
    IERC20 public immutable token;

    /// @notice Answer per request id.
    mapping(uint256 id => bytes output) public answers;
    /// @notice Whether a request was answered.
    mapping(uint256 id => bool) public answered;
    /// @notice Who asked each request.
    mapping(uint256 id => address) public askedBy;

    event Asked(uint256 indexed id, address indexed asker, string model, bytes input);
    event Answered(uint256 indexed id, bytes output);

    /// @notice `onInferenceResult` from someone other than the oracle.
    error NotOracle();

    constructor(InferenceOracle oracle_) {
        oracle = oracle_;
        token = oracle_.token();
    }

    /// @notice Asks the oracle; pulls `fee` from the caller (approve this contract first).
    function ask(string calldata model, bytes calldata input, uint256 fee) external returns (uint256 id) {
        if (fee > 0) {
            token.safeTransferFrom(msg.sender, address(this), fee);
            token.forceApprove(address(oracle), fee);
        }
        id = oracle.request(model, input, fee, address(this), CALLBACK_GAS);
        askedBy[id] = msg.sender;
        emit Asked(id, msg.sender, model, input);
    }

    /// @inheritdoc IInferenceConsumer
    function onInferenceResult(uint256 id, bytes calldata output) external {
        if (msg.sender != address(oracle)) revert NotOracle();
        answers[id] = output;
        answered[id] = true;
        emit Answered(id, output);
    }
}
