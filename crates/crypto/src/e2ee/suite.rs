//! RFC 9180 base mode for the envelope's one suite: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
//! ChaCha20-Poly1305, one message (sequence number 0) per context plus the exporter.
//!
//! Written here rather than taken from the `hpke` crate for speed, with the same bytes on the wire
//! (RFC 9180 Appendix A.2.1 and a cross-check against `hpke` in the tests):
//! - The receiver's public key is part of the KEM context. `hpke` computes it again from the secret
//!   at every decapsulation (a base-point multiplication); [`super::E2eeKeyPair`] holds it.
//! - Both sides' Diffie-Hellman maps the peer's Montgomery `u` to an Edwards point and multiplies
//!   there (curve25519-dalek's vectorised Edwards arithmetic, constant time in the scalar: AVX-512
//!   IFMA where the CPU has it, see `.cargo/config.toml`, else AVX2). The map needs only public
//!   data; a `u` on the twist, which no honest peer produces, goes through the ladder. Both give
//!   X25519's result (RFC 7748), which a test checks on random and low-order inputs.
//! - The sender's ephemeral public key is dalek's fixed-base multiplication (precomputed tables);
//!   its secret comes from the operating system (ring's RNG). Key and Diffie-Hellman together took
//!   43 µs here with IFMA and 56 µs with AVX2, against 59 µs for ring's assembly X25519 (which
//!   served the sender before), in one standalone loop.
//! - HKDF, HMAC and the AEAD are ring's.

use std::sync::OnceLock;

use curve25519_dalek::{EdwardsPoint, MontgomeryPoint};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use ring::{hkdf, hmac};
use zeroize::Zeroizing;

use super::{ENC_LEN, PUBLIC_KEY_LEN};
use crate::{Error, Result};

/// `"KEM"` ‖ I2OSP(kem_id = 0x0020, 2).
const KEM_SUITE: &[u8] = b"KEM\x00\x20";
/// `"HPKE"` ‖ kem_id 0x0020 ‖ kdf_id 0x0001 (HKDF-SHA256) ‖ aead_id 0x0003 (ChaCha20-Poly1305).
const HPKE_SUITE: &[u8] = b"HPKE\x00\x20\x00\x01\x00\x03";
const VERSION: &[u8] = b"HPKE-v1";
/// `mode_base`.
const MODE_BASE: u8 = 0x00;

/// ring's ChaCha20-Poly1305 under `key`: the request's AEAD here, the response chunks' in
/// `stream.rs`.
pub(crate) fn chacha20_poly1305_key(key: &[u8; 32]) -> LessSafeKey {
    // ring refuses only a key of the wrong length, and this one is 32 bytes by type.
    let Ok(unbound) = UnboundKey::new(&CHACHA20_POLY1305, key) else {
        unreachable!("a ChaCha20-Poly1305 key is 32 bytes")
    };
    LessSafeKey::new(unbound)
}

/// `LabeledExtract(salt, label, ikm)` = HMAC-SHA256(salt, "HPKE-v1" ‖ suite ‖ label ‖ ikm).
fn labeled_extract(suite: &[u8], salt: &[u8], label: &[u8], ikm: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut ctx = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, salt));
    for part in [VERSION, suite, label, ikm] {
        ctx.update(part);
    }
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

/// An HKDF output length for ring.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// `LabeledExpand(prk, label, info, L)` = HKDF-Expand(prk, I2OSP(L, 2) ‖ "HPKE-v1" ‖ suite ‖ label ‖
/// info, L), into `out` (L = its length, at most 32 everywhere in this protocol).
fn labeled_expand(suite: &[u8], prk: &[u8; 32], label: &[u8], info: &[u8], out: &mut [u8]) {
    let Ok(len) = u16::try_from(out.len()) else {
        unreachable!("outputs here are at most 32 bytes")
    };
    let len_bytes = len.to_be_bytes();
    let parts = [&len_bytes[..], VERSION, suite, label, info];
    let prk = hkdf::Prk::new_less_safe(hkdf::HKDF_SHA256, prk);
    // HKDF-SHA256 refuses only outputs over 255 × 32 bytes.
    match prk.expand(&parts, Len(out.len())).and_then(|okm| okm.fill(out)) {
        Ok(()) => {}
        Err(_) => unreachable!("outputs here are at most 32 bytes"),
    }
}

