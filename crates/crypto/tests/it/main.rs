//! Integration tests for `cloister-crypto`.

#![allow(clippy::unwrap_used, missing_docs)]

mod e2ee;
mod recover;
