//! Measures the built-in engine on the demo model: load time, prompt and generation speed for the
//! reference prompt, and aggregate generation speed with several concurrent requests.
//!
//! `cargo run --release -p cloister-engine --example engine_bench -- [model.gguf] [threads] [concurrency]`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use cloister_engine::Engine;
use cloister_engine::builtin::{BuiltinConfig, BuiltinEngine};
use cloister_types::openai::{ChatCompletionRequest, ChatMessage};

const REFERENCE_PROMPT: &str = "Explain in a few sentences why the sky is blue.";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let model = args.next().unwrap_or_else(|| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../models/SmolLM2-135M-Instruct.Q4_1.gguf"
        )
        .to_owned()
    });
    let threads: usize = args.next().map_or(2, |t| t.parse().expect("threads"));
    let concurrency: usize = args.next().map_or(4, |c| c.parse().expect("concurrency"));

    let mut config = BuiltinConfig::new(model);
    config.threads = Some(threads);
    config.slots = concurrency.max(1);
    let engine = BuiltinEngine::load_async(config).await.expect("load");
    println!(
        "load: {:.0} ms (hash + map + context), {threads} threads",
        engine.load_time().as_secs_f64() * 1e3
    );

    for round in 1..=3 {
        let e = engine.clone();
        let f = tokio::task::spawn_blocking(move || e.bench_decode(REFERENCE_PROMPT, 128))
            .await
            .unwrap()
            .unwrap();
        println!(
            "round {round}: prompt {} tokens {:.1} tok/s, generation {} tokens {:.1} tok/s",
            f.prompt_tokens, f.prompt_tok_per_s, f.gen_tokens, f.gen_tok_per_s
        );
    }

    let request = |i: usize| ChatCompletionRequest {
        model: engine.model_id().to_owned(),
        messages: vec![ChatMessage::text("user", format!("{REFERENCE_PROMPT} ({i})"))],
        max_tokens: Some(128),
        temperature: Some(0.0),
        ..Default::default()
    };
    for n in [1, concurrency] {
        let started = Instant::now();
        let answers = futures::future::join_all((0..n).map(|i| engine.complete(request(i)))).await;
        let secs = started.elapsed().as_secs_f64();
        let tokens: u32 = answers
            .iter()
            .map(|a| a.as_ref().unwrap().usage.unwrap().completion_tokens)
            .sum();
        println!(
            "{n} concurrent: {tokens} tokens in {secs:.2} s = {:.1} tok/s aggregate",
            f64::from(tokens) / secs
        );
        if n == 1 {
            println!(
                "  answer: {:?}",
                answers[0].as_ref().unwrap().choices[0].message.text_content()
            );
        }
    }
}