/// RFC 9180 §7.1.3 `DeriveKeyPair` for X25519: the secret is the expanded `ikm`, unclamped (X25519
/// clamps it at every use).
pub(crate) fn derive_secret(ikm: &[u8]) -> Zeroizing<[u8; 32]> {
    let prk = labeled_extract(KEM_SUITE, b"", b"dkp_prk", ikm);
    let mut secret = Zeroizing::new([0u8; 32]);
    labeled_expand(KEM_SUITE, &prk, b"sk", b"", secret.as_mut_slice());
    secret
}

/// X25519(secret, 9): the public key of `secret` (a fixed-base multiplication with precomputed
/// tables).
pub(crate) fn public_key(secret: &[u8; 32]) -> [u8; PUBLIC_KEY_LEN] {
    EdwardsPoint::mul_base_clamped(*secret).to_montgomery().to_bytes()
}

/// The arithmetic the receiver's X25519 runs on this CPU: curve25519-dalek's backend, which it
/// picks at run time among those compiled in (the benchmarks print it beside their figures).
pub(crate) fn x25519_backend() -> &'static str {
    #[cfg(all(target_arch = "x86_64", curve25519_dalek_backend = "avx512"))]
    if std::arch::is_x86_feature_detected!("avx512ifma") && std::arch::is_x86_feature_detected!("avx512vl") {
        return "AVX-512 IFMA";
    }
    #[cfg(all(target_arch = "x86_64", not(curve25519_dalek_backend = "serial")))]
    if std::arch::is_x86_feature_detected!("avx2") {
        return "AVX2";
    }
    "serial"
}

/// X25519(secret, u) (RFC 7748 §5), or `None` when the result is all zeros (`u` of low order:
/// RFC 9180 §7.1.4 requires the check).
pub(crate) fn x25519(secret: &[u8; 32], u: &[u8; 32]) -> Option<Zeroizing<[u8; 32]>> {
    let point = MontgomeryPoint(*u);
    // `to_edwards` depends only on the public `u`; sign 0 or 1 give ±P, whose multiples share `u`.
    let shared = match point.to_edwards(0) {
        Some(edwards) => edwards.mul_clamped(*secret).to_montgomery(),
        None => point.mul_clamped(*secret),
    };
    let shared = Zeroizing::new(shared.to_bytes());
    non_zero(shared)
}

/// `None` for an all-zero shared secret, compared without an early exit.
fn non_zero(shared: Zeroizing<[u8; 32]>) -> Option<Zeroizing<[u8; 32]>> {
    (shared.iter().fold(0u8, |acc, b| acc | b) != 0).then_some(shared)
}

/// DHKEM `ExtractAndExpand(dh, enc ‖ pkR)`: the KEM's shared secret.
fn kem_shared_secret(dh: &[u8; 32], enc: &[u8; ENC_LEN], pk_r: &[u8; PUBLIC_KEY_LEN]) -> Zeroizing<[u8; 32]> {
    let eae_prk = labeled_extract(KEM_SUITE, b"", b"eae_prk", dh);
    let mut kem_context = [0u8; ENC_LEN + PUBLIC_KEY_LEN];
    kem_context[..ENC_LEN].copy_from_slice(enc);
    kem_context[ENC_LEN..].copy_from_slice(pk_r);
    let mut shared = Zeroizing::new([0u8; 32]);
    labeled_expand(
        KEM_SUITE,
        &eae_prk,
        b"shared_secret",
        &kem_context,
        shared.as_mut_slice(),
    );
    shared
}

/// One HPKE context after `KeySchedule` (base mode, empty PSK): the AEAD key and nonce for the one
/// message at sequence number 0, and the exporter secret.
pub(crate) struct Context {
    key: LessSafeKey,
    base_nonce: [u8; 12],
    exporter_secret: Zeroizing<[u8; 32]>,
}

