//! The upstream engine against a fake OpenAI-compatible server.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cloister_engine::upstream::{UpstreamConfig, UpstreamEngine};
use cloister_engine::{Engine, Error};
use cloister_types::openai::{ChatCompletionChunk, ChatCompletionRequest, ChatMessage};
use cloister_types::wire::{
    API_PREFIX, CHAT_COMPLETIONS_PATH, EVENT_STREAM_CONTENT_TYPE, MODELS_PATH, SSE_DONE, SSE_DONE_EVENT,
};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Notify;

/// Test double for a third-party OpenAI-compatible server such as vLLM: just enough of its API, with
/// one model per behaviour under test.
#[derive(Clone, Default)]
struct FakeOpenAi {
    /// Request bodies received.
    seen: Arc<Mutex<Vec<Value>>>,
    /// The `split` stream pauses after its first piece until this is notified.
    release: Arc<Notify>,
}

const MODELS: [&str; 5] = ["split", "no-usage", "broken", "error-500", "cut-short"];

fn chunk(content: Option<&str>, role: bool, finish: Option<&str>) -> String {
    let mut delta = json!({});
    if role {
        delta["role"] = json!("assistant");
    }
    if let Some(c) = content {
        delta["content"] = json!(c);
    }
    json!({"id": "cmpl-up", "object": "chat.completion.chunk", "created": 7, "model": "m",
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    .to_string()
}

fn sse(events: &[String]) -> String {
    events.iter().map(|e| format!("data: {e}\r\n\r\n")).collect()
}

async fn models() -> Json<Value> {
    let data: Vec<Value> = MODELS
        .iter()
        .map(|m| json!({"id": m, "object": "model", "created": 0, "owned_by": "vllm"}))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

fn body_of(pieces: Vec<String>, release: Option<Arc<Notify>>) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(4);
    tokio::spawn(async move {
        for (i, piece) in pieces.into_iter().enumerate() {
            if tx.send(Ok(Bytes::from(piece))).await.is_err() {
                return;
            }
            if i == 0
                && let Some(r) = &release
            {
                r.notified().await;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
}

async fn chat(State(fake): State<FakeOpenAi>, Json(body): Json<Value>) -> Response {
    fake.seen.lock().expect("lock").push(body.clone());
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    let stream = body["stream"].as_bool().unwrap_or(false);
    if model == "error-500" {
        let err = json!({"error": {"message": "CUDA out of memory", "type": "server_error", "code": null}});
        return (StatusCode::INTERNAL_SERVER_ERROR, Json(err)).into_response();
    }
    if !stream {
        return Json(json!({
            "id": "cmpl-up", "object": "chat.completion", "created": 7, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello world"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
            "system_fingerprint": "fp-fake"
        }))
        .into_response();
    }
    let pieces: Vec<String> = match model.as_str() {
        "split" => {
            let usage = json!({"id": "cmpl-up", "object": "chat.completion.chunk", "created": 7, "model": "m",
                               "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}});
            let text = format!(
                "{}: keep-alive\r\n\r\n{}data: {SSE_DONE}\r\n\r\n",
                sse(&[chunk(Some(""), true, None)]),
                sse(&[
                    chunk(Some("Hello"), false, None),
                    chunk(Some(" world"), false, Some("stop")),
                    usage.to_string()
                ])
            );
            // First piece: the whole first event and half of the next; then 7-byte pieces, so that
            // events and `\r\n` pairs are split across writes.
            let first_end = text.find("\r\n\r\n").expect("event") + 4 + 10;
            let (head, tail) = text.split_at(first_end);
            let mut pieces = vec![head.to_owned()];
            pieces.extend(
                tail.as_bytes()
                    .chunks(7)
                    .map(|c| String::from_utf8_lossy(c).into_owned()),
            );
            pieces
        }
        "no-usage" => vec![
            sse(&[
                chunk(Some("a"), false, None),
                chunk(Some("b"), false, None),
                chunk(Some("c"), false, Some("stop")),
            ]),
            SSE_DONE_EVENT.into(),
        ],
        "broken" => vec![
            sse(&[chunk(Some(""), true, None)]),
            "data: {\"id\": oops}\n\n".into(),
        ],
        _ => vec![sse(&[chunk(Some("partial"), true, None)])],
    };
    let release = (model == "split").then(|| fake.release.clone());
    Response::builder()
        .header(axum::http::header::CONTENT_TYPE, EVENT_STREAM_CONTENT_TYPE)
        .body(body_of(pieces, release))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn start_fake() -> (SocketAddr, FakeOpenAi) {
    let fake = FakeOpenAi::default();
    let app = Router::new()
        .route(MODELS_PATH, get(models))
        .route(CHAT_COMPLETIONS_PATH, post(chat))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, fake)
}

async fn connect(addr: SocketAddr) -> UpstreamEngine {
    let mut config = UpstreamConfig::new(format!("http://{addr}{API_PREFIX}/"));
    config.api_key = Some("sk-test".into());
    config.timeout = Duration::from_secs(10);
    UpstreamEngine::connect(config).await.expect("connect")
}

fn request(model: &str) -> ChatCompletionRequest {
    let mut req = ChatCompletionRequest {
        model: model.into(),
        messages: vec![ChatMessage::text("user", "hi")],
        max_tokens: Some(8),
        ..Default::default()
    };
    req.extra.insert("repetition_penalty".into(), json!(1.1));
    req
}

#[tokio::test]
async fn discovers_models_and_completes_with_passthrough() {
    let (addr, fake) = start_fake().await;
    let engine = connect(addr).await;
    let ids: Vec<String> = engine.models().into_iter().map(|m| m.id).collect();
    assert_eq!(ids, MODELS);
    assert!(
        engine
            .models()
            .iter()
            .all(|m| m.owned_by == "vllm" && m.sha256.is_none())
    );

    let answer = engine.complete(request("split")).await.expect("complete");
    assert_eq!(answer.choices[0].message.text_content(), "Hello world");
    assert_eq!(answer.usage.map(|u| u.total_tokens), Some(7));
    assert_eq!(answer.extra["system_fingerprint"], "fp-fake");
    let seen = fake
        .seen
        .lock()
        .expect("lock")
        .last()
        .cloned()
        .expect("a request");
    assert_eq!(
        seen["stream"],
        Value::Null,
        "stream=false is the default and not sent"
    );
    assert_eq!(seen["repetition_penalty"], 1.1);
    assert_eq!(seen["max_tokens"], 8);

    assert!(matches!(engine.complete(request("nope")).await, Err(Error::UnknownModel(m)) if m == "nope"));
}

#[tokio::test]
async fn stream_passes_chunks_through_as_they_arrive() {
    let (addr, fake) = start_fake().await;
    let engine = connect(addr).await;
    let mut stream = engine.stream(request("split")).await.expect("stream");
    // The upstream holds the rest back until we have the first chunk: nothing is buffered.
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("first chunk before the rest is sent")
        .expect("item")
        .expect("chunk");
    assert_eq!(first.choices[0].delta.role.as_deref(), Some("assistant"));
    fake.release.notify_one();
    let rest: Vec<ChatCompletionChunk> = stream.map(|c| c.expect("chunk")).collect().await;
    let text: String = rest
        .iter()
        .flat_map(|c| &c.choices)
        .filter_map(|c| c.delta.content.clone())
        .collect();
    assert_eq!(text, "Hello world");
    let last = rest.last().expect("last");
    assert!(last.choices.is_empty());
    assert_eq!(
        last.usage.map(|u| (u.prompt_tokens, u.completion_tokens)),
        Some((5, 2))
    );
    assert_eq!(
        rest[rest.len() - 2].choices[0].finish_reason.as_deref(),
        Some("stop")
    );
    let seen = fake
        .seen
        .lock()
        .expect("lock")
        .last()
        .cloned()
        .expect("a request");
    assert_eq!(seen["stream"], true);
    assert_eq!(seen["stream_options"]["include_usage"], true);
    assert_eq!(seen["repetition_penalty"], 1.1);
}

#[tokio::test]
async fn stream_without_usage_gets_an_estimate_and_a_role() {
    let (addr, _fake) = start_fake().await;
    let engine = connect(addr).await;
    let chunks: Vec<ChatCompletionChunk> = engine
        .stream(request("no-usage"))
        .await
        .expect("stream")
        .map(|c| c.expect("chunk"))
        .collect()
        .await;
    assert_eq!(chunks[0].choices[0].delta.role.as_deref(), Some("assistant"));
    let last = chunks.last().expect("last");
    assert!(last.choices.is_empty());
    assert_eq!(last.usage.map(|u| u.completion_tokens), Some(3));
    assert_eq!(last.id, "cmpl-up");
}

#[tokio::test]
async fn upstream_errors_are_mapped() {
    let (addr, _fake) = start_fake().await;
    let engine = connect(addr).await;
    for result in [
        engine.complete(request("error-500")).await.err(),
        engine.stream(request("error-500")).await.err(),
    ] {
        match result {
            Some(Error::Upstream { status: 500, message }) => assert_eq!(message, "CUDA out of memory"),
            other => panic!("expected Upstream 500, got {other:?}"),
        }
    }
    let items: Vec<_> = engine
        .stream(request("broken"))
        .await
        .expect("stream")
        .collect()
        .await;
    assert!(items[0].is_ok());
    assert!(
        matches!(items.last(), Some(Err(Error::UpstreamProtocol(_)))),
        "{items:?}"
    );
    let items: Vec<_> = engine
        .stream(request("cut-short"))
        .await
        .expect("stream")
        .collect()
        .await;
    assert!(
        matches!(items.last(), Some(Err(Error::UpstreamProtocol(_)))),
        "{items:?}"
    );
}

#[tokio::test]
async fn closed_port_is_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let mut config = UpstreamConfig::new(format!("http://{addr}/v1"));
    config.timeout = Duration::from_secs(5);
    let err = UpstreamEngine::connect(config.clone()).await.err();
    assert!(matches!(err, Some(Error::UpstreamUnavailable(_))), "{err:?}");
    config.models = vec!["m".into()];
    let engine = UpstreamEngine::connect(config)
        .await
        .expect("no network at connect with a model list");
    assert!(matches!(
        engine.complete(request("m")).await,
        Err(Error::UpstreamUnavailable(_))
    ));
    assert!(matches!(
        engine.stream(request("m")).await.err(),
        Some(Error::UpstreamUnavailable(_))
    ));
}
