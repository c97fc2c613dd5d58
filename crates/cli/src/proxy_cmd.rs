//! `cloister proxy`: a plain OpenAI API on localhost in front of attested nodes. Each request goes
//! only to a node that verified under the policy, sealed to its attested E2EE key; each answer is
//! opened and its signature checked before (plain) or while (streamed) it is passed on. A failed
//! verification is an OpenAI-shaped error naming the reason, never a fallback to an unverified node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use clap::Args;
use cloister_client::{E2eeMode, Error, NodePool, RequestOptions, StreamEvent, VerifiedNode};
use futures::StreamExt;
use serde::Deserialize;

use crate::proof::VerifyOpts;

/// `cloister proxy`.
#[derive(Debug, Args)]
pub(crate) struct ProxyArgs {
    /// Address to serve the OpenAI API on (keep it on loopback: answers leave the proxy in clear).
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,
    /// Node URL (repeatable); requests go round-robin and fail over between verified nodes.
    #[arg(long = "node")]
    pub nodes: Vec<String>,
    /// JSON file listing node URLs: `["http://..", ..]` or `{"nodes": ["http://..", ..]}`.
    #[arg(long)]
    pub network: Option<PathBuf>,
    /// File of allowed measurement digests (one hex digest per line, `#` comments) [default: any
    /// measurement whose quote verifies].
    #[arg(long)]
    pub allowed_measurements: Option<PathBuf>,
    /// TCB statuses to accept (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "UpToDate")]
    pub accept_tcb: Vec<String>,
    /// DEVELOPMENT ONLY: accept nodes with a SIMULATED TEE (no hardware protects them at all).
    #[arg(long)]
    pub allow_simulated: bool,
    /// Collateral JSON file(s) instead of fetching from a PCCS.
    #[arg(long)]
    pub collateral: Vec<PathBuf>,
    /// PCCS or Intel PCS base URL for collateral.
    #[arg(long, default_value = cloister_attest::collateral::PHALA_PCCS_URL)]
    pub pccs: String,
    /// Seconds a node's verified report is trusted before it is verified again.
    #[arg(long, default_value_t = 300)]
    pub verdict_ttl_secs: u64,
    /// Discover nodes on chain: a `devnet.json` or chain config JSON. The active nodes of the
    /// `NodeRegistry` are added to the pool, and unless `--allowed-measurements` is given the
    /// measurements governance allows there become the allowlist.
    #[arg(long)]
    pub chain: Option<PathBuf>,
}

/// Nodes and allowed measurements read from the registry.
struct OnChain {
    endpoints: Vec<String>,
    measurements: Vec<String>,
}

async fn discover(path: &std::path::Path) -> anyhow::Result<OnChain> {
    let config =
        cloister_chain::ChainConfig::load(path).with_context(|| format!("reading {}", path.display()))?;
    let chain = cloister_chain::Chain::connect(config, None)
        .await
        .context("connecting to the chain")?;
    let registry = chain.registry()?;
    let nodes = registry
        .list_nodes()
        .await
        .context("listing the registry's nodes")?;
    let endpoints: Vec<String> = nodes
        .iter()
        .filter(|n| n.active)
        .map(|n| n.endpoint.clone())
        .collect();
    let measurements = registry
        .allowed_measurements()
        .await
        .context("reading the registry's allowed measurements")?
        .iter()
        .map(|m| hex::encode(m.as_slice()))
        .collect();
    eprintln!(
        "registry {:#x}: {} active node(s) of {}",
        registry.address(),
        endpoints.len(),
        nodes.len()
    );
    Ok(OnChain {
        endpoints,
        measurements,
    })
}

/// The node list in a `--network` file.
#[derive(Deserialize)]
#[serde(untagged)]
enum NetworkFile {
    List(Vec<String>),
    Object { nodes: Vec<String> },
}

fn node_urls(args: &ProxyArgs, discovered: &[String]) -> anyhow::Result<Vec<String>> {
    let mut urls = args.nodes.clone();
    urls.extend(discovered.iter().cloned());
    if let Some(path) = &args.network {
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let file: NetworkFile = serde_json::from_slice(&text).with_context(|| {
            format!(
                "{}: expected a JSON list of node URLs or {{\"nodes\": [..]}}",
                path.display()
            )
        })?;
        urls.extend(match file {
            NetworkFile::List(l) | NetworkFile::Object { nodes: l } => l,
        });
    }
    if urls.is_empty() {
        bail!("no nodes: give --node URL (repeatable), --network FILE, or --chain FILE with active nodes");
    }
    Ok(urls)
}

