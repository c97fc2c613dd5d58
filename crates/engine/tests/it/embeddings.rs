//! Embeddings from both engines on the real all-MiniLM-L6-v2 GGUF (`scripts/fetch-embedding-model.sh`):
//! the built-in engine's vectors (unit length, the same text the same vector, different texts apart),
//! and the upstream engine passing `/v1/embeddings` through to a real llama.cpp
//! `llama-server --embedding` on the same GGUF, whose vectors must match ours (the same pooling and
//! normalisation). Each half skips with a message when its model or binary is absent.

use std::path::PathBuf;

use cloister_engine::Engine;
use cloister_engine::builtin::{BuiltinConfig, BuiltinEngine};
use cloister_engine::upstream::{UpstreamConfig, UpstreamEngine};
use cloister_types::openai::{EmbeddingRequest, EmbeddingResponse};
use serde_json::{Value, json};

use crate::model_path;

const MODEL: &str = "all-MiniLM-L6-v2";
const TEXTS: [&str; 3] = [
    "The cat sat on the mat.",
    "The cat sat on the mat.",
    "Quarterly revenue rose by four percent.",
];

fn embedding_model() -> Option<PathBuf> {
    cloister_testkit::models::embedding_model()
}

fn request(input: Value) -> EmbeddingRequest {
    EmbeddingRequest {
        model: MODEL.into(),
        input,
        ..EmbeddingRequest::default()
    }
}

fn vectors(answer: &EmbeddingResponse) -> Vec<Vec<f64>> {
    answer
        .data
        .iter()
        .map(|d| {
            d.embedding
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_and_llama_server_embeddings_agree() {
    let (Some(chat), Some(gguf)) = (model_path(), embedding_model()) else {
        return;
    };
    let mut config = BuiltinConfig::new(chat);
    config.slots = 1;
    config.ctx_per_slot = 128;
    config.threads = Some(2);
    config.embedding_model = Some(gguf.clone());
    let engine = BuiltinEngine::load_async(config).await.unwrap();
    assert_eq!(engine.embedding_model(), Some((MODEL, 384)));
    assert!(
        engine
            .models()
            .iter()
            .any(|m| m.id == MODEL && m.sha256.is_some())
    );
    let ours = engine.embed(request(json!(TEXTS))).await.unwrap();
    assert_eq!(ours.object, "list");
    let v = vectors(&ours);
    assert_eq!(v.len(), 3);
    for x in &v {
        assert_eq!(x.len(), 384);
        assert!((x.iter().map(|y| y * y).sum::<f64>().sqrt() - 1.0).abs() < 1e-3);
    }
    assert!(cosine(&v[0], &v[1]) > 0.9999);
    assert!(cosine(&v[0], &v[2]) < 0.99);
    // A long input (near the 512-token training context) in a batch of short ones.
    let long = "word ".repeat(450);
    let mixed = engine.embed(request(json!([TEXTS[0], long]))).await.unwrap();
    assert!(
        mixed.usage.is_some_and(|u| u.prompt_tokens > 450),
        "{:?}",
        mixed.usage
    );
    assert!(cosine(&vectors(&mixed)[0], &v[0]) > 0.9999);
    // One input alone gives the vector it gets in a batch.
    let alone = engine.embed(request(json!(TEXTS[2]))).await.unwrap();
    assert!(cosine(&vectors(&alone)[0], &v[2]) > 0.9999);

    let Some(server) = cloister_testkit::models::llama_server(&gguf, &["--embedding", "--alias", MODEL])
    else {
        return;
    };
    let upstream = UpstreamEngine::connect(UpstreamConfig::new(server.base_url.clone()))
        .await
        .unwrap();
    assert!(
        upstream.models().iter().any(|m| m.id == MODEL),
        "{:?}",
        upstream.models()
    );
    let theirs = upstream.embed(request(json!(TEXTS))).await.unwrap();
    let w = vectors(&theirs);
    assert_eq!(w.len(), 3);
    for (a, b) in v.iter().zip(&w) {
        assert!(
            cosine(a, b) > 0.999,
            "built-in and llama-server agree: {}",
            cosine(a, b)
        );
    }
    assert!(theirs.usage.is_some_and(|u| u.prompt_tokens > 0));
    // base64 passes through as asked.
    let mut b64 = request(json!(TEXTS[0]));
    b64.encoding_format = Some("base64".into());
    let answer = upstream.embed(b64).await.unwrap();
    assert!(answer.data[0].embedding.is_string(), "{:?}", answer.data[0]);
    // An unknown model is refused before anything is sent.
    let mut unknown = request(json!("x"));
    unknown.model = "nope".into();
    assert!(matches!(
        upstream.embed(unknown).await,
        Err(cloister_engine::Error::UnknownModel(_))
    ));
}
