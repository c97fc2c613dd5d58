//! `EvilGateway`: a test double of a `cloister gateway` that sits between a client and real node
//! doubles ([`EvilNode`](crate::EvilNode)s) and attacks in one specific way: it forwards a request
//! to a node other than the one named, serves a malformed node list, tampers with a forwarded
//! answer, or drops the answer halfway. Honest, it lists its nodes and forwards byte for byte, as
//! the real gateway does; a client must never need to trust it for integrity.
// A test double: a panic here is a failed test, the right outcome for a broken fixture.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use cloister_types::gateway::{GatewayModel, GatewayNode};
use cloister_types::wire;

use crate::evil_node::{EvilNode, MODEL};

/// A malformed `GET /v1/gateway/nodes` answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadList {
    /// Bytes that are not JSON at all (deterministic, from [`hostile_bytes`](crate::hostile_bytes)).
    Garbage,
    /// A document of the wrong shape (`data` is an object, not a list).
    WrongShape,
    /// The honest entries among entries whose fields have the wrong JSON types.
    WrongTypes,
    /// 20,000 well-formed entries of made-up nodes after the honest ones.
    Huge,
    /// An honest list padded past the client's answer-size bound (17 MiB).
    Oversized,
    /// The honest entries after entries with bad addresses and prices, and two entries of the
    /// otherwise well-formed node [`MADE_UP_SIGNER`] with bad endpoint URLs (a client never
    /// connects to a listed endpoint: it names the signer to the gateway).
    BadEntries,
    /// Every honest signer listed three times, each time with another operator.
    DuplicateSigners,
}

/// How the gateway misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GatewayAttack {
    /// None: lists its nodes and forwards byte for byte.
    Honest,
    /// Forwards every request naming one node to the next node in its list (answers with another
    /// node's report and another node's answers).
    Misroute,
    /// Serves this malformed node list (and forwards honestly).
    NodeList(BadList),
    /// Changes one alphanumeric byte in the middle of each forwarded chat answer (so base64 stays
    /// base64 and JSON stays JSON: only the content changes).
    TamperAnswer,
    /// Replaces each forwarded answer's signature header with a signature over other bytes.
    TamperSignature,
    /// Forwards the first half of each chat answer, then breaks the connection.
    DropHalfway,
}

/// A node behind the gateway: its attested signer and its URL.
#[derive(Clone, Debug)]
pub struct Backend {
    /// The attested signer (lowercase `0x` hex).
    pub signer: String,
    /// Its base URL.
    pub url: String,
}

impl Backend {
    /// The node double `node`, as the gateway lists it.
    pub fn of(node: &EvilNode) -> Self {
        Self {
            signer: node.signer_hex(),
            url: node.url.clone(),
        }
    }
}

struct Inner {
    attack: GatewayAttack,
    backends: Vec<Backend>,
    http: reqwest::Client,
}

/// A running gateway double, serving on a loopback port until the test's runtime ends.
#[derive(Clone)]
pub struct EvilGateway {
    /// Its base URL (`http://127.0.0.1:port`).
    pub url: String,
}

impl EvilGateway {
    /// Starts a gateway in front of `backends`, attacking as `attack` (on the current runtime).
    pub async fn start(attack: GatewayAttack, backends: Vec<Backend>) -> Self {
        let inner = Arc::new(Inner {
            attack,
            backends,
            http: reqwest::Client::new(),
        });
        let app = Router::new()
            .route(wire::GATEWAY_NODES_PATH, get(nodes))
            .fallback(forward)
            .with_state(inner);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://{addr}"),
        }
    }
}

/// The signer of the made-up node the bad lists use as a template.
pub const MADE_UP_SIGNER: &str = "0x000000000000000000000000000000000000abcd";

/// The operator the double lists for its `i`th node.
pub fn operator_of(i: usize) -> String {
    format!("{:#042x}", i + 1)
}

/// The listing of one node serving [`MODEL`] at a price of `1000` + `1000` per token.
pub fn listed(signer: &str, operator: &str) -> GatewayNode {
    GatewayNode {
        signing_address: signer.to_owned(),
        operator: operator.to_owned(),
        endpoint: "http://node.invalid".into(),
        measurement: format!("0x{}", "00".repeat(48)),
        measurement_allowed: true,
        models: vec![GatewayModel {
            id: MODEL.into(),
            input_price: "1000".into(),
            output_price: "1000".into(),
        }],
        verified: true,
        refusal: None,
        in_flight: 0,
        latency_ms: None,
        checked_at: 0,
    }
}

fn honest_entries(s: &Inner) -> Vec<serde_json::Value> {
    s.backends
        .iter()
        .enumerate()
        .map(|(i, b)| serde_json::to_value(listed(&b.signer, &operator_of(i))).unwrap())
        .collect()
}

