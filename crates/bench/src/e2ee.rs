//! What end-to-end encryption costs, against the unencrypted path measured in the same run.
//!
//! - [`crypto`]: the crypto alone, per request and per stream chunk, beside the signature work
//!   every request already pays.
//! - [`latency`]: client → node unencrypted (a bare POST), the same through `cloister-client` with
//!   E2EE off, sealed through `cloister-client`, and sealed through a verifying proxy, interleaved.

use std::sync::Arc;

use bytes::Bytes;
use cloister_client::{E2eeMode, NodeClient, NodePool, Policy, RequestOptions, StreamEvent};
use cloister_crypto::EnclaveKey;
use cloister_crypto::e2ee::{E2eeKeyPair, open_request, seal_request};
use cloister_types::wire::CHAT_COMPLETIONS_PATH;
use futures::StreamExt;

use crate::load::{load_round, post_json};
use crate::node::BenchNode;
use crate::stats::{RoundStats, mean_micros};
use crate::upstream::{REFERENCE_ANSWER, REFERENCE_MODEL, reference_request, reference_stream};
use crate::{Error, Result};

/// Mean cost of the crypto, microseconds per operation.
#[derive(Debug, Clone, PartialEq)]
pub struct CryptoFigures {
    /// Iterations timed.
    pub iterations: usize,
    /// Request body bytes.
    pub request_len: usize,
    /// Answer body bytes.
    pub answer_len: usize,
    /// Stream event bytes.
    pub event_len: usize,
    /// Hash request and answer, sign, recover: what the unencrypted path pays.
    pub signing_us: f64,
    /// Seal and open the request, seal and open the answer.
    pub per_request_us: f64,
    /// Seal and open one SSE event.
    pub per_chunk_us: f64,
    /// Each side's share, one step at a time (the issue-14 budgets): `(side and step, µs)`.
    pub steps: Vec<(&'static str, f64)>,
}

/// Mean microseconds of `f` over `inputs`, one call each (for steps that consume their input).
fn mean_micros_each<T, R>(inputs: Vec<T>, mut f: impl FnMut(T) -> R) -> (f64, Vec<R>) {
    let n = inputs.len().max(1);
    let mut out = Vec::with_capacity(inputs.len());
    let t = std::time::Instant::now();
    for input in inputs {
        out.push(f(input));
    }
    (t.elapsed().as_secs_f64() * 1e6 / n as f64, out)
}

/// Times the E2EE crypto on `request` and the reference answer over `iterations` (stream chunks:
/// twenty times as many), after checking once that the round trip gives back what went in.
pub fn crypto(iterations: usize, request: &[u8]) -> Result<CryptoFigures> {
    let node = E2eeKeyPair::generate();
    let key = EnclaveKey::generate();
    let signer = key.address();
    let pk = node.public_key_bytes();
    let aad =
        cloister_types::e2ee::request_aad("POST", CHAT_COMPLETIONS_PATH, 1_700_000_000, REFERENCE_MODEL);
    let response = REFERENCE_ANSWER.as_bytes();
    // Check once that the round trip works, so the timings are of working code.
    let (sealed, client_keys) = seal_request(&pk, &signer, request, &aad)?;
    let (opened, node_keys) = open_request(&node, &signer, &sealed, &aad)?;
    if opened != request || client_keys.open_body(&node_keys.seal_body(response))? != response {
        return Err(Error::NotWorking("E2EE round trip failed".into()));
    }
    let n = iterations;
    let per_request_us = mean_micros(n, || {
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
    let per_chunk_us = mean_micros(n * 20, || {
        let _ = opener.open_chunk(&sealer.seal_chunk(&event));
    });
    let signing_us = mean_micros(n, || {
        let text = cloister_types::signature_text(request, response);
        let sig = key.sign_personal(text.as_bytes());
        let _ = cloister_crypto::recover_personal(text.as_bytes(), &sig);
    });
    let steps = steps(n, request, response, &event, &aad)?;
    Ok(CryptoFigures {
        iterations: n,
        request_len: request.len(),
        answer_len: response.len(),
        event_len: event.len(),
        signing_us,
        per_request_us,
        per_chunk_us,
        steps,
    })
}

/// Each step of the sealed exchange timed on its own, node side first.
fn steps(
    n: usize,
    request: &[u8],
    response: &[u8],
    event: &[u8],
    aad: &[u8],
) -> Result<Vec<(&'static str, f64)>> {
    let node = E2eeKeyPair::generate();
    let key = EnclaveKey::generate();
    let signer = key.address();
    let pk = node.public_key_bytes();
    let seal_us = mean_micros(n, || {
        let _ = seal_request(&pk, &signer, request, aad);
    });
    let (sealed, _) = seal_request(&pk, &signer, request, aad)?;
    let open_us = mean_micros(n, || {
        let _ = open_request(&node, &signer, &sealed, aad);
    });
    // Sealing and opening an answer consume their keys: one fresh pair per call.
    let mut pairs = Vec::with_capacity(n);
    for _ in 0..n {
        let (sealed, client_keys) = seal_request(&pk, &signer, request, aad)?;
        let (_, node_keys) = open_request(&node, &signer, &sealed, aad)?;
        pairs.push((client_keys, node_keys));
    }
    let (client_keys, node_keys): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
    let (seal_answer_us, bodies) = mean_micros_each(node_keys, |k| k.seal_body(response));
    let (open_answer_us, opened) =
        mean_micros_each(client_keys.into_iter().zip(bodies).collect(), |(k, body)| {
            k.open_body(&body)
        });
    if opened.iter().any(|o| o.as_deref().ok() != Some(response)) {
        return Err(Error::NotWorking("an answer did not open".into()));
    }
    let (sealed, client_keys) = seal_request(&pk, &signer, request, aad)?;
    let (_, node_keys) = open_request(&node, &signer, &sealed, aad)?;
    let mut sealer = node_keys.sealer();
    let (seal_chunk_us, chunks) = mean_micros_each(vec![(); n * 20], |()| sealer.seal_chunk(event));
    let mut opener = client_keys.opener();
    let (open_chunk_us, _) = mean_micros_each(chunks, |c| opener.open_chunk(&c));
    let text = cloister_types::signature_text(request, response);
    let sign_us = mean_micros(n, || {
        let text = cloister_types::signature_text(request, response);
        let _ = key.sign_personal(text.as_bytes());
    });
    let sig = key.sign_personal(text.as_bytes());
    let recover_us = mean_micros(n, || {
        let _ = cloister_crypto::recover_personal(text.as_bytes(), &sig);
    });
    Ok(vec![
        (
            "node: open the sealed request (HPKE X25519 decap, AEAD, key export)",
            open_us,
        ),
        ("node: seal the answer (ChaCha20-Poly1305)", seal_answer_us),
        ("node: seal one stream chunk", seal_chunk_us),
        ("node: hash both bodies and sign (EIP-191, libsecp256k1)", sign_us),
        (
            "client: seal the request (HPKE X25519 encap, AEAD, key export)",
            seal_us,
        ),
        ("client: open the answer", open_answer_us),
        ("client: open one stream chunk", open_chunk_us),
        (
            "client: recover the signer of an answer (libsecp256k1)",
            recover_us,
        ),
    ])
}

/// What to run for [`latency`].
#[derive(Debug, Clone, Copy)]
pub struct LatencyOptions {
    /// Requests per round per path.
    pub requests: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Rounds (paths interleaved).
    pub rounds: usize,
    /// Streamed requests instead of plain ones.
    pub stream: bool,
}

/// One round of [`latency`]: each path's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencyRound {
    /// client → node, unencrypted: the baseline.
    pub unencrypted: RoundStats,
    /// client → node in clear through `cloister-client` (signature verified, E2EE off).
    pub verified_clear: RoundStats,
    /// client → node sealed and verified through `cloister-client`.
    pub sealed: RoundStats,
    /// client → verifying proxy → node, sealed and verified.
    pub via_proxy: RoundStats,
}

/// A sealed exchange through the client library; the whole answer is read and verified.
async fn sealed(client: NodeClient, body: Bytes, stream: bool) -> Result<()> {
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
    Err(Error::NotWorking("stream ended without its proof".into()))
}

/// Runs the four paths against a [`BenchNode`] and a verifying proxy
/// ([`cloister_client::proxy`]) over it; `on_round(round, figures)` sees each round as it ends.
pub async fn latency(
    opts: LatencyOptions,
    mut on_round: impl FnMut(usize, &LatencyRound),
) -> Result<Vec<LatencyRound>> {
    let body = reference_request(opts.stream)?;
    let bench = BenchNode::start(opts.concurrency * 4).await?;
    let node = format!("http://{}", bench.node);

    let policy = Arc::new(Policy::dev_allow_simulated());
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(opts.concurrency * 2)
        .build()?;
    let node_client = NodeClient::with_http(&node, Arc::clone(&policy), http.clone());
    node_client.verify_now().await?;
    // The same checks without E2EE: isolates what sealing costs from what verifying costs.
    let mut clear_policy = Policy::dev_allow_simulated();
    clear_policy.e2ee = E2eeMode::Off;
    let clear_client = NodeClient::with_http(&node, Arc::new(clear_policy), http.clone());
    clear_client.verify_now().await?;
    let pool = NodePool::from_clients(vec![node_client.clone()]);
    let proxy_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| Error::io("binding the proxy", e))?;
    let proxy_addr = proxy_listener
        .local_addr()
        .map_err(|e| Error::io("the proxy's address", e))?;
    let proxy_server = tokio::spawn(cloister_client::proxy::serve(
        proxy_listener,
        pool,
        std::future::pending(),
    ));

    let direct_url = format!("{node}{CHAT_COMPLETIONS_PATH}");
    let proxy_url = format!("http://{proxy_addr}{CHAT_COMPLETIONS_PATH}");
    let plain = || post_json(http.clone(), direct_url.clone(), body.clone());
    let verified = || sealed(clear_client.clone(), body.clone(), opts.stream);
    let lib = || sealed(node_client.clone(), body.clone(), opts.stream);
    let via_proxy = || post_json(http.clone(), proxy_url.clone(), body.clone());
    // Warm-up.
    load_round(50, opts.concurrency, plain).await?;
    load_round(50, opts.concurrency, verified).await?;
    load_round(50, opts.concurrency, lib).await?;
    load_round(50, opts.concurrency, via_proxy).await?;

    let mut rounds = Vec::with_capacity(opts.rounds);
    for round in 1..=opts.rounds {
        let figures = LatencyRound {
            unencrypted: load_round(opts.requests, opts.concurrency, plain).await?,
            verified_clear: load_round(opts.requests, opts.concurrency, verified).await?,
            sealed: load_round(opts.requests, opts.concurrency, lib).await?,
            via_proxy: load_round(opts.requests, opts.concurrency, via_proxy).await?,
        };
        on_round(round, &figures);
        rounds.push(figures);
    }
    bench.stop().await;
    proxy_server.abort();
    Ok(rounds)
}
