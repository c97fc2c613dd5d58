use thiserror::Error;

/// Errors from key handling and signature checks.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// Secret key bytes were not a valid secp256k1 scalar.
    #[error("invalid secret key")]
    InvalidSecretKey,
    /// A signature was not 65 bytes of hex (`0x` + r‖s‖v).
    #[error("signature must be 65 bytes (r||s||v) in hex")]
    MalformedSignature,
    /// `v` was not 0, 1, 27 or 28.
    #[error("signature recovery id must be 27/28 (or 0/1), got {0}")]
    BadRecoveryId(u8),
    /// No public key recovers from this signature.
    #[error("signature does not recover to a public key")]
    RecoveryFailed,
    /// An address was not 20 bytes of hex.
    #[error("address must be 20 bytes in hex")]
    MalformedAddress,
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
