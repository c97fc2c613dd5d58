//! `EvilNode`: a test double of a Cloister node built from the real pieces (a real `EnclaveKey`,
//! a real E2EE key pair, the real envelope, a simulated quote binding the real signer), which can
//! be told to misbehave in one specific way. Honest, it speaks the node's wire protocol.
// A test double: a panic here is a failed test, the right outcome for a broken fixture.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use cloister_crypto::EnclaveKey;
use cloister_crypto::e2ee::{
    E2eeKeyPair, ReplayGuard, SealedRequest, encode_base64, open_request, seal_request,
};
use cloister_types::e2ee::{BoundModel, KeyBinding, key_binding_text, request_aad};
use cloister_types::{AttestationReport, Nonce, ReportData, TeeKind, signature_text, unix_now, wire};

/// The one model the node serves (and binds in its key binding).
pub const MODEL: &str = "evil-model";
/// The metering receipt the node attaches (as a billing node does).
pub const RECEIPT: &str = r#"{"cumulative_amount":"42"}"#;

/// How the node misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misbehaviour {
    /// None: a correct node.
    Honest,
    /// Flips a bit in the sealed answer (plain: the body; stream: the second chunk).
    TamperCiphertext,
    /// Seals the answer under the keys of another HPKE context (another key).
    WrongResponseKey,
    /// Streams without the end marker.
    TruncateStream,
    /// Signs answers with a key other than the attested one.
    SignWithOtherKey,
    /// Its key binding is signed by a key other than the attested signer.
    BindingByOtherKey,
    /// Offers no HPKE key at all.
    NoKeyBinding,
    /// Answers a sealed request in the clear.
    DowngradeToPlaintext,
    /// Answers with the sealed answer it gave to its first request (a replayed answer).
    ReplayFirstAnswer,
    /// Answers 503 to chat requests.
    Overloaded,
    /// Its key binding expires two seconds after each report.
    ShortLivedBinding,
}

/// The keys of one node "boot"; [`EvilNode::restart`] replaces them.
struct Keys {
    key: EnclaveKey,
    e2ee: E2eeKeyPair,
}

struct Inner {
    keys: std::sync::RwLock<Arc<Keys>>,
    other_key: EnclaveKey,
    evil: Misbehaviour,
    replay: Mutex<ReplayGuard>,
    first_answer: Mutex<Option<Bytes>>,
    /// Every sealed request body seen (base64 text), and its headers, for replay tests.
    seen: Mutex<Vec<(HeaderMap, Bytes)>>,
    /// How many attestation reports were asked for.
    reports: std::sync::atomic::AtomicUsize,
    /// The `Authorization` header of the last chat request.
    authorization: Mutex<Option<String>>,
}

/// A running node double, serving on a loopback port until the test's runtime ends.
#[derive(Clone)]
pub struct EvilNode {
    /// Its base URL (`http://127.0.0.1:port`).
    pub url: String,
    inner: Arc<Inner>,
}

impl EvilNode {
    /// Starts a node misbehaving as `evil` on a loopback port (on the current runtime).
    pub async fn start(evil: Misbehaviour) -> Self {
        let inner = Arc::new(Inner {
            keys: std::sync::RwLock::new(Arc::new(Keys {
                key: EnclaveKey::generate(),
                e2ee: E2eeKeyPair::generate(),
            })),
            other_key: EnclaveKey::generate(),
            evil,
            replay: Mutex::new(ReplayGuard::new(Duration::from_secs(600), 1024)),
            first_answer: Mutex::new(None),
            seen: Mutex::new(Vec::new()),
            reports: std::sync::atomic::AtomicUsize::new(0),
            authorization: Mutex::new(None),
        });
        let app = Router::new()
            .route(wire::ATTESTATION_REPORT_PATH, get(report))
            .route(wire::MODELS_PATH, get(models))
            .route(wire::CHAT_COMPLETIONS_PATH, post(chat))
            .with_state(Arc::clone(&inner));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://{addr}"),
            inner,
        }
    }

    /// The attested signer (lowercase hex) of the current keys.
    pub fn signer_hex(&self) -> String {
        self.inner
            .keys
            .read()
            .unwrap()
            .key
            .address_hex()
            .to_ascii_lowercase()
    }

    /// Simulates a restart: a new signing key and a new E2EE key, as a real node gets at boot.
    pub fn restart(&self) {
        *self.inner.keys.write().unwrap() = Arc::new(Keys {
            key: EnclaveKey::generate(),
            e2ee: E2eeKeyPair::generate(),
        });
    }

    /// How many attestation reports were asked for.
    pub fn reports_served(&self) -> usize {
        self.inner.reports.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The `Authorization` header of the last chat request.
    pub fn last_authorization(&self) -> Option<String> {
        self.inner.authorization.lock().unwrap().clone()
    }

    /// The sealed requests received so far.
    pub fn seen(&self) -> Vec<(HeaderMap, Bytes)> {
        self.inner.seen.lock().unwrap().clone()
    }
}