/// Builds the pool the flags describe.
async fn pool(args: &ProxyArgs) -> anyhow::Result<NodePool> {
    let on_chain = match &args.chain {
        Some(path) => Some(discover(path).await?),
        None => None,
    };
    let opts = VerifyOpts {
        collateral: args.collateral.clone(),
        pccs: args.pccs.clone(),
        accept_tcb: args.accept_tcb.clone(),
        allow_simulated: args.allow_simulated,
        allowed_measurements: args.allowed_measurements.clone(),
        ..VerifyOpts::dev_simulated()
    };
    let mut policy = opts.client_policy(E2eeMode::Required)?;
    policy.verdict_ttl = Duration::from_secs(args.verdict_ttl_secs);
    if let Some(c) = &on_chain
        && args.allowed_measurements.is_none()
    {
        // An empty on-chain list must refuse everything, not mean "any".
        policy.allowed_measurements = if c.measurements.is_empty() {
            cloister_client::MeasurementAllowlist::of(["registry-allows-none"])
        } else {
            cloister_client::MeasurementAllowlist::of(c.measurements.iter())
        };
    }
    let discovered = on_chain.map(|c| c.endpoints).unwrap_or_default();
    Ok(NodePool::new(node_urls(args, &discovered)?, Arc::new(policy))?)
}

pub(crate) async fn run(args: ProxyArgs) -> anyhow::Result<ExitCode> {
    if args.allow_simulated {
        eprintln!("!!! cloister proxy: --allow-simulated is DEVELOPMENT ONLY: nodes with a SIMULATED TEE");
        eprintln!(
            "!!! are accepted; nothing protects prompts or answers on them. Never use it in production."
        );
    }
    let pool = pool(&args).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    for node in pool.nodes() {
        tracing::info!(node = %node.url(), "proxying to node");
    }
    eprintln!("cloister proxy listening on http://{addr}/v1");
    axum::serve(nodelay(listener), router(pool))
        .with_graceful_shutdown(crate::node_cmd::shutdown_signal())
        .await
        .context("proxy server")?;
    Ok(ExitCode::SUCCESS)
}

/// SSE events are small: each goes out at once rather than waiting for Nagle (and the client's
/// delayed ACK, 40 ms a round).
pub(crate) fn nodelay(listener: tokio::net::TcpListener) -> impl axum::serve::Listener<Addr = SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(%err, "TCP_NODELAY not set");
        }
    })
}

/// The proxy's routes over `pool`.
pub(crate) fn router(pool: NodePool) -> Router {
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/health", get(|| async { "ok" }))
        .with_state(Arc::new(pool))
}

/// OpenAI's error shape.
fn openai_error(status: StatusCode, kind: &str, code: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "error": { "message": message, "type": kind, "code": code, "param": null }
    });
    let mut resp = (status, axum::Json(body)).into_response();
    resp.headers_mut()
        .insert("x-cloister-verified", HeaderValue::from_static("false"));
    resp
}

/// The proxy's answer to a refusal: the node's own error status when it answered one (opened when
/// sealed), else 502 naming the reason.
fn error_response(e: &Error) -> Response {
    tracing::warn!(code = e.code(), "request refused: {e}");
    match e {
        Error::NodeStatus { status, body, sealed } => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY);
            let mut resp = (status, body.clone()).into_response();
            let h = resp.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            // The node was verified before the request; the error body is authenticated only
            // when it came sealed, and error bodies are not signed.
            h.insert(
                "x-cloister-verified",
                HeaderValue::from_static(if *sealed { "true" } else { "false" }),
            );
            h.insert("x-cloister-signature-verified", HeaderValue::from_static("false"));
            resp
        }
        Error::InvalidRequest(m) => {
            openai_error(StatusCode::BAD_REQUEST, "invalid_request_error", e.code(), m)
        }
        _ => openai_error(
            StatusCode::BAD_GATEWAY,
            "cloister_verification_error",
            e.code(),
            &e.to_string(),
        ),
    }
}

fn verified_headers(headers: &mut HeaderMap, node: &VerifiedNode, sealed: bool, signature: &str) {
    let mut set = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    };
    set("x-cloister-verified", "true");
    set("x-cloister-signer", &node.signer_hex);
    set("x-cloister-tee", &node.tee_name());
    set(
        "x-cloister-measurement",
        node.measurement.as_deref().unwrap_or("unknown"),
    );
    set("x-cloister-signature-verified", signature);
    set("x-cloister-e2ee", if sealed { "sealed" } else { "off" });
    set("x-cloister-node", &node.url);
}

