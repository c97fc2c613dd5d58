//! Integration tests of cloister-attest: conformance against the real attestation corpus in
//! `../shared/testdata/attestation/` (skipped with a reason on stderr where it is absent; a
//! failure instead when `CLOISTER_REQUIRE_CORPUS=1`), quote parsing of every corpus quote, report
//! binding, and the evidence sources against test doubles (a fake configfs-tsm kernel, a fake
//! dstack guest agent, a test double of Intel PCS).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod corpus;

mod conformance;
mod gpu;
mod measure;
mod measurements;
mod negative;
mod nras;
mod parsing;
mod report_cases;
mod reports;

#[cfg(feature = "collect")]
mod configfs;
#[cfg(feature = "collect")]
mod dstack_agent;
#[cfg(feature = "fetch")]
mod pcs_test_double;
