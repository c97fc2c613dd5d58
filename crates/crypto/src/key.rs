use std::fmt;

use k256::ecdsa::{SigningKey, VerifyingKey};
use sha3::{Digest, Keccak256};
use zeroize::Zeroizing;

use cloister_types::RecoverError;

use crate::{Error, Result};

mod nonce;

pub use cloister_types::Address;

/// A 65-byte `r‖s‖v` signature, `v` in {27, 28}.
pub type Signature = [u8; 65];

/// Keccak-256.
pub fn keccak256(data: &[u8]) -> [u8; 32] {
    Keccak256::digest(data).into()
}

/// The EIP-191 version 0x45 digest: keccak256("\x19Ethereum Signed Message:\n" ‖ len ‖ message).
pub fn personal_message_hash(message: &[u8]) -> [u8; 32] {
    let mut h = Keccak256::new();
    h.update(b"\x19Ethereum Signed Message:\n");
    h.update(message.len().to_string().as_bytes());
    h.update(message);
    h.finalize().into()
}

fn address_of(key: &VerifyingKey) -> Address {
    Address::from_public_key(key)
}

/// EIP-55 mixed-case `0x` address.
pub fn format_address(addr: &Address) -> String {
    addr.to_checksum(None)
}

/// Parses `0x` + 130 hex digits into a signature.
pub fn parse_signature(s: &str) -> Result<Signature> {
    let s = s.trim();
    let s = s.strip_prefix("0x").unwrap_or(s);
    let mut out = [0u8; 65];
    hex::decode_to_slice(s, &mut out).map_err(|_| Error::MalformedSignature)?;
    Ok(out)
}

/// Recovers the address that signed `message` with EIP-191 `personal_sign`: the prefixed
/// message's digest ([`personal_message_hash`]) goes to the workspace's one recovery function,
/// [`cloister_types::recover_address`].
pub fn recover_personal(message: &[u8], sig: &Signature) -> Result<Address> {
    let digest = personal_message_hash(message);
    cloister_types::recover_address(&digest, sig).map_err(|e| match e {
        RecoverError::BadRecoveryId(v) => Error::BadRecoveryId(v),
        RecoverError::ScalarOutOfRange => Error::MalformedSignature,
        _ => Error::RecoveryFailed,
    })
}

/// libsecp256k1's signing context (its precomputed tables), built once per process.
fn signing_context() -> &'static secp256k1::Secp256k1<secp256k1::SignOnly> {
    static CONTEXT: std::sync::OnceLock<secp256k1::Secp256k1<secp256k1::SignOnly>> =
        std::sync::OnceLock::new();
    CONTEXT.get_or_init(secp256k1::Secp256k1::signing_only)
}

/// The node's signing key. Lives only in memory; `Debug` shows the address, never the secret.
///
/// Signatures come from libsecp256k1 (the faster signer on the node's hot path); the k256 key is
/// the same secret, kept for the public key. Both sign RFC 6979 with low `s`, so the bytes are the
/// same either way (pinned by tests against an independent implementation).
pub struct EnclaveKey {
    inner: SigningKey,
    signer: secp256k1::SecretKey,
    address: Address,
}

impl Drop for EnclaveKey {
    fn drop(&mut self) {
        // k256's key zeroizes itself; this is libsecp256k1's copy.
        self.signer.non_secure_erase();
    }
}

impl EnclaveKey {
    /// A fresh random key from the OS RNG.
    pub fn generate() -> Self {
        loop {
            // Never retried in practice: every k256 key is a libsecp256k1 key.
            if let Ok(key) = Self::from_signing_key(SigningKey::random(&mut rand::rngs::OsRng)) {
                return key;
            }
        }
    }

    /// A key from 32 secret bytes (for the dstack `GetKey` derivation). The input is not kept.
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self> {
        let bytes = Zeroizing::new(bytes.to_vec());
        let inner = SigningKey::from_slice(&bytes).map_err(|_| Error::InvalidSecretKey)?;
        Self::from_signing_key(inner)
    }

    fn from_signing_key(inner: SigningKey) -> Result<Self> {
        let address = address_of(inner.verifying_key());
        let secret = Zeroizing::new(inner.to_bytes());
        // Same curve, same scalar range: a k256 key is always a valid libsecp256k1 key.
        let signer =
            secp256k1::SecretKey::from_byte_array((*secret).into()).map_err(|_| Error::InvalidSecretKey)?;
        Ok(Self {
            inner,
            signer,
            address,
        })
    }

