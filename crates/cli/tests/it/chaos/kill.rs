//! `kill -9` under paid load: [`REQUESTS`] metered requests, plain and streamed, [`IN_FLIGHT`] at a
//! time, against a paid node that is killed with SIGKILL [`KILLS`] times part way through and
//! restarted on the same port and ledger. The chain must then pay exactly the highest cumulative
//! receipt the client received, a second settlement must pay nothing more, and the client's
//! deposit must drop by exactly what was paid.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cloister_chain::alloy::primitives::U256;
use cloister_types::wire;
use futures::StreamExt as _;
use tokio::sync::Mutex;

use super::{Figures, NodeSpec, PaidChain, cumulative, stream_receipt, terminate};
use crate::proxy::stack::{chat_body, start_echo_upstream};

const REQUESTS: usize = 200;
const IN_FLIGHT: usize = 8;
/// After how many finished requests each kill comes.
const KILLS: [usize; 2] = [70, 140];

/// How one request ended.
enum Outcome {
    /// A whole answer with its receipt: cumulative amount, and this answer's amount.
    Paid(U256, U256),
    /// The node died under it (connection reset, body cut short, no receipt).
    FailedInFlight(String),
}

/// Sends request `i` (every third one streamed, with the inline signature event that carries its
/// receipt). A request that cannot connect (the node is down between a kill and its restart) is
/// sent again; one that fails after it was sent is counted as failed in flight.
async fn request(http: &reqwest::Client, url: &str, api_key: &str, i: usize) -> Outcome {
    let stream = i.is_multiple_of(3);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let sent = http
            .post(format!("{url}{}", wire::CHAT_COMPLETIONS_PATH))
            .bearer_auth(api_key)
            .header(wire::INLINE_SIGNATURE_HEADER, wire::INLINE_SIGNATURE_ON)
            .json(&chat_body(&format!("chaos request {i}"), stream))
            .send()
            .await;
        let resp = match sent {
            Ok(resp) => resp,
            Err(e) if e.is_connect() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(e) => return Outcome::FailedInFlight(error_chain(&e)),
        };
        let status = resp.status();
        let header = resp
            .headers()
            .get(wire::RECEIPT_HEADER)
            .map(|h| h.to_str().unwrap().to_owned());
        let body = match resp.text().await {
            Ok(body) => body,
            Err(e) => return Outcome::FailedInFlight(format!("body: {}", error_chain(&e))),
        };
        assert_eq!(status, 200, "request {i}: {body}");
        let receipt = if stream {
            if !body.contains(wire::SSE_DONE_EVENT) {
                return Outcome::FailedInFlight(format!("stream cut: {body}"));
            }
            stream_receipt(&body).unwrap_or_else(|| panic!("request {i}: no receipt in {body}"))
        } else {
            serde_json::from_str(&header.unwrap_or_else(|| panic!("request {i}: no receipt header"))).unwrap()
        };
        let amount = receipt["amount"].as_str().unwrap().parse().unwrap();
        return Outcome::Paid(cumulative(&receipt), amount);
    }
}

/// An error and its sources, `: `-separated.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_paid_load_then_restart_and_settle_pays_the_highest_receipt_once() {
    // A failure inside the killer task (a restart that cannot start) must end the test, not hang it.
    tokio::time::timeout(Duration::from_secs(300), kill_run())
        .await
        .expect("the kill -9 run did not finish within 300 s (see the node logs)");
}

