//! The prefix cache with the real model: a prompt that starts where an earlier request's KV cells
//! left off (the same system prompt, the conversation so far, the same prompt again) is answered
//! exactly as an engine without the cache answers it, and the cache really is used.
//!
//! Every prompt here stays below 64 tokens: from 64 query rows in a micro-batch, llama.cpp's CPU
//! flash attention takes another kernel, so a long prompt prefilled at once and the same prompt as
//! cached prefix plus short suffix can differ in the last bits, and a greedy answer at a near-tie
//! (`src/builtin/prefix_tests.rs` has the figures and compares logits).

use cloister_engine::builtin::{BuiltinConfig, BuiltinEngine, DEFAULT_PROMPT_CACHE_MIB};
use cloister_engine::{ChunkStream, Engine};
use cloister_types::openai::{ChatCompletionRequest, ChatMessage};
use futures::StreamExt;

use crate::model_path;

async fn engine(prefix_cache: bool) -> Option<BuiltinEngine> {
    engine_with(prefix_cache, false).await
}

async fn engine_with(prefix_cache: bool, kv_unified: bool) -> Option<BuiltinEngine> {
    engine_config(prefix_cache, kv_unified, 2, DEFAULT_PROMPT_CACHE_MIB).await
}

async fn engine_config(
    prefix_cache: bool,
    kv_unified: bool,
    slots: usize,
    prompt_cache_mib: usize,
) -> Option<BuiltinEngine> {
    let path = model_path()?;
    let mut config = BuiltinConfig::new(path);
    config.prompt_cache_mib = prompt_cache_mib;
    config.kv_unified = kv_unified;
    // One thread: a greedy answer then does not depend on how work is split between threads.
    config.threads = Some(1);
    config.slots = slots;
    config.ctx_per_slot = 512;
    config.prefix_cache = prefix_cache;
    Some(
        BuiltinEngine::load_async(config)
            .await
            .expect("load the demo model"),
    )
}

/// Query rows from which llama.cpp's CPU flash attention takes its tiled kernel.
const TILE: usize = 64;

fn request(engine: &BuiltinEngine, messages: &[ChatMessage], max_tokens: u32) -> ChatCompletionRequest {
    let prompt = engine.count_prompt_tokens(messages).expect("count");
    assert!(
        prompt < TILE,
        "{prompt} prompt tokens; keep prompts below {TILE} (see the module)"
    );
    ChatCompletionRequest {
        model: engine.model_id().to_owned(),
        messages: messages.to_vec(),
        max_tokens: Some(max_tokens),
        temperature: Some(0.0),
        ..Default::default()
    }
}

async fn answer(engine: &BuiltinEngine, messages: &[ChatMessage], max_tokens: u32) -> String {
    let done = engine
        .complete(request(engine, messages, max_tokens))
        .await
        .expect("completion");
    done.choices[0].message.text_content()
}

fn user(text: &str) -> ChatMessage {
    ChatMessage::text("user", text)
}

/// The same turns, one after the other, on an engine with the cache and one without. Each step
/// names what it shares with the KV cells the step before left in slot 0.
#[tokio::test]
async fn cached_prefixes_give_the_answers_of_a_fresh_prefill() {
    let (Some(on), Some(off)) = (engine(true).await, engine(false).await) else {
        return;
    };
    let color = [user("Name a color.")];
    let first_on = answer(&on, &color, 8).await;
    let first_off = answer(&off, &color, 8).await;
    assert_eq!(first_on, first_off, "nothing cached yet: the engines must agree");
    let after_first = on.prefix_cache_stats();
    assert_eq!(after_first.cached_tokens, 0, "{after_first:?}");

    let color_prompt = on.count_prompt_tokens(&color).expect("count") as u64;
    // In order: (what the step shares with slot 0, the turns, the fewest tokens it must find cached).
    let steps: Vec<(&str, Vec<ChatMessage>, u64)> = vec![
        // The first prompt exactly: everything but its last token comes from the cache.
        ("the same prompt again", color.to_vec(), color_prompt - 1),
        // The conversation so far (that prompt and its answer), then a follow-up turn.
        (
            "a follow-up turn",
            vec![
                user("Name a color."),
                ChatMessage::text("assistant", &first_on),
                user("Why that one?"),
            ],
            color_prompt,
        ),
        // The system prompt and chat template, then another question.
        ("another question", vec![user("Name three animals.")], 1),
        // A prompt shorter than what the slot holds, diverging inside the user turn.
        ("a diverging prefix", vec![user("Name a city.")], 1),
    ];
    let mut cached_before = after_first.cached_tokens;
    for (what, messages, at_least) in &steps {
        let got = answer(&on, messages, 16).await;
        let want = answer(&off, messages, 16).await;
        assert_eq!(got, want, "{what}: the cached prefix changed the answer");
        let stats = on.prefix_cache_stats();
        let prompt = on.count_prompt_tokens(messages).expect("count") as u64;
        let cached = stats.cached_tokens - cached_before;
        assert!(
            cached >= *at_least && cached < prompt,
            "{what}: {cached} of {prompt} prompt tokens cached; expected at least {at_least}, never all"
        );
        cached_before = stats.cached_tokens;
    }
    assert_eq!(off.prefix_cache_stats().cached_tokens, 0);
}

