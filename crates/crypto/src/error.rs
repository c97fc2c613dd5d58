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
    /// An Ed25519 signature was not 64 bytes of hex.
    #[error("ed25519 signature must be 64 bytes in hex")]
    MalformedEd25519Signature,
    /// An Ed25519 signature does not verify under the key for this message (or the key is not a
    /// valid Ed25519 point).
    #[error("ed25519 signature does not verify")]
    Ed25519Invalid,
    /// An address was not 20 bytes of hex.
    #[error("address must be 20 bytes in hex")]
    MalformedAddress,
    /// An AEAD tag did not verify: the ciphertext, its AAD, its position or the key is wrong.
    ///
    /// A wrong key (a request sealed to another node, a response opened with another request's
    /// keys) cannot be told apart from tampering: AEAD only says that the tag does not match.
    #[error("decryption failed: ciphertext tampered with, or sealed under another key")]
    Tampered,
    /// A response stream ended without its authenticated end marker.
    #[error("encrypted stream truncated: end marker missing")]
    Truncated,
    /// A response chunk authenticated, but at another position than the one expected.
    #[error("encrypted chunk out of order: expected chunk {expected}, got chunk {found}")]
    OutOfOrder {
        /// The counter the opener was waiting for.
        expected: u64,
        /// The counter the chunk was sealed under.
        found: u64,
    },
    /// This encapsulated key was already seen: the request is a replay.
    #[error("encrypted request replayed")]
    Replayed,
    /// The replay cache is full of unexpired entries; the request is refused rather than risking a
    /// replay being accepted.
    #[error("replay cache full")]
    ReplayCacheFull,
    /// A node's HPKE public key was not usable (not 32 bytes, or a low-order point).
    #[error("invalid E2EE public key")]
    InvalidPublicKey,
    /// An envelope's bytes do not have the layout of `docs/protocol.md` §8.
    #[error("malformed E2EE envelope: {0}")]
    MalformedEnvelope(&'static str),
    /// The operating system's random number generator failed (sealing a request needs a fresh
    /// ephemeral key).
    #[error("the operating system's random number generator failed")]
    Rng,
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
