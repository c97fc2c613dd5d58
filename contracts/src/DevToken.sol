// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title DevToken
/// @notice DEVNET ONLY payment and stake token: anyone may mint. 18 decimals. Deploys only on a local
///         chain (chain id 31337 or 1337).
contract DevToken is ERC20("Cloister Dev USD", "cUSD") {
    /// @notice Deployment on a chain other than 31337 / 1337.
    error NotLocalChain();

    constructor() {
        if (block.chainid != 31337 && block.chainid != 1337) revert NotLocalChain();
    }

    /// @notice Mints `amount` to `to`. Open to anyone: this token has no value.
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }
}
