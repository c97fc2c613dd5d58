//! libsecp256k1's ECDSA signing with the RFC 6979 nonce computed in Rust.
//!
//! libsecp256k1 derives its RFC 6979 nonce with its own portable C SHA-256: five HMACs, about 22
//! compressions, 4–5 µs of the node's ~25 µs signature here. The same HMAC-DRBG over
//! `sha2` (SHA-NI where the CPU has it) gives the same nonce, so the same signature, in a fraction
//! of that. libsecp256k1 takes a nonce function as a C callback; this module is the one place in
//! the crate that crosses into C for it, and allows `unsafe` for that alone.
//!
//! Only the first candidate nonce is answered here. Should libsecp256k1 ask for another (the
//! candidate was zero or ≥ n, or made r or s zero: probability below 2^-127), the callback fails
//! the call and [`sign_recoverable`] returns `None`; the caller then signs with the library's own
//! nonce function, which gives the signature RFC 6979 defines either way.
#![allow(unsafe_code)]

use k256::elliptic_curve::Curve;
use k256::elliptic_curve::bigint::Encoding;
use k256::elliptic_curve::ops::Reduce;
use secp256k1::ffi::types::{c_int, c_uchar, c_uint, c_void};
use secp256k1::ffi::{self, CPtr};
use secp256k1::{Secp256k1, SecretKey, SignOnly, ecdsa::RecoverableSignature};
use zeroize::Zeroizing;

/// RFC 6979 §3.2's nonce for `secret` and the 32-byte message digest (reduced mod n, as
/// `bits2octets` and libsecp256k1 both do), SHA-256, no extra data: the first valid candidate.
pub(super) fn rfc6979_nonce(secret: &[u8; 32], digest: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    let h = <k256::Scalar as Reduce<k256::U256>>::reduce_bytes(&(*digest).into()).to_bytes();
    let order: [u8; 32] = k256::Secp256k1::ORDER.to_be_bytes();
    let k = Zeroizing::new(rfc6979::generate_k::<sha2::Sha256, _>(
        secret.into(),
        &order.into(),
        &h,
        &[],
    ));
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&k);
    out
}

/// The nonce function libsecp256k1 calls: [`rfc6979_nonce`] for the first attempt of a plain
/// ECDSA signature, a failure (0) for anything else.
unsafe extern "C" fn nonce_function(
    nonce32: *mut c_uchar,
    msg32: *const c_uchar,
    key32: *const c_uchar,
    algo16: *const c_uchar,
    data: *mut c_void,
    attempt: c_uint,
) -> c_int {
    if attempt != 0 || !algo16.is_null() || !data.is_null() {
        return 0;
    }
    if nonce32.is_null() || msg32.is_null() || key32.is_null() {
        return 0;
    }
    // SAFETY: for ECDSA signing libsecp256k1 passes `msg32` and `key32` as the 32-byte message and
    // secret key of the call and `nonce32` as a 32-byte output buffer, all valid for the call's
    // duration; `[u8; 32]` has alignment 1, and none of them aliases another.
    let (msg, key, out) = unsafe {
        (
            &*msg32.cast::<[u8; 32]>(),
            &*key32.cast::<[u8; 32]>(),
            &mut *nonce32.cast::<[u8; 32]>(),
        )
    };
    out.copy_from_slice(&*rfc6979_nonce(key, msg));
    1
}

/// A recoverable ECDSA signature of `digest` by `secret` with the nonce of [`nonce_function`];
/// `None` when libsecp256k1 asked for a second nonce (the caller signs again the library's way).
pub(super) fn sign_recoverable(
    context: &Secp256k1<SignOnly>,
    digest: &[u8; 32],
    secret: &SecretKey,
) -> Option<RecoverableSignature> {
    let mut signature = ffi::recovery::RecoverableSignature::new();
    // SAFETY: `context` is a live signing context borrowed for the call; `signature` is a valid
    // output; `digest` and `secret` point to 32 readable bytes each; `nonce_function` has the
    // `NonceFn` signature and touches only the buffers the library hands it, and the null
    // `noncedata` is what it requires.
    let ok = unsafe {
        ffi::recovery::secp256k1_ecdsa_sign_recoverable(
            context.ctx().as_ptr(),
            &mut signature,
            digest.as_ptr(),
            secret.as_c_ptr(),
            Some(nonce_function),
            std::ptr::null(),
        )
    };
    (ok == 1).then(|| RecoverableSignature::from(signature))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn library_signature(digest: &[u8; 32], secret: &SecretKey) -> RecoverableSignature {
        Secp256k1::signing_only().sign_ecdsa_recoverable(secp256k1::Message::from_digest(*digest), secret)
    }

    proptest! {
        /// Byte-identical to libsecp256k1's own RFC 6979 signing, for any key and digest.
        #[test]
        fn signs_as_the_library_does(secret in any::<[u8; 32]>(), digest in any::<[u8; 32]>()) {
            let Ok(key) = SecretKey::from_byte_array(secret) else {
                return Ok(()); // zero or ≥ n: not a key
            };
            let ours = sign_recoverable(&Secp256k1::signing_only(), &digest, &key).unwrap();
            prop_assert_eq!(ours, library_signature(&digest, &key));
        }
    }

    /// A digest ≥ n is reduced before it seeds the DRBG, as libsecp256k1 and RFC 6979's
    /// `bits2octets` do.
    #[test]
    fn a_digest_above_the_order_is_reduced() {
        let key = SecretKey::from_byte_array([7; 32]).unwrap();
        let digest = [0xff; 32];
        let ours = sign_recoverable(&Secp256k1::signing_only(), &digest, &key).unwrap();
        assert_eq!(ours, library_signature(&digest, &key));
    }

    /// RFC 6979 Appendix A.2.5 has no secp256k1 case; the widely published secp256k1/SHA-256
    /// vector (key 1, message "Satoshi Nakamoto") pins the nonce itself.
    #[test]
    fn the_nonce_of_a_published_vector() {
        let mut secret = [0u8; 32];
        secret[31] = 1;
        let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(b"Satoshi Nakamoto").into();
        assert_eq!(
            hex::encode(*rfc6979_nonce(&secret, &digest)),
            "8f8a276c19f4149656b280621e358cce24f5f52542772691ee69063b74f15d15"
        );
    }

    /// Any attempt after the first, or a call with extra data, is refused rather than answered
    /// with a nonce libsecp256k1 would not have used.
    #[test]
    fn only_the_first_plain_attempt_is_answered() {
        let (msg, key, extra) = ([1u8; 32], [2u8; 32], [3u8; 32]);
        let mut out = [0u8; 32];
        let mut call = |data: *const u8, attempt| {
            // SAFETY: 32-byte buffers, as libsecp256k1 passes them.
            unsafe {
                nonce_function(
                    out.as_mut_ptr(),
                    msg.as_ptr(),
                    key.as_ptr(),
                    std::ptr::null(),
                    data.cast_mut().cast(),
                    attempt,
                )
            }
        };
        let first = call(std::ptr::null(), 0);
        let second = call(std::ptr::null(), 1);
        let with_data = call(extra.as_ptr(), 0);
        assert_eq!((first, second, with_data), (1, 0, 0));
    }
}
