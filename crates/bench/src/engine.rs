//! The built-in engine against llama.cpp on the same GGUF and threads:
//! - single-stream decode against `llama-bench` (this module);
//! - served, under 1, 4, 8.. concurrent streamed chats, against `llama-server` ([`serve`]).
//!
//! Both peers are built by `scripts/build-llama-cpp.sh` into `tools/llama.cpp/bin/`.
//!
//! ```no_run
//! # async fn demo() -> cloister_bench::Result<()> {
//! use cloister_bench::engine::{LlamaBench, load_builtin};
//! let engine = load_builtin("models/SmolLM2-135M-Instruct.Q4_1.gguf".into(), 2).await?;
//! let ours = cloister_bench::engine::decode(&engine, "Why is the sky blue?", 128).await?;
//! if let Some(peer) = LlamaBench::find(None) {
//!     let (pp, tg) = peer.run("models/SmolLM2-135M-Instruct.Q4_1.gguf".as_ref(), 2, ours.prompt_tokens as u32, 128)?;
//! }
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cloister_engine::builtin::{BenchFigures, BuiltinConfig, BuiltinEngine};

use crate::{Error, Result};

pub mod serve;

/// `given`, else `tools/llama.cpp/bin/<name>`, else `<name>` on `PATH`.
fn find_tool(given: Option<PathBuf>, name: &str) -> Option<PathBuf> {
    if let Some(p) = given {
        return Some(p);
    }
    let local = PathBuf::from("tools/llama.cpp/bin").join(name);
    if local.is_file() {
        return Some(local);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// Loads the built-in engine on `model` with `threads` threads and one slot.
pub async fn load_builtin(model: PathBuf, threads: usize) -> Result<Arc<BuiltinEngine>> {
    let mut config = BuiltinConfig::new(model);
    config.threads = Some(threads);
    config.slots = 1;
    let engine = tokio::task::spawn_blocking(move || BuiltinEngine::load(config)).await??;
    Ok(Arc::new(engine))
}

/// One prompt-processing and generation measurement of the built-in engine.
pub async fn decode(engine: &Arc<BuiltinEngine>, prompt: &str, n_gen: u32) -> Result<BenchFigures> {
    let e = Arc::clone(engine);
    let prompt = prompt.to_owned();
    Ok(tokio::task::spawn_blocking(move || e.bench_decode(&prompt, n_gen)).await??)
}

#[derive(Debug, serde::Deserialize)]
struct LlamaBenchRow {
    n_prompt: u32,
    n_gen: u32,
    avg_ts: f64,
}

/// llama.cpp's `llama-bench` binary.
#[derive(Debug, Clone)]
pub struct LlamaBench(pub PathBuf);

impl LlamaBench {
    /// `given`, else `tools/llama.cpp/bin/llama-bench`, else `llama-bench` on `PATH`.
    pub fn find(given: Option<PathBuf>) -> Option<Self> {
        find_tool(given, "llama-bench").map(Self)
    }

    /// One run: (prompt tokens/s for `n_prompt` tokens, generation tokens/s for `n_gen` tokens).
    pub fn run(&self, model: &Path, threads: usize, n_prompt: u32, n_gen: u32) -> Result<(f64, f64)> {
        let bin = &self.0;
        let out = std::process::Command::new(bin)
            .args(["-m"])
            .arg(model)
            .args([
                "-t",
                &threads.to_string(),
                "-p",
                &n_prompt.to_string(),
                "-n",
                &n_gen.to_string(),
            ])
            .args(["-r", "1", "-o", "json"])
            .output()
            .map_err(|e| Error::io(format!("running {}", bin.display()), e))?;
        if !out.status.success() {
            return Err(Error::NotWorking(format!(
                "llama-bench failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let rows: Vec<LlamaBenchRow> =
            serde_json::from_slice(&out.stdout).map_err(|e| Error::json("llama-bench -o json output", e))?;
        let pp = rows
            .iter()
            .find(|r| r.n_prompt > 0 && r.n_gen == 0)
            .map(|r| r.avg_ts)
            .unwrap_or(0.0);
        let tg = rows
            .iter()
            .find(|r| r.n_gen > 0 && r.n_prompt == 0)
            .map(|r| r.avg_ts)
            .unwrap_or(0.0);
        Ok((pp, tg))
    }
}
