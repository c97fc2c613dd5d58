//! Continuous batching with the real model: answers decoded together, in slots that are freed and
//! reused in changing orders, are the answers each request gets alone.

use cloister_engine::Engine;
use cloister_engine::builtin::{BuiltinConfig, BuiltinEngine};
use cloister_types::openai::{ChatCompletionRequest, ChatMessage};

use crate::model_path;

const PROMPTS: [&str; 6] = [
    "Name a color.",
    "Write one sentence about the sea.",
    "What is two plus two?",
    "Name three animals.",
    "Say hello to a friend.",
    "Describe a tree in one sentence.",
];

fn request(engine: &BuiltinEngine, prompt: &str, max_tokens: u32) -> ChatCompletionRequest {
    ChatCompletionRequest {
        model: engine.model_id().to_owned(),
        messages: vec![ChatMessage::text("user", prompt)],
        max_tokens: Some(max_tokens),
        temperature: Some(0.0),
        ..Default::default()
    }
}

async fn answer(engine: &BuiltinEngine, prompt: &str, max_tokens: u32) -> (String, u32) {
    let done = engine
        .complete(request(engine, prompt, max_tokens))
        .await
        .expect("completion");
    let usage = done.usage.expect("usage");
    (done.choices[0].message.text_content(), usage.completion_tokens)
}

/// Four slots, six prompts of different lengths at once, three waves: sequences finish in varying
/// orders, later ones take freed slots (lowest id first) while others still decode, and every batch
/// mixes decodes with new prompts. Each answer must be the one the request gets alone.
#[tokio::test]
async fn concurrent_answers_match_solo_answers() {
    let Some(path) = model_path() else {
        return;
    };
    let mut config = BuiltinConfig::new(path);
    // One thread: a greedy answer then does not depend on how work is split between threads.
    config.threads = Some(1);
    config.slots = 4;
    let engine = BuiltinEngine::load_async(config)
        .await
        .expect("load the demo model");
    // Different lengths, so the sequences of one wave end at different steps.
    let lengths: Vec<u32> = (0..PROMPTS.len()).map(|i| 6 + 5 * i as u32).collect();
    let mut solo = Vec::new();
    for (prompt, &n) in PROMPTS.iter().zip(&lengths) {
        solo.push(answer(&engine, prompt, n).await);
    }
    for wave in 0..3 {
        // Rotate which prompt arrives first, so each wave hands out slots in another order.
        let order: Vec<usize> = (0..PROMPTS.len())
            .map(|i| (i + wave * 2) % PROMPTS.len())
            .collect();
        let together =
            futures::future::join_all(order.iter().map(|&i| answer(&engine, PROMPTS[i], lengths[i]))).await;
        for (&i, got) in order.iter().zip(&together) {
            assert_eq!(
                got, &solo[i],
                "wave {wave}: {:?} decoded with others differs from alone",
                PROMPTS[i]
            );
            assert!(got.1 >= 1 && got.1 <= lengths[i]);
        }
    }
}