impl Context {
    fn new(shared_secret: &[u8; 32], info: &[u8]) -> Self {
        // Base mode has no PSK: the hash of its empty id is a constant of the suite.
        static PSK_ID_HASH: OnceLock<[u8; 32]> = OnceLock::new();
        let psk_id_hash = PSK_ID_HASH.get_or_init(|| *labeled_extract(HPKE_SUITE, b"", b"psk_id_hash", b""));
        let info_hash = labeled_extract(HPKE_SUITE, b"", b"info_hash", info);
        let mut context = [0u8; 65];
        context[0] = MODE_BASE;
        context[1..33].copy_from_slice(psk_id_hash);
        context[33..].copy_from_slice(&*info_hash);
        let secret = labeled_extract(HPKE_SUITE, shared_secret, b"secret", b"");
        let mut key = Zeroizing::new([0u8; 32]);
        labeled_expand(HPKE_SUITE, &secret, b"key", &context, key.as_mut_slice());
        let mut base_nonce = [0u8; 12];
        labeled_expand(HPKE_SUITE, &secret, b"base_nonce", &context, &mut base_nonce);
        let mut exporter_secret = Zeroizing::new([0u8; 32]);
        labeled_expand(
            HPKE_SUITE,
            &secret,
            b"exp",
            &context,
            exporter_secret.as_mut_slice(),
        );
        Self {
            key: chacha20_poly1305_key(&key),
            base_nonce,
            exporter_secret,
        }
    }

    /// Seals the context's one message (sequence number 0: the nonce is the base nonce).
    fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(plaintext.len() + super::TAG_LEN);
        out.extend_from_slice(plaintext);
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(self.base_nonce),
                Aad::from(aad),
                &mut out,
            )
            .map_err(|_| Error::MalformedEnvelope("request too large"))?;
        Ok(out)
    }

    /// Opens the context's one message; a wrong tag is [`Error::Tampered`].
    fn open(&self, ciphertext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        let mut buf = ciphertext.to_vec();
        let len = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(self.base_nonce),
                Aad::from(aad),
                &mut buf,
            )
            .map_err(|_| Error::Tampered)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }

    /// `Export(exporter_context, L)` into `out` (L = its length, at most 32 here).
    pub(crate) fn export(&self, exporter_context: &[u8], out: &mut [u8]) {
        labeled_expand(HPKE_SUITE, &self.exporter_secret, b"sec", exporter_context, out);
    }
}

/// `SetupBaseS` + `Seal`: a fresh ephemeral key from the operating system's RNG (ring). Returns
/// `enc`, the ciphertext and the context (for the exporter). A low-order `pk_r` is
/// [`Error::InvalidPublicKey`], a failed RNG [`Error::Rng`].
pub(crate) fn seal(
    pk_r: &[u8; PUBLIC_KEY_LEN],
    info: &[u8],
    plaintext: &[u8],
    aad: &[u8],
) -> Result<([u8; ENC_LEN], Vec<u8>, Context)> {
    let mut sk_e = Zeroizing::new([0u8; 32]);
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), sk_e.as_mut_slice())
        .map_err(|_| Error::Rng)?;
    seal_with(&sk_e, pk_r, info, plaintext, aad)
}

/// [`seal`] with the ephemeral key derived from `ikm_e` (`DeriveKeyPair`): for test vectors only,
/// since reusing an ephemeral key breaks replay protection and the response's confidentiality.
#[cfg(test)]
pub(crate) fn seal_deterministic(
    pk_r: &[u8; PUBLIC_KEY_LEN],
    info: &[u8],
    plaintext: &[u8],
    aad: &[u8],
    ikm_e: &[u8],
) -> Result<([u8; ENC_LEN], Vec<u8>, Context)> {
    seal_with(&derive_secret(ikm_e), pk_r, info, plaintext, aad)
}

/// `SetupBaseS` + `Seal` with the ephemeral secret `sk_e`: the one path of [`seal`] and of the
/// test vectors.
fn seal_with(
    sk_e: &[u8; 32],
    pk_r: &[u8; PUBLIC_KEY_LEN],
    info: &[u8],
    plaintext: &[u8],
    aad: &[u8],
) -> Result<([u8; ENC_LEN], Vec<u8>, Context)> {
    let enc = public_key(sk_e);
    let dh = x25519(sk_e, pk_r).ok_or(Error::InvalidPublicKey)?;
    let context = Context::new(&kem_shared_secret(&dh, &enc, pk_r), info);
    let ciphertext = context.seal(plaintext, aad)?;
    Ok((enc, ciphertext, context))
}