    /// The Ethereum address of this key.
    pub fn address(&self) -> Address {
        self.address
    }

    /// The EIP-55 `0x` address.
    pub fn address_hex(&self) -> String {
        format_address(&self.address)
    }

    /// The uncompressed SEC1 public key (65 bytes).
    pub fn public_key_uncompressed(&self) -> Vec<u8> {
        self.inner
            .verifying_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec()
    }

    /// Signs a 32-byte digest (RFC 6979 deterministic nonce, low `s`); returns `r‖s‖v` with `v`
    /// in {27, 28}.
    pub fn sign_prehash(&self, digest: &[u8; 32]) -> Signature {
        let context = signing_context();
        // The nonce in Rust (SHA-NI) where it can be; libsecp256k1's own in the < 2^-127 case that
        // needs a second candidate: the same RFC 6979 signature either way (`key/nonce.rs`).
        let signature = nonce::sign_recoverable(context, digest, &self.signer).unwrap_or_else(|| {
            context.sign_ecdsa_recoverable(secp256k1::Message::from_digest(*digest), &self.signer)
        });
        let (recovery, rs) = signature.serialize_compact();
        let mut out = [0u8; 65];
        out[..64].copy_from_slice(&rs);
        // The recovery id is 0..=3, and 0 or 1 for any signature a real key makes.
        out[64] = 27 + u8::try_from(i32::from(recovery)).unwrap_or(0);
        out
    }

    /// EIP-191 `personal_sign` over `message`.
    pub fn sign_personal(&self, message: &[u8]) -> Signature {
        self.sign_prehash(&personal_message_hash(message))
    }

    /// `personal_sign` as `0x`-prefixed hex.
    pub fn sign_personal_hex(&self, message: &[u8]) -> String {
        format!("0x{}", hex::encode(self.sign_personal(message)))
    }
}

impl fmt::Debug for EnclaveKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnclaveKey")
            .field("address", &self.address_hex())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector_matches_ethereum_tooling() {
        // Private key 0x..01 has the well-known address 0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf.
        let mut sk = [0u8; 32];
        sk[31] = 1;
        let key = EnclaveKey::from_secret_bytes(&sk).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(key.address_hex(), "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf");
        // EIP-191 prefix digest of "hello", as computed by ethers/web3 hashMessage.
        assert_eq!(
            hex::encode(personal_message_hash(b"hello")),
            "50b2c43fd39106bafbba0da34fc430e1f91e3c96ea2acee2bc34119f92b37750"
        );
    }

    #[test]
    fn libsecp256k1_signatures_are_k256_signatures_byte_for_byte() {
        // Two implementations of RFC 6979 + low-s: the node signs with libsecp256k1, k256 checks.
        for round in 0u8..64 {
            let key = EnclaveKey::generate();
            let mut digest = [round; 32];
            digest[..8].copy_from_slice(&u64::from(round).wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
            let (sig, rec) = key
                .inner
                .sign_prehash_recoverable(&digest)
                .unwrap_or_else(|e| panic!("k256: {e}"));
            let ours = key.sign_prehash(&digest);
            assert_eq!(&ours[..64], &sig.to_bytes()[..], "round {round}");
            assert_eq!(ours[64], 27 + rec.to_byte(), "round {round}");
        }
    }

    #[test]
    fn sign_and_recover_round_trip_and_tamper() {
        let key = EnclaveKey::generate();
        let sig = key.sign_personal(b"abc:def");
        assert_eq!(recover_personal(b"abc:def", &sig).ok(), Some(key.address()));
        assert_ne!(recover_personal(b"abc:deg", &sig).ok(), Some(key.address()));
        let mut bad = sig;
        bad[64] = 5;
        assert!(matches!(
            recover_personal(b"abc:def", &bad),
            Err(Error::BadRecoveryId(5))
        ));
        assert!(parse_signature("0x1234").is_err());
        let hexsig = key.sign_personal_hex(b"x");
        assert_eq!(parse_signature(&hexsig).ok(), Some(key.sign_personal(b"x")));
    }

    #[test]
    fn debug_never_prints_secret() {
        let sk = [0x5a; 32];
        let key = EnclaveKey::from_secret_bytes(&sk).unwrap_or_else(|e| panic!("{e}"));
        let dbg = format!("{key:?} {key:#?}");
        assert!(dbg.contains("address"));
        assert!(!dbg.to_lowercase().contains("5a5a5a5a"), "{dbg}");
        assert!(!dbg.contains("90, 90, 90"), "{dbg}");
    }
}
