//! The prefix cache against a fresh prefill, compared at the logits of every sampled token.
//!
//! A prompt whose prefix is cached is processed in other batch shapes than a fresh one. llama.cpp
//! does not promise bit-identical logits across batch shapes (its server says so of its own prompt
//! cache), and on the CPU one shape matters here: flash attention switches to a tiled kernel, with
//! f32 instead of f16 accumulation, for 64 or more query rows in a micro-batch
//! (`GGML_FA_TILE_Q`). A 73-token prompt prefilled at once against its 24 cached tokens plus a
//! 49-token suffix moves the first logits by 0.72 (of a largest logit of 35), enough to flip a
//! near-tie later in a greedy answer; with the prefix from prompts of 31 to 61 tokens, by 0.88.
//! Within one side of that threshold the cache changes nothing: these tests keep every prefill below
//! 64 tokens and require the logits to be bit-identical, so any bookkeeping slip (a token kept at
//! the wrong position, a stale cell, a generated token counted that was never decoded) fails them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

async fn load(path: &Path, prefix_cache: bool) -> BuiltinEngine {
    let mut config = BuiltinConfig::new(path);
    config.threads = Some(1);
    config.slots = 2;
    config.ctx_per_slot = 512;
    config.prefix_cache = prefix_cache;
    BuiltinEngine::load_async(config)
        .await
        .expect("load the demo model")
}

impl BuiltinEngine {
    /// The logits each of the first `n` tokens after `messages` is sampled from (greedy).
    async fn logits(&self, messages: &[ChatMessage], n: u32) -> Vec<Vec<f32>> {
        let messages = messages.to_vec();
        let inner = Arc::clone(&self.inner);
        let params = GenParams {
            max_tokens: Some(n),
            stop: Vec::new(),
            sampling: Sampling::Greedy,
            ignore_eos: true,
        };
        let mut rx = self
            .enqueue(move || inner.prompt_tokens(&messages), params)
            .await
            .expect("queue");
        loop {
            match rx.recv().await {
                Some(Event::Text(_)) => {}
                Some(Event::Finished(f)) => return f.sampled_logits,
                Some(Event::Failed(e)) => panic!("generation failed: {e}"),
                None => panic!("the worker went away"),
            }
        }
    }
}

fn user(text: &str) -> ChatMessage {
    ChatMessage::text("user", text)
}

/// Query rows from which llama.cpp's CPU flash attention takes its tiled kernel.
const TILE: usize = 64;

/// Every sampled token's logits, bit for bit.
fn assert_same(what: &str, got: &[Vec<f32>], want: &[Vec<f32>]) {
    assert_eq!(got.len(), want.len(), "{what}: tokens sampled");
    for (step, (g, w)) in got.iter().zip(want).enumerate() {
        let diff = g.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(
            g.len() == w.len() && diff == 0.0,
            "{what}, token {step}: logits differ by up to {diff} from a fresh prefill"
        );
    }
}

#[tokio::test]
async fn a_cached_prefix_gives_the_logits_of_a_fresh_prefill() {
    let Some(path) = cloister_testkit::models::chat_model() else {
        return;
    };
    let on = load(&path, true).await;
    let off = load(&path, false).await;
    let sea = [user("Write one sentence about the sea.")];
    let sums = [user("What is two plus two?")];
    let steps: Vec<(&str, Vec<ChatMessage>)> = vec![
        ("first prompt, nothing cached", sea.to_vec()),
        ("the same prompt again", sea.to_vec()),
        (
            "a follow-up turn",
            vec![
                user("Write one sentence about the sea."),
                ChatMessage::text("assistant", "The sea is a vast and mysterious realm."),
                user("Say it again, shorter."),
            ],
        ),
        ("another question after the system prompt", sums.to_vec()),
        (
            "a shorter prompt diverging inside the user turn",
            vec![user("What is two?")],
        ),
    ];
    for (what, messages) in &steps {
        let prompt = on.count_prompt_tokens(messages).expect("count");
        assert!(
            prompt < TILE,
            "{what}: {prompt} tokens; keep prefills below {TILE}"
        );
        let got = on.logits(messages, 12).await;
        let want = off.logits(messages, 12).await;
        assert_same(what, &got, &want);
    }
    // Two follow-ups at once: the second's suffix shares decode steps with the first's tokens.
    let both = [
        vec![
            user("Write one sentence about the sea."),
            ChatMessage::text("assistant", "The sea is deep."),
            user("Why?"),
        ],
        vec![
            user("What is two plus two?"),
            ChatMessage::text("assistant", "Four."),
            user("Why?"),
        ],
    ];
    let got = futures::future::join_all(both.iter().map(|m| on.logits(m, 12))).await;
    for (m, got) in both.iter().zip(&got) {
        let want = off.logits(m, 12).await;
        assert_same("two follow-ups at once", got, &want);
    }
    let stats = on.prefix_cache_stats();
    // Nothing for the first prompt; all but one token of the repeat; the turns and the system
    // prompt for the rest.
    assert!(
        stats.cached_tokens * 3 > stats.prompt_tokens,
        "only {stats:?} came from the cache"
    );
}
