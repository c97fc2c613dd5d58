// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/// @title IInferenceConsumer
/// @notice Implemented by contracts that receive InferenceOracle results.
interface IInferenceConsumer {
    /// @notice Called by the oracle with exactly the requested callback gas. A revert here does not
    ///         undo the fulfilment or the node's payment.
    function onInferenceResult(uint256 id, bytes calldata output) external;
}
