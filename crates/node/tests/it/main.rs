//! Integration tests of `cloister-node` over the real built-in engine (SmolLM2-135M, GGUF) and the
//! simulated TEE, on loopback sockets (reqwest) and through `Router::oneshot` where no socket is
//! needed.
//!
//! The model comes from `CLOISTER_TEST_MODEL`, else `<workspace>/models/SmolLM2-135M-Instruct.Q4_1.gguf`.
//! Without it every test prints why and passes, unless `CLOISTER_REQUIRE_MODEL=1`.

#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub, missing_docs)]

mod aci;
mod chat;
mod common;
mod completions;
mod concurrency;
mod e2ee;
mod embeddings;
mod errors;
mod gpu;
mod limits;
mod metering;
mod near_shapes;
mod onchain;
mod ops;
mod oracle_resume;
mod oracle_sealed;
mod reorg;
mod settlement;
mod shutdown;
mod start;
mod stream;
mod upstream;
mod upstream_tools;
