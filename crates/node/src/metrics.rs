//! Prometheus metrics, kept with atomics and small maps and rendered by hand in the text format.
//!
//! Label values come from a closed set (route templates, served model ids, error kinds) so a client
//! cannot grow the maps without bound.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use cloister_types::openai::Usage;

/// Upper bounds (seconds) of the chat request-duration histogram buckets.
const DURATION_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// The node's counters.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// By route, then status. Keyed by name first so a count is found without allocating.
    http_requests: Mutex<BTreeMap<String, BTreeMap<u16, u64>>>,
    /// By model, then streamed or not.
    chat_requests: Mutex<BTreeMap<String, BTreeMap<bool, u64>>>,
    /// By model, then kind (`prompt`, `completion`).
    tokens: Mutex<BTreeMap<String, BTreeMap<&'static str, u64>>>,
    engine_errors: Mutex<BTreeMap<&'static str, u64>>,
    in_flight: AtomicI64,
    e2ee_requests: AtomicU64,
    signatures: AtomicU64,
    duration: Histogram,
}

#[derive(Debug, Default)]
struct Histogram {
    /// Per-bucket (not cumulative) counts; the last slot is `+Inf`.
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K, by: u64) {
    // A poisoned lock only means another thread panicked mid-increment; the counts are still usable.
    let mut map = map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let slot = map.entry(key).or_insert(0);
    *slot = slot.saturating_add(by);
}

/// Adds `counts` (inner key, amount) under `name`, allocating the name only the first time.
fn bump_named<K: Ord + Copy>(
    map: &Mutex<BTreeMap<String, BTreeMap<K, u64>>>,
    name: &str,
    counts: &[(K, u64)],
) {
    let mut map = map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let inner = match map.get_mut(name) {
        Some(inner) => inner,
        None => map.entry(name.to_owned()).or_default(),
    };
    for &(key, by) in counts {
        let slot = inner.entry(key).or_insert(0);
        *slot = slot.saturating_add(by);
    }
}

/// (name, inner key, count) in order.
fn snapshot_named<K: Ord + Copy>(map: &Mutex<BTreeMap<String, BTreeMap<K, u64>>>) -> Vec<(String, K, u64)> {
    let map = map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    map.iter()
        .flat_map(|(name, inner)| inner.iter().map(|(k, v)| (name.clone(), *k, *v)))
        .collect()
}

fn snapshot<K: Ord + Clone>(map: &Mutex<BTreeMap<K, u64>>) -> Vec<(K, u64)> {
    let map = map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    map.iter().map(|(k, v)| (k.clone(), *v)).collect()
}

/// Escapes a label value for the Prometheus text format.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

impl Metrics {
    /// One HTTP response produced for `route` (a route template, or `unmatched`).
    pub(crate) fn http_request(&self, route: &str, status: u16) {
        bump_named(&self.http_requests, route, &[(status, 1)]);
    }

    /// One chat request accepted for `model` (a served id, or `other`).
    pub(crate) fn chat_request(&self, model: &str, stream: bool) {
        bump_named(&self.chat_requests, model, &[(stream, 1)]);
    }

