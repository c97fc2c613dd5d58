//! Tool calls, JSON mode and `/v1/completions` end to end through every real piece: the official
//! OpenAI Python SDK (`openai_tools.py`) → a real `cloister proxy` (E2EE on, verifying the node's
//! simulated attestation under the explicit development flag) → a real `cloister node run
//! --upstream` → a real llama.cpp `llama-server` running SmolLM2 with our Hermes-style tool template
//! (`cloister_testkit::models::tool_chat_template`). The node is paid (registered on an anvil devnet,
//! [`PaidNet`]); the proxy finds it on chain and the SDK's API key is the client's signed spend
//! authorization. Each plain answer must come back verified, signature-checked and sealed with the
//! node's metering receipt, whose cumulative amount covers every answer so far (the streamed ones
//! included), and the node must meter what it served. Skips with a message without the model,
//! llama-server, the SDK or anvil (unless the `CLOISTER_REQUIRE_*` variables say not to).
//!
//! Embeddings from a llama-server upstream are `embeddings.rs`'s: they need a second llama-server
//! (`--embedding` with an embedding model), which this test does not start.

use serde_json::Value;

use crate::paid::PaidNet;
use crate::proxy::python;
use crate::proxy::stack::{Proc, free_port, start_proxy, wait_ready};
use crate::{model_path, workspace_root};
use cloister_types::eip712::ApiKey;
use cloister_types::wire;

/// The id llama-server serves the chat model as (`--alias`).
const MODEL: &str = "smol";
/// What the node charges per prompt token and per completion token.
const PRICE_IN: u128 = 1000;
/// See [`PRICE_IN`].
const PRICE_OUT: u128 = 2000;

