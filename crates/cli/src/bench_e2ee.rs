//! `cloister bench e2ee`: what end-to-end encryption costs, against the unencrypted path measured in
//! the same run.
//!
//! 1. Crypto alone, per request (client seals, node opens, node seals the answer, client opens) and
//!    per stream chunk (seal + open of one SSE event), beside the signature work every request
//!    already pays (hash both bodies, sign, recover).
//! 2. Latency and throughput against a zero-work upstream: client → node unencrypted (the
//!    baseline: a bare POST), the same through `cloister-client` with E2EE off (signature checked),
//!    sealed through `cloister-client`, and client → `cloister proxy` → node sealed (what an OpenAI
//!    SDK sees), interleaved in rounds.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use cloister_client::{NodeClient, NodePool, Policy, RequestOptions, StreamEvent};
use cloister_crypto::EnclaveKey;
use cloister_crypto::e2ee::{E2eeKeyPair, open_request, seal_request};
use futures::StreamExt;

use crate::bench::{
    BenchNode, REFERENCE_ANSWER, RoundStats, load_round, median, post_json, reference_stream,
};

/// `cloister bench e2ee`.
#[derive(Debug, Args)]
pub(crate) struct E2eeArgs {
    /// Requests per round per path.
    #[arg(long, default_value_t = 500)]
    pub requests: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Rounds (paths interleaved).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Iterations of the crypto micro-benchmarks.
    #[arg(long, default_value_t = 5000)]
    pub iterations: usize,
    /// Streamed requests instead of plain ones (latency part).
    #[arg(long)]
    pub stream: bool,
}

/// Mean microseconds per call of `f` over `n` calls (after `n / 10` warm-up calls).
fn time_us(n: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..n / 10 {
        f();
    }
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed().as_secs_f64() * 1e6 / n.max(1) as f64
}

fn crypto(args: &E2eeArgs, request: &[u8]) -> anyhow::Result<()> {
    let node = E2eeKeyPair::generate();
    let key = EnclaveKey::generate();
    let signer = key.address();
    let pk = node.public_key_bytes();
    let aad = cloister_types::e2ee::request_aad("POST", "/v1/chat/completions", 1_700_000_000, "ref-model");
    let response = REFERENCE_ANSWER.as_bytes();
    // Check once that the round trip works, so the timings are of working code.
    let (sealed, client_keys) = seal_request(&pk, &signer, request, &aad)?;
    let (opened, node_keys) = open_request(&node, &signer, &sealed, &aad)?;
    if opened != request || client_keys.open_body(&node_keys.seal_body(response))? != response {
        bail!("E2EE round trip failed");
    }
    let n = args.iterations;
    let per_request = time_us(n, || {
        if let Ok((sealed, client_keys)) = seal_request(&pk, &signer, request, &aad)
            && let Ok((_, node_keys)) = open_request(&node, &signer, &sealed, &aad)
        {
            let _ = client_keys.open_body(&node_keys.seal_body(response));
        }
    });
    let event = reference_stream();
    let event = event
        .split_inclusive("\n\n")
        .nth(1)
        .unwrap_or_default()
        .as_bytes()
        .to_vec();
    let (sealed, client_keys) = seal_request(&pk, &signer, request, &aad)?;
    let (_, node_keys) = open_request(&node, &signer, &sealed, &aad)?;
    let mut sealer = node_keys.sealer();
    let mut opener = client_keys.opener();
    let chunks = n * 20;
    let per_chunk = time_us(chunks, || {
        let _ = opener.open_chunk(&sealer.seal_chunk(&event));
    });
    let signing = time_us(n, || {
        let text = cloister_types::signature_text(request, response);
        let sig = key.sign_personal(text.as_bytes());
        let _ = cloister_crypto::recover_personal(text.as_bytes(), &sig);
    });
    println!(
        "E2EE crypto ({n} iterations; request {} B, answer {} B, stream event {} B)",
        request.len(),
        response.len(),
        event.len()
    );
    println!("| work | µs | ratio to the signature work every request already pays |");
    println!("|---|---:|---:|");
    println!("| signature: hash request + answer, sign, recover (unencrypted path) | {signing:.1} | 1.00x |");
    println!(
        "| E2EE per request: seal + open request, seal + open answer | {per_request:.1} | {:.2}x |",
        per_request / signing.max(f64::MIN_POSITIVE)
    );
    println!(
        "| E2EE per stream chunk: seal + open one SSE event | {per_chunk:.2} | {:.3}x |",
        per_chunk / signing.max(f64::MIN_POSITIVE)
    );
    println!();
    Ok(())
}

