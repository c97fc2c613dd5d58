//! Attestation for Cloister: collecting TEE evidence on a node, and verifying it anywhere.
//!
//! A node proves that its signing key lives in genuine, up-to-date Intel TDX hardware by serving
//! a quote whose 64-byte report_data binds that key's address and the client's nonce. This crate
//! has both halves of that:
//!
//! - **Verification** (pure: no async, no file system, no clock) — [`quote`] decodes TDX v4/v5 and
//!   SGX v3 quotes, [`verify`] checks a quote with dcap-qvl against Intel collateral and a
//!   [`verify::Policy`], [`report`] checks a whole attestation report (nonce, address binding,
//!   GPU evidence nonce), [`gpu`] checks NVIDIA SPDM evidence locally and [`nras`] checks NVIDIA
//!   Remote Attestation Service tokens (ES384 against NVIDIA's JWKS). Every verdict holds
//!   [`check::Checks`]: a list of [`check::Check`]s, each named by a typed [`check::CheckId`]
//!   whose `Display` is its human name, with one definition of "passed"
//!   ([`check::Checks::passed`]); verdicts fail closed. dcap-qvl's single call is reported as one
//!   check per step ([`check::QuoteCheck::DCAP`]).
//! - **Collection** (feature `collect`, default) — [`collect::Attester`] with configfs-tsm
//!   ([`collect::tdx`]), dstack guest agent ([`collect::dstack`]) and simulated
//!   ([`collect::simulated`]) sources, picked by [`collect::detect`].
//! - [`collateral`] loads Intel collateral from JSON and (feature `fetch`) downloads it from a
//!   PCCS or Intel PCS, through the one size-limited HTTP read (`http`, feature `fetch`).
//!
//! Simulated quotes ([`simulated`]) exist for development on machines without a TEE. They are
//! labelled in every place they appear and every verifier refuses them unless its policy says
//! [`verify::Policy::dev_allow_simulated`].
//!
//! ```
//! use cloister_attest::check::{CheckId, QuoteCheck};
//! use cloister_attest::simulated::simulated_quote;
//! use cloister_attest::verify::{Policy, verify_quote};
//! use cloister_types::{Nonce, ReportData};
//!
//! let nonce = Nonce([7; 32]);
//! let quote = simulated_quote(&ReportData::new(cloister_types::Address::repeat_byte(0xab), nonce));
//!
//! // The production policy refuses simulated evidence, and names the check that failed.
//! let verdict = verify_quote(&quote, None, 1_700_000_000, &Policy::default());
//! assert!(!verdict.passed());
//! let failed = verdict.first_failure().unwrap();
//! assert_eq!(failed.id, CheckId::Quote(QuoteCheck::NotSimulated));
//! assert_eq!(failed.id.to_string(), "not simulated");
//!
//! // A development verifier may accept it, with a warning.
//! let verdict = verify_quote(&quote, None, 1_700_000_000, &Policy::dev_allow_simulated());
//! assert!(verdict.passed());
//! assert_eq!(verdict.quote.unwrap().report_data()[32..], nonce.0);
//! ```

pub mod aci;
pub mod check;
pub mod collateral;
#[cfg(feature = "fetch")]
pub mod collateral_cache;
#[cfg(feature = "collect")]
pub mod collect;
mod error;
pub mod eventlog;
pub mod gpu;
#[cfg(feature = "fetch")]
pub mod http;
pub mod measure;
pub mod measurements;
pub mod nras;
pub mod quote;
pub mod report;
pub mod simulated;
pub mod tls;
pub mod verify;

pub use error::{Error, Result};
