//! EIP-712 structs that the contracts check, their domains and digests, and the API key.
//!
//! - [`SpendAuthorization`]: signed by a client, checked by `Escrow`; its digest is the
//!   authorization id ([`authorization_id`]).
//! - [`UsageVoucher`]: signed by a node's enclave key over a cumulative amount ([`voucher_digest`]).
//! - [`InferenceResult`]: signed by a node's enclave key for `InferenceOracle` ([`result_digest`]).
//!
//! Field order and names match the Solidity type strings exactly; a change here without the same
//! change in `contracts/` makes every signature fail on chain.
//!
//! An [`ApiKey`] is a signed [`SpendAuthorization`] that an OpenAI SDK sends as its `Bearer`
//! token: `"ck1_"` followed by unpadded base64url of a JSON object
//! `{"auth":{"client","node","maxAmount","expiry","salt"},"signature"}` (addresses, salt and
//! signature as `0x` hex; `maxAmount` as a decimal string, since it is a `uint256`).
//!
//! ```
//! use cloister_types::eip712::{SpendAuthorization, escrow_domain, authorization_id};
//! use alloy_primitives::{Address, B256, U256};
//! let auth = SpendAuthorization {
//!     client: Address::repeat_byte(1),
//!     node: Address::repeat_byte(2),
//!     maxAmount: U256::from(1_000u64),
//!     expiry: 1_900_000_000,
//!     salt: B256::ZERO,
//! };
//! let id = authorization_id(&escrow_domain(31337, Address::repeat_byte(3)), &auth);
//! assert_ne!(id, B256::ZERO);
//! ```

use alloy_primitives::{Address, B256, U256, keccak256};
use alloy_sol_types::{Eip712Domain, SolStruct, sol};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

pub use alloy_sol_types::Eip712Domain as Domain;

sol! {
    /// A client's permission for one node to charge its escrow up to `maxAmount` until `expiry`.
    /// `node` is the node's operator address (the registry key), not its enclave signer.
    #[derive(Debug, PartialEq, Eq)]
    struct SpendAuthorization {
        address client;
        address node;
        uint256 maxAmount;
        uint64 expiry;
        bytes32 salt;
    }

    /// The cumulative amount a node has metered against one authorization.
    #[derive(Debug, PartialEq, Eq)]
    struct UsageVoucher {
        bytes32 authorization;
        uint256 cumulativeAmount;
    }

    /// A node's answer to an on-chain inference request.
    #[derive(Debug, PartialEq, Eq)]
    struct InferenceResult {
        uint256 requestId;
        bytes32 outputHash;
        string model;
    }
}

/// EIP-712 domain name of `Escrow`.
pub const ESCROW_DOMAIN_NAME: &str = "Cloister Escrow";
/// EIP-712 domain name of `InferenceOracle`.
pub const ORACLE_DOMAIN_NAME: &str = "Cloister InferenceOracle";
/// EIP-712 domain version of both contracts.
pub const DOMAIN_VERSION: &str = "1";
/// Prefix of an encoded [`ApiKey`].
pub const API_KEY_PREFIX: &str = "ck1_";
/// Longest encoded API key accepted (a real one is about 450 characters).
pub const API_KEY_MAX_LEN: usize = 2048;

fn domain(name: &'static str, chain_id: u64, contract: Address) -> Eip712Domain {
    Eip712Domain::new(
        Some(name.into()),
        Some(DOMAIN_VERSION.into()),
        Some(U256::from(chain_id)),
        Some(contract),
        None,
    )
}

/// The domain of the `Escrow` at `escrow` on `chain_id`.
pub fn escrow_domain(chain_id: u64, escrow: Address) -> Eip712Domain {
    domain(ESCROW_DOMAIN_NAME, chain_id, escrow)
}

/// The domain of the `InferenceOracle` at `oracle` on `chain_id`.
pub fn oracle_domain(chain_id: u64, oracle: Address) -> Eip712Domain {
    domain(ORACLE_DOMAIN_NAME, chain_id, oracle)
}

/// The digest a client signs, and the id under which `Escrow` tracks the authorization
/// (`Escrow.authorizationId`).
pub fn authorization_id(escrow: &Eip712Domain, auth: &SpendAuthorization) -> B256 {
    auth.eip712_signing_hash(escrow)
}

