//! `cloister gateway` on a devnet with two paid nodes, and `cloister proxy --gateway --wallet` in
//! front of it: the gateway discovers and verifies the nodes, two replicas agree, requests reach
//! the nodes sealed and byte for byte (a canary prompt is in neither the gateway's traffic nor its
//! log), one wallet pays both nodes, and when a node dies the proxy re-seals to the other.

use cloister_types::gateway::{GatewayNetwork, GatewayNodeList};
use cloister_types::wire;
use serde_json::Value;

use crate::paid::PaidNet;
use crate::proxy::stack::{MODEL, chat_body, start_proxy, start_relay};

async fn get<T: serde::de::DeserializeOwned>(http: &reqwest::Client, url: String) -> T {
    let resp = http.get(&url).send().await.unwrap();
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    resp.json().await.unwrap()
}

/// The OpenAI Python SDK through the proxy: the checks every answer passes, a model no node serves
/// is 404 `no_node_for_model`; returns the signer of its chat answer (`None` without the SDK).
async fn python_sdk(proxy_url: &str) -> Option<String> {
    let v = crate::proxy::openai_sdk_through(proxy_url).await?;
    assert_eq!(v["error"]["status"], 404, "{v}");
    assert_eq!(v["error"]["code"], "no_node_for_model", "{v}");
    Some(v["chat"]["signer"].as_str().unwrap().to_lowercase())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_routes_sealed_paid_requests_across_nodes_without_seeing_them() {
    let dir = tempfile::tempdir().unwrap();
    let Some(net) = PaidNet::start(&dir).await else {
        return;
    };
    let file = &net.file;
    // The client deposits once; its wallet will pay both nodes.
    let client_key = net.key("client");
    net.deposit("client").await;

    // Two nodes of two operators: the cheap one is preferred while both are idle.
    let (mut cheap, _) = net.node(&dir, "operator", "1000:2000", &[], &[]).await;
    let (_dear, _) = net.node(&dir, "requester", "5000:5000", &[], &[]).await;

    // Two gateway replicas over one registry see the same network, in the same order.
    let (gw1, gw1_url) = net.gateway(&dir, "gateway-1").await;
    let (_gw2, gw2_url) = net.gateway(&dir, "gateway-2").await;
    let http = reqwest::Client::new();
    let list1: GatewayNodeList = get(
        &http,
        format!("{gw1_url}{}?model={MODEL}", wire::GATEWAY_NODES_PATH),
    )
    .await;
    let list2: GatewayNodeList = get(
        &http,
        format!("{gw2_url}{}?model={MODEL}", wire::GATEWAY_NODES_PATH),
    )
    .await;
    let order = |l: &GatewayNodeList| {
        l.data
            .iter()
            .map(|n| n.signing_address.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(list1.data.len(), 2, "{list1:?}\n{}", gw1.log_text());
    assert_eq!(order(&list1), order(&list2));
    assert!(list1.data.iter().all(|n| n.verified && n.measurement_allowed));
    let cheap_signer = list1.data[0].signing_address.clone();
    let dear_signer = list1.data[1].signing_address.clone();
    assert_eq!(list1.data[0].model(MODEL).unwrap().input_price, "1000");
    let models: Value = get(&http, format!("{gw1_url}{}", wire::MODELS_PATH)).await;
    assert_eq!(models["data"][0]["id"], MODEL);
    assert_eq!(models["data"][0]["nodes"], 2);
    let network: GatewayNetwork = get(&http, format!("{gw2_url}{}", wire::GATEWAY_NETWORK_PATH)).await;
    assert_eq!(network.chain_id, file.chain_id);
    assert_eq!(network.escrow, Some(format!("{:#x}", file.contracts.escrow)));
    assert_eq!((network.nodes, network.verified), (2, 2));

    // A node's report comes through with the client's nonce; the gateway's own report binds its signer.
    let nonce = "ab".repeat(32);
    let report: Value = get(
        &http,
        format!(
            "{gw1_url}{}?{}={dear_signer}&{}={nonce}",
            wire::ATTESTATION_REPORT_PATH,
            wire::QUERY_SIGNING_ADDRESS,
            wire::QUERY_NONCE
        ),
    )
    .await;
    assert_eq!(report["request_nonce"], nonce);
    assert_eq!(
        report["signing_address"].as_str().unwrap().to_lowercase(),
        dear_signer
    );
    let own: Value = get(
        &http,
        format!(
            "{gw2_url}{}?{}={nonce}",
            wire::GATEWAY_ATTESTATION_PATH,
            wire::QUERY_NONCE
        ),
    )
    .await;
    assert_eq!(own["request_nonce"], nonce);
    assert_eq!(
        own["signing_address"].as_str().unwrap().to_lowercase(),
        network.gateway_signer
    );
    assert_eq!(own["info"]["role"], "gateway");
    assert!(
        own["hpke_public_key"].is_null(),
        "nothing is ever sealed to the gateway"
    );
    // `cloister attest verify` checks the gateway itself (a client may trust it for routing).
    let mut command = crate::cloister();
    command.args(["attest", "verify", &gw2_url, "--allow-simulated", "--json"]);
    let stdout = crate::stdout_of(command, String::new).await;
    assert!(
        stdout.to_lowercase().contains(&network.gateway_signer),
        "{stdout}"
    );

    // The gateway carries no prompt in clear, and names what is wrong with a request.
    let resp = http
        .post(format!("{gw1_url}{}", wire::CHAT_COMPLETIONS_PATH))
        .header(wire::GATEWAY_NODE_HEADER, &cheap_signer)
        .json(&chat_body("in clear", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "plaintext_refused"
    );
    let resp = http
        .post(format!("{gw1_url}{}", wire::CHAT_COMPLETIONS_PATH))
        .header(wire::E2EE_HEADER, wire::E2EE_VERSION)
        .header(
            wire::GATEWAY_NODE_HEADER,
            format!("{:#x}", cloister_types::Address::repeat_byte(7)),
        )
        .body("sealed-looking")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "node_not_found"
    );

    // The proxy reaches gateway 1 through a recording relay, and pays from one wallet.
    let relay = start_relay(gw1_url.trim_start_matches("http://").parse().unwrap());
    let relay_url = format!("http://{}", relay.addr);
    let (mut proxy, proxy_url) = start_proxy(
        &dir,
        &[
            "--gateway",
            &relay_url,
            "--chain",
            net.chain_arg(),
            "--allow-simulated",
            "--wallet",
            &client_key,
            "--budget",
            "1000000000",
        ],
        "proxy",
    )
    .await;
    let canary = "CANARY-d41d8cd98f00b204e980";
    let mut receipts = Vec::new();
    for stream in [false, true] {
        let resp = http
            .post(format!("{proxy_url}{}", wire::CHAT_COMPLETIONS_PATH))
            .json(&chat_body(canary, stream))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{}", proxy.log_text());
        assert_eq!(resp.headers()[wire::VERIFIED_HEADER], "true");
        assert_eq!(
            resp.headers()[wire::SIGNER_HEADER]
                .to_str()
                .unwrap()
                .to_lowercase(),
            cheap_signer
        );
        if !stream {
            receipts.push(resp.headers()[wire::RECEIPT_HEADER].to_str().unwrap().to_owned());
        }
        let text = resp.text().await.unwrap();
        assert!(text.contains(canary), "{text}");
    }

    // The OpenAI Python SDK, pointed at the proxy, gets verified sealed paid answers (when installed).
    let python_signer = python_sdk(&proxy_url).await;
    if let Some(signer) = &python_signer {
        assert_eq!(signer, &cheap_signer);
    }

    // The cheap node dies: the gateway answers 502 for it, and the proxy re-seals to the other.
    let _ = cheap.child.kill();
    let _ = cheap.child.wait();
    let resp = http
        .post(format!("{proxy_url}{}", wire::CHAT_COMPLETIONS_PATH))
        .json(&chat_body(canary, false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", proxy.log_text());
    assert_eq!(
        resp.headers()[wire::SIGNER_HEADER]
            .to_str()
            .unwrap()
            .to_lowercase(),
        dear_signer
    );
    receipts.push(resp.headers()[wire::RECEIPT_HEADER].to_str().unwrap().to_owned());
    if python_signer.is_some() {
        assert_eq!(
            python_sdk(&proxy_url).await.as_deref(),
            Some(dear_signer.as_str())
        );
    }

    // The gateway says so honestly: the dead node is unreachable (502), and after three failures in
    // a row, or once its refresh cannot verify it, unavailable (503, Retry-After).
    let mut codes = Vec::new();
    for _ in 0..4 {
        let resp = http
            .post(format!("{gw1_url}{}", wire::CHAT_COMPLETIONS_PATH))
            .header(wire::E2EE_HEADER, wire::E2EE_VERSION)
            .header(wire::GATEWAY_NODE_HEADER, &cheap_signer)
            .body("sealed-looking")
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let retry_after = resp.headers().get("retry-after").is_some();
        let code = resp.json::<Value>().await.unwrap()["error"]["code"]
            .as_str()
            .unwrap()
            .to_owned();
        codes.push((status, code, retry_after));
    }
    // (Which of the two the first answers are depends on how many failures this gateway already
    // saw, and on whether its refresh already found the node unverifiable.)
    assert!(
        codes
            .iter()
            .all(|c| *c == (502, "node_unreachable".to_owned(), false)
                || *c == (503, "node_unavailable".to_owned(), true)),
        "{codes:?}"
    );
    assert_eq!(
        codes.last().unwrap(),
        &(503, "node_unavailable".to_owned(), true),
        "{codes:?}"
    );

    // One wallet, two authorizations (one per operator), each node billing its own.
    let receipts: Vec<Value> = receipts
        .iter()
        .map(|r| serde_json::from_str(r).unwrap())
        .collect();
    assert_ne!(receipts[0]["authorization"], receipts[1]["authorization"]);
    for r in &receipts {
        assert_ne!(r["cumulative_amount"], "0", "{r}");
    }

    // What the gateway saw: sealed bytes. The canary is in neither direction of its traffic nor
    // in its (debug-level) log, although the client got it back in every answer.
    let seen = |bytes: &[u8]| bytes.windows(canary.len()).any(|w| w == canary.as_bytes());
    assert!(
        !seen(&relay.to_node.lock().unwrap()),
        "a prompt crossed the gateway in clear"
    );
    assert!(
        !seen(&relay.from_node.lock().unwrap()),
        "an answer crossed the gateway in clear"
    );
    assert!(
        relay.to_node.lock().unwrap().len() > 1000,
        "the traffic was recorded"
    );
    // At shutdown (SIGTERM) the proxy lists the wallet's authorizations with their receipts.
    let pid = proxy.child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let proxy = tokio::task::spawn_blocking(move || {
        let _ = proxy.child.wait();
        proxy
    })
    .await
    .unwrap();
    let log = proxy.log_text();
    assert!(log.contains("2 spend authorization(s) signed"), "{log}");
    assert_eq!(log.matches("receipts up to").count(), 2, "{log}");
    let log = gw1.log_text();
    assert!(
        log.contains("forwarded"),
        "the gateway logs what it forwards:\n{log}"
    );
    assert!(!log.contains(canary), "the gateway logged a prompt");
}