fn list_of(data: Vec<serde_json::Value>) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"object": "list", "data": data})).unwrap()
}

/// The body of a malformed node list over the honest entries `honest`.
fn bad_list(bad: BadList, honest: Vec<serde_json::Value>) -> Vec<u8> {
    let good = || serde_json::to_value(listed(MADE_UP_SIGNER, &operator_of(0))).unwrap();
    let with = |field: &str, value: serde_json::Value| {
        let mut v = good();
        v[field] = value;
        v
    };
    match bad {
        BadList::Garbage => crate::hostile_bytes(13, 4096, b"{}[]\":,0x\\ \n\xff\x00abc"),
        BadList::WrongShape => {
            serde_json::to_vec(&serde_json::json!({"object": "list", "data": {"0": good()}})).unwrap()
        }
        BadList::WrongTypes => {
            let mut data = vec![
                serde_json::json!(42),
                serde_json::json!(null),
                serde_json::json!("0xabc"),
                with("signing_address", serde_json::json!(12345)),
                with("operator", serde_json::json!(["0x01"])),
                with("models", serde_json::json!("all of them")),
                with("in_flight", serde_json::json!(-1)),
                with("verified", serde_json::json!("yes")),
                with("latency_ms", serde_json::json!({"p50": 1})),
                serde_json::json!({"signing_address": honest_signer(&honest)}),
            ];
            data.extend(honest);
            list_of(data)
        }
        BadList::Huge => {
            let mut data = honest;
            data.extend((0..20_000u32).map(|i| {
                serde_json::to_value(listed(&format!("{:#042x}", 0x1_0000 + i), &operator_of(0))).unwrap()
            }));
            list_of(data)
        }
        BadList::Oversized => {
            let mut body = vec![b' '; 17 << 20];
            body.extend(list_of(honest));
            body
        }
        BadList::BadEntries => {
            let price = |p: &str| {
                let mut v = good();
                v["models"][0]["input_price"] = serde_json::json!(p);
                v
            };
            let mut data = vec![
                with("signing_address", serde_json::json!("0xzz")),
                with("signing_address", serde_json::json!("")),
                with("signing_address", serde_json::json!("0x1234")),
                with(
                    "signing_address",
                    serde_json::json!(format!("0x{}", "ab".repeat(21))),
                ),
                with("signing_address", serde_json::json!("\u{202e}0x00\u{0000}")),
                with("operator", serde_json::json!("not an address")),
                with("endpoint", serde_json::json!("javascript:alert(1)")),
                with("endpoint", serde_json::json!("http://[::1")),
                with("models", serde_json::json!([])),
                price("-1"),
                price("1e30"),
                price("abc"),
                price(&"9".repeat(100)),
            ];
            data.extend(honest);
            list_of(data)
        }
        BadList::DuplicateSigners => {
            let mut data = honest.clone();
            for (k, entry) in honest.iter().enumerate().flat_map(|e| [e, e]) {
                let mut dup = entry.clone();
                dup["operator"] = serde_json::json!(format!("{:#042x}", 0xdead_0000u32 + k as u32));
                data.push(dup);
            }
            list_of(data)
        }
    }
}

fn honest_signer(honest: &[serde_json::Value]) -> serde_json::Value {
    honest
        .first()
        .map_or(serde_json::Value::Null, |e| e["signing_address"].clone())
}

async fn nodes(State(s): State<Arc<Inner>>) -> Response {
    let body = match s.attack {
        GatewayAttack::NodeList(bad) => bad_list(bad, honest_entries(&s)),
        _ => list_of(honest_entries(&s)),
    };
    ([(header::CONTENT_TYPE, wire::JSON_CONTENT_TYPE)], body).into_response()
}

/// The node a request names (header, or the report's `signing_address` query parameter).
fn named(req: &Request) -> Option<String> {
    if let Some(v) = req.headers().get(wire::GATEWAY_NODE_HEADER) {
        return v.to_str().ok().map(str::to_ascii_lowercase);
    }
    let query = req.uri().query()?;
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == wire::QUERY_SIGNING_ADDRESS).then(|| v.to_ascii_lowercase())
    })
}

/// Headers that describe one hop's framing, not the message.
fn hop_by_hop(name: &header::HeaderName) -> bool {
    [
        header::HOST,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::CONNECTION,
    ]
    .contains(name)
}