/// The digest a node's enclave key signs for a voucher (`Escrow.voucherDigest`).
pub fn voucher_digest(escrow: &Eip712Domain, authorization: B256, cumulative_amount: U256) -> B256 {
    UsageVoucher {
        authorization,
        cumulativeAmount: cumulative_amount,
    }
    .eip712_signing_hash(escrow)
}

/// `keccak256(output)`, the hash an [`InferenceResult`] carries.
pub fn output_hash(output: &[u8]) -> B256 {
    keccak256(output)
}

/// The digest a node's enclave key signs for an oracle answer (`InferenceOracle.resultDigest`).
pub fn result_digest(oracle: &Eip712Domain, request_id: U256, output: &[u8], model: &str) -> B256 {
    InferenceResult {
        requestId: request_id,
        outputHash: output_hash(output),
        model: model.to_owned(),
    }
    .eip712_signing_hash(oracle)
}

/// Recovers the address that produced a 65-byte `r‖s‖v` signature (`v` 27/28 or 0/1) over an
/// EIP-712 `digest`, by the workspace's one [`recover_address`](crate::recover::recover_address)
/// (high-`s` signatures are refused, as the contracts' `ECDSA.tryRecover` refuses them).
pub fn recover_signer(digest: &B256, signature: &[u8; 65]) -> Result<Address, ApiKeyError> {
    crate::recover::recover_address(&digest.0, signature).map_err(|_| ApiKeyError::BadSignature)
}

/// Why an API key was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApiKeyError {
    /// The text does not start with `ck1_`.
    #[error("API key must start with \"{API_KEY_PREFIX}\"")]
    BadPrefix,
    /// Longer than [`API_KEY_MAX_LEN`].
    #[error("API key is longer than {API_KEY_MAX_LEN} characters")]
    TooLong,
    /// The part after the prefix is not unpadded base64url.
    #[error("API key is not valid base64url")]
    BadBase64,
    /// The decoded bytes are not the API key JSON object.
    #[error("API key JSON is malformed: {0}")]
    BadJson(String),
    /// A field has the wrong shape (named).
    #[error("API key field `{0}` is malformed")]
    BadField(&'static str),
    /// The signature is malformed or does not recover to a key.
    #[error("API key signature is malformed")]
    BadSignature,
    /// The signature recovers to an address other than `client`.
    #[error("API key is signed by {recovered}, not by its client {client}")]
    WrongSigner {
        /// The authorization's client.
        client: Address,
        /// Who actually signed.
        recovered: Address,
    },
}

/// A signed [`SpendAuthorization`]: what a client hands to an OpenAI SDK as its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    /// The authorization.
    pub auth: SpendAuthorization,
    /// The client's signature over [`authorization_id`], `r‖s‖v` with `v` in {27, 28}.
    pub signature: [u8; 65],
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireKey {
    auth: WireAuth,
    signature: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct WireAuth {
    client: String,
    node: String,
    max_amount: String,
    expiry: u64,
    salt: String,
}

fn parse_hex<const N: usize>(s: &str, field: &'static str) -> Result<[u8; N], ApiKeyError> {
    let s = s.strip_prefix("0x").ok_or(ApiKeyError::BadField(field))?;
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).map_err(|_| ApiKeyError::BadField(field))?;
    Ok(out)
}

impl ApiKey {
    /// Builds a key from an authorization and a signature, normalising `v` to 27/28.
    pub fn new(auth: SpendAuthorization, mut signature: [u8; 65]) -> Self {
        if signature[64] < 27 {
            signature[64] += 27;
        }
        Self { auth, signature }
    }

    /// The authorization id under `escrow`.
    pub fn authorization_id(&self, escrow: &Eip712Domain) -> B256 {
        authorization_id(escrow, &self.auth)
    }

    /// Checks that the signature is the client's over the authorization under `escrow`;
    /// returns the authorization id. Expiry and balance are the caller's checks.
    pub fn verify(&self, escrow: &Eip712Domain) -> Result<B256, ApiKeyError> {
        let id = self.authorization_id(escrow);
        let recovered = recover_signer(&id, &self.signature)?;
        if recovered != self.auth.client {
            return Err(ApiKeyError::WrongSigner {
                client: self.auth.client,
                recovered,
            });
        }
        Ok(id)
    }

