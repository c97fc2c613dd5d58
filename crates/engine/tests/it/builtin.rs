//! The built-in engine with the real SmolLM2-135M model.
//!
//! One engine is shared by most tests, and those tests take turns (a lock): on two cores, parallel
//! decoding would only slow each other down, and a greedy answer should come from an engine that is
//! not batching someone else's request at the same time.

use std::sync::OnceLock;
use std::time::Duration;

use cloister_engine::builtin::{BuiltinConfig, BuiltinEngine};
use cloister_engine::{Engine, Error};
use cloister_types::openai::{ChatCompletionChunk, ChatCompletionRequest, ChatMessage, Stop};
use futures::StreamExt;
use tokio::sync::{Mutex, MutexGuard};

use crate::model_path;

const REFERENCE_PROMPT: &str = "Explain in a few sentences why the sky is blue.";
/// One decode thread: llama.cpp's threads spin at barriers, and on a two-core machine that other
/// processes share (CI, a parallel build), two spinning threads slow decoding down many times over.
const THREADS: usize = 1;

static SHARED: OnceLock<BuiltinEngine> = OnceLock::new();
static TURN: Mutex<()> = Mutex::const_new(());

/// The shared engine (4 slots) and this test's turn, or `None` when the model is absent.
async fn shared() -> Option<(BuiltinEngine, MutexGuard<'static, ()>)> {
    let path = model_path()?;
    let turn = TURN.lock().await;
    let engine = SHARED.get_or_init(|| {
        let mut config = BuiltinConfig::new(path);
        config.threads = Some(THREADS);
        BuiltinEngine::load(config).expect("load the demo model")
    });
    Some((engine.clone(), turn))
}

fn request(engine: &BuiltinEngine, prompt: &str, max_tokens: u32) -> ChatCompletionRequest {
    ChatCompletionRequest {
        model: engine.model_id().to_owned(),
        messages: vec![ChatMessage::text("user", prompt)],
        max_tokens: Some(max_tokens),
        temperature: Some(0.0),
        ..Default::default()
    }
}

async fn text_of(engine: &BuiltinEngine, req: ChatCompletionRequest) -> (String, String, u32) {
    let answer = engine.complete(req).await.expect("completion");
    let choice = &answer.choices[0];
    let usage = answer.usage.expect("usage");
    (
        choice.message.text_content(),
        choice.finish_reason.clone().unwrap_or_default(),
        usage.completion_tokens,
    )
}

#[tokio::test]
async fn loads_with_card_and_hash() {
    let Some((engine, _turn)) = shared().await else {
        return;
    };
    let cards = engine.models();
    assert_eq!(cards.len(), 1);
    assert_eq!(cards[0].id, "SmolLM2-135M-Instruct.Q4_1");
    let sha = cards[0].sha256.as_deref().expect("sha256");
    assert_eq!(sha.len(), 64);
    assert!(sha.bytes().all(|b| b.is_ascii_hexdigit()));
    eprintln!("load time: {:?}", engine.load_time());
}

