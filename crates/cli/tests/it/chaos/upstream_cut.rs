//! The upstream engine dies mid-stream: the client gets the chunks sent so far, then an SSE error
//! event, no `data: [DONE]` and no receipt, and the cut answer is not metered (protocol §9): the
//! next whole answer's receipt carries only its own cost, and that is all the chain pays.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cloister_chain::alloy::primitives::U256;
use cloister_types::wire;

use super::{Figures, NodeSpec, PaidChain, cumulative, stream_receipt, terminate};
use crate::proxy::stack::{MODEL, chat_body};
use crate::serve_in_thread;

/// Content chunks the test double sends before it drops the connection.
const CHUNKS_BEFORE_CUT: usize = 3;

fn chunk(delta: &serde_json::Value, finish: Option<&str>) -> String {
    let chunk = serde_json::json!({"id":"up","object":"chat.completion.chunk","created":1,"model":MODEL,
        "choices":[{"index":0,"delta":delta,"finish_reason":finish}]});
    format!("data: {chunk}\n\n")
}

/// Test double of an OpenAI-compatible upstream whose engine dies mid-stream: a streamed request
/// gets [`CHUNKS_BEFORE_CUT`] content chunks, then the connection is dropped (no finish reason, no
/// usage, no `[DONE]`); a plain request gets a whole answer of 3 prompt and 3 completion tokens.
fn start_dying_upstream() -> SocketAddr {
    use axum::routing::post;
    let app = axum::Router::new().route(
        wire::CHAT_COMPLETIONS_PATH,
        post(|body: bytes::Bytes| async move {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            if !v["stream"].as_bool().unwrap_or(false) {
                let answer = serde_json::json!({
                    "id":"up","object":"chat.completion","created":1,"model":MODEL,
                    "choices":[{"index":0,"message":{"role":"assistant","content":"whole answer"},"finish_reason":"stop"}],
                    "usage":{"prompt_tokens":3,"completion_tokens":3,"total_tokens":6}
                });
                return axum::response::Response::builder()
                    .header("content-type", wire::JSON_CONTENT_TYPE)
                    .body(axum::body::Body::from(answer.to_string()))
                    .unwrap();
            }
            let events = futures::stream::unfold(0usize, |n| async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let item = if n < CHUNKS_BEFORE_CUT {
                    Ok(bytes::Bytes::from(chunk(&serde_json::json!({"content": format!("part{n} ")}), None)))
                } else if n == CHUNKS_BEFORE_CUT {
                    Err(std::io::Error::other("upstream test double: engine killed"))
                } else {
                    return None;
                };
                Some((item, n + 1))
            });
            axum::response::Response::builder()
                .header("content-type", wire::EVENT_STREAM_CONTENT_TYPE)
                .body(axum::body::Body::from_stream(events))
                .unwrap()
        }),
    );
    serve_in_thread(app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_killed_mid_stream_ends_in_an_error_event_and_is_not_charged() {
    let started = Instant::now();
    let Some(chain) = PaidChain::start().await else {
        return;
    };
    let upstream = format!("http://{}/v1", start_dying_upstream());
    let ledger = chain.dir.path().join("ledger.sqlite");
    let spec = NodeSpec::new(&upstream, chain.devnet_json(None), ledger.clone(), 2);
    let mut node = spec.start(chain.dir.path(), 0).await;
    let deposit_before = chain.deposit().await;
    let http = reqwest::Client::new();
    let url = format!("{}{}", spec.url(), wire::CHAT_COMPLETIONS_PATH);
    let mut figures = Figures::default();

    let mut expected = U256::ZERO;
    for round in 0..2 {
        // A stream cut by the upstream: what was sent, then an error event; no [DONE], no receipt.
        let body = http
            .post(&url)
            .bearer_auth(&chain.api_key)
            .header(wire::INLINE_SIGNATURE_HEADER, wire::INLINE_SIGNATURE_ON)
            .json(&chat_body("stream until the engine dies", true))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        figures.requests += 1;
        for n in 0..CHUNKS_BEFORE_CUT {
            assert!(
                body.contains(&format!("part{n} ")),
                "chunk {n} reached the client: {body}"
            );
        }
        let last = body.trim_end().rsplit("\n\n").next().unwrap();
        let error: serde_json::Value = serde_json::from_str(last.strip_prefix("data: ").unwrap_or(last))
            .unwrap_or_else(|e| {
                panic!(
                    "the stream does not end in an error event ({e}): {body}\n{}",
                    node.log_text()
                )
            });
        assert!(error["error"]["code"].is_string(), "{error}");
        assert!(!body.contains(wire::SSE_DONE), "no [DONE]: {body}");
        assert!(stream_receipt(&body).is_none(), "no receipt: {body}");

        // The next whole answer's receipt carries only its own cost: the cut stream added nothing.
        let resp = http
            .post(&url)
            .bearer_auth(&chain.api_key)
            .json(&chat_body("a whole answer", false))
            .send()
            .await
            .unwrap();
        figures.requests += 1;
        assert_eq!(resp.status(), 200);
        let receipt: serde_json::Value =
            serde_json::from_str(resp.headers()[wire::RECEIPT_HEADER].to_str().unwrap()).unwrap();
        let amount: U256 = receipt["amount"].as_str().unwrap().parse().unwrap();
        assert_eq!(amount, U256::from(9000u64), "3 x 1000 + 3 x 2000");
        expected += amount;
        assert_eq!(
            cumulative(&receipt),
            expected,
            "round {round}: the cut stream was not metered"
        );
        figures.received = cumulative(&receipt);
    }

    chain
        .wait_settled(figures.received, Duration::from_secs(60), &node)
        .await;
    terminate(&mut node);
    figures.paid = chain.settled().await;
    figures.second_round_sent = chain.settle_again(&ledger).await;
    figures.print("upstream killed mid-stream");
    assert_eq!(figures.paid, expected, "paid only for the whole answers");
    assert_eq!(figures.second_round_sent, 0);
    assert_eq!(deposit_before - chain.deposit().await, figures.paid);
    println!("chaos [upstream killed mid-stream] took {:?}", started.elapsed());
}
