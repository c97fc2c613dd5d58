//! The payment token, bound through the ERC-20 interface (`IERC20Metadata`) rather than any one
//! token's ABI, and the one way amounts are shown and read: in the token's own `decimals()`.
//!
//! ```
//! use alloy::primitives::U256;
//! use cloister_chain::token::{format_amount, parse_amount};
//! assert_eq!(format_amount(U256::from(1_500_000u64), 6), "1.5");
//! assert_eq!(parse_amount("0.5", 18).unwrap(), U256::from(500_000_000_000_000_000u64));
//! ```

use alloy::primitives::utils::{format_units, parse_units};
use alloy::primitives::{Address, U256};
use alloy::providers::DynProvider;

pub use crate::bindings::IERC20Metadata;
use crate::error::{ChainError, Result};
use crate::revert::from_contract;

/// The most decimals a token may declare here (`10^77` is the largest power of ten in a U256).
pub const MAX_DECIMALS: u8 = 77;

/// `amount` base units as a decimal number of whole tokens with `decimals` places, trailing zeros
/// trimmed: `format_amount(1_500_000, 6) == "1.5"`, `format_amount(10^19, 18) == "10"`.
pub fn format_amount(amount: U256, decimals: u8) -> String {
    match format_units(amount, decimals.min(MAX_DECIMALS)) {
        Ok(s) if s.contains('.') => s.trim_end_matches('0').trim_end_matches('.').to_owned(),
        Ok(s) => s,
        Err(_) => amount.to_string(),
    }
}

/// Parses a user's amount of whole tokens (`"10"`, `"0.5"`) into base units with `decimals`
/// places. More fractional digits than the token has, a sign, or anything not a number is refused.
pub fn parse_amount(text: &str, decimals: u8) -> Result<U256> {
    let text = text.trim();
    let bad = || ChainError::BadAmount {
        text: text.to_owned(),
        decimals,
    };
    if decimals > MAX_DECIMALS || text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(bad());
    }
    if let Some((_, frac)) = text.split_once('.')
        && frac.len() > usize::from(decimals)
    {
        return Err(bad());
    }
    parse_units(text, decimals).map(Into::into).map_err(|_| bad())
}

/// The payment token: its ERC-20 calls, and its decimals and symbol, read once at
/// [`Token::connect`].
#[derive(Clone, Debug)]
pub struct Token {
    inner: IERC20Metadata::IERC20MetadataInstance<DynProvider>,
    decimals: u8,
    symbol: String,
}

impl Token {
    /// Binds the ERC-20 at `address` and reads its `decimals()` and `symbol()`. A token whose
    /// decimals cannot be read is refused: amounts would be shown and parsed wrong.
    pub async fn connect(provider: DynProvider, address: Address) -> Result<Self> {
        if address.is_zero() {
            return Err(ChainError::MissingContract("token"));
        }
        let inner = IERC20Metadata::new(address, provider);
        let decimals = inner.decimals().call().await.map_err(from_contract)?;
        if decimals > MAX_DECIMALS {
            return Err(ChainError::BadDecimals(decimals));
        }
        let symbol = inner.symbol().call().await.map_err(from_contract)?;
        Ok(Self {
            inner,
            decimals,
            symbol,
        })
    }

    /// The contract address.
    pub fn address(&self) -> Address {
        *self.inner.address()
    }

    /// The token's `decimals()`.
    pub fn decimals(&self) -> u8 {
        self.decimals
    }

    /// The token's `symbol()`.
    pub fn symbol(&self) -> &str {
        &self.symbol
    }

    /// `who`'s token balance, in base units.
    pub async fn balance_of(&self, who: Address) -> Result<U256> {
        self.inner.balanceOf(who).call().await.map_err(from_contract)
    }

    /// What `owner` lets `spender` take, in base units.
    pub async fn allowance(&self, owner: Address, spender: Address) -> Result<U256> {
        self.inner
            .allowance(owner, spender)
            .call()
            .await
            .map_err(from_contract)
    }

    /// `amount` base units as whole tokens with the symbol: `"1.5 USDC"`.
    pub fn format(&self, amount: U256) -> String {
        format!("{} {}", format_amount(amount, self.decimals), self.symbol)
    }

    /// A user's amount of whole tokens in base units (see [`parse_amount`]).
    pub fn parse(&self, text: &str) -> Result<U256> {
        parse_amount(text, self.decimals)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn six_and_eighteen_decimals_format_and_parse() {
        let cases: [(u8, &str, u128); 8] = [
            (6, "1.5", 1_500_000),
            (6, "0.000001", 1),
            (6, "10", 10_000_000),
            (6, "0", 0),
            (18, "10", 10_000_000_000_000_000_000),
            (18, "0.5", 500_000_000_000_000_000),
            (18, "0.000000000000000001", 1),
            (0, "42", 42),
        ];
        for (decimals, text, units) in cases {
            assert_eq!(
                format_amount(U256::from(units), decimals),
                text,
                "{decimals} {text}"
            );
            assert_eq!(
                parse_amount(text, decimals).unwrap(),
                U256::from(units),
                "{decimals} {text}"
            );
        }
        // The same base units read differently under different decimals.
        assert_eq!(format_amount(U256::from(1_000_000u64), 6), "1");
        assert_eq!(format_amount(U256::from(1_000_000u64), 18), "0.000000000001");
        assert_eq!(format_amount(U256::MAX, 18).len(), 79);
    }

    #[test]
    fn bad_amounts_are_refused() {
        for (text, decimals) in [
            ("0.0000001", 6),
            ("-1", 6),
            ("1e6", 6),
            ("", 6),
            ("abc", 18),
            ("1.2.3", 18),
            ("1", 78),
            ("1.5", 0),
        ] {
            assert!(
                matches!(parse_amount(text, decimals), Err(ChainError::BadAmount { .. })),
                "{text:?} with {decimals} decimals"
            );
        }
    }
}
