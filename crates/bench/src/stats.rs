//! The one percentile helper, medians over rounds, and call timing.

use std::hint::black_box;
use std::time::Instant;

use crate::{Error, Result};

/// The `p` quantile (0.0..=1.0) of `sorted` by nearest rank; 0 for an empty slice.
///
/// ```
/// use cloister_bench::stats::percentile;
/// assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.5), 3.0);
/// assert_eq!(percentile(&[], 0.99), 0.0);
/// ```
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// The median of `values` (the upper one of an even count); 0 when there are none.
pub fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

/// Throughput and latency of one load round.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoundStats {
    /// Requests per second over the round.
    pub rps: f64,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th-percentile latency, milliseconds.
    pub p99_ms: f64,
}

impl RoundStats {
    /// The medians over `rounds` of throughput, p50 and p99 (what `cloister bench` prints).
    pub fn median_of(rounds: &[RoundStats]) -> RoundStats {
        RoundStats {
            rps: median(rounds.iter().map(|s| s.rps)),
            p50_ms: median(rounds.iter().map(|s| s.p50_ms)),
            p99_ms: median(rounds.iter().map(|s| s.p99_ms)),
        }
    }
}

/// Mean microseconds per call of `f` over `n` calls, after `n / 10` warm-up calls.
pub fn mean_micros(n: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..n / 10 {
        f();
    }
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed().as_secs_f64() * 1e6 / n.max(1) as f64
}

/// Times `iterations` calls of `f` one by one: the latencies in microseconds, sorted. A call that
/// returns `false` stops the round with an error (timing a fast failure would measure nothing).
pub fn time_calls(iterations: usize, mut f: impl FnMut() -> bool) -> Result<Vec<f64>> {
    let mut lat = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let t = Instant::now();
        let ok = black_box(f());
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        if !ok {
            return Err(Error::NotWorking(
                "a verification failed during the benchmark".into(),
            ));
        }
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    Ok(lat)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank_and_clamped() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 0.5), 51.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&v, 7.0), 100.0);
        assert_eq!(percentile(&[4.0], 0.99), 4.0);
    }

    #[test]
    fn median_sorts_first() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median([4.0, 1.0, 3.0, 2.0].into_iter()), 3.0);
        assert_eq!(median(std::iter::empty()), 0.0);
        let rounds = [
            RoundStats {
                rps: 10.0,
                p50_ms: 3.0,
                p99_ms: 9.0,
            },
            RoundStats {
                rps: 30.0,
                p50_ms: 1.0,
                p99_ms: 7.0,
            },
            RoundStats {
                rps: 20.0,
                p50_ms: 2.0,
                p99_ms: 8.0,
            },
        ];
        assert_eq!(
            RoundStats::median_of(&rounds),
            RoundStats {
                rps: 20.0,
                p50_ms: 2.0,
                p99_ms: 8.0
            }
        );
    }

    #[test]
    fn time_calls_sorts_and_refuses_failures() {
        let mut n = 0;
        let lat = time_calls(5, || {
            n += 1;
            true
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((n, lat.len()), (5, 5));
        assert!(lat.windows(2).all(|w| w[0] <= w[1]));
        let mut calls = 0;
        let failed = time_calls(5, || {
            calls += 1;
            calls < 3
        });
        assert!(matches!(failed, Err(Error::NotWorking(_))));
        assert_eq!(calls, 3, "the round stops at the first failure");
        let mut timed = 0;
        let mean = mean_micros(10, || timed += 1);
        assert_eq!(timed, 11, "one warm-up call, then ten timed");
        assert!(mean.is_finite() && mean >= 0.0);
    }
}