/// The measurement digest of every simulated quote.
pub fn simulated_measurement() -> String {
    let quote = cloister_attest::simulated::simulated_quote(&ReportData::new(
        cloister_types::Address::repeat_byte(0),
        Nonce([0; 32]),
    ));
    let parsed = cloister_attest::quote::parse_quote(&quote).unwrap();
    hex::encode(
        cloister_attest::measurements::Measurements::from_quote(&parsed)
            .unwrap()
            .digest(),
    )
}

#[derive(serde::Deserialize)]
struct ReportQuery {
    // The wire name is `wire::QUERY_NONCE`.
    nonce: String,
}

async fn report(State(s): State<Arc<Inner>>, Query(q): Query<ReportQuery>) -> Response {
    let k = Arc::clone(&s.keys.read().unwrap());
    s.reports.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let nonce: Nonce = q.nonce.parse().unwrap();
    let quote = cloister_attest::simulated::simulated_quote(&ReportData::new(k.key.address(), nonce));
    let models = vec![BoundModel {
        id: MODEL.into(),
        sha256: None,
    }];
    let validity = if s.evil == Misbehaviour::ShortLivedBinding {
        2
    } else {
        3600
    };
    let expires_at = unix_now() + validity;
    let binder = if s.evil == Misbehaviour::BindingByOtherKey {
        &s.other_key
    } else {
        &k.key
    };
    let pk = k.e2ee.public_key_bytes();
    let (hpke_public_key, key_binding) = if s.evil == Misbehaviour::NoKeyBinding {
        (None, None)
    } else {
        (
            Some(hex::encode(pk)),
            Some(KeyBinding {
                signature: binder.sign_personal_hex(key_binding_text(&pk, &models, expires_at).as_bytes()),
                models,
                expires_at,
            }),
        )
    };
    axum::Json(AttestationReport {
        signing_address: k.key.address_hex(),
        signing_algo: "ecdsa".into(),
        request_nonce: nonce.to_hex(),
        intel_quote: hex::encode(quote),
        nvidia_payload: None,
        event_log: serde_json::Value::Null,
        info: serde_json::json!({}),
        tee: Some(TeeKind::Simulated),
        hpke_public_key,
        signing_public_key: None,
        tls_cert_fingerprint: None,
        key_binding,
    })
    .into_response()
}

async fn models() -> Response {
    axum::Json(serde_json::json!({"object":"list","data":[{"id":MODEL,"object":"model","created":0,"owned_by":"evil"}]}))
        .into_response()
}

fn refuse(code: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(serde_json::json!({"error":{"message":code,"type":"invalid_request_error","code":code}})),
    )
        .into_response()
}

const ANSWER_TEXT: &str = "The sky is blue.";

fn completion() -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "id": "chatcmpl-evil", "object": "chat.completion", "created": 1, "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER_TEXT}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    }))
    .unwrap()
}

fn stream_events() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = ["The", " sky", " is", " blue."]
        .iter()
        .map(|w| {
            format!(
                "data: {}\n\n",
                serde_json::json!({"id":"chatcmpl-evil","object":"chat.completion.chunk","created":1,"model":MODEL,
                    "choices":[{"index":0,"delta":{"content":w},"finish_reason":null}]})
            )
            .into_bytes()
        })
        .collect();
    out.push(wire::SSE_DONE_EVENT.as_bytes().to_vec());
    out
}

