//! The workspace's one secp256k1 signature recovery: a 32-byte digest and a 65-byte `r‖s‖v`
//! signature give the Ethereum [`Address`] that signed.
//!
//! Every path that asks "who signed this?" ends here: EIP-191 `personal_sign` texts
//! (`cloister_crypto::recover_personal` hashes the prefixed message, then calls
//! [`recover_address`]) and EIP-712 digests ([`crate::eip712::recover_signer`]).
//!
//! The rules are those of the contracts' OpenZeppelin `ECDSA.tryRecover`, so that a signature
//! accepted here is also accepted on chain: `v` is 27/28 (or the raw parity 0/1), `r` and `s` are
//! in `[1, n)`, and `s` is in the lower half of the order (a high-`s` signature is the malleable
//! twin of another and is refused, not normalised).
//!
//! ```
//! use cloister_types::recover::{RecoverError, recover_address};
//! let digest = [7u8; 32];
//! assert_eq!(recover_address(&digest, &[0xff; 65]), Err(RecoverError::BadRecoveryId(0xff)));
//! ```

use alloy_primitives::Address;
use secp256k1::ecdsa::{RecoverableSignature, RecoveryId};

/// secp256k1's group order n, big-endian.
const ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 0xba,
    0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36, 0x41, 0x41,
];
/// n / 2 (rounded down), big-endian: the largest low `s`.
const HALF_ORDER: [u8; 32] = [
    0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x5d,
    0x57, 0x6e, 0x73, 0x57, 0xa4, 0x50, 0x1d, 0xdf, 0xe9, 0x2f, 0x46, 0x68, 0x1b, 0x20, 0xa0,
];

/// libsecp256k1's verification context (its tables), built once per process.
fn context() -> &'static secp256k1::Secp256k1<secp256k1::VerifyOnly> {
    static CONTEXT: std::sync::OnceLock<secp256k1::Secp256k1<secp256k1::VerifyOnly>> =
        std::sync::OnceLock::new();
    CONTEXT.get_or_init(secp256k1::Secp256k1::verification_only)
}

/// Why a signature did not recover to an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecoverError {
    /// `v` was not 27, 28, 0 or 1.
    #[error("signature recovery id must be 27/28 (or 0/1), got {0}")]
    BadRecoveryId(u8),
    /// `r` or `s` is zero or not below the curve order.
    #[error("signature r or s is out of range")]
    ScalarOutOfRange,
    /// `s` is in the upper half of the curve order (a malleable signature).
    #[error("signature s is not in the lower half of the curve order")]
    HighS,
    /// No public key recovers from this signature and digest (`r` is not the x-coordinate of a
    /// curve point, or the recovered point is not a valid key).
    #[error("signature does not recover to a public key")]
    NoKey,
}

