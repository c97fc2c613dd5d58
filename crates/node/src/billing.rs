//! Paid access: API keys (signed `SpendAuthorization`s), deposit checks, metering into the ledger.
//!
//! With billing on, every chat request needs `Authorization: Bearer ck1_…`. The key must decode,
//! carry the client's signature under this chain's `Escrow` domain, name this node's operator, not
//! be expired, and the client must have a deposit (checked on chain, cached briefly) and budget left
//! on the authorization. After the engine answers, the usage is priced at the node's registered
//! prices and charged to the ledger — durably — before the response's signature is produced; the
//! client gets the signed cumulative voucher as a receipt.

pub mod ledger;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use alloy_primitives::{Address, B256, U256};
use async_trait::async_trait;
use axum::http::{HeaderMap, header};
use cloister_crypto::EnclaveKey;
use cloister_types::eip712::{ApiKey, Domain};
use cloister_types::openai::Usage;

pub use ledger::{Ledger, LedgerError, Receipt, ResignReport, Voucher};

/// Reads client deposits (the `Escrow` contract, in production).
#[async_trait]
pub trait DepositSource: Send + Sync + 'static {
    /// The client's escrow balance, in token units.
    async fn balance(&self, client: Address) -> Result<U256, String>;
}

/// A model's prices, in token units per token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Price {
    /// Per prompt token.
    pub input: U256,
    /// Per completion token.
    pub output: U256,
}

impl Price {
    /// The cost of `usage`.
    pub fn cost(&self, usage: &Usage) -> U256 {
        self.input
            .saturating_mul(U256::from(usage.prompt_tokens))
            .saturating_add(self.output.saturating_mul(U256::from(usage.completion_tokens)))
    }
}

/// Why a paid request was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BillingRefusal {
    /// No `Authorization: Bearer` header.
    #[error("an API key is required (Authorization: Bearer ck1_…)")]
    MissingKey,
    /// The key does not decode, or its signature is not the client's.
    #[error("invalid API key: {0}")]
    InvalidKey(String),
    /// The key authorizes another node.
    #[error("the API key authorizes node {0}, not this one")]
    WrongNode(Address),
    /// The key's expiry has passed.
    #[error("the API key expired at {0}")]
    Expired(u64),
    /// The client has no deposit in escrow.
    #[error("client {0} has no deposit in escrow")]
    NoDeposit(Address),
    /// The authorization's `maxAmount` is used up.
    #[error("the API key's spend limit is used up")]
    SpendLimit,
    /// The chain could not be asked for the deposit.
    #[error("deposit check failed: {0}")]
    DepositCheck(String),
    /// The ledger failed; nothing was signed.
    #[error("ledger: {0}")]
    Ledger(String),
    /// The requested model has no registered price.
    #[error("model {0} has no price on this node")]
    NoPrice(String),
}

impl BillingRefusal {
    /// The OpenAI error `code`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingKey => "missing_api_key",
            Self::InvalidKey(_) => "invalid_api_key",
            Self::WrongNode(_) => "api_key_wrong_node",
            Self::Expired(_) => "api_key_expired",
            Self::NoDeposit(_) => "insufficient_deposit",
            Self::SpendLimit => "spend_limit_reached",
            Self::DepositCheck(_) => "deposit_check_failed",
            Self::Ledger(_) => "ledger_error",
            Self::NoPrice(_) => "model_not_priced",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Self::MissingKey | Self::InvalidKey(_) | Self::WrongNode(_) | Self::Expired(_) => 401,
            Self::NoDeposit(_) | Self::SpendLimit => 402,
            Self::DepositCheck(_) => 503,
            Self::Ledger(_) => 500,
            Self::NoPrice(_) => 404,
        }
    }
}

/// A request's paying client: its verified key and authorization id.
#[derive(Clone, Debug)]
pub struct Payer {
    /// The key.
    pub key: ApiKey,
    /// Its authorization id.
    pub authorization: B256,
}