    /// `"ck1_" + base64url(JSON)`.
    pub fn encode(&self) -> String {
        let wire = WireKey {
            auth: WireAuth {
                client: format!("{:#x}", self.auth.client),
                node: format!("{:#x}", self.auth.node),
                max_amount: self.auth.maxAmount.to_string(),
                expiry: self.auth.expiry,
                salt: format!("{:#x}", self.auth.salt),
            },
            signature: format!("0x{}", hex::encode(self.signature)),
        };
        // Serialising a struct of strings and integers cannot fail.
        let json = serde_json::to_vec(&wire).unwrap_or_default();
        format!("{API_KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(json))
    }

    /// Parses an encoded key (the signature is not checked: see [`ApiKey::verify`]).
    pub fn decode(text: &str) -> Result<Self, ApiKeyError> {
        let text = text.trim();
        if text.len() > API_KEY_MAX_LEN {
            return Err(ApiKeyError::TooLong);
        }
        let body = text.strip_prefix(API_KEY_PREFIX).ok_or(ApiKeyError::BadPrefix)?;
        let json = URL_SAFE_NO_PAD.decode(body).map_err(|_| ApiKeyError::BadBase64)?;
        let wire: WireKey = serde_json::from_slice(&json).map_err(|e| ApiKeyError::BadJson(e.to_string()))?;
        let max_amount: U256 = wire
            .auth
            .max_amount
            .parse()
            .map_err(|_| ApiKeyError::BadField("maxAmount"))?;
        if wire.auth.max_amount.starts_with("0x") {
            return Err(ApiKeyError::BadField("maxAmount"));
        }
        let signature: [u8; 65] = parse_hex(&wire.signature, "signature")?;
        if !matches!(signature[64], 27 | 28) {
            return Err(ApiKeyError::BadField("signature"));
        }
        Ok(Self {
            auth: SpendAuthorization {
                client: Address::from(parse_hex::<20>(&wire.auth.client, "client")?),
                node: Address::from(parse_hex::<20>(&wire.auth.node, "node")?),
                maxAmount: max_amount,
                expiry: wire.auth.expiry,
                salt: B256::from(parse_hex::<32>(&wire.auth.salt, "salt")?),
            },
            signature,
        })
    }
}

impl std::str::FromStr for ApiKey {
    type Err = ApiKeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::decode(s)
    }
}

