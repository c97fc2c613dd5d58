//! The payment token through `IERC20Metadata`: the devnet's 18-decimal DevToken, and a 6-decimal
//! token (a USDC-like test double installed with `anvil_setCode`) whose amounts must print in its
//! own decimals.

use alloy::primitives::{Address, Bytes, U256};
use alloy::providers::Provider as _;
use cloister_chain::devnet::TOKEN;
use cloister_chain::{Chain, ChainConfig, Token};

use crate::start_devnet;

/// Runtime code of the 6-decimal test double token: `symbol()` returns `"USDC"`, every other call
/// returns the word 6 (so `decimals()` is 6, and every balance is 6 base units = 0.000006 USDC).
const SIX_DECIMAL_TOKEN: &str = concat!(
    "60003560e01c", // selector = calldata[0..4]
    "806395d89b411460",
    "1a",
    "57",                   // if selector == symbol() goto 0x1a
    "600660005260206000f3", // return uint256(6)
    "5b",                   // 0x1a:
    "6020600052",           //   offset 0x20
    "6004602052",           //   length 4
    "7f55534443",
    "00000000000000000000000000000000000000000000000000000000",
    "604052",     //   "USDC"
    "60606000f3", //   return 96 bytes
);

#[tokio::test]
async fn the_devnet_token_reads_its_decimals_and_symbol() {
    let Some((_dn, file)) = start_devnet().await else {
        return;
    };
    let chain = Chain::connect(file.chain_config(), None).await.unwrap();
    let token = chain.token().await.unwrap();
    assert_eq!((token.decimals(), token.symbol()), (18, "cUSD"));
    assert_eq!(token.address(), file.contracts.token);
    let client = file.account("client").unwrap().address;
    let balance = token.balance_of(client).await.unwrap();
    assert_eq!(balance, chain.token_balance(client).await.unwrap());
    assert_eq!(
        token.format(TOKEN * U256::from(3u64) / U256::from(2u64)),
        "1.5 cUSD"
    );
    assert_eq!(
        token.parse("1.5").unwrap(),
        TOKEN * U256::from(3u64) / U256::from(2u64)
    );

    // Without a configured token address, the Escrow's own token is used.
    let mut config: ChainConfig = file.chain_config();
    config.token = Address::ZERO;
    let chain = Chain::connect(config, None).await.unwrap();
    assert_eq!(chain.token().await.unwrap().address(), file.contracts.token);
}

#[tokio::test]
async fn a_six_decimal_token_prints_in_its_own_decimals() {
    let Some((_dn, file)) = start_devnet().await else {
        return;
    };
    let chain = Chain::connect(file.chain_config(), None).await.unwrap();
    let at = Address::repeat_byte(0x6d);
    let code = Bytes::from(alloy::hex::decode(SIX_DECIMAL_TOKEN).unwrap());
    let _: () = chain
        .provider()
        .raw_request("anvil_setCode".into(), (at, code))
        .await
        .unwrap();
    let token = Token::connect(chain.provider().clone(), at).await.unwrap();
    assert_eq!((token.decimals(), token.symbol()), (6, "USDC"));
    let balance = token.balance_of(Address::repeat_byte(1)).await.unwrap();
    assert_eq!(balance, U256::from(6u64));
    assert_eq!(token.format(balance), "0.000006 USDC");
    assert_eq!(token.format(U256::from(12_500_000u64)), "12.5 USDC");
    assert_eq!(token.parse("12.5").unwrap(), U256::from(12_500_000u64));
    assert!(
        token.parse("0.0000001").is_err(),
        "finer than the token's decimals"
    );
}