/// Billing configuration and state of one node.
pub struct Billing {
    ledger: Arc<Ledger>,
    escrow: Domain,
    operator: Address,
    prices: HashMap<String, Price>,
    deposits: Arc<dyn DepositSource>,
    deposit_ttl: Duration,
    deposit_cache: Mutex<HashMap<Address, (U256, Instant)>>,
}

impl std::fmt::Debug for Billing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Billing")
            .field("operator", &self.operator)
            .field("prices", &self.prices)
            .finish_non_exhaustive()
    }
}

impl Billing {
    /// Billing for the node of `operator`, under the `escrow` EIP-712 domain, at `prices`,
    /// checking deposits with `deposits` (cached for `deposit_ttl`).
    pub fn new(
        ledger: Arc<Ledger>,
        escrow: Domain,
        operator: Address,
        prices: HashMap<String, Price>,
        deposits: Arc<dyn DepositSource>,
        deposit_ttl: Duration,
    ) -> Self {
        Self {
            ledger,
            escrow,
            operator,
            prices,
            deposits,
            deposit_ttl,
            deposit_cache: Mutex::new(HashMap::new()),
        }
    }

    /// The ledger.
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    /// Checks the request's API key, the client's deposit and the remaining budget.
    pub async fn authorize(&self, headers: &HeaderMap, model: &str) -> Result<Payer, BillingRefusal> {
        if !self.prices.contains_key(model) {
            return Err(BillingRefusal::NoPrice(model.to_owned()));
        }
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .ok_or(BillingRefusal::MissingKey)?;
        let key = ApiKey::decode(bearer).map_err(|e| BillingRefusal::InvalidKey(e.to_string()))?;
        let authorization = key
            .verify(&self.escrow)
            .map_err(|e| BillingRefusal::InvalidKey(e.to_string()))?;
        if key.auth.node != self.operator {
            return Err(BillingRefusal::WrongNode(key.auth.node));
        }
        if key.auth.expiry <= crate::unix_now() {
            return Err(BillingRefusal::Expired(key.auth.expiry));
        }
        let balance = self.balance(key.auth.client).await?;
        if balance.is_zero() {
            return Err(BillingRefusal::NoDeposit(key.auth.client));
        }
        let used = self
            .ledger
            .cumulative(authorization)
            .await
            .map_err(|e| BillingRefusal::Ledger(e.to_string()))?;
        if used >= key.auth.maxAmount {
            return Err(BillingRefusal::SpendLimit);
        }
        Ok(Payer { key, authorization })
    }

    async fn balance(&self, client: Address) -> Result<U256, BillingRefusal> {
        {
            let cache = self.deposit_cache.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((balance, at)) = cache.get(&client)
                && at.elapsed() < self.deposit_ttl
            {
                return Ok(*balance);
            }
        }
        let balance = self
            .deposits
            .balance(client)
            .await
            .map_err(BillingRefusal::DepositCheck)?;
        let mut cache = self.deposit_cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() > 100_000 {
            cache.clear();
        }
        cache.insert(client, (balance, Instant::now()));
        Ok(balance)
    }

    /// Prices `usage` of `model` and charges it to `payer`, durably (the ledger's writer thread
    /// has committed it when this returns), signing the new voucher with `key`.
    pub async fn charge(
        &self,
        payer: &Payer,
        model: &str,
        usage: &Usage,
        key: &Arc<EnclaveKey>,
    ) -> Result<Receipt, BillingRefusal> {
        let price = self
            .prices
            .get(model)
            .ok_or_else(|| BillingRefusal::NoPrice(model.to_owned()))?;
        self.ledger
            .charge(
                &payer.key,
                payer.authorization,
                price.cost(usage),
                key,
                &self.escrow,
            )
            .await
            .map_err(|e| match e {
                LedgerError::OverMax { .. } => BillingRefusal::SpendLimit,
                other => BillingRefusal::Ledger(other.to_string()),
            })
    }
}