/// Two conversations at once in two slots, each continued by a follow-up turn that should land in
/// the slot holding its own conversation; answers match an engine without the cache.
#[tokio::test]
async fn concurrent_conversations_keep_their_answers() {
    let (Some(on), Some(off)) = (engine(true).await, engine(false).await) else {
        return;
    };
    let openers = ["Write one sentence about the sea.", "What is two plus two?"];
    let first = |engine: BuiltinEngine| async move {
        futures::future::join_all(openers.iter().map(|q| {
            let engine = engine.clone();
            async move { answer(&engine, &[user(q)], 8).await }
        }))
        .await
    };
    let first_on = first(on.clone()).await;
    let first_off = first(off.clone()).await;
    assert_eq!(first_on, first_off);
    let follow_ups: Vec<Vec<ChatMessage>> = openers
        .iter()
        .zip(&first_on)
        .map(|(q, a)| vec![user(q), ChatMessage::text("assistant", a), user("Shorter.")])
        .collect();
    let before = on.prefix_cache_stats().cached_tokens;
    let run = |engine: BuiltinEngine| {
        let follow_ups = follow_ups.clone();
        async move {
            futures::future::join_all(follow_ups.into_iter().map(|m| {
                let engine = engine.clone();
                async move { answer(&engine, &m, 12).await }
            }))
            .await
        }
    };
    let got = run(on.clone()).await;
    let want = run(off.clone()).await;
    assert_eq!(got, want, "follow-ups answered from cached conversations differ");
    // Each follow-up finds at least its own opener's prompt: the first one admitted picks the slot
    // with the longest common prefix, the second takes the slot left, which holds its opener (a
    // token or two of slack for how the answer's first token merges when the turn is re-tokenized).
    let cached = on.prefix_cache_stats().cached_tokens - before;
    let openers_len: u64 = openers
        .iter()
        .map(|q| on.count_prompt_tokens(&[user(q)]).expect("count") as u64)
        .sum();
    assert!(
        cached >= openers_len.saturating_sub(4),
        "{cached} tokens cached for follow-ups whose openers take {openers_len}"
    );
}

/// A prompt asked while the same prompt is being answered starts from the running sequence's
/// cells (all but its last token), in another slot, and gets the same answer: with the unified KV
/// layout the cells are shared, with one stream per slot that stream is copied.
#[tokio::test]
async fn a_running_sequences_prefix_is_shared_or_copied() {
    for kv_unified in [true, false] {
        starts_from_a_running_sequence(kv_unified).await;
    }
}

async fn starts_from_a_running_sequence(kv_unified: bool) {
    let Some(engine) = engine_with(true, kv_unified).await else {
        return;
    };
    let messages = [user("Write one sentence about the sea.")];
    let n_prompt = engine.count_prompt_tokens(&messages).expect("count") as u64;
    // Once the first content chunk came, the first request's prompt is in its KV cells.
    let (first, mut first_text) = started(&engine, &messages, 16).await;
    let before = engine.prefix_cache_stats().cached_tokens;
    let (second, rest) = tokio::join!(answer(&engine, &messages, 16), drain(first));
    first_text.push_str(&rest);
    let shared = engine.prefix_cache_stats().cached_tokens - before;
    assert_eq!(
        shared,
        n_prompt - 1,
        "the second request should start from the running one's cells (unified: {kv_unified})"
    );
    assert_eq!(second, first_text);
}

