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
use k256::ecdsa::{RecoveryId, Signature, VerifyingKey};
use k256::elliptic_curve::scalar::IsHigh;

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
    let recovery_id = RecoveryId::from_byte(parity).ok_or(RecoverError::BadRecoveryId(v))?;
    let sig = Signature::from_slice(&signature[..64]).map_err(|_| RecoverError::ScalarOutOfRange)?;
    if bool::from(sig.s().is_high()) {
        return Err(RecoverError::HighS);
    }
    let key =
        VerifyingKey::recover_from_prehash(digest, &sig, recovery_id).map_err(|_| RecoverError::NoKey)?;
    Ok(Address::from_public_key(&key))
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
