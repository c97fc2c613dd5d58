//! The RPC endpoint unreachable for [`OUTAGE`] while settlement is due: a TCP relay test double
//! between the node and anvil is cut (open connections closed, new ones closed at once), then
//! restored. Settlement fails during the outage and changes nothing, then completes: the chain pays
//! the highest receipt once, nothing is lost and nothing is paid twice.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cloister_chain::alloy::primitives::U256;
use cloister_types::wire;

use super::{Figures, NodeSpec, PaidChain, cumulative, stream_receipt, terminate};
use crate::proxy::stack::{chat_body, start_echo_upstream};

/// How long the RPC is unreachable (the figure).
const OUTAGE: Duration = Duration::from_secs(30);
/// The node's settlement interval: due a few seconds into the outage.
const SETTLE_SECS: u64 = 12;
const REQUESTS: usize = 20;

/// Test double of an RPC outage: a TCP relay in front of anvil that can be cut (every open
/// connection closed, every new one closed on accept) and restored.
struct CuttableRelay {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    /// Connections closed on accept while cut: the node's attempts during the outage.
    refused: Arc<AtomicUsize>,
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16384];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

impl CuttableRelay {
    fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let relay = Self {
            addr: listener.local_addr().unwrap(),
            cut: Arc::new(AtomicBool::new(false)),
            open: Arc::new(Mutex::new(Vec::new())),
            refused: Arc::new(AtomicUsize::new(0)),
        };
        let (cut, open, refused) = (
            Arc::clone(&relay.cut),
            Arc::clone(&relay.open),
            Arc::clone(&relay.refused),
        );
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { continue };
                if cut.load(Ordering::SeqCst) {
                    refused.fetch_add(1, Ordering::SeqCst);
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                open.lock()
                    .unwrap()
                    .extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        relay
    }

    fn set_cut(&self, on: bool) {
        self.cut.store(on, Ordering::SeqCst);
        if on {
            for conn in self.open.lock().unwrap().drain(..) {
                let _ = conn.shutdown(Shutdown::Both);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settlement_due_while_the_rpc_is_unreachable_completes_after_it_returns_paying_once() {
    let started = Instant::now();
    let Some(chain) = PaidChain::start().await else {
        return;
    };
    let anvil_addr: SocketAddr = chain.file.rpc_url.trim_start_matches("http://").parse().unwrap();
    let relay = CuttableRelay::start(anvil_addr);
    let devnet_json = chain.devnet_json(Some(&format!("http://{}", relay.addr)));
    let upstream = format!("http://{}/v1", start_echo_upstream());
    let ledger = chain.dir.path().join("ledger.sqlite");
    let spec = NodeSpec::new(&upstream, devnet_json, ledger.clone(), SETTLE_SECS);
    let mut node = spec.start(chain.dir.path(), 0).await;
    let operator_before = chain.operator_balance().await;
    let deposit_before = chain.deposit().await;

    let http = reqwest::Client::new();
    let url = format!("{}{}", spec.url(), wire::CHAT_COMPLETIONS_PATH);
    let mut figures = Figures {
        requests: REQUESTS,
        rpc_outage: OUTAGE,
        ..Figures::default()
    };
    for i in 0..REQUESTS {
        let stream = i.is_multiple_of(2);
        let resp = http
            .post(&url)
            .bearer_auth(&chain.api_key)
            .header(wire::INLINE_SIGNATURE_HEADER, wire::INLINE_SIGNATURE_ON)
            .json(&chat_body(&format!("outage request {i}"), stream))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let header = resp.headers().get(wire::RECEIPT_HEADER).cloned();
        let body = resp.text().await.unwrap();
        let receipt = if stream {
            stream_receipt(&body).unwrap_or_else(|| panic!("no receipt: {body}"))
        } else {
            serde_json::from_str(header.unwrap().to_str().unwrap()).unwrap()
        };
        figures.received = figures.received.max(cumulative(&receipt));
    }

    // The RPC goes away before the settlement interval ends, so settlement falls due during it.
    relay.set_cut(true);
    assert_eq!(
        chain.settled().await,
        U256::ZERO,
        "nothing settled before the outage"
    );
    tokio::time::sleep(OUTAGE).await;
    let attempts = relay.refused.load(Ordering::SeqCst);
    assert!(attempts > 0, "the node tried the RPC during the outage");
    assert!(
        node.log_text().contains("settlement failed; will retry"),
        "settlement fell due during the outage:\n{}",
        node.log_text()
    );
    assert_eq!(
        chain.settled().await,
        U256::ZERO,
        "nothing paid while unreachable"
    );
    relay.set_cut(false);

    chain
        .wait_settled(figures.received, Duration::from_secs(90), &node)
        .await;
    terminate(&mut node);
    figures.paid = chain.settled().await;
    figures.second_round_sent = chain.settle_again(&ledger).await;
    figures.print("rpc unreachable during settlement");
    eprintln!("connections refused during the outage: {attempts}");

    assert_eq!(figures.paid, figures.received, "nothing lost, nothing paid twice");
    assert_eq!(figures.second_round_sent, 0);
    assert_eq!(chain.settled().await, figures.received);
    assert_eq!(chain.operator_balance().await - operator_before, figures.paid);
    assert_eq!(deposit_before - chain.deposit().await, figures.paid);
    println!("chaos [rpc unreachable] took {:?}", started.elapsed());
}