    /// One sealed (E2EE) request opened.
    pub(crate) fn e2ee_request(&self) {
        self.e2ee_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// One answer signed (at once, or a stream's on its first fetch).
    pub(crate) fn signature_made(&self) {
        self.signatures.fetch_add(1, Ordering::Relaxed);
    }

    /// Tokens used by one completion.
    pub(crate) fn usage(&self, model: &str, usage: &Usage) {
        bump_named(
            &self.tokens,
            model,
            &[
                ("prompt", u64::from(usage.prompt_tokens)),
                ("completion", u64::from(usage.completion_tokens)),
            ],
        );
    }

    /// One engine failure of `kind`.
    pub(crate) fn engine_error(&self, kind: &'static str) {
        bump(&self.engine_errors, kind, 1);
    }

    /// One finished chat request (the whole stream, for streams).
    pub(crate) fn chat_duration(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let slot = DURATION_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(DURATION_BUCKETS.len());
        if let Some(bucket) = self.duration.buckets.get(slot) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.duration.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.duration.count.fetch_add(1, Ordering::Relaxed);
    }

    /// A request entered the node; call [`Metrics::request_finished`] when it is done.
    pub(crate) fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// A request left the node.
    pub(crate) fn request_finished(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition (version 0.0.4).
    pub(crate) fn render(&self, signature_cache_entries: usize) -> String {
        let mut out = String::with_capacity(4096);
        // Writing to a String cannot fail; the results are ignored on purpose.
        let _ = writeln!(
            out,
            "# HELP cloister_http_requests_total HTTP responses by route and status."
        );
        let _ = writeln!(out, "# TYPE cloister_http_requests_total counter");
        for (route, status, n) in snapshot_named(&self.http_requests) {
            let _ = writeln!(
                out,
                "cloister_http_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                escape(&route)
            );
        }
        let _ = writeln!(
            out,
            "# HELP cloister_chat_requests_total Chat completion requests by model and mode."
        );
        let _ = writeln!(out, "# TYPE cloister_chat_requests_total counter");
        for (model, stream, n) in snapshot_named(&self.chat_requests) {
            let _ = writeln!(
                out,
                "cloister_chat_requests_total{{model=\"{}\",stream=\"{stream}\"}} {n}",
                escape(&model)
            );
        }
        let _ = writeln!(
            out,
            "# HELP cloister_tokens_total Tokens processed by model and kind."
        );
        let _ = writeln!(out, "# TYPE cloister_tokens_total counter");
        for (model, kind, n) in snapshot_named(&self.tokens) {
            let _ = writeln!(
                out,
                "cloister_tokens_total{{model=\"{}\",kind=\"{kind}\"}} {n}",
                escape(&model)
            );
        }
        let _ = writeln!(
            out,
            "# HELP cloister_engine_errors_total Engine failures by kind."
        );
        let _ = writeln!(out, "# TYPE cloister_engine_errors_total counter");
        for (kind, n) in snapshot(&self.engine_errors) {
            let _ = writeln!(out, "cloister_engine_errors_total{{kind=\"{kind}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP cloister_requests_in_flight API requests being served."
        );
        let _ = writeln!(out, "# TYPE cloister_requests_in_flight gauge");
        let _ = writeln!(
            out,
            "cloister_requests_in_flight {}",
            self.in_flight.load(Ordering::Relaxed).max(0)
        );
        let _ = writeln!(
            out,
            "# HELP cloister_e2ee_requests_total Sealed (E2EE) requests opened."
        );
        let _ = writeln!(out, "# TYPE cloister_e2ee_requests_total counter");
        let _ = writeln!(
            out,
            "cloister_e2ee_requests_total {}",
            self.e2ee_requests.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP cloister_signature_cache_entries Signed texts held for /v1/signature."
        );
        let _ = writeln!(out, "# TYPE cloister_signature_cache_entries gauge");
        let _ = writeln!(out, "cloister_signature_cache_entries {signature_cache_entries}");
        let _ = writeln!(
            out,
            "# HELP cloister_signatures_total Answers signed: plain answers and inline-signed \
             streams when they end, other streams when their signature is first fetched."
        );
        let _ = writeln!(out, "# TYPE cloister_signatures_total counter");
        let _ = writeln!(
            out,
            "cloister_signatures_total {}",
            self.signatures.load(Ordering::Relaxed)
        );
        self.render_histogram(&mut out);
        out
    }

    fn render_histogram(&self, out: &mut String) {
        let name = "cloister_chat_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Chat request duration, to the last byte for streams."
        );
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative: u64 = 0;
        for (i, bucket) in self.duration.buckets.iter().enumerate() {
            cumulative = cumulative.saturating_add(bucket.load(Ordering::Relaxed));
            match DURATION_BUCKETS.get(i) {
                Some(le) => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let sum = Duration::from_micros(self.duration.sum_micros.load(Ordering::Relaxed)).as_secs_f64();
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(
            out,
            "{name}_count {}",
            self.duration.count.load(Ordering::Relaxed)
        );
    }
}

#[cfg(test)]
mod tests {
    use cloister_types::wire::MODELS_PATH;

    use super::*;

    #[test]
    fn renders_counters_histogram_and_escapes_labels() {
        let m = Metrics::default();
        m.http_request(MODELS_PATH, 200);
        m.http_request(MODELS_PATH, 200);
        m.chat_request("we\"ird\nmodel", true);
        m.usage("m", &Usage::new(7, 3));
        m.engine_error("timeout");
        m.chat_duration(Duration::from_millis(300));
        m.chat_duration(Duration::from_secs(1000));
        m.request_started();
        let text = m.render(5);
        assert!(
            text.contains(&format!(
                "cloister_http_requests_total{{route=\"{MODELS_PATH}\",status=\"200\"}} 2"
            )),
            "{text}"
        );
        assert!(
            text.contains("model=\"we\\\"ird\\nmodel\",stream=\"true\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("cloister_tokens_total{model=\"m\",kind=\"prompt\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("cloister_tokens_total{model=\"m\",kind=\"completion\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("cloister_engine_errors_total{kind=\"timeout\"} 1"),
            "{text}"
        );
        assert!(text.contains("cloister_requests_in_flight 1"), "{text}");
        assert!(text.contains("cloister_signature_cache_entries 5"), "{text}");
        m.signature_made();
        assert!(m.render(0).contains("cloister_signatures_total 1\n"));
        // Each family's lines are contiguous: HELP, then TYPE, then its samples (a parser refuses a
        // family split by another's lines).
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or_default();
                let next = lines.get(i + 1).copied().unwrap_or_default();
                assert!(next.starts_with(&format!("# TYPE {name} ")), "{name}: {next}");
            }
        }
        assert!(
            text.contains("cloister_chat_request_duration_seconds_bucket{le=\"0.25\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("cloister_chat_request_duration_seconds_bucket{le=\"0.5\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("cloister_chat_request_duration_seconds_bucket{le=\"300\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("cloister_chat_request_duration_seconds_bucket{le=\"+Inf\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("cloister_chat_request_duration_seconds_count 2"),
            "{text}"
        );
    }
}
