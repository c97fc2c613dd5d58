//! [`Wallet`]: one client key that pays any node. The first time a request goes to a node's
//! operator, the wallet signs a spend authorization for it (an API key) within the overall budget;
//! the node's metering receipts are collected per authorization, and when one is nearly used up
//! the next request to that node gets a fresh one, as long as the budget allows.
//!
//! The budget bounds the sum of the authorizations' caps, not what was spent: a node can charge up
//! to the cap of every authorization it holds, so that sum is what the wallet risks.
//!
//! ```
//! use alloy_primitives::{Address, U256};
//! use cloister_client::wallet::{Wallet, WalletConfig};
//! let wallet = Wallet::new(WalletConfig {
//!     secret: [7u8; 32],
//!     chain_id: 31337,
//!     escrow: Address::repeat_byte(3),
//!     budget: U256::from(1_000u64),
//!     per_node: U256::from(400u64),
//!     expiry: 4_000_000_000,
//! })?;
//! let first = wallet.api_key_for(Address::repeat_byte(1))?;
//! assert_eq!(wallet.api_key_for(Address::repeat_byte(1))?, first, "one authorization per node");
//! wallet.api_key_for(Address::repeat_byte(2))?;
//! wallet.api_key_for(Address::repeat_byte(4))?; // 200 left: the third node gets 200
//! assert!(wallet.api_key_for(Address::repeat_byte(5)).is_err());
//! # Ok::<(), cloister_client::Error>(())
//! ```

use std::sync::Mutex;

use alloy_primitives::{Address, B256, U256};
use cloister_crypto::EnclaveKey;
use cloister_types::eip712::{ApiKey, Domain, SpendAuthorization, authorization_id, escrow_domain};

use crate::{Error, Result};

/// Why text is not a private key. The message never quotes the text: it is a secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretKeyError {
    /// A character that is not a hex digit (after an optional `0x`).
    #[error("a private key is hex (an optional 0x, then 64 hex digits); this has a non-hex character")]
    NotHex,
    /// Hex, but not 32 bytes.
    #[error("a private key is 32 bytes (64 hex digits); this has {digits} hex digits")]
    WrongLength {
        /// How many hex digits it has.
        digits: usize,
    },
}

/// Parses a secp256k1 private key written as hex: 64 hex digits, with or without a `0x` prefix,
/// surrounding whitespace ignored (a key file's newline). Whether the scalar is a valid key is
/// [`Wallet::new`]'s check.
///
/// ```
/// use cloister_client::wallet::parse_secret_key;
/// let key = parse_secret_key(&format!("0x{}\n", "07".repeat(32)))?;
/// assert_eq!(key, [7u8; 32]);
/// # Ok::<(), cloister_client::wallet::SecretKeyError>(())
/// ```
pub fn parse_secret_key(text: &str) -> std::result::Result<[u8; 32], SecretKeyError> {
    let text = text.trim();
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(SecretKeyError::NotHex);
    }
    let mut key = [0u8; 32];
    hex::decode_to_slice(digits, &mut key)
        .map_err(|_| SecretKeyError::WrongLength { digits: digits.len() })?;
    Ok(key)
}

/// What a wallet needs.
#[derive(Clone)]
pub struct WalletConfig {
    /// The client's secp256k1 private key (the escrow depositor).
    pub secret: [u8; 32],
    /// Chain id of the escrow's chain.
    pub chain_id: u64,
    /// The `Escrow` contract.
    pub escrow: Address,
    /// The most all authorizations together may allow (token base units).
    pub budget: U256,
    /// The cap of one authorization.
    pub per_node: U256,
    /// Expiry of every authorization (unix seconds).
    pub expiry: u64,
}

impl std::fmt::Debug for WalletConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalletConfig")
            .field("chain_id", &self.chain_id)
            .field("escrow", &self.escrow)
            .field("budget", &self.budget)
            .field("per_node", &self.per_node)
            .finish_non_exhaustive()
    }
}

/// One signed authorization and what its node's receipts say was used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The node's operator.
    pub node: Address,
    /// The authorization id (`Escrow.authorizationId`).
    pub id: B256,
    /// Its cap.
    pub cap: U256,
    /// The highest cumulative amount a receipt of this node showed.
    pub received: U256,
    /// The API key text (`ck1_...`).
    pub key: String,
}