async fn chat(State(s): State<Arc<Inner>>, headers: HeaderMap, raw: Bytes) -> Response {
    let k = Arc::clone(&s.keys.read().unwrap());
    *s.authorization.lock().unwrap() = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if s.evil == Misbehaviour::Overloaded {
        return (StatusCode::SERVICE_UNAVAILABLE, "overloaded").into_response();
    }
    let sealed_req = headers.contains_key(wire::E2EE_HEADER);
    let (request, keys) = if sealed_req {
        s.seen.lock().unwrap().push((headers.clone(), raw.clone()));
        let ts: u64 = headers[wire::E2EE_TIMESTAMP_HEADER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let model = headers[wire::MODEL_HEADER].to_str().unwrap();
        let Ok(sealed) = SealedRequest::from_base64(std::str::from_utf8(&raw).unwrap()) else {
            return refuse("e2ee_malformed");
        };
        let aad = request_aad("POST", wire::CHAT_COMPLETIONS_PATH, ts, model);
        let Ok((body, keys)) = open_request(&k.e2ee, &k.key.address(), &sealed, &aad) else {
            return refuse("e2ee_open_failed");
        };
        if s.replay.lock().unwrap().check_and_insert(&sealed.enc).is_err() {
            return refuse("e2ee_replayed");
        }
        (Bytes::from(body), Some(keys))
    } else {
        (raw, None)
    };
    let wants_stream = serde_json::from_slice::<serde_json::Value>(&request)
        .ok()
        .and_then(|v| v.get("stream")?.as_bool())
        .unwrap_or(false);
    let signer = if s.evil == Misbehaviour::SignWithOtherKey {
        &s.other_key
    } else {
        &k.key
    };
    // Keys of an unrelated HPKE context, for the wrong-key misbehaviour.
    let wrong_keys = || {
        let other = E2eeKeyPair::generate();
        let (sealed, _) = seal_request(&other.public_key_bytes(), &k.key.address(), b"x", b"").unwrap();
        open_request(&other, &k.key.address(), &sealed, b"").unwrap().1
    };
    if !wants_stream {
        let body = completion();
        let record_sig = signer.sign_personal_hex(signature_text(&request, &body).as_bytes());
        let mut resp = Response::builder()
            .status(200)
            .header(wire::SIGNATURE_HEADER, record_sig)
            .header(wire::SIGNING_ADDRESS_HEADER, k.key.address_hex())
            .header(wire::SIGNATURE_ID_HEADER, "chatcmpl-evil")
            .header(wire::RECEIPT_HEADER, RECEIPT);
        let Some(keys) = keys else {
            return resp
                .header(header::CONTENT_TYPE, wire::JSON_CONTENT_TYPE)
                .body(Body::from(body))
                .unwrap();
        };
        if s.evil == Misbehaviour::DowngradeToPlaintext {
            return resp
                .header(header::CONTENT_TYPE, wire::JSON_CONTENT_TYPE)
                .body(Body::from(body))
                .unwrap();
        }
        let keys = if s.evil == Misbehaviour::WrongResponseKey {
            wrong_keys()
        } else {
            keys
        };
        let mut sealed = keys.seal_body(&body);
        if s.evil == Misbehaviour::TamperCiphertext {
            sealed[3] ^= 1;
        }
        let mut text = Bytes::from(encode_base64(&sealed));
        if s.evil == Misbehaviour::ReplayFirstAnswer {
            let mut first = s.first_answer.lock().unwrap();
            match first.as_ref() {
                Some(f) => text = f.clone(),
                None => *first = Some(text.clone()),
            }
        }
        resp = resp
            .header(wire::E2EE_HEADER, wire::E2EE_VERSION)
            .header(header::CONTENT_TYPE, wire::SEALED_CONTENT_TYPE);
        return resp.body(Body::from(text)).unwrap();
    }
    // Streamed: the plaintext SSE the node would send, then its signature event.
    let events = stream_events();
    let signed: Vec<u8> = events.concat();
    let record = serde_json::json!({
        "text": signature_text(&request, &signed),
        "signature": signer.sign_personal_hex(signature_text(&request, &signed).as_bytes()),
        "signing_address": k.key.address_hex(),
        "signing_algo": "ecdsa",
        "receipt": serde_json::from_str::<serde_json::Value>(RECEIPT).unwrap(),
    });
    let mut plain_events = events;
    plain_events.push(format!("event: {}\ndata: {record}\n\n", wire::SIGNATURE_EVENT).into_bytes());
    let wire: Vec<Bytes> = match keys {
        None => plain_events.into_iter().map(Bytes::from).collect(),
        Some(keys) => {
            let keys = if s.evil == Misbehaviour::WrongResponseKey {
                wrong_keys()
            } else {
                keys
            };
            let mut sealer = keys.sealer();
            let mut out: Vec<Bytes> = plain_events
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let mut ct = sealer.seal_chunk(e);
                    if s.evil == Misbehaviour::TamperCiphertext && i == 1 {
                        ct[0] ^= 1;
                    }
                    Bytes::from(format!("data: {}\n\n", encode_base64(&ct)))
                })
                .collect();
            if s.evil != Misbehaviour::TruncateStream {
                out.push(Bytes::from(format!(
                    "data: {}\n\n",
                    encode_base64(&sealer.finish())
                )));
            }
            out
        }
    };
    let body = futures::stream::iter(wire.into_iter().map(Ok::<_, std::convert::Infallible>));
    let mut resp = Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, wire::EVENT_STREAM_CONTENT_TYPE)
        .header(wire::SIGNING_ADDRESS_HEADER, k.key.address_hex());
    if sealed_req && s.evil != Misbehaviour::DowngradeToPlaintext {
        resp = resp.header(wire::E2EE_HEADER, wire::E2EE_VERSION);
    }
    resp.body(Body::from_stream(body)).unwrap()
}
