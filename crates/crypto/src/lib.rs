//! The enclave signing key, Ethereum-style signatures, and the end-to-end encryption envelope
//! ([`e2ee`]).
//!
//! A node holds one secp256k1 key for its lifetime, generated in memory (or derived by the dstack
//! guest agent). The key is never serialised: [`EnclaveKey`] has no accessor for its secret and its
//! `Debug` prints only the address. Signatures are EIP-191 `personal_sign`, `r‖s‖v` with `v` 27/28.
//!
//! ```
//! use cloister_crypto::{EnclaveKey, recover_personal};
//! let key = EnclaveKey::generate();
//! let sig = key.sign_personal(b"hello");
//! assert_eq!(recover_personal(b"hello", &sig).unwrap(), key.address());
//! ```

pub mod e2ee;
pub mod ed25519;
mod error;
mod key;

pub use error::{Error, Result};
pub use key::{
    Address, EnclaveKey, Signature, format_address, keccak256, parse_signature, personal_message_hash,
    recover_personal,
};
