//! Integration tests of `cloister-engine`: the built-in engine with the real demo model, the upstream
//! engine against a fake OpenAI-compatible server, and model sources.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod batching;
mod builtin;
mod embeddings;
mod prefix_cache;
mod source;
mod upstream;

use std::path::PathBuf;

/// The demo model, or `None` (with a printed reason) when it is absent and not required.
pub(crate) fn model_path() -> Option<PathBuf> {
    let path = std::env::var_os("CLOISTER_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    if path.is_file() {
        return Some(path);
    }
    if std::env::var("CLOISTER_REQUIRE_MODEL").as_deref() == Ok("1") {
        panic!(
            "model not found at {} and CLOISTER_REQUIRE_MODEL=1; run scripts/fetch-model.sh",
            path.display()
        );
    }
    eprintln!(
        "skipping: model not found at {}, run scripts/fetch-model.sh",
        path.display()
    );
    None
}
