//! RPC failover against real anvil: the first endpoint is dead (a closed port) or broken
//! ([`Http503Rpc`], a test double answering 503), the second is anvil. Reads and a real
//! transaction go through; after one failover the dead endpoint is not asked again (sticky); a
//! revert is an answer, reported by name and never asked again of another endpoint.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use alloy::primitives::U256;
use cloister_chain::{Chain, ChainConfig, ChainError, DevnetFile, parse_private_key};

use crate::start_devnet;

/// **Test double**: an HTTP server that answers every request with `503 Service Unavailable`, as
/// an overloaded public RPC provider does, and counts the requests it got.
struct Http503Rpc {
    url: String,
    hits: Arc<AtomicUsize>,
}

impl Http503Rpc {
    fn start() -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&hits);
        let app = axum::Router::new().fallback(move || {
            let counter = Arc::clone(&counter);
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                (axum::http::StatusCode::SERVICE_UNAVAILABLE, "upstream overloaded")
            }
        });
        let addr = cloister_testkit::serve_in_thread(app);
        Self {
            url: format!("http://{addr}/"),
            hits,
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A loopback URL nothing listens on.
fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}/")
}

fn config_over(file: &DevnetFile, urls: &[&str]) -> ChainConfig {
    let mut config = file.chain_config();
    config.rpc_url = urls[0].to_owned();
    config.rpc_urls_fallback = urls[1..].iter().map(|u| (*u).to_owned()).collect();
    config
}

async fn client(file: &DevnetFile, config: ChainConfig) -> cloister_chain::Result<Chain> {
    let key = &file.account("client").unwrap().private_key;
    Chain::connect(config, Some(parse_private_key(key).unwrap())).await
}

/// Reads, a deposit (approve + deposit, both real transactions) and a revert through `chain`.
async fn reads_sends_and_reverts(chain: &Chain) {
    let me = chain.address().unwrap();
    assert!(chain.block_number().await.unwrap() > 0);
    let escrow = chain.escrow().unwrap();
    let before = escrow.balance_of(me).await.unwrap();
    let amount = U256::from(1_000u64);
    let tx = escrow.deposit(amount).await.unwrap();
    assert!(tx.block_number.is_some());
    assert_eq!(escrow.balance_of(me).await.unwrap(), before + amount);
    // No withdrawal is pending: the contract's answer comes back by name, not as a fault.
    let err = escrow.withdraw().await.unwrap_err();
    assert_eq!(err.revert_name(), Some("NoWithdrawalPending"), "{err}");
}

#[tokio::test]
async fn a_dead_primary_fails_over_to_anvil() {
    let Some((dn, file)) = start_devnet().await else {
        return;
    };
    let dead = dead_url();
    // Without a fallback the dead endpoint is an RPC error.
    let alone = client(&file, config_over(&file, &[&dead])).await;
    assert!(matches!(alone, Err(ChainError::Rpc(_))), "{alone:?}");

    let chain = client(&file, config_over(&file, &[&dead, dn.rpc_url()]))
        .await
        .unwrap();
    reads_sends_and_reverts(&chain).await;
}

#[tokio::test]
async fn an_endpoint_answering_503_fails_over_once_and_a_revert_is_not_retried() {
    let Some((dn, file)) = start_devnet().await else {
        return;
    };
    let broken = Http503Rpc::start();
    let chain = client(&file, config_over(&file, &[&broken.url, dn.rpc_url()]))
        .await
        .unwrap();
    assert_eq!(broken.hits(), 1, "the first request found the primary broken");
    reads_sends_and_reverts(&chain).await;
    assert_eq!(broken.hits(), 1, "sticky: the broken primary is not asked again");

    // anvil first, the double behind it: a revert answered by anvil never reaches the double.
    let behind = Http503Rpc::start();
    let chain = client(&file, config_over(&file, &[dn.rpc_url(), &behind.url]))
        .await
        .unwrap();
    let err = chain.escrow().unwrap().withdraw().await.unwrap_err();
    assert!(matches!(err, ChainError::Reverted { .. }), "{err}");
    assert_eq!(behind.hits(), 0, "an answer is not asked again elsewhere");
}