/// A sealed exchange through the client library; the whole answer is read and verified.
async fn sealed(client: NodeClient, body: Bytes, stream: bool) -> anyhow::Result<()> {
    let opts = RequestOptions::default();
    if !stream {
        client.chat(body, &opts).await?;
        return Ok(());
    }
    let mut s = client.chat_stream(body, &opts).await?;
    while let Some(item) = s.next().await {
        if let StreamEvent::Done(_) = item? {
            return Ok(());
        }
    }
    bail!("stream ended without its proof")
}

pub(crate) async fn e2ee(args: E2eeArgs) -> anyhow::Result<ExitCode> {
    let body = Bytes::from(serde_json::to_vec(&serde_json::json!({
        "model": "ref-model",
        "messages": [{"role": "user", "content": "Why is the sky blue?"}],
        "max_tokens": 32,
        "stream": args.stream,
    }))?);
    crypto(&args, &body)?;

    let bench = BenchNode::start(args.concurrency * 4).await?;
    let node = format!("http://{}", bench.node);

    let policy = Arc::new(Policy::dev_allow_simulated());
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency * 2)
        .build()?;
    let node_client = NodeClient::with_http(&node, Arc::clone(&policy), http.clone());
    node_client
        .verify_now()
        .await
        .context("verifying the bench node")?;
    // The same checks without E2EE: isolates what sealing costs from what verifying costs.
    let mut clear_policy = Policy::dev_allow_simulated();
    clear_policy.e2ee = cloister_client::E2eeMode::Off;
    let clear_client = NodeClient::with_http(&node, Arc::new(clear_policy), http.clone());
    clear_client
        .verify_now()
        .await
        .context("verifying the bench node")?;
    let pool = NodePool::from_clients(vec![node_client.clone()]);
    let proxy_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let proxy = format!("http://{}", proxy_listener.local_addr()?);
    let proxy_server = tokio::spawn(async move {
        axum::serve(
            crate::proxy_cmd::nodelay(proxy_listener),
            crate::proxy_cmd::router(pool),
        )
        .await
    });

    let direct_url = format!("{node}/v1/chat/completions");
    let proxy_url = format!("{proxy}/v1/chat/completions");
    let plain = || post_json(http.clone(), direct_url.clone(), body.clone());
    let verified = || sealed(clear_client.clone(), body.clone(), args.stream);
    let lib = || sealed(node_client.clone(), body.clone(), args.stream);
    let via_proxy = || post_json(http.clone(), proxy_url.clone(), body.clone());
    // Warm-up.
    load_round(50, args.concurrency, plain).await?;
    load_round(50, args.concurrency, verified).await?;
    load_round(50, args.concurrency, lib).await?;
    load_round(50, args.concurrency, via_proxy).await?;

    let (mut a, mut v, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        let x = load_round(args.requests, args.concurrency, plain).await?;
        let w = load_round(args.requests, args.concurrency, verified).await?;
        let y = load_round(args.requests, args.concurrency, lib).await?;
        let z = load_round(args.requests, args.concurrency, via_proxy).await?;
        eprintln!(
            "round {round}: unencrypted p50 {:.3} ms | verified, clear {:.3} ms | sealed + verified {:.3} ms | via proxy {:.3} ms",
            x.p50_ms, w.p50_ms, y.p50_ms, z.p50_ms
        );
        a.push(x);
        v.push(w);
        b.push(y);
        c.push(z);
    }
    bench.stop().await;
    proxy_server.abort();

    let row = |name: &str, s: &[RoundStats], base: &[RoundStats]| {
        let (rps, p50, p99) = (
            median(s.iter().map(|s| s.rps)),
            median(s.iter().map(|s| s.p50_ms)),
            median(s.iter().map(|s| s.p99_ms)),
        );
        let b50 = median(base.iter().map(|s| s.p50_ms));
        println!(
            "| {name} | {rps:.0} | {p50:.3} | {p99:.3} | {:.2}x | {:+.3} |",
            p50 / b50.max(f64::MIN_POSITIVE),
            p50 - b50
        );
    };
    println!(
        "E2EE latency against a zero-work upstream ({} requests x {} rounds, concurrency {}, {}; medians over rounds)",
        args.requests,
        args.rounds,
        args.concurrency,
        if args.stream { "streamed" } else { "plain" }
    );
    println!("| path | req/s | p50 ms | p99 ms | p50 ratio to unencrypted | p50 added ms |");
    println!("|---|---:|---:|---:|---:|---:|");
    row("client → node, unencrypted (baseline)", &a, &a);
    row(
        "client → node, in clear, signature verified (cloister-client, E2EE off)",
        &v,
        &a,
    );
    row("client → node, sealed + verified (cloister-client)", &b, &a);
    row("client → cloister proxy → node, sealed + verified", &c, &a);
    Ok(ExitCode::SUCCESS)
}
