//! EIP-191 (`recover_personal`) and EIP-712 (`eip712::recover_signer`) are thin callers of the one
//! recovery function, `cloister_types::recover_address`: same key, same refusals.

use alloy_primitives::{B256, U256};
use cloister_crypto::{EnclaveKey, Error, personal_message_hash, recover_personal};
use cloister_types::eip712::{
    ApiKey, ApiKeyError, SpendAuthorization, authorization_id, escrow_domain, recover_signer,
};
use cloister_types::{Address, RecoverError, recover_address};
use proptest::prelude::*;

/// Anvil's dev key 1.
const DEV_KEY: [u8; 32] =
    alloy_primitives::hex!("59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d");
const DEV_ADDRESS: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";

/// secp256k1's order n, big-endian.
const ORDER: [u8; 32] =
    alloy_primitives::hex!("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141");

fn dev_key() -> EnclaveKey {
    EnclaveKey::from_secret_bytes(&DEV_KEY).unwrap()
}

#[test]
fn eip191_and_eip712_recover_the_same_key_through_one_function() {
    let key = dev_key();
    let expected: Address = DEV_ADDRESS.parse().unwrap();
    assert_eq!(key.address(), expected);
    assert_eq!(key.address_hex(), DEV_ADDRESS);

    // EIP-191: the prefixed message's digest, then the one function.
    let message = b"sha256(request):sha256(response)";
    let personal = key.sign_personal(message);
    assert_eq!(recover_personal(message, &personal).unwrap(), key.address());
    assert_eq!(
        recover_address(&personal_message_hash(message), &personal),
        Ok(expected)
    );

    // EIP-712: an API key's authorization id, signed by the same key.
    let escrow = escrow_domain(31337, Address::repeat_byte(0x44));
    let auth = SpendAuthorization {
        client: expected,
        node: Address::repeat_byte(0x22),
        maxAmount: U256::from(5_000_000u64),
        expiry: 1_900_000_000,
        salt: B256::repeat_byte(0x33),
    };
    let id = authorization_id(&escrow, &auth);
    let typed = key.sign_prehash(&id.0);
    assert_eq!(recover_signer(&id, &typed), Ok(expected));
    assert_eq!(recover_address(&id.0, &typed), Ok(expected));
    assert_eq!(ApiKey::new(auth, typed).verify(&escrow), Ok(id));

    // Each signature is bound to its own scheme: the EIP-191 signature is not one over the raw id.
    assert_ne!(recover_signer(&id, &personal).ok(), Some(expected));
}

/// `n - x` for a big-endian 32-byte `x < n`.
fn order_minus(x: &[u8]) -> [u8; 32] {
    (U256::from_be_bytes(ORDER) - U256::from_be_slice(x)).to_be_bytes::<32>()
}

#[test]
fn malformed_signatures_are_errors_on_both_paths() {
    let key = dev_key();
    let message = b"hostile";
    let digest = personal_message_hash(message);
    let good = key.sign_personal(message);

    let with = |edit: &dyn Fn(&mut [u8; 65])| {
        let mut sig = good;
        edit(&mut sig);
        sig
    };
    let cases: Vec<([u8; 65], RecoverError)> = vec![
        (with(&|s| s[64] = 29), RecoverError::BadRecoveryId(29)),
        (with(&|s| s[64] = 2), RecoverError::BadRecoveryId(2)),
        (with(&|s| s[64] = 37), RecoverError::BadRecoveryId(37)),
        ([0xff; 65], RecoverError::BadRecoveryId(0xff)),
        (with(&|s| s[..64].fill(0xff)), RecoverError::ScalarOutOfRange),
        (with(&|s| s[..32].fill(0)), RecoverError::ScalarOutOfRange),
        (with(&|s| s[32..64].fill(0)), RecoverError::ScalarOutOfRange),
        (
            with(&|s| s[..32].copy_from_slice(&ORDER)),
            RecoverError::ScalarOutOfRange,
        ),
        (
            with(&|s| s[32..64].copy_from_slice(&ORDER)),
            RecoverError::ScalarOutOfRange,
        ),
        (
            with(&|s| {
                let twin = order_minus(&s[32..64]);
                s[32..64].copy_from_slice(&twin);
                s[64] = 55 - s[64]; // 27 <-> 28
            }),
            RecoverError::HighS,
        ),
    ];
    for (sig, why) in cases {
        assert_eq!(recover_address(&digest, &sig), Err(why), "{sig:02x?}");
        let personal = recover_personal(message, &sig);
        match why {
            RecoverError::BadRecoveryId(v) => {
                assert!(matches!(personal, Err(Error::BadRecoveryId(x)) if x == v))
            }
            RecoverError::ScalarOutOfRange => assert!(matches!(personal, Err(Error::MalformedSignature))),
            _ => assert!(matches!(personal, Err(Error::RecoveryFailed))),
        }
        assert_eq!(
            recover_signer(&digest.into(), &sig),
            Err(ApiKeyError::BadSignature)
        );
    }
}

proptest! {
    /// Hostile bytes never panic, and both callers accept exactly what the one function accepts,
    /// returning the same address.
    #[test]
    fn callers_agree_with_the_one_function(
        message in proptest::collection::vec(any::<u8>(), 0..64),
        sig in proptest::collection::vec(any::<u8>(), 65),
        v in prop_oneof![Just(0u8), Just(1), Just(27), Just(28), any::<u8>()],
    ) {
        let mut signature = [0u8; 65];
        signature.copy_from_slice(&sig);
        signature[64] = v;
        let digest = personal_message_hash(&message);
        let one = recover_address(&digest, &signature).ok();
        prop_assert_eq!(recover_personal(&message, &signature).ok(), one);
        prop_assert_eq!(recover_signer(&digest.into(), &signature).ok(), one);
    }

    #[test]
    fn every_signature_of_a_key_recovers_on_both_paths(message in proptest::collection::vec(any::<u8>(), 0..64)) {
        let key = dev_key();
        let sig = key.sign_personal(&message);
        prop_assert_eq!(recover_personal(&message, &sig).ok(), Some(key.address()));
        let digest = personal_message_hash(&message);
        prop_assert_eq!(recover_signer(&digest.into(), &key.sign_prehash(&digest)).ok(), Some(key.address()));
    }
}

/// Signatures are RFC 6979 deterministic and byte-identical whatever the signer's internals (k256
/// with its precomputed tables, as the workspace builds it, or without): the vector was computed
/// independently with Python's `eth_keys` (`PrivateKey(b"\x07" * 32).sign_msg_hash(b"\x09" * 32)`).
#[test]
fn signatures_are_the_rfc6979_bytes_an_independent_implementation_gives() {
    let key = EnclaveKey::from_secret_bytes(&[7u8; 32]).unwrap();
    let sig = key.sign_prehash(&[9u8; 32]);
    let expected = alloy_primitives::hex!(
        "7157050929571a762ab6e06207f74db146f165fead17acc7afe23000a091dc37"
        "7b5faa50c021f3f9613f20531b8fc1a38744203a2f391c15e7b1455c3a296e4e"
    );
    assert_eq!(sig[..64], expected);
    assert_eq!(sig[64], 27, "recovery id 0, as v = 27");
}
