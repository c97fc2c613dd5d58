//! Integration tests of the client against `EvilNode`, a node test double built from real pieces.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs, unreachable_pub)]

mod evil_node;
mod refusals;
