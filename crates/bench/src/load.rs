//! The load generator: a fixed number of requests with a fixed number in flight, timed one by one.
//!
//! ```no_run
//! # async fn demo() -> cloister_bench::Result<()> {
//! use cloister_bench::load::{load_round, post_json};
//!
//! let http = reqwest::Client::new();
//! let body = cloister_bench::upstream::reference_request(false)?;
//! let url = format!("http://127.0.0.1:8080{}", cloister_types::wire::CHAT_COMPLETIONS_PATH);
//! let stats = load_round(1000, 8, || post_json(http.clone(), url.clone(), body.clone())).await?;
//! println!("{:.0} req/s, p99 {:.3} ms", stats.rps, stats.p99_ms);
//! # Ok(()) }
//! ```

use std::time::Instant;

use bytes::Bytes;
use cloister_types::wire::JSON_CONTENT_TYPE;
use futures::StreamExt;
use futures::stream::FuturesUnordered;

use crate::stats::{RoundStats, percentile};
use crate::{Error, Result};

/// Runs `requests` calls of `one` with `concurrency` in flight; the first failed call ends the
/// round with its error.
pub async fn load_round<F, Fut>(requests: usize, concurrency: usize, one: F) -> Result<RoundStats>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let timed = |fut: Fut| async move {
        let t = Instant::now();
        fut.await?;
        Ok::<f64, Error>(t.elapsed().as_secs_f64() * 1000.0)
    };
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(requests);
    let mut inflight = FuturesUnordered::new();
    let mut sent = 0;
    while sent < requests.min(concurrency) {
        inflight.push(timed(one()));
        sent += 1;
    }
    while let Some(r) = inflight.next().await {
        latencies.push(r?);
        if sent < requests {
            inflight.push(timed(one()));
            sent += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(|a, b| a.total_cmp(b));
    Ok(RoundStats {
        rps: requests as f64 / elapsed,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
    })
}

/// A plain JSON POST whose whole answer is read; a failed or empty answer is an error.
pub async fn post_json(client: reqwest::Client, url: String, body: Bytes) -> Result<()> {
    let resp = client
        .post(&url)
        .header(reqwest::header::CONTENT_TYPE, JSON_CONTENT_TYPE)
        .body(body)
        .send()
        .await?;
    let status = resp.status();
    let bytes = resp.bytes().await?;
    if !status.is_success() || bytes.is_empty() {
        return Err(Error::Status { url, status });
    }
    Ok(())
}