#[tokio::test]
async fn reference_prompt_is_41_tokens() {
    let Some((engine, _turn)) = shared().await else {
        return;
    };
    let messages = [ChatMessage::text("user", REFERENCE_PROMPT)];
    // SmolLM2's template adds its default system prompt when none is given.
    let rendered = engine.render_prompt(&messages).expect("render");
    assert_eq!(
        rendered,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nExplain in a few sentences why the sky is blue.<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(engine.count_prompt_tokens(&messages).expect("count"), 41);
    let answer = engine
        .complete(request(&engine, REFERENCE_PROMPT, 1))
        .await
        .expect("completion");
    assert_eq!(answer.usage.expect("usage").prompt_tokens, 41);
}

#[tokio::test]
async fn greedy_is_deterministic_english() {
    let Some((engine, _turn)) = shared().await else {
        return;
    };
    let (a, _, _) = text_of(&engine, request(&engine, REFERENCE_PROMPT, 24)).await;
    let (b, _, _) = text_of(&engine, request(&engine, REFERENCE_PROMPT, 24)).await;
    assert_eq!(a, b);
    assert!(a.split_whitespace().count() >= 5, "{a:?}");
    let letters = a.chars().filter(|c| c.is_ascii_alphabetic()).count();
    assert!(
        letters * 10 >= a.chars().count() * 6,
        "not English-looking: {a:?}"
    );
    assert!(!a.contains("<|im_"), "{a:?}");
}

#[tokio::test]
async fn max_tokens_ends_with_length() {
    let Some((engine, _turn)) = shared().await else {
        return;
    };
    let (_, finish, n) = text_of(&engine, request(&engine, REFERENCE_PROMPT, 5)).await;
    assert_eq!(finish, "length");
    assert_eq!(n, 5);
}

#[tokio::test]
async fn stop_string_truncates() {
    let Some((engine, _turn)) = shared().await else {
        return;
    };
    let (full, _, _) = text_of(&engine, request(&engine, REFERENCE_PROMPT, 24)).await;
    let words: Vec<&str> = full.split_whitespace().collect();
    assert!(words.len() >= 4, "{full:?}");
    let stop = format!(" {}", words[2]);
    let at = full.find(&stop).expect("stop string in the text");
    let mut req = request(&engine, REFERENCE_PROMPT, 24);
    req.stop = Some(Stop::Many(vec!["never-appears".into(), stop.clone()]));
    let (cut, finish, _) = text_of(&engine, req).await;
    assert_eq!(cut, full[..at], "stop {stop:?}");
    assert_eq!(finish, "stop");
}

#[tokio::test]
async fn seeded_sampling_is_reproducible() {
    let Some((engine, _turn)) = shared().await else {
        return;
    };
    let seeded = |seed| {
        let mut req = request(&engine, "Write a short poem about the sea.", 16);
        req.temperature = Some(0.9);
        req.top_p = Some(0.95);
        req.seed = Some(seed);
        req
    };
    let (a, _, _) = text_of(&engine, seeded(7)).await;
    let (b, _, _) = text_of(&engine, seeded(7)).await;
    assert_eq!(a, b);
    assert!(!a.is_empty());
}

#[tokio::test]
async fn more_requests_than_slots_all_complete() {
    let Some((engine, _turn)) = shared().await else {
        return;
    };
    let prompts = [
        "Name a color.",
        "Name a fruit.",
        "Name an animal.",
        "Name a city.",
        "Name a tree.",
        "Say hi.",
    ];
    let started = std::time::Instant::now();
    let answers =
        futures::future::join_all(prompts.iter().map(|p| text_of(&engine, request(&engine, p, 12)))).await;
    let elapsed = started.elapsed().as_secs_f64();
    let total: u32 = answers.iter().map(|a| a.2).sum();
    for (text, finish, n) in &answers {
        assert!(!text.is_empty() || finish == "stop");
        assert!(*n >= 1 && *n <= 12);
    }
    eprintln!(
        "{} requests, {total} tokens in {elapsed:.2}s (debug build)",
        prompts.len()
    );
}

#[tokio::test]
async fn stream_keeps_the_contract_and_matches_complete() {
    let Some((engine, _turn)) = shared().await else {
        return;
    };
    let stream = engine
        .stream(request(&engine, REFERENCE_PROMPT, 20))
        .await
        .expect("stream");
    let chunks: Vec<ChatCompletionChunk> = stream.map(|c| c.expect("chunk")).collect().await;
    assert!(chunks.len() >= 3);
    assert_eq!(chunks[0].choices[0].delta.role.as_deref(), Some("assistant"));
    let last = chunks.last().expect("last");
    assert!(last.choices.is_empty());
    let usage = last.usage.expect("usage on the last chunk");
    assert_eq!(usage.prompt_tokens, 41);
    let content = &chunks[..chunks.len() - 1];
    let finish = content.last().expect("content").choices[0]
        .finish_reason
        .as_deref();
    assert!(matches!(finish, Some("stop" | "length")));
    assert!(
        content[..content.len() - 1]
            .iter()
            .all(|c| c.choices[0].finish_reason.is_none())
    );
    assert!(
        chunks
            .iter()
            .all(|c| c.id == chunks[0].id && c.object == "chat.completion.chunk")
    );
    let streamed: String = content
        .iter()
        .filter_map(|c| c.choices[0].delta.content.clone())
        .collect::<Vec<_>>()
        .concat();
    let (completed, _, n) = text_of(&engine, request(&engine, REFERENCE_PROMPT, 20)).await;
    assert_eq!(streamed, completed);
    assert_eq!(usage.completion_tokens, n);
    // One chunk per token or so: the text came in pieces.
    assert!(content.len() >= 5, "{} chunks", content.len());
}

#[tokio::test]
async fn bad_requests_are_refused() {
    let Some((engine, _turn)) = shared().await else {
        return;
    };
    let mut req = request(&engine, "hi", 4);
    req.temperature = Some(2.5);
    assert!(matches!(
        engine.complete(req).await,
        Err(Error::InvalidRequest(_))
    ));
    let mut req = request(&engine, "hi", 4);
    req.top_p = Some(0.0);
    assert!(matches!(engine.stream(req).await, Err(Error::InvalidRequest(_))));
    let mut req = request(&engine, "hi", 4);
    req.model = "gpt-4".into();
    assert!(matches!(engine.complete(req).await, Err(Error::UnknownModel(m)) if m == "gpt-4"));
    let mut req = request(&engine, "hi", 4);
    req.messages.clear();
    assert!(matches!(
        engine.complete(req).await,
        Err(Error::InvalidRequest(_))
    ));
    let long = "sky ".repeat(3000);
    match engine.complete(request(&engine, &long, 4)).await {
        Err(Error::ContextOverflow { prompt, context }) => {
            assert!(prompt > 3000, "{prompt}");
            assert_eq!(context, 2048);
        }
        other => panic!("expected ContextOverflow, got {other:?}"),
    }
    // The worker is still there.
    let (text, _, _) = text_of(&engine, request(&engine, "Say hi.", 4)).await;
    assert!(!text.is_empty());
}

/// A tiny engine (1 slot, queue of 1): overflow, and a dropped client frees its slot.
#[tokio::test]
async fn full_queue_is_overloaded_and_dropped_clients_free_their_slot() {
    let Some((_, _turn)) = shared().await else { return };
    let mut config = BuiltinConfig::new(model_path().expect("model"));
    config.threads = Some(THREADS);
    config.slots = 1;
    config.max_queue = 1;
    config.ctx_per_slot = 512;
    let engine = BuiltinEngine::load_async(config).await.expect("load");
    let long = |_| request(&engine, "Tell me a long story about a dragon.", 400);
    let results = futures::future::join_all((0..6).map(|i| engine.stream(long(i)))).await;
    let overloaded = results
        .iter()
        .filter(|r| matches!(r, Err(Error::Overloaded(1))))
        .count();
    assert!(overloaded >= 1, "no request was refused");
    let mut accepted: Vec<_> = results.into_iter().filter_map(Result::ok).collect();
    assert!(!accepted.is_empty());
    // Read a little of the running one, then every client goes away.
    let first = accepted[0].next().await.expect("a chunk").expect("ok");
    assert_eq!(first.choices[0].delta.role.as_deref(), Some("assistant"));
    drop(accepted);
    // The worker notices the departures at its next step; until then the queue may still be full.
    let retry = async {
        loop {
            match engine.complete(request(&engine, "Say hi.", 4)).await {
                Err(Error::Overloaded(_)) => tokio::time::sleep(Duration::from_millis(20)).await,
                other => break other.expect("completion"),
            }
        }
    };
    let answer = tokio::time::timeout(Duration::from_secs(60), retry)
        .await
        .expect("the slot was freed");
    let text = answer.choices[0].message.text_content();
    assert!(!text.is_empty());
}

#[tokio::test]
async fn bench_decode_reports_figures() {
    let Some((engine, _turn)) = shared().await else {
        return;
    };
    let f = tokio::task::spawn_blocking(move || engine.bench_decode(REFERENCE_PROMPT, 8))
        .await
        .expect("join");
    let f = f.expect("bench");
    assert_eq!(f.prompt_tokens, 41);
    assert_eq!(f.gen_tokens, 8);
    assert!(f.prompt_tok_per_s > 0.0 && f.gen_tok_per_s > 0.0);
    eprintln!("{f:?}");
}

#[tokio::test]
async fn bad_configs_and_files_are_errors_not_panics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = BuiltinConfig::new(dir.path().join("absent.gguf"));
    assert!(matches!(BuiltinEngine::load(config.clone()), Err(Error::Load(m)) if m.contains("absent.gguf")));
    config.slots = 0;
    assert!(matches!(
        BuiltinEngine::load(config.clone()),
        Err(Error::Config(_))
    ));
    let garbage = dir.path().join("garbage.gguf");
    std::fs::write(&garbage, b"this is not a GGUF file").expect("write");
    let result = BuiltinEngine::load_async(BuiltinConfig::new(garbage)).await;
    assert!(matches!(result, Err(Error::Load(_))), "{result:?}");
}
