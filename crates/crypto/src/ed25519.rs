//! Ed25519 signature checks (RFC 8032), for answers signed by Ed25519 keys: NEAR AI's model
//! servers sign with one when a client asks for `signing_algo=ed25519`.

use std::fmt;

use zeroize::Zeroizing;

use crate::{Error, Result};

/// An Ed25519 signing key (ACI receipts). Lives only in memory; `Debug` shows the public key.
pub struct Ed25519Key {
    pair: ring::signature::Ed25519KeyPair,
    public: [u8; 32],
}

impl Ed25519Key {
    /// A fresh key from 32 random bytes.
    pub fn generate() -> Self {
        let seed = Zeroizing::new(rand::random::<[u8; 32]>());
        Self::from_seed(&seed)
    }

    /// The key with RFC 8032 private key (seed) `seed`.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        use ring::signature::KeyPair as _;
        // `from_seed_unchecked` fails only on a seed of the wrong length; 32 bytes is right.
        #[allow(clippy::expect_used)]
        let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(seed)
            .expect("a 32-byte seed is a valid Ed25519 private key");
        let mut public = [0u8; 32];
        public.copy_from_slice(pair.public_key().as_ref());
        Self { pair, public }
    }

    /// The public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    /// The signature over `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(self.pair.sign(message).as_ref());
        out
    }
}

impl fmt::Debug for Ed25519Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ed25519Key")
            .field("public", &hex::encode(self.public))
            .finish_non_exhaustive()
    }
}

/// Parses a 64-byte Ed25519 signature written as 128 hex digits (an optional `0x` prefix is
/// allowed).
pub fn parse_ed25519_signature(s: &str) -> Result<[u8; 64]> {
    let s = s.trim();
    let s = s.strip_prefix("0x").unwrap_or(s);
    let mut out = [0u8; 64];
    hex::decode_to_slice(s, &mut out).map_err(|_| Error::MalformedEd25519Signature)?;
    Ok(out)
}

/// Checks that `signature` is `public_key`'s Ed25519 signature over exactly `message`.
///
/// ```
/// # use cloister_crypto::ed25519::verify_ed25519;
/// // RFC 8032 section 7.1, test 1 (empty message).
/// let key: [u8; 32] =
///     hex::decode("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a").unwrap().try_into().unwrap();
/// let sig: [u8; 64] = hex::decode(
///     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
/// ).unwrap().try_into().unwrap();
/// assert!(verify_ed25519(&key, b"", &sig).is_ok());
/// assert!(verify_ed25519(&key, b"x", &sig).is_err());
/// ```
pub fn verify_ed25519(public_key: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> Result<()> {
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public_key)
        .verify(message, signature)
        .map_err(|_| Error::Ed25519Invalid)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The ACI test-vector key (`receipt-1`, seed 32 × 0x02) has the published public key, and
    /// what it signs verifies.
    #[test]
    fn seeded_key_signs_what_verifies() {
        let key = Ed25519Key::from_seed(&[2; 32]);
        assert_eq!(
            hex::encode(key.public_key()),
            "8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394"
        );
        let sig = key.sign(b"m");
        assert!(verify_ed25519(&key.public_key(), b"m", &sig).is_ok());
        assert!(!format!("{key:?}").contains("0202"));
        assert_ne!(Ed25519Key::generate().public_key(), key.public_key());
    }

    /// RFC 8032 section 7.1, test 2 (one byte, 0x72).
    #[test]
    fn rfc8032_vector_verifies_and_any_change_fails() {
        let key: [u8; 32] = hex::decode("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c")
            .unwrap()
            .try_into()
            .unwrap();
        let sig = parse_ed25519_signature(
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da\
             085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
        )
        .unwrap();
        assert!(verify_ed25519(&key, &[0x72], &sig).is_ok());
        assert!(matches!(
            verify_ed25519(&key, &[0x73], &sig),
            Err(Error::Ed25519Invalid)
        ));
        let mut bad = sig;
        bad[10] ^= 1;
        assert!(verify_ed25519(&key, &[0x72], &bad).is_err());
        assert!(verify_ed25519(&[0; 32], &[0x72], &sig).is_err());
        assert!(parse_ed25519_signature("zz").is_err());
        assert!(parse_ed25519_signature(&"00".repeat(65)).is_err());
    }
}