impl Grant {
    /// Whether less than a tenth of the cap is left.
    fn nearly_used(&self) -> bool {
        self.received >= self.cap - self.cap / U256::from(10u64)
    }
}

/// A paying client key (see the module docs).
pub struct Wallet {
    key: EnclaveKey,
    domain: Domain,
    config: WalletConfig,
    grants: Mutex<Vec<Grant>>,
}

impl std::fmt::Debug for Wallet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wallet")
            .field("client", &self.key.address())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Wallet {
    /// A wallet; refuses a key that is not a secp256k1 scalar and a zero per-node cap.
    pub fn new(config: WalletConfig) -> Result<Self> {
        let key = EnclaveKey::from_secret_bytes(&config.secret)
            .map_err(|e| Error::Config(format!("the wallet key: {e}")))?;
        if config.per_node.is_zero() {
            return Err(Error::Config(
                "the per-node authorization cap must be above zero".into(),
            ));
        }
        Ok(Self {
            key,
            domain: escrow_domain(config.chain_id, config.escrow),
            config,
            grants: Mutex::new(Vec::new()),
        })
    }

    /// The client (depositor) address.
    pub fn client(&self) -> Address {
        self.key.address()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Grant>> {
        self.grants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The API key for node `operator`: its latest authorization while it has room, else a new one
    /// (capped at `per_node` and at what the budget has left). [`Error::BudgetExhausted`] when the
    /// budget has nothing left for it.
    pub fn api_key_for(&self, operator: Address) -> Result<String> {
        let mut grants = self.lock();
        if let Some(g) = grants.iter().rev().find(|g| g.node == operator)
            && !g.nearly_used()
        {
            return Ok(g.key.clone());
        }
        let allocated = grants.iter().fold(U256::ZERO, |sum, g| sum.saturating_add(g.cap));
        let left = self.config.budget.saturating_sub(allocated);
        let cap = left.min(self.config.per_node);
        if cap.is_zero() {
            return Err(Error::BudgetExhausted {
                budget: self.config.budget.to_string(),
                allocated: allocated.to_string(),
            });
        }
        let auth = SpendAuthorization {
            client: self.key.address(),
            node: operator,
            maxAmount: cap,
            expiry: self.config.expiry,
            salt: B256::from(rand::random::<[u8; 32]>()),
        };
        let id = authorization_id(&self.domain, &auth);
        let key = ApiKey::new(auth, self.key.sign_prehash(&id.0)).encode();
        tracing::info!(node = %operator, authorization = %id, %cap, "spend authorization signed");
        grants.push(Grant {
            node: operator,
            id,
            cap,
            received: U256::ZERO,
            key: key.clone(),
        });
        Ok(key)
    }

    /// Records a node's metering receipt (`{"authorization", "cumulative_amount", ..}`); receipts
    /// for authorizations this wallet did not sign, or that are not receipts, are ignored.
    pub fn record(&self, receipt: &serde_json::Value) {
        let id = receipt
            .get("authorization")
            .and_then(|v| v.as_str())
            .and_then(|s| s.parse::<B256>().ok());
        let amount = receipt
            .get("cumulative_amount")
            .and_then(|v| v.as_str())
            .and_then(|s| s.parse::<U256>().ok());
        let (Some(id), Some(amount)) = (id, amount) else {
            return;
        };
        if let Some(g) = self.lock().iter_mut().find(|g| g.id == id) {
            g.received = g.received.max(amount);
        }
    }

    /// Every authorization signed so far, with the receipts collected for it.
    pub fn grants(&self) -> Vec<Grant> {
        self.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn wallet(budget: u64, per_node: u64) -> Wallet {
        Wallet::new(WalletConfig {
            secret: [9; 32],
            chain_id: 31337,
            escrow: Address::repeat_byte(3),
            budget: U256::from(budget),
            per_node: U256::from(per_node),
            expiry: 4_000_000_000,
        })
        .unwrap()
    }

    #[test]
    fn keys_verify_under_the_escrow_domain_and_name_the_operator() {
        let w = wallet(1000, 100);
        let text = w.api_key_for(Address::repeat_byte(1)).unwrap();
        let key = ApiKey::decode(&text).unwrap();
        let id = key
            .verify(&escrow_domain(31337, Address::repeat_byte(3)))
            .unwrap();
        assert_eq!(key.auth.node, Address::repeat_byte(1));
        assert_eq!(key.auth.client, w.client());
        assert_eq!(key.auth.maxAmount, U256::from(100u64));
        assert_eq!(w.grants()[0].id, id);
    }

    #[test]
    fn a_nearly_used_authorization_is_topped_up_within_the_budget() {
        let w = wallet(250, 100);
        let node = Address::repeat_byte(1);
        let first = w.api_key_for(node).unwrap();
        let id = w.grants()[0].id;
        w.record(&serde_json::json!({"authorization": format!("{id:#x}"), "cumulative_amount": "89"}));
        assert_eq!(w.api_key_for(node).unwrap(), first, "11 of 100 left: still room");
        w.record(&serde_json::json!({"authorization": format!("{id:#x}"), "cumulative_amount": "90"}));
        w.record(&serde_json::json!({"authorization": format!("{id:#x}"), "cumulative_amount": "50"}));
        assert_eq!(w.grants()[0].received, U256::from(90u64), "receipts only go up");
        let second = w.api_key_for(node).unwrap();
        assert_ne!(second, first);
        let third = w.api_key_for(Address::repeat_byte(2)).unwrap();
        assert_eq!(ApiKey::decode(&third).unwrap().auth.maxAmount, U256::from(50u64));
        assert!(matches!(
            w.api_key_for(Address::repeat_byte(4)),
            Err(Error::BudgetExhausted { .. })
        ));
        let total = w.grants().iter().fold(U256::ZERO, |s, g| s + g.cap);
        assert_eq!(total, U256::from(250u64));
    }

    #[test]
    fn secret_keys_parse_with_or_without_0x_and_bad_ones_are_named() {
        let hex64 = "0123456789abcdefABCDEF0123456789abcdef0123456789abcdef0123456789";
        let want: [u8; 32] = hex::decode(hex64).unwrap().try_into().unwrap();
        for text in [
            hex64.to_owned(),
            format!("0x{hex64}"),
            format!("0X{hex64}"),
            format!("  0x{hex64}\n"),
        ] {
            assert_eq!(parse_secret_key(&text), Ok(want), "{text}");
        }
        for (text, err) in [
            ("", SecretKeyError::WrongLength { digits: 0 }),
            ("0x", SecretKeyError::WrongLength { digits: 0 }),
            (&hex64[..63], SecretKeyError::WrongLength { digits: 63 }),
            (&hex64[..62], SecretKeyError::WrongLength { digits: 62 }),
            (&format!("{hex64}00"), SecretKeyError::WrongLength { digits: 66 }),
            (&format!("0x0x{}", &hex64[..62]), SecretKeyError::NotHex),
            (&format!("g{}", &hex64[1..]), SecretKeyError::NotHex),
            (
                &format!("{} ", &hex64[..32]) as &str,
                SecretKeyError::WrongLength { digits: 32 },
            ),
            (
                &format!("{} {}", &hex64[..32], &hex64[32..]),
                SecretKeyError::NotHex,
            ),
            ("é".repeat(32).as_str(), SecretKeyError::NotHex),
        ] {
            assert_eq!(parse_secret_key(text), Err(err), "{text:?}");
        }
        // The message names the problem and never quotes the key.
        let secret = format!("{}zz", &hex64[..62]);
        let message = parse_secret_key(&secret).unwrap_err().to_string();
        assert!(
            message.contains("hex") && !message.contains(&hex64[..8]),
            "{message}"
        );
        // A parsed key is one a wallet takes.
        wallet_from(parse_secret_key(&format!("0x{}", "09".repeat(32))).unwrap());
    }

    fn wallet_from(secret: [u8; 32]) -> Wallet {
        Wallet::new(WalletConfig {
            secret,
            chain_id: 31337,
            escrow: Address::repeat_byte(3),
            budget: U256::from(10u64),
            per_node: U256::from(10u64),
            expiry: 4_000_000_000,
        })
        .unwrap()
    }

    #[test]
    fn foreign_or_malformed_receipts_change_nothing() {
        let w = wallet(100, 100);
        w.api_key_for(Address::repeat_byte(1)).unwrap();
        w.record(&serde_json::json!({"authorization": format!("{:#x}", B256::repeat_byte(1)), "cumulative_amount": "99"}));
        w.record(&serde_json::json!({"authorization": 5, "cumulative_amount": "x"}));
        assert_eq!(w.grants()[0].received, U256::ZERO);
    }
}