/// Recovers the address whose key produced `signature` (`r‖s‖v`) over `digest`.
///
/// Never panics, whatever the bytes: every malformed signature is a [`RecoverError`].
pub fn recover_address(digest: &[u8; 32], signature: &[u8; 65]) -> Result<Address, RecoverError> {
    let v = signature[64];
    let parity = match v {
        27 | 28 => v - 27,
        0 | 1 => v,
        other => return Err(RecoverError::BadRecoveryId(other)),
    };
    let recovery_id = RecoveryId::try_from(i32::from(parity)).map_err(|_| RecoverError::BadRecoveryId(v))?;
    let (r, s) = signature[..64].split_at(32);
    // Big-endian byte strings of equal length compare as the numbers they are.
    let in_range = |x: &[u8]| x.iter().any(|&b| b != 0) && x < ORDER.as_slice();
    if !in_range(r) || !in_range(s) {
        return Err(RecoverError::ScalarOutOfRange);
    }
    if s > HALF_ORDER.as_slice() {
        return Err(RecoverError::HighS);
    }
    // libsecp256k1 (C): recovery is on every verified answer's path, and it is several times
    // faster than k256 here (`cloister bench e2ee` prints both sides' steps).
    let sig = RecoverableSignature::from_compact(&signature[..64], recovery_id)
        .map_err(|_| RecoverError::ScalarOutOfRange)?;
    let key = context()
        .recover_ecdsa(secp256k1::Message::from_digest(*digest), &sig)
        .map_err(|_| RecoverError::NoKey)?;
    let uncompressed = key.serialize_uncompressed();
    Ok(Address::from_raw_public_key(&uncompressed[1..]))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use alloy_primitives::{hex, keccak256};
    use k256::ecdsa::SigningKey;

    /// secp256k1's order n, big-endian.
    const ORDER: [u8; 32] = hex!("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141");

    /// Anvil's dev key 1, whose address is `0x70997970C51812dc3A010C7d01b50e0d17dc79C8`.
    fn dev_key() -> SigningKey {
        SigningKey::from_slice(&hex!(
            "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
        ))
        .unwrap()
    }

    fn dev_address() -> Address {
        "0x70997970C51812dc3A010C7d01b50e0d17dc79C8".parse().unwrap()
    }

    fn sign(key: &SigningKey, digest: &[u8; 32]) -> [u8; 65] {
        let (sig, rec) = key.sign_prehash_recoverable(digest).unwrap();
        let mut out = [0u8; 65];
        out[..64].copy_from_slice(&sig.to_bytes());
        out[64] = 27 + rec.to_byte();
        out
    }

    /// The k256 recovery (with OpenZeppelin's rules) that `recover_address` replaced.
    fn k256_recover(digest: &[u8; 32], signature: &[u8; 65]) -> Option<Address> {
        use k256::ecdsa::{RecoveryId, Signature, VerifyingKey};
        use k256::elliptic_curve::scalar::IsHigh;
        let parity = match signature[64] {
            27 | 28 => signature[64] - 27,
            0 | 1 => signature[64],
            _ => return None,
        };
        let sig = Signature::from_slice(&signature[..64]).ok()?;
        if bool::from(sig.s().is_high()) {
            return None;
        }
        let key = VerifyingKey::recover_from_prehash(digest, &sig, RecoveryId::from_byte(parity)?).ok()?;
        Some(Address::from_public_key(&key))
    }

    #[test]
    fn half_order_is_half_the_order() {
        // n is odd: n >> 1, byte by byte from the top, carrying the low bit down.
        let mut half = [0u8; 32];
        let mut carry = 0u8;
        for (i, b) in ORDER.iter().enumerate() {
            half[i] = (b >> 1) | carry;
            carry = (b & 1) << 7;
        }
        assert_eq!(half, super::HALF_ORDER);
        assert_eq!(ORDER, super::ORDER);
    }

    /// `n - x` for a big-endian 32-byte `x < n`.
    fn order_minus(x: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        let mut borrow = 0i16;
        for i in (0..32).rev() {
            let d = i16::from(ORDER[i]) - i16::from(x[i]) - borrow;
            borrow = i16::from(d < 0);
            out[i] = d.rem_euclid(256) as u8;
        }
        out
    }

    #[test]
    fn recovers_a_known_key_with_either_v_encoding() {
        let digest = keccak256(b"one recovery function").0;
        let sig = sign(&dev_key(), &digest);
        assert_eq!(recover_address(&digest, &sig), Ok(dev_address()));
        let mut raw_parity = sig;
        raw_parity[64] -= 27;
        assert_eq!(recover_address(&digest, &raw_parity), Ok(dev_address()));
        // Another digest recovers to another address (or none), never to the signer.
        let other = keccak256(b"another message").0;
        assert_ne!(recover_address(&other, &sig), Ok(dev_address()));
    }

    #[test]
    fn malformed_signatures_are_errors() {
        let digest = keccak256(b"hostile bytes").0;
        let good = sign(&dev_key(), &digest);

        for v in [2u8, 26, 29, 35, 37, 0xff] {
            let mut bad = good;
            bad[64] = v;
            assert_eq!(
                recover_address(&digest, &bad),
                Err(RecoverError::BadRecoveryId(v))
            );
        }
        assert_eq!(
            recover_address(&digest, &[0xff; 65]),
            Err(RecoverError::BadRecoveryId(0xff))
        );
        let mut all_ff_v27 = [0xff; 65];
        all_ff_v27[64] = 27;
        assert_eq!(
            recover_address(&digest, &all_ff_v27),
            Err(RecoverError::ScalarOutOfRange)
        );
        assert_eq!(
            recover_address(&digest, &[0; 65]),
            Err(RecoverError::ScalarOutOfRange)
        );

        // r or s zero, or equal to n.
        for (range, value) in [
            (0..32, [0u8; 32]),
            (32..64, [0u8; 32]),
            (0..32, ORDER),
            (32..64, ORDER),
        ] {
            let mut bad = good;
            bad[range].copy_from_slice(&value);
            assert_eq!(
                recover_address(&digest, &bad),
                Err(RecoverError::ScalarOutOfRange)
            );
        }

        // The malleable twin (r, n - s, flipped v) is refused, as OpenZeppelin's ECDSA does.
        let mut twin = good;
        twin[32..64].copy_from_slice(&order_minus(&good[32..64]));
        twin[64] = if good[64] == 27 { 28 } else { 27 };
        assert_eq!(recover_address(&digest, &twin), Err(RecoverError::HighS));

        // An r with no curve point above it: x = 5 has no y on secp256k1 (5^3 + 7 = 132 is not a
        // square mod p).
        let mut no_point = good;
        no_point[..32].copy_from_slice(&[0; 32]);
        no_point[31] = 5;
        assert_eq!(recover_address(&digest, &no_point), Err(RecoverError::NoKey));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(digest in proptest::array::uniform32(0u8..), sig in proptest::collection::vec(0u8.., 65)) {
            let mut signature = [0u8; 65];
            signature.copy_from_slice(&sig);
            let _ = recover_address(&digest, &signature);
            signature[64] = 27 + (signature[64] & 1);
            let _ = recover_address(&digest, &signature);
        }

        /// Against k256, the pure-Rust implementation this replaced: the same address for the
        /// same bytes, or a refusal from both (near-valid signatures: real ones with bytes flipped).
        #[test]
        fn agrees_with_k256(secret in proptest::array::uniform32(1u8..), digest in proptest::array::uniform32(0u8..), flip in 0usize..80, bit in 0u8..8) {
            if let Ok(key) = SigningKey::from_slice(&secret) {
                let mut sig = sign(&key, &digest);
                if flip < 65 {
                    sig[flip] ^= 1 << bit;
                }
                proptest::prop_assert_eq!(recover_address(&digest, &sig).ok(), k256_recover(&digest, &sig));
            }
        }

        #[test]
        fn signatures_recover_to_their_signer(secret in proptest::array::uniform32(1u8..), digest in proptest::array::uniform32(0u8..)) {
            if let Ok(key) = SigningKey::from_slice(&secret) {
                let sig = sign(&key, &digest);
                proptest::prop_assert_eq!(
                    recover_address(&digest, &sig),
                    Ok(Address::from_public_key(key.verifying_key()))
                );
            }
        }
    }
}