/// `SetupBaseR` + `Open` with the receiver's key pair. A low-order `enc` is
/// [`Error::MalformedEnvelope`], a wrong tag [`Error::Tampered`].
pub(crate) fn open(
    sk_r: &[u8; 32],
    pk_r: &[u8; PUBLIC_KEY_LEN],
    enc: &[u8; ENC_LEN],
    info: &[u8],
    ciphertext: &[u8],
    aad: &[u8],
) -> Result<(Vec<u8>, Context)> {
    let dh = x25519(sk_r, enc).ok_or(Error::MalformedEnvelope("encapsulated key is a low-order point"))?;
    let context = Context::new(&kem_shared_secret(&dh, enc, pk_r), info);
    let plaintext = context.open(ciphertext, aad)?;
    Ok((plaintext, context))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use hpke::{Deserializable, OpModeR, OpModeS, Serializable};
    use proptest::prelude::*;

    use super::*;

    type Kem = hpke::kem::X25519HkdfSha256;
    type Kdf = hpke::kdf::HkdfSha256;
    type Aead = hpke::aead::ChaCha20Poly1305;

    fn unhex<const N: usize>(text: &str) -> [u8; N] {
        hex::decode(text).unwrap().try_into().unwrap()
    }

    /// RFC 9180 Appendix A.2.1: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305, base
    /// mode, the first encryption.
    #[test]
    fn rfc9180_a_2_1() {
        let info = hex::decode("4f6465206f6e2061204772656369616e2055726e").unwrap();
        let ikm_e = hex::decode("909a9b35d3dc4713a5e72a4da274b55d3d3821a37e5d099e74a647db583a904b").unwrap();
        let ikm_r = hex::decode("1ac01f181fdf9f352797655161c58b75c656a6cc2716dcb66372da835542e1df").unwrap();
        let sk_r = derive_secret(&ikm_r);
        assert_eq!(
            hex::encode(*sk_r),
            "8057991eef8f1f1af18f4a9491d16a1ce333f695d4db8e38da75975c4478e0fb"
        );
        let pk_r = public_key(&sk_r);
        assert_eq!(
            hex::encode(pk_r),
            "4310ee97d88cc1f088a5576c77ab0cf5c3ac797f3d95139c6c84b5429c59662a"
        );
        assert_eq!(
            hex::encode(*derive_secret(&ikm_e)),
            "f4ec9b33b792c372c1d2c2063507b684ef925b8c75a42dbcbf57d63ccd381600"
        );
        let pt = hex::decode("4265617574792069732074727574682c20747275746820626561757479").unwrap();
        let aad = hex::decode("436f756e742d30").unwrap();
        let (enc, ct, sender) = seal_deterministic(&pk_r, &info, &pt, &aad, &ikm_e).unwrap();
        assert_eq!(
            hex::encode(enc),
            "1afa08d3dec047a643885163f1180476fa7ddb54c6a8029ea33f95796bf2ac4a"
        );
        assert_eq!(
            hex::encode(&ct),
            "1c5250d8034ec2b784ba2cfd69dbdb8af406cfe3ff938e131f0def8c8b60b4db21993c62ce81883d2dd1b51a28"
        );
        assert_eq!(hex::encode(sender.base_nonce), "5c4d98150661b848853b547f");
        let (opened, receiver) = open(&sk_r, &pk_r, &enc, &info, &ct, &aad).unwrap();
        assert_eq!(opened, pt);
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        sender.export(b"context", &mut a);
        receiver.export(b"context", &mut b);
        assert_eq!(a, b);
    }

    /// The RFC 7748 §5.2 X25519 test vector (a `u` with its top bit set, which X25519 ignores).
    #[test]
    fn rfc7748_x25519() {
        let scalar = unhex("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4");
        let u = unhex("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c");
        assert_eq!(
            hex::encode(*x25519(&scalar, &u).unwrap()),
            "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552"
        );
    }

    /// Points of low order (the `u` list of the X25519 low-order literature, canonical and not):
    /// the result is all zeros and refused, by the Edwards path and the ladder alike.
    #[test]
    fn low_order_points_are_refused() {
        let low_order = [
            "0000000000000000000000000000000000000000000000000000000000000000",
            "0100000000000000000000000000000000000000000000000000000000000000",
            "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
            "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
            "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        ];
        let secret = [0x42u8; 32];
        for u in low_order {
            assert!(x25519(&secret, &unhex(u)).is_none(), "{u}");
        }
        let pk_r = unhex::<32>(low_order[2]);
        assert!(matches!(
            seal(&pk_r, b"", b"x", b""),
            Err(Error::InvalidPublicKey)
        ));
        let node = derive_secret(b"node ikm of at least thirty-two bytes");
        let opened = open(&node, &public_key(&node), &pk_r, b"", &[0u8; 17], b"");
        assert!(matches!(opened, Err(Error::MalformedEnvelope(_))));
    }

    proptest! {
        /// The receiver's Diffie-Hellman equals the Montgomery ladder (x25519-dalek, which `hpke`
        /// uses) for any 32 bytes of `u`: points on the curve, on the twist, non-canonical ones.
        #[test]
        fn x25519_matches_the_ladder(secret in any::<[u8; 32]>(), u in any::<[u8; 32]>()) {
            let ladder = x25519_dalek::StaticSecret::from(secret)
                .diffie_hellman(&x25519_dalek::PublicKey::from(u));
            let ours = x25519(&secret, &u);
            if ladder.as_bytes() == &[0u8; 32] {
                prop_assert!(ours.is_none());
            } else {
                prop_assert_eq!(ours.map(|s| *s), Some(*ladder.as_bytes()));
            }
        }

        /// Interoperates with the `hpke` crate both ways: its sender to our receiver, our sender
        /// (a fresh random ephemeral key) to its receiver, with equal exports.
        #[test]
        fn interoperates_with_the_hpke_crate(
            ikm in any::<[u8; 32]>(),
            info in proptest::collection::vec(any::<u8>(), 0..40),
            pt in proptest::collection::vec(any::<u8>(), 0..300),
            aad in proptest::collection::vec(any::<u8>(), 0..20),
        ) {
            let sk_r = derive_secret(&ikm);
            let pk_r = public_key(&sk_r);
            let (their_sk, their_pk) = <Kem as hpke::Kem>::derive_keypair(&ikm);
            let their_pk_bytes: [u8; 32] = their_pk.to_bytes().into();
            prop_assert_eq!(their_pk_bytes, pk_r);

            let mut rng = rand_core_rng();
            let (enc, mut them) =
                hpke::setup_sender_with_rng::<Aead, Kdf, Kem>(&OpModeS::Base, &their_pk, &info, &mut rng)
                    .unwrap();
            let ct = them.seal(&pt, &aad).unwrap();
            let enc: [u8; 32] = enc.to_bytes().into();
            let (opened, us) = open(&sk_r, &pk_r, &enc, &info, &ct, &aad).unwrap();
            prop_assert_eq!(&opened, &pt);
            let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
            them.export(b"cloister", &mut a).unwrap();
            us.export(b"cloister", &mut b);
            prop_assert_eq!(a, b);

            let (enc, ct, us) = seal(&pk_r, &info, &pt, &aad).unwrap();
            let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&enc).unwrap();
            let mut them =
                hpke::setup_receiver::<Aead, Kdf, Kem>(&OpModeR::Base, &their_sk, &enc, &info).unwrap();
            prop_assert_eq!(them.open(&ct, &aad).unwrap(), pt);
            let mut a = [0u8; 12];
            let mut b = [0u8; 12];
            them.export(b"nonce", &mut a).unwrap();
            us.export(b"nonce", &mut b);
            prop_assert_eq!(a, b);
        }
    }

    /// The OS RNG in the `rand_core` 0.10 traits `hpke` takes.
    fn rand_core_rng() -> impl hpke::rand_core::CryptoRng {
        struct Os;
        impl hpke::rand_core::TryRng for Os {
            type Error = std::convert::Infallible;
            fn try_next_u32(&mut self) -> std::result::Result<u32, Self::Error> {
                Ok(rand::RngCore::next_u32(&mut rand::rngs::OsRng))
            }
            fn try_next_u64(&mut self) -> std::result::Result<u64, Self::Error> {
                Ok(rand::RngCore::next_u64(&mut rand::rngs::OsRng))
            }
            fn try_fill_bytes(&mut self, dst: &mut [u8]) -> std::result::Result<(), Self::Error> {
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, dst);
                Ok(())
            }
        }
        impl hpke::rand_core::TryCryptoRng for Os {}
        Os
    }
}