async fn kill_run() {
    let started = Instant::now();
    let Some(chain) = PaidChain::start().await else {
        return;
    };
    let upstream = format!("http://{}/v1", start_echo_upstream());
    let ledger = chain.dir.path().join("ledger.sqlite");
    let spec = NodeSpec::new(&upstream, chain.devnet_json(None), ledger.clone(), 2);
    let node = Arc::new(Mutex::new(spec.start(chain.dir.path(), 0).await));
    // Registration took the stake; from here on the operator's balance moves only by settlement.
    let operator_before = chain.operator_balance().await;
    let deposit_before = chain.deposit().await;

    let done = Arc::new(AtomicUsize::new(0));
    // Odd while the node is down (from just before a kill until its restart serves), so that a
    // failed request can be shown to have overlapped a kill.
    let phase = Arc::new(AtomicUsize::new(0));
    let killer = {
        let (node, done, phase) = (Arc::clone(&node), Arc::clone(&done), Arc::clone(&phase));
        let dir = chain.dir.path().to_owned();
        let spec = spec.clone();
        tokio::spawn(async move {
            for (k, at) in KILLS.iter().enumerate() {
                while done.load(Ordering::SeqCst) < *at {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let mut node = node.lock().await;
                phase.fetch_add(1, Ordering::SeqCst);
                node.child.kill().unwrap();
                node.child.wait().unwrap();
                *node = spec.start(&dir, k + 1).await;
                phase.fetch_add(1, Ordering::SeqCst);
            }
        })
    };

    // A fresh connection per request: a pooled connection to a killed node would fail a request
    // that was never in flight there.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let url = spec.url();
    let outcomes: Vec<Outcome> = futures::stream::iter(0..REQUESTS)
        .map(|i| {
            let (http, url, key) = (&http, &url, &chain.api_key);
            let (done, phase) = (Arc::clone(&done), Arc::clone(&phase));
            async move {
                let before = phase.load(Ordering::SeqCst);
                let outcome = request(http, url, key, i).await;
                let after = phase.load(Ordering::SeqCst);
                done.fetch_add(1, Ordering::SeqCst);
                if let Outcome::FailedInFlight(why) = &outcome {
                    assert!(
                        !before.is_multiple_of(2) || after != before,
                        "request {i} failed with the node up throughout: {why}"
                    );
                }
                outcome
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    killer.await.unwrap();

    let mut figures = Figures {
        requests: REQUESTS,
        kills: KILLS.len(),
        ..Figures::default()
    };
    let mut receipts_total = U256::ZERO;
    for outcome in &outcomes {
        match outcome {
            Outcome::Paid(cumulative, amount) => {
                figures.received = figures.received.max(*cumulative);
                receipts_total += *amount;
            }
            Outcome::FailedInFlight(why) => {
                eprintln!("failed in flight: {why}");
                figures.failed_in_flight += 1;
            }
        }
    }
    // Each kill can fail the requests in flight and those that connected while it died.
    assert!(
        figures.failed_in_flight <= KILLS.len() * 2 * IN_FLIGHT,
        "{} requests failed at {} kills",
        figures.failed_in_flight,
        KILLS.len()
    );
    assert!(figures.received > U256::ZERO);
    // Answers metered durably and then killed before they left the node: in the cumulative amount
    // the client's later receipts carry, but in no receipt of their own.
    figures.unreceived = figures.received - receipts_total;

    // The node's own loop settles; then it stops gracefully.
    let mut node = Arc::try_unwrap(node).ok().unwrap().into_inner();
    chain
        .wait_settled(figures.received, Duration::from_secs(60), &node)
        .await;
    terminate(&mut node);
    figures.paid = chain.settled().await;
    figures.second_round_sent = chain.settle_again(&ledger).await;
    figures.print("kill -9 under paid load");

    assert_eq!(figures.paid, figures.received, "paid on chain = highest receipt");
    assert_eq!(figures.second_round_sent, 0, "a second settlement sends nothing");
    assert_eq!(chain.settled().await, figures.received, "and pays nothing more");
    assert_eq!(
        chain.operator_balance().await - operator_before,
        figures.paid,
        "the operator got exactly what was paid"
    );
    assert_eq!(
        deposit_before - chain.deposit().await,
        figures.paid,
        "the client's deposit dropped by exactly what was paid"
    );
    println!("chaos [kill -9 under paid load] took {:?}", started.elapsed());
}