impl std::fmt::Display for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.encode())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// Independent EIP-712: type hashes from the literal type strings, words encoded by hand.
    fn word_u(v: u64) -> [u8; 32] {
        let mut w = [0u8; 32];
        w[24..].copy_from_slice(&v.to_be_bytes());
        w
    }
    fn word_a(a: Address) -> [u8; 32] {
        let mut w = [0u8; 32];
        w[12..].copy_from_slice(a.as_slice());
        w
    }
    fn manual_domain_separator(name: &str, chain_id: u64, contract: Address) -> [u8; 32] {
        let th =
            keccak256(b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
        let mut buf = Vec::new();
        buf.extend_from_slice(th.as_slice());
        buf.extend_from_slice(keccak256(name.as_bytes()).as_slice());
        buf.extend_from_slice(keccak256(b"1").as_slice());
        buf.extend_from_slice(&word_u(chain_id));
        buf.extend_from_slice(&word_a(contract));
        keccak256(&buf).0
    }
    fn manual_digest(ds: [u8; 32], struct_hash: [u8; 32]) -> B256 {
        let mut buf = vec![0x19, 0x01];
        buf.extend_from_slice(&ds);
        buf.extend_from_slice(&struct_hash);
        keccak256(&buf)
    }

    fn sample_auth() -> SpendAuthorization {
        SpendAuthorization {
            client: Address::repeat_byte(0x11),
            node: Address::repeat_byte(0x22),
            maxAmount: U256::from(5_000_000u64),
            expiry: 1_900_000_000,
            salt: B256::repeat_byte(0x33),
        }
    }

    #[test]
    fn authorization_id_matches_hand_encoding() {
        let escrow = Address::repeat_byte(0x44);
        let auth = sample_auth();
        let mut buf = Vec::new();
        buf.extend_from_slice(
            keccak256(
                b"SpendAuthorization(address client,address node,uint256 maxAmount,uint64 expiry,bytes32 salt)",
            )
            .as_slice(),
        );
        buf.extend_from_slice(&word_a(auth.client));
        buf.extend_from_slice(&word_a(auth.node));
        buf.extend_from_slice(&word_u(5_000_000));
        buf.extend_from_slice(&word_u(1_900_000_000));
        buf.extend_from_slice(auth.salt.as_slice());
        let expected = manual_digest(
            manual_domain_separator(ESCROW_DOMAIN_NAME, 31337, escrow),
            keccak256(&buf).0,
        );
        assert_eq!(authorization_id(&escrow_domain(31337, escrow), &auth), expected);
        // Another chain id gives another id: a key cannot be replayed across chains.
        assert_ne!(authorization_id(&escrow_domain(10, escrow), &auth), expected);
    }

    #[test]
    fn voucher_digest_matches_hand_encoding() {
        let escrow = Address::repeat_byte(0x44);
        let auth_id = B256::repeat_byte(0x55);
        let mut buf = Vec::new();
        buf.extend_from_slice(
            keccak256(b"UsageVoucher(bytes32 authorization,uint256 cumulativeAmount)").as_slice(),
        );
        buf.extend_from_slice(auth_id.as_slice());
        buf.extend_from_slice(&word_u(777));
        let expected = manual_digest(
            manual_domain_separator(ESCROW_DOMAIN_NAME, 31337, escrow),
            keccak256(&buf).0,
        );
        assert_eq!(
            voucher_digest(&escrow_domain(31337, escrow), auth_id, U256::from(777u64)),
            expected
        );
    }

    #[test]
    fn result_digest_matches_hand_encoding() {
        let oracle = Address::repeat_byte(0x66);
        let output = b"the answer is 42";
        let mut buf = Vec::new();
        buf.extend_from_slice(
            keccak256(b"InferenceResult(uint256 requestId,bytes32 outputHash,string model)").as_slice(),
        );
        buf.extend_from_slice(&word_u(9));
        buf.extend_from_slice(keccak256(output).as_slice());
        buf.extend_from_slice(keccak256(b"smollm2-135m").as_slice());
        let expected = manual_digest(
            manual_domain_separator(ORACLE_DOMAIN_NAME, 31337, oracle),
            keccak256(&buf).0,
        );
        assert_eq!(
            result_digest(
                &oracle_domain(31337, oracle),
                U256::from(9u64),
                output,
                "smollm2-135m"
            ),
            expected
        );
    }

    /// A fixed secp256k1 signature made with anvil's dev key 1 is recovered to its address.
    fn sign_with_dev_key(digest: B256) -> [u8; 65] {
        use alloy_primitives::hex;
        use k256::ecdsa::SigningKey;
        let sk = SigningKey::from_slice(&hex!(
            "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
        ))
        .unwrap();
        let (sig, rec) = sk.sign_prehash_recoverable(digest.as_slice()).unwrap();
        let mut out = [0u8; 65];
        out[..64].copy_from_slice(&sig.to_bytes());
        out[64] = 27 + rec.to_byte();
        out
    }

    #[test]
    fn api_key_round_trip_and_verify() {
        let escrow = escrow_domain(31337, Address::repeat_byte(0x44));
        let dev1: Address = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8".parse().unwrap();
        let mut auth = sample_auth();
        auth.client = dev1;
        auth.maxAmount = U256::MAX;
        let sig = sign_with_dev_key(authorization_id(&escrow, &auth));
        let key = ApiKey::new(auth, sig);
        let text = key.encode();
        assert!(text.starts_with("ck1_"));
        assert!(text.len() < API_KEY_MAX_LEN);
        let back: ApiKey = text.parse().unwrap();
        assert_eq!(back, key);
        assert_eq!(
            back.verify(&escrow).unwrap(),
            authorization_id(&escrow, &back.auth)
        );

        // Same key under another escrow: the signature recovers to someone else.
        let other = escrow_domain(31337, Address::repeat_byte(0x45));
        assert!(matches!(
            back.verify(&other),
            Err(ApiKeyError::WrongSigner { .. })
        ));
        // A changed amount is refused likewise.
        let mut tampered = back;
        tampered.auth.maxAmount = U256::from(1u64);
        assert!(matches!(
            tampered.verify(&escrow),
            Err(ApiKeyError::WrongSigner { .. })
        ));
    }

    #[test]
    fn api_key_with_a_malformed_signature_is_refused_not_panicked() {
        let escrow = escrow_domain(31337, Address::repeat_byte(0x44));
        let auth = sample_auth();
        let good = sign_with_dev_key(authorization_id(&escrow, &auth));
        // The malleable twin (r, n - s, flipped v): OpenZeppelin's ECDSA refuses it on chain, so
        // the node must refuse it before serving.
        let order: [u8; 32] =
            alloy_primitives::hex!("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141");
        let high_s = U256::from_be_bytes(order) - U256::from_be_slice(&good[32..64]);
        let mut twin = good;
        twin[32..64].copy_from_slice(&high_s.to_be_bytes::<32>());
        twin[64] = 55 - twin[64]; // 27 <-> 28
        let id = authorization_id(&escrow, &auth);
        assert_eq!(
            crate::recover::recover_address(&id.0, &twin),
            Err(crate::RecoverError::HighS)
        );
        let mut zero_r = good;
        zero_r[..32].fill(0);
        let mut bad_v = good;
        bad_v[64] = 29;
        let mut all_ff = [0xff; 65];
        all_ff[64] = 27;
        for sig in [twin, zero_r, bad_v, all_ff, [0xff; 65], [0; 65]] {
            let key = ApiKey {
                auth: auth.clone(),
                signature: sig,
            };
            assert_eq!(key.verify(&escrow), Err(ApiKeyError::BadSignature));
            assert_eq!(
                recover_signer(&authorization_id(&escrow, &auth), &sig),
                Err(ApiKeyError::BadSignature)
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn api_key_text_round_trips(
            client in proptest::array::uniform20(0u8..),
            node in proptest::array::uniform20(0u8..),
            max in proptest::array::uniform32(0u8..),
            expiry in 0u64..,
            salt in proptest::array::uniform32(0u8..),
            sig in proptest::collection::vec(0u8.., 65),
        ) {
            let mut signature = [0u8; 65];
            signature.copy_from_slice(&sig);
            signature[64] = 27 + (signature[64] & 1);
            let key = ApiKey::new(
                SpendAuthorization {
                    client: Address::from(client),
                    node: Address::from(node),
                    maxAmount: U256::from_be_bytes(max),
                    expiry,
                    salt: B256::from(salt),
                },
                signature,
            );
            proptest::prop_assert_eq!(ApiKey::decode(&key.encode()), Ok(key));
        }

        #[test]
        fn api_key_decode_never_panics(text in ".{0,600}") {
            let _ = ApiKey::decode(&text);
            let _ = ApiKey::decode(&format!("ck1_{text}"));
        }
    }

    #[test]
    fn api_key_garbage_is_refused_by_name() {
        assert_eq!(ApiKey::decode("sk-abc"), Err(ApiKeyError::BadPrefix));
        assert_eq!(ApiKey::decode("ck1_***"), Err(ApiKeyError::BadBase64));
        assert_eq!(ApiKey::decode(&"ck1_".repeat(1000)), Err(ApiKeyError::TooLong));
        let junk = format!("ck1_{}", URL_SAFE_NO_PAD.encode(b"{\"auth\":1}"));
        assert!(matches!(ApiKey::decode(&junk), Err(ApiKeyError::BadJson(_))));
        let good = ApiKey::new(sample_auth(), [27; 65]).encode();
        let json = URL_SAFE_NO_PAD.decode(&good[4..]).unwrap();
        let text = String::from_utf8(json).unwrap();
        for (from, to, field) in [
            ("\"maxAmount\":\"5000000\"", "\"maxAmount\":\"-1\"", "maxAmount"),
            ("\"maxAmount\":\"5000000\"", "\"maxAmount\":\"0x10\"", "maxAmount"),
            ("\"client\":\"0x", "\"client\":\"0xzz", "client"),
            ("\"salt\":\"0x", "\"salt\":\"", "salt"),
        ] {
            let bad = text.replacen(from, to, 1);
            assert_ne!(bad, text, "{from}");
            let enc = format!("ck1_{}", URL_SAFE_NO_PAD.encode(bad));
            assert_eq!(ApiKey::decode(&enc), Err(ApiKeyError::BadField(field)), "{field}");
        }
    }
}
