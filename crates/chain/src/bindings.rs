//! alloy bindings generated from the Foundry artifacts in `contracts/out/` (committed, so building
//! this crate needs no Solidity compiler). Editing an artifact rebuilds this module.

#![allow(missing_docs, unreachable_pub, clippy::too_many_arguments)]

use alloy::sol;

sol!(
    /// The ERC-20 functions Cloister calls on its payment token (OpenZeppelin's
    /// `IERC20Metadata`): any standard token binds, whatever its decimals.
    #[sol(rpc)]
    #[derive(Debug)]
    interface IERC20Metadata {
        function balanceOf(address account) external view returns (uint256);
        function allowance(address owner, address spender) external view returns (uint256);
        function approve(address spender, uint256 value) external returns (bool);
        function decimals() external view returns (uint8);
        function symbol() external view returns (string);
    }
);

// DEVNET ONLY (deployment and minting); the node and CLI call the token through IERC20Metadata.
sol!(
    #[sol(rpc, abi)]
    #[derive(Debug)]
    DevToken,
    "../../contracts/out/DevToken.sol/DevToken.json"
);

sol!(
    #[sol(rpc, abi)]
    #[derive(Debug)]
    SimulatedQuoteVerifier,
    "../../contracts/out/SimulatedQuoteVerifier.sol/SimulatedQuoteVerifier.json"
);

sol!(
    #[sol(rpc, abi)]
    #[derive(Debug)]
    NodeRegistry,
    "../../contracts/out/NodeRegistry.sol/NodeRegistry.json"
);

sol!(
    #[sol(rpc, abi)]
    #[derive(Debug)]
    Escrow,
    "../../contracts/out/Escrow.sol/Escrow.json"
);

sol!(
    #[sol(rpc, abi)]
    #[derive(Debug)]
    InferenceOracle,
    "../../contracts/out/InferenceOracle.sol/InferenceOracle.json"
);

sol!(
    #[sol(rpc, abi)]
    #[derive(Debug)]
    ExampleConsumer,
    "../../contracts/out/ExampleConsumer.sol/ExampleConsumer.json"
);

/// The production quote verifier (its own module: its artifact repeats `IQuoteVerifier`'s types).
pub mod automata {
    use alloy::sol;

    sol!(
        #[sol(rpc, abi)]
        #[derive(Debug)]
        AutomataDcapAdapter,
        "../../contracts/out/AutomataDcapAdapter.sol/AutomataDcapAdapter.json"
    );
}
