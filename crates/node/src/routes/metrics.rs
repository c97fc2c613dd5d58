//! `GET /metrics` (and `/v1/metrics`, the vllm-proxy path): Prometheus text format.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

/// The handler.
pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    let mut text = state.metrics().render(state.signature_count());
    gpu_gauges(&state, &mut text);
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// The GPUs whose evidence the node attaches (0 without a source), and their CC state when the
/// source can read it.
fn gpu_gauges(state: &AppState, out: &mut String) {
    use cloister_attest::collect::gpu::CcMode;
    use std::fmt::Write as _;
    let summary = state.gpu.as_ref().map(|g| g.summary());
    let source = summary.as_ref().map_or("none", |s| s.source);
    let _ = writeln!(
        out,
        "# HELP cloister_gpus GPUs whose evidence the node attaches to its reports."
    );
    let _ = writeln!(out, "# TYPE cloister_gpus gauge");
    let _ = writeln!(
        out,
        "cloister_gpus{{source=\"{source}\"}} {}",
        summary.as_ref().map_or(0, |s| s.count)
    );
    let Some(summary) = summary else { return };
    let mode = match summary.cc_mode {
        Some(CcMode::On) => "on",
        Some(CcMode::Off) => "off",
        Some(CcMode::Devtools) => "devtools",
        Some(CcMode::ProtectedPcie) => "ppcie",
        None => "unknown",
    };
    let _ = writeln!(
        out,
        "# HELP cloister_gpu_cc_mode The GPUs' confidential-computing mode (1 for the current one)."
    );
    let _ = writeln!(out, "# TYPE cloister_gpu_cc_mode gauge");
    let _ = writeln!(out, "cloister_gpu_cc_mode{{mode=\"{mode}\"}} 1");
    if let Some(ready) = summary.ready {
        let _ = writeln!(
            out,
            "# HELP cloister_gpu_cc_ready Whether the GPUs' CC ready state is set."
        );
        let _ = writeln!(out, "# TYPE cloister_gpu_cc_ready gauge");
        let _ = writeln!(out, "cloister_gpu_cc_ready {}", u8::from(ready));
    }
}
