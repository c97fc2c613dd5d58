//! Registry discovery against hostile JSON-RPC endpoints: each answer is refused with a named
//! error, never a panic. (Discovery against a real anvil devnet, checked against cloister-chain's
//! provider-based reads, is in the CLI's tests: the client must not depend on the provider stack,
//! not even for its tests.)

use alloy_primitives::Address;
use axum::routing::post;
use cloister_client::discover::{DiscoverError, RegistryConfig, discover};

/// A JSON-RPC endpoint that answers chain id 7 and `answer(method)` for everything else.
fn hostile_rpc(answer: fn(&str) -> String) -> RegistryConfig {
    let app = axum::Router::new().route(
        "/",
        post(move |body: axum::Json<serde_json::Value>| async move {
            let method = body["method"].as_str().unwrap_or_default().to_owned();
            if method == "eth_chainId" {
                return r#"{"jsonrpc":"2.0","id":1,"result":"0x7"}"#.to_owned();
            }
            answer(&method)
        }),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let _ = axum::serve(listener, app).await;
    });
    RegistryConfig {
        rpc_url: format!("http://{addr}/"),
        chain_id: 7,
        registry: Address::repeat_byte(0x11),
    }
}

fn word(n: u64) -> String {
    format!("{n:064x}")
}

#[tokio::test]
async fn hostile_rpc_answers_are_refused_by_name() {
    // A JSON-RPC error (a revert) is named with its method, the message cut short.
    let err = discover(&hostile_rpc(|_| {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"error":{{"code":3,"message":"{}"}}}}"#,
            "x".repeat(10_000)
        )
    }))
    .await
    .unwrap_err();
    match &err {
        DiscoverError::Rpc {
            method,
            code,
            message,
        } => {
            assert_eq!((*method, *code), ("eth_call", 3));
            assert!(message.len() <= 300, "{}", message.len());
        }
        other => panic!("{other}"),
    }

    // An answer over the size limit.
    let err = discover(&hostile_rpc(|_| {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":"0x{}"}}"#,
            "00".repeat(5 * 1024 * 1024)
        )
    }))
    .await
    .unwrap_err();
    assert!(matches!(err, DiscoverError::AnswerTooLarge { .. }), "{err}");

    // Not JSON, not hex, not ABI.
    for answer in [
        (|_: &str| "<html>".to_owned()) as fn(&str) -> String,
        |_| r#"{"jsonrpc":"2.0","id":1,"result":"zz"}"#.to_owned(),
        |_| r#"{"jsonrpc":"2.0","id":1,"result":"0x12"}"#.to_owned(),
        |_| r#"{"jsonrpc":"2.0","id":1}"#.to_owned(),
    ] {
        let err = discover(&hostile_rpc(answer)).await.unwrap_err();
        assert!(matches!(err, DiscoverError::Malformed { .. }), "{err}");
    }

    // A registry claiming a vast number of nodes is refused before any page is read.
    let err = discover(&hostile_rpc(|_| {
        format!(r#"{{"jsonrpc":"2.0","id":1,"result":"0x{}"}}"#, "ff".repeat(32))
    }))
    .await
    .unwrap_err();
    assert!(
        matches!(err, DiscoverError::TooMany { what: "nodes", .. }),
        "{err}"
    );

    // A page that is a lie (a huge array length with no data behind it) does not decode.
    let err = discover(&hostile_rpc(|method| {
        let _ = method;
        // nodeCount → 1; listNodes → offset 0x20, length 2^40, nothing else.
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":"0x{}{}"}}"#,
            word(0x20),
            word(1 << 40)
        )
    }))
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            DiscoverError::Malformed { .. } | DiscoverError::TooMany { .. }
        ),
        "{err}"
    );
}
