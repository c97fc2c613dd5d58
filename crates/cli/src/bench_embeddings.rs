//! `cloister bench embeddings`: the built-in engine's embeddings against sentence-transformers
//! (CPU torch) on the same sentences, batch size and threads, in the same run. The measuring is
//! `cloister-bench`'s ([`cloister_bench::embeddings`]); this file parses flags and prints.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use cloister_bench::embeddings::{EmbeddingsOptions, run};
use cloister_bench::stats::median;

/// `cloister bench embeddings`.
#[derive(Debug, Args)]
pub(crate) struct EmbeddingsArgs {
    /// The embedding GGUF (scripts/fetch-embedding-model.sh).
    #[arg(long, default_value = "models/all-MiniLM-L6-v2.gguf")]
    pub gguf: PathBuf,
    /// The same model's Hugging Face directory, for sentence-transformers.
    #[arg(long, default_value = "models/all-MiniLM-L6-v2")]
    pub hf_dir: PathBuf,
    /// The chat GGUF the built-in engine loads beside it.
    #[arg(long, default_value = "models/SmolLM2-135M-Instruct.Q4_1.gguf")]
    pub model: PathBuf,
    /// A Python with sentence-transformers and torch.
    #[arg(long, default_value = "tools/embeddings/venv/bin/python")]
    pub python: PathBuf,
    /// Sentences per round.
    #[arg(long, default_value_t = 256)]
    pub sentences: usize,
    /// Sentences per encode call (both sides; sentence-transformers' default is 32).
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// CPU threads (both sides) [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Rounds per side.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

pub(crate) async fn embeddings(args: EmbeddingsArgs) -> anyhow::Result<ExitCode> {
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let opts = EmbeddingsOptions {
        chat_model: args.model,
        gguf: args.gguf,
        hf_dir: args.hf_dir,
        python: args.python,
        sentences: args.sentences,
        batch: args.batch,
        threads,
        rounds: args.rounds,
    };
    let r = tokio::task::spawn_blocking(move || run(&opts)).await??;
    let (ours, peer) = r.throughput();
    let ms = |s: &[f64]| median(s.iter().copied()) * 1e3;
    println!(
        "Embeddings: {} sentences ({} tokens), batch {}, {threads} threads; sentence-transformers on torch {}",
        r.sentences, r.tokens, args.batch, r.torch
    );
    println!("| engine | round ms (median) | sentences/s | ratio |");
    println!("|---|---:|---:|---:|");
    println!(
        "| sentence-transformers (PyTorch, f32) | {:.1} | {peer:.1} | 1.00x |",
        ms(&r.peer_s)
    );
    println!(
        "| Cloister built-in (llama.cpp, F16 GGUF) | {:.1} | {ours:.1} | {:.2}x |",
        ms(&r.ours_s),
        ours / peer.max(f64::MIN_POSITIVE)
    );
    println!(
        "agreement: cosine(ours, sentence-transformers) min {:.5}, mean {:.5}",
        r.cosine_min, r.cosine_mean
    );
    eprintln!(
        "rounds (s): ours {:?}, sentence-transformers {:?}",
        r.ours_s, r.peer_s
    );
    Ok(ExitCode::SUCCESS)
}
