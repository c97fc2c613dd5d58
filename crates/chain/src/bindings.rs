//! alloy bindings generated from the Foundry artifacts in `contracts/out/` (committed, so building
//! this crate needs no Solidity compiler). Editing an artifact rebuilds this module.

#![allow(missing_docs, unreachable_pub, clippy::too_many_arguments)]

use alloy::sol;

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
