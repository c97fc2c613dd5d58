//! Node overhead: a node in front of the reference upstream against calling that upstream directly,
//! interleaved in rounds.

use cloister_types::wire::CHAT_COMPLETIONS_PATH;

use crate::Result;
use crate::load::{load_round, post_json};
use crate::node::BenchNode;
use crate::stats::RoundStats;
use crate::upstream::reference_request;

/// What to run.
#[derive(Debug, Clone, Copy)]
pub struct OverheadOptions {
    /// Requests per round per target.
    pub requests: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Rounds (direct and via-node interleaved).
    pub rounds: usize,
    /// Streamed requests instead of plain ones.
    pub stream: bool,
}

/// Every round's figures, in order.
#[derive(Debug, Clone, Default)]
pub struct OverheadReport {
    /// The upstream called directly.
    pub direct: Vec<RoundStats>,
    /// The same requests through the node.
    pub via_node: Vec<RoundStats>,
}

/// Runs the comparison; `on_round(round, direct, via_node)` sees each round as it ends.
///
/// ```no_run
/// # async fn demo() -> cloister_bench::Result<()> {
/// use cloister_bench::overhead::{OverheadOptions, run};
/// let opts = OverheadOptions { requests: 200, concurrency: 8, rounds: 1, stream: false };
/// let report = run(opts, |_, _, _| {}).await?;
/// # Ok(()) }
/// ```
pub async fn run(
    opts: OverheadOptions,
    mut on_round: impl FnMut(usize, &RoundStats, &RoundStats),
) -> Result<OverheadReport> {
    let bench = BenchNode::start(opts.concurrency * 2).await?;
    let body = reference_request(opts.stream)?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(opts.concurrency * 2)
        .build()?;
    let direct_url = format!("http://{}{CHAT_COMPLETIONS_PATH}", bench.upstream);
    let node_url = format!("http://{}{CHAT_COMPLETIONS_PATH}", bench.node);
    let to_upstream = || post_json(client.clone(), direct_url.clone(), body.clone());
    let through_node = || post_json(client.clone(), node_url.clone(), body.clone());
    // Warm up both paths (connection pools, first-request allocations).
    load_round(50, opts.concurrency, to_upstream).await?;
    load_round(50, opts.concurrency, through_node).await?;

    let mut report = OverheadReport::default();
    for round in 1..=opts.rounds {
        let d = load_round(opts.requests, opts.concurrency, to_upstream).await?;
        let n = load_round(opts.requests, opts.concurrency, through_node).await?;
        on_round(round, &d, &n);
        report.direct.push(d);
        report.via_node.push(n);
    }
    bench.stop().await;
    Ok(report)
}
