//! Integration tests of the client against `EvilNode` (cloister-testkit), a node test double built
//! from real pieces, and of the verifying proxy and registry discovery in process.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs, unreachable_pub)]

mod discover;
mod hostile_gateway;
mod proxy;
mod refusals;
mod tls;
