//! Cloister's benchmark harness, the library behind `cloister bench` (which only parses flags and
//! prints): each benchmark measures against a peer in the same run, so the ratio means something
//! on any machine.
//!
//! - [`upstream`]: a zero-work OpenAI-compatible upstream (a test double of vLLM and friends).
//! - [`load`]: the load generator ([`load::load_round`], [`load::post_json`]).
//! - [`stats`]: the one percentile helper, medians, call timing.
//! - [`node::BenchNode`]: a node in front of the reference upstream, on loopback.
//! - [`overhead`], [`e2ee`], [`quote`], [`engine`], [`gateway`]: the five benchmarks.
//!
//! ```no_run
//! # async fn demo() -> cloister_bench::Result<()> {
//! use cloister_bench::overhead::{OverheadOptions, run};
//! use cloister_bench::stats::RoundStats;
//!
//! let opts = OverheadOptions { requests: 1000, concurrency: 8, rounds: 3, stream: false };
//! let report = run(opts, |round, d, n| eprintln!("round {round}: {d:?} {n:?}")).await?;
//! let (direct, via_node) = (RoundStats::median_of(&report.direct), RoundStats::median_of(&report.via_node));
//! println!("the node adds {:+.3} ms at p50", via_node.p50_ms - direct.p50_ms);
//! # Ok(()) }
//! ```

mod error;

pub mod e2ee;
pub mod embeddings;
pub mod engine;
pub mod gateway;
pub mod load;
pub mod node;
pub mod overhead;
pub mod quote;
pub mod stats;
pub mod upstream;

pub use error::{Error, Result};