async fn forward(State(s): State<Arc<Inner>>, req: Request) -> Response {
    let Some(signer) = named(&req) else {
        return (StatusCode::BAD_REQUEST, "name a node").into_response();
    };
    let Some(at) = s.backends.iter().position(|b| b.signer == signer) else {
        return (StatusCode::NOT_FOUND, "no such node").into_response();
    };
    let at = if s.attack == GatewayAttack::Misroute {
        (at + 1) % s.backends.len()
    } else {
        at
    };
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
    let is_chat = req.uri().path() == wire::CHAT_COMPLETIONS_PATH;
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20).await.unwrap();
    let mut upstream = s
        .http
        .request(parts.method, format!("{}{path}", s.backends[at].url))
        .body(body);
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) {
            upstream = upstream.header(name, value);
        }
    }
    let resp = upstream.send().await.unwrap();
    let status = resp.status();
    let mut headers = HeaderMap::new();
    for (name, value) in resp.headers() {
        if !hop_by_hop(name) {
            headers.append(name, value.clone());
        }
    }
    let mut body = resp.bytes().await.unwrap().to_vec();
    if is_chat {
        match s.attack {
            GatewayAttack::TamperAnswer => tamper(&mut body),
            GatewayAttack::TamperSignature => {
                if let Some(sig) = headers.get(wire::SIGNATURE_HEADER) {
                    let mut forged = sig.as_bytes().to_vec();
                    tamper(&mut forged);
                    headers.insert(wire::SIGNATURE_HEADER, HeaderValue::from_bytes(&forged).unwrap());
                }
                // A streamed answer signs in its last event (readable when not sealed).
                let key = br#""signature":""#;
                if let Some(start) = find(&body, key).map(|at| at + key.len())
                    && let Some(len) = body[start..].iter().position(|b| *b == b'"')
                {
                    tamper(&mut body[start..start + len]);
                }
            }
            GatewayAttack::DropHalfway => {
                let half = Bytes::from(body[..body.len() / 2].to_vec());
                let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
                    Ok(half),
                    Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "the gateway drops the answer",
                    )),
                ];
                let mut out = Response::new(Body::from_stream(futures::stream::iter(chunks)));
                *out.status_mut() = status;
                *out.headers_mut() = headers;
                return out;
            }
            _ => {}
        }
    }
    let mut out = Response::new(Body::from(body));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}

/// Changes the first alphanumeric byte at or after the middle of `bytes` to another of its kind
/// (a letter stays a letter of the same case, a digit a digit).
fn tamper(bytes: &mut [u8]) {
    let middle = bytes.len() / 2;
    let Some(b) = bytes[middle..].iter_mut().find(|b| b.is_ascii_alphanumeric()) else {
        return;
    };
    *b = match *b {
        b'z' => b'a',
        b'Z' => b'A',
        b'9' => b'0',
        other => other + 1,
    };
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tampering_keeps_the_alphabet_and_changes_the_bytes() {
        for text in [
            "aGVsbG8gd29ybGQ9PQ==",
            "{\"content\":\"The sky is blue.\"}",
            "zzzz",
            "0x99",
        ] {
            let mut bytes = text.as_bytes().to_vec();
            tamper(&mut bytes);
            assert_ne!(bytes, text.as_bytes(), "{text}");
            let changed: Vec<(u8, u8)> = bytes
                .iter()
                .zip(text.as_bytes())
                .filter(|(a, b)| a != b)
                .map(|(a, b)| (*a, *b))
                .collect();
            assert_eq!(changed.len(), 1, "{text}");
            let (new, old) = changed[0];
            assert_eq!(new.is_ascii_digit(), old.is_ascii_digit(), "{text}");
            assert_eq!(new.is_ascii_uppercase(), old.is_ascii_uppercase(), "{text}");
        }
    }

    #[test]
    fn each_bad_list_is_malformed_as_named() {
        use cloister_types::gateway::GatewayNodeList;
        let honest = vec![serde_json::to_value(listed(&format!("{:#042x}", 7), &operator_of(0))).unwrap()];
        let typed = |bad| serde_json::from_slice::<GatewayNodeList>(&bad_list(bad, honest.clone()));
        // Not a node list at all, or one with entries of the wrong types.
        for bad in [BadList::Garbage, BadList::WrongShape, BadList::WrongTypes] {
            assert!(typed(bad).is_err(), "{bad:?}");
        }
        // Well-typed lists carrying the honest entry among bad, made-up or duplicate ones.
        for bad in [
            BadList::Huge,
            BadList::Oversized,
            BadList::BadEntries,
            BadList::DuplicateSigners,
        ] {
            let list = typed(bad).unwrap();
            assert!(
                list.data
                    .iter()
                    .any(|n| n.signing_address == honest[0]["signing_address"]),
                "{bad:?}"
            );
        }
        assert!(bad_list(BadList::Oversized, honest.clone()).len() > 16 << 20);
        assert_eq!(typed(BadList::Huge).unwrap().data.len(), 20_001);
        assert_eq!(typed(BadList::DuplicateSigners).unwrap().data.len(), 3);
    }
}