async fn models(State(pool): State<Arc<NodePool>>) -> Response {
    match pool.models().await {
        Ok(list) => axum::Json(list).into_response(),
        Err(e) => error_response(&e),
    }
}

async fn chat(State(pool): State<Arc<NodePool>>, headers: HeaderMap, body: Bytes) -> Response {
    let opts = RequestOptions {
        authorization: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_json",
            "the request body is not JSON",
        );
    };
    let stream = value.get("stream").and_then(|s| s.as_bool()).unwrap_or(false);
    if !stream {
        return match pool.chat(body, &opts).await {
            Ok(r) => {
                tracing::debug!(node = %r.node.url, sealed = r.sealed, "answer verified");
                let mut resp = (StatusCode::OK, r.body).into_response();
                let h = resp.headers_mut();
                h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                verified_headers(h, &r.node, r.sealed, "true");
                if let Some(v) = serde_json::to_string(&r.signature)
                    .ok()
                    .and_then(|s| HeaderValue::from_str(&s).ok())
                {
                    h.insert("x-cloister-signature", v);
                }
                // The node's metering receipt (signed by the enclave key) goes to the client as is.
                if let Some(v) = r.receipt.as_deref().and_then(|r| HeaderValue::from_str(r).ok()) {
                    h.insert(cloister_client::RECEIPT_HEADER, v);
                }
                resp
            }
            Err(e) => error_response(&e),
        };
    }
    let s = match pool.chat_stream(body, &opts).await {
        Ok(s) => s,
        Err(e) => return error_response(&e),
    };
    let node = Arc::clone(&s.node);
    let sealed = s.sealed;
    // Opened events go out as they come (the attested E2EE key authenticates them); `[DONE]` only
    // once the end marker and the signature checked; an error event, and no `[DONE]`, otherwise.
    let events = s.map(move |item| {
        Ok::<_, std::convert::Infallible>(match item {
            Ok(StreamEvent::Data(event)) => event,
            Ok(StreamEvent::Done(proof)) => {
                tracing::debug!(node = %proof.node.url, sealed, "stream verified");
                let mut record = serde_json::to_value(&proof.signature).unwrap_or_default();
                if let (Some(obj), Some(receipt)) = (record.as_object_mut(), proof.receipt) {
                    obj.insert("receipt".to_owned(), receipt);
                }
                Bytes::from(format!(
                    "data: [DONE]\n\nevent: cloister.signature\ndata: {record}\n\n"
                ))
            }
            Err(e) => {
                tracing::warn!(code = e.code(), "stream refused: {e}");
                let body = serde_json::json!({
                    "error": {
                        "message": format!("the answer stream failed verification: {e}"),
                        "type": "cloister_verification_error",
                        "code": e.code(),
                        "param": null,
                    }
                });
                Bytes::from(format!("data: {body}\n\n"))
            }
        })
    });
    let mut resp = Response::new(Body::from_stream(events));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    verified_headers(h, &node, sealed, "at-end-of-stream");
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(nodes: &[&str], network: Option<PathBuf>) -> ProxyArgs {
        ProxyArgs {
            listen: "127.0.0.1:0"
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0))),
            nodes: nodes.iter().map(|s| (*s).to_owned()).collect(),
            network,
            allowed_measurements: None,
            accept_tcb: vec!["UpToDate".into()],
            allow_simulated: false,
            collateral: Vec::new(),
            pccs: String::new(),
            verdict_ttl_secs: 300,
            chain: None,
        }
    }

    #[test]
    fn nodes_come_from_flags_and_network_files() {
        let dir = std::env::temp_dir().join(format!("cloister-proxy-test-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let list = dir.join("list.json");
        let object = dir.join("object.json");
        let bad = dir.join("bad.json");
        let _ = std::fs::write(&list, r#"["http://a:1", "http://b:2"]"#);
        let _ = std::fs::write(&object, r#"{"nodes": ["http://c:3"]}"#);
        let _ = std::fs::write(&bad, r#"{"urls": []}"#);
        let urls = |a: &ProxyArgs| node_urls(a, &[]).unwrap_or_default();
        assert_eq!(
            urls(&args(&["http://x:9"], Some(list))),
            ["http://x:9", "http://a:1", "http://b:2"]
        );
        assert_eq!(urls(&args(&[], Some(object))), ["http://c:3"]);
        assert!(node_urls(&args(&[], Some(bad)), &[]).is_err());
        assert!(node_urls(&args(&[], None), &[]).is_err());
        assert_eq!(
            node_urls(&args(&[], None), &["http://d:4".into()]).unwrap_or_default(),
            ["http://d:4"]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
