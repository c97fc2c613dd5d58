//! Tool calls pass through the upstream engine to a real llama.cpp `llama-server` and back, plain,
//! streamed and sealed under E2EE: the client gets OpenAI `tool_calls` (function name, JSON
//! arguments, `finish_reason: "tool_calls"`), signed by the node over the exact bytes and metered.
//!
//! SmolLM2's own chat template has no tools, so the server runs our Hermes-style template
//! (`cloister_testkit::models::tool_chat_template`); with it llama.cpp constrains the answer to a
//! `<tool_call>` when `tool_choice` is `required`. (Skips without llama-server, unless the test
//! command built it.)

use std::sync::Arc;
use std::time::Duration;

use cloister_crypto::e2ee::decode_base64;
use cloister_engine::upstream::{UpstreamConfig, UpstreamEngine};
use cloister_node::NodeConfig;
use cloister_types::e2ee::HEADER_E2EE;
use cloister_types::{signature_text, wire};
use serde_json::{Value, json};

use crate::common::{TestNode, address, get_text, sealed_post, signer};
use crate::stream::stream_chat;

/// A chat asking for the weather with a `get_weather` tool, `tool_choice: "required"`. Two earlier
/// turns show the model the call format (a 135M model follows an example better than a prompt).
fn tool_request(stream: bool) -> Vec<u8> {
    let call = |id: &str, city: &str| {
        json!({"role": "assistant", "content": "", "tool_calls": [{
            "id": id, "type": "function",
            "function": {"name": "get_weather", "arguments": json!({"city": city}).to_string()},
        }]})
    };
    let mut body = json!({
        "model": "smol",
        "messages": [
            {"role": "user", "content": "What is the weather in London?"},
            call("call_1", "London"),
            {"role": "user", "content": "What is the weather in Tokyo?"},
            call("call_2", "Tokyo"),
            {"role": "user", "content": "What is the weather in Paris?"},
        ],
        "tools": [{"type": "function", "function": {
            "name": "get_weather",
            "description": "Get the current weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        }}],
        "tool_choice": "required",
        "temperature": 0,
        "max_tokens": 64,
        "stream": stream,
    });
    if stream {
        body["stream_options"] = json!({"include_usage": true});
    }
    serde_json::to_vec(&body).unwrap()
}

/// The completion tokens the node has metered for model `smol` (its Prometheus counter).
async fn metered_completion_tokens(node: &TestNode) -> u64 {
    let text = get_text(&reqwest::Client::new(), node.url(wire::METRICS_PATH)).await;
    let prefix = "cloister_tokens_total{model=\"smol\",kind=\"completion\"} ";
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// Checks one non-streamed answer: a `get_weather` call with a city, finish reason `tool_calls`;
/// returns its completion tokens.
fn check_tool_answer(body: &[u8]) -> u64 {
    let answer: Value = serde_json::from_slice(body).unwrap();
    let choice = &answer["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{answer}");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function", "{answer}");
    assert_eq!(call["function"]["name"], "get_weather", "{answer}");
    let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(args["city"].as_str().is_some_and(|c| !c.is_empty()), "{args}");
    let tokens = answer["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(tokens > 0, "{answer}");
    tokens
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_pass_through_to_a_real_llama_server() {
    let Some(model) = cloister_testkit::models::chat_model() else {
        return;
    };
    let Some(server) = cloister_testkit::models::tool_llama_server(model, "smol").await else {
        return;
    };
    let upstream = UpstreamEngine::connect(UpstreamConfig {
        base_url: server.base_url.clone(),
        api_key: None,
        models: Vec::new(),
        timeout: Duration::from_secs(120),
    })
    .await
    .unwrap();
    let node = TestNode::start(Arc::new(upstream), NodeConfig::default()).await;
    let signing = node.state.signing_address().to_owned();
    let http = reqwest::Client::new();

    // Plain.
    let before = metered_completion_tokens(&node).await;
    let request = tool_request(false);
    let resp = http
        .post(node.url(wire::CHAT_COMPLETIONS_PATH))
        .header("content-type", wire::JSON_CONTENT_TYPE)
        .body(request.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let signature = resp.headers()[wire::SIGNATURE_HEADER]
        .to_str()
        .unwrap()
        .to_owned();
    let body = resp.bytes().await.unwrap().to_vec();
    let tokens = check_tool_answer(&body);
    assert_eq!(signer(&request, &body, &signature), address(&signing));
    let after = metered_completion_tokens(&node).await;
    assert_eq!(after - before, tokens, "the tool call is metered");

    // Sealed under E2EE: the same call, opened by the client's keys, signed over the plaintext.
    let (req, keys) = sealed_post(
        &node,
        wire::CHAT_COMPLETIONS_PATH,
        wire::CHAT_COMPLETIONS_PATH,
        "smol",
        &request,
    );
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()[HEADER_E2EE], "v1");
    let signature = resp.headers()[wire::SIGNATURE_HEADER]
        .to_str()
        .unwrap()
        .to_owned();
    let plain = keys
        .open_body(&decode_base64(&resp.text().await.unwrap()).unwrap())
        .unwrap();
    check_tool_answer(&plain);
    assert_eq!(signer(&request, &plain, &signature), address(&signing));

    // Streamed: tool-call deltas with no content pass through, signed and metered.
    let before = metered_completion_tokens(&node).await;
    let request = tool_request(true);
    let (answer, _, headers) = stream_chat(&node, &request).await;
    let id = headers[wire::SIGNATURE_ID_HEADER].to_str().unwrap().to_owned();
    assert_eq!(answer.data.last().map(String::as_str), Some(wire::SSE_DONE));
    let chunks = answer.chunks();
    for chunk in &chunks {
        assert_eq!(chunk["id"], id.as_str(), "every chunk carries the node's id");
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0)?["delta"].get("tool_calls")?.get(0))
        .collect();
    assert!(calls.len() > 1, "the call streams as deltas: {chunks:?}");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let arguments: String = calls
        .iter()
        .filter_map(|c| c["function"]["arguments"].as_str())
        .collect();
    let args: Value = serde_json::from_str(&arguments).unwrap();
    assert!(args["city"].as_str().is_some_and(|c| !c.is_empty()), "{args}");
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "tool_calls"),
        "{chunks:?}"
    );
    let usage = &chunks.last().unwrap()["usage"];
    let tokens = usage["completion_tokens"].as_u64().unwrap();
    assert!(tokens > 0, "{usage}");
    let event = answer
        .signature
        .clone()
        .expect("a signature event ends the stream");
    assert_eq!(event["id"], id.as_str());
    assert_eq!(event["text"], signature_text(&request, &answer.signed).as_str());
    assert_eq!(
        signer(&request, &answer.signed, event["signature"].as_str().unwrap()),
        address(&signing)
    );
    let after = metered_completion_tokens(&node).await;
    assert_eq!(after - before, tokens, "the streamed tool call is metered");
}