/// The completion tokens the node at `node_url` has metered for [`MODEL`] (its Prometheus counter).
async fn metered_completion_tokens(node_url: &str) -> u64 {
    let text = reqwest::get(format!("{node_url}{}", wire::METRICS_PATH))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("cloister_tokens_total{{model=\"{MODEL}\",kind=\"completion\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// Asserts the proxy's verdict headers that `openai_tools.py` read off one plain answer.
fn assert_verified_and_sealed(v: &Value, case: &str) {
    assert_eq!(v[case]["verified"], "true", "{case}: {v}");
    assert_eq!(v[case]["signature_verified"], "true", "{case}: {v}");
    assert_eq!(v[case]["e2ee"], "sealed", "{case}: {v}");
}

/// What one plain answer costs at the node's price, from the usage it reports.
fn cost(v: &Value, case: &str) -> u128 {
    let tokens = |kind: &str| {
        u128::from(
            v[case][kind]
                .as_u64()
                .unwrap_or_else(|| panic!("{case} reports {kind}: {v}")),
        )
    };
    tokens("prompt_tokens") * PRICE_IN + tokens("completion_tokens") * PRICE_OUT
}

/// The cumulative amount of the metering receipt on one plain answer, charged to `authorization`.
fn cumulative(v: &Value, case: &str, authorization: &str) -> u128 {
    let receipt = &v[case]["receipt"];
    assert_eq!(
        receipt["authorization"], authorization,
        "{case} carries a receipt for the API key: {v}"
    );
    receipt["cumulative_amount"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("{case}'s receipt states a cumulative amount: {v}"))
}

/// `arguments` is a JSON object naming a non-empty city.
fn assert_city(arguments: &Value, v: &Value) {
    assert!(
        arguments["city"].as_str().is_some_and(|c| !c.is_empty()),
        "arguments are a JSON object with a city: {v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_sdk_gets_tool_calls_json_mode_and_completions_from_a_real_llama_server() {
    let (Some(python), Some(model)) = (python(), model_path()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let Some(net) = PaidNet::start(&dir).await else {
        return;
    };
    let Some(server) = cloister_testkit::models::tool_llama_server(model, MODEL).await else {
        return;
    };

    // A paid node over llama-server: registered on the devnet (before it serves), metering into
    // its ledger.
    let listen = format!("127.0.0.1:{}", free_port());
    let paid = net.node_flags(&dir, "operator", MODEL, &format!("{PRICE_IN}:{PRICE_OUT}"));
    let mut args = vec![
        "node",
        "run",
        "--upstream",
        &server.base_url,
        "--upstream-model",
        MODEL,
        "--dev-simulated-tee",
        "--listen",
        &listen,
    ];
    args.extend(paid.iter().map(String::as_str));
    let mut node = Proc::spawn(&args, dir.path().join("node.log"));
    let node_url = format!("http://{listen}");
    wait_ready(&node_url, &mut node).await;

    // The client deposits and signs a spend authorization for the operator: the SDK's API key.
    net.deposit("client").await;
    let api_key = net.api_key("client", "operator");
    let authorization = ApiKey::decode(&api_key)
        .unwrap()
        .authorization_id(&net.escrow_domain());
    let authorization = format!("{authorization:#x}");

    // The proxy is given the chain only: it finds the node in the registry.
    let (proxy, proxy_url) =
        start_proxy(&dir, &["--chain", net.chain_arg(), "--allow-simulated"], "proxy").await;
    let metered_before = metered_completion_tokens(&node_url).await;

    let script = workspace_root().join("crates/cli/tests/it/openai_tools.py");
    let mut command = std::process::Command::new(&python);
    command
        .arg(&script)
        .args([&format!("{proxy_url}/v1"), MODEL, &api_key]);
    let stdout = crate::stdout_of(command, || {
        format!("node:\n{}\nproxy:\n{}", node.log_text(), proxy.log_text())
    })
    .await;
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();

    // (1) A tool call, plain: the SDK parses the call; verified, signed and sealed.
    let tool = &v["tool"];
    assert_eq!(tool["finish_reason"], "tool_calls", "{v}");
    assert_eq!(tool["type"], "function", "{v}");
    assert_eq!(tool["name"], "get_weather", "{v}");
    assert_city(&tool["arguments"], &v);
    assert_verified_and_sealed(&v, "tool");

    // (2) The same call streamed: the deltas accumulate to the same name and JSON arguments.
    let streamed = &v["tool_stream"];
    assert_eq!(streamed["name"], "get_weather", "{v}");
    assert_city(&streamed["arguments"], &v);
    assert_eq!(streamed["finish_reason"], "tool_calls", "{v}");
    assert!(
        streamed["deltas"].as_u64().unwrap_or(0) > 1,
        "the call streams as deltas: {v}"
    );

    // (3) JSON mode: the content parses as JSON.
    assert_eq!(v["json_mode"]["is_json"], true, "{v}");
    assert_verified_and_sealed(&v, "json_mode");

    // (4) Text completions, streamed and plain.
    let completion = &v["completion"];
    assert_eq!(completion["object"], "text_completion", "{v}");
    assert!(completion["text"].as_str().is_some_and(|t| !t.is_empty()), "{v}");
    assert_verified_and_sealed(&v, "completion");
    assert!(
        v["completion_stream"]["text"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "{v}"
    );

    // Metered: every plain answer's usage, plus at least a token for each streamed one.
    let plain: u64 = ["tool", "json_mode", "completion"]
        .iter()
        .map(|case| {
            let tokens = v[case]["completion_tokens"].as_u64().unwrap_or(0);
            assert!(tokens > 0, "{case} reports its usage: {v}");
            tokens
        })
        .sum();
    let metered = metered_completion_tokens(&node_url).await - metered_before;
    assert!(
        metered >= plain + 2,
        "the node metered {metered} completion tokens, the plain answers alone report {plain}: {v}"
    );

    // Paid: each plain answer carries the node's receipt for the API key. The first charge on the
    // authorization is exactly the tool call's usage at the price; each later receipt's cumulative
    // amount rises by more than its own answer's cost, because the streamed answer sent between
    // them was charged too (its receipt rides the stream's signature event, after the `[DONE]` the
    // SDK stops at).
    let tool_total = cumulative(&v, "tool", &authorization);
    assert_eq!(tool_total, cost(&v, "tool"), "the tool call's charge: {v}");
    assert!(tool_total > 0, "{v}");
    let json_total = cumulative(&v, "json_mode", &authorization);
    assert!(
        json_total > tool_total + cost(&v, "json_mode"),
        "JSON mode's receipt covers it and the streamed tool call: {v}"
    );
    let completion_total = cumulative(&v, "completion", &authorization);
    assert!(
        completion_total > json_total + cost(&v, "completion"),
        "the completion's receipt covers it and the streamed completion: {v}"
    );
    drop(server);
}