/// Streams `messages` until the first chunk with text, which it returns with the stream: the
/// request then runs in a slot.
async fn started(engine: &BuiltinEngine, messages: &[ChatMessage], max_tokens: u32) -> (ChunkStream, String) {
    let mut stream = engine
        .stream(request(engine, messages, max_tokens))
        .await
        .expect("stream");
    loop {
        let chunk = stream.next().await.expect("a chunk").expect("chunk");
        if let Some(text) = chunk.choices.first().and_then(|c| c.delta.content.as_deref())
            && !text.is_empty()
        {
            return (stream, text.to_owned());
        }
    }
}

/// The rest of a stream's text.
async fn drain(mut stream: ChunkStream) -> String {
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("chunk");
        if let Some(t) = chunk.choices.first().and_then(|c| c.delta.content.as_deref()) {
            text.push_str(t);
        }
    }
    text
}

/// With one KV stream per slot, a prompt that arrives while another sequence runs takes the
/// lowest free slot (dense ids); when another free slot holds a longer prefix, that slot's stream
/// is copied into it, and the answer is the one the prompt got before.
#[tokio::test]
async fn per_slot_kv_copies_a_free_slots_longer_prefix() {
    let Some(engine) = engine_config(true, false, 3, DEFAULT_PROMPT_CACHE_MIB).await else {
        return;
    };
    let a = [user("Name a color.")];
    let b = [user("What is two plus two?")];
    let x = [user("Write one sentence about the colour of the sky at noon.")];
    // Admitted one after the other while the earlier ones run: slots 0, 1 and 2.
    let (sa, _) = started(&engine, &a, 24).await;
    let (sb, _) = started(&engine, &b, 24).await;
    let (x_first, _, _) = tokio::join!(answer(&engine, &x, 12), drain(sa), drain(sb));
    // `b` again, alone: it takes slot 1, which holds it, and runs.
    let (sb, _) = started(&engine, &b, 24).await;
    // `x` again: slots 0 (holding `a`) and 2 (holding `x`) are free, slot 1 runs. It takes slot 0
    // and copies slot 2's stream.
    let before = engine.prefix_cache_stats().cached_tokens;
    let (x_again, _) = tokio::join!(answer(&engine, &x, 12), drain(sb));
    let cached = engine.prefix_cache_stats().cached_tokens - before;
    let n_x = engine.count_prompt_tokens(&x).expect("count") as u64;
    assert_eq!(
        cached,
        n_x - 1,
        "the copied stream should hold all of x but its last token"
    );
    assert_eq!(x_again, x_first);
}

/// `bench_decode` measures prompt processing, so it never starts from a cached prefix.
#[tokio::test]
async fn bench_decode_processes_the_whole_prompt() {
    let Some(on) = engine(true).await else {
        return;
    };
    let engine = on.clone();
    tokio::task::spawn_blocking(move || {
        for _ in 0..2 {
            engine.bench_decode("Name a color.", 4).expect("bench");
        }
    })
    .await
    .expect("bench thread");
    assert_eq!(on.prefix_cache_stats().cached_tokens, 0);
}

/// A prefix its slot lost to another prompt comes back from host memory: with one slot, `a`, then
/// `b` (which keeps only the chat template's cells of `a`), then `a` again, which starts from all of
/// `a` but its last token and is answered as before. Without the host-memory cache, `a` again
/// finds only the template.
#[tokio::test]
async fn a_prefix_that_left_its_slot_comes_back_from_host_memory() {
    for mib in [DEFAULT_PROMPT_CACHE_MIB, 0] {
        let Some(engine) = engine_config(true, false, 1, mib).await else {
            return;
        };
        let a = [user("Write one sentence about the colour of the sky at noon.")];
        let b = [user("Name a color.")];
        let first = answer(&engine, &a, 12).await;
        let template = {
            let before = engine.prefix_cache_stats().cached_tokens;
            answer(&engine, &b, 4).await;
            engine.prefix_cache_stats().cached_tokens - before
        };
        let before = engine.prefix_cache_stats().cached_tokens;
        let again = answer(&engine, &a, 12).await;
        let cached = engine.prefix_cache_stats().cached_tokens - before;
        let n_a = engine.count_prompt_tokens(&a).expect("count") as u64;
        assert!(
            template + 8 < n_a,
            "the test needs a's question to run 8 tokens past the template"
        );
        if mib > 0 {
            assert_eq!(cached, n_a - 1, "a should come back from host memory");
        } else {
            assert_eq!(
                cached, template,
                "without the host cache only the template is cached"
            );
        }
        assert_eq!(again, first);
    }
}
