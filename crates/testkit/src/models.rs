//! Where the test suites find the real models the set-up installs (`scripts/fetch-model.sh`,
//! `scripts/fetch-embedding-model.sh`): not doubles, the real weights.

use std::path::PathBuf;

/// The workspace's `models/` directory.
fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models")
}

/// The embedding model GGUF: `$CLOISTER_TEST_EMBEDDING_MODEL`, else
/// `models/all-MiniLM-L6-v2.gguf`. `None` (after saying why) when it is absent; a panic instead when
/// `CLOISTER_REQUIRE_MODEL=1`, so the full test command never skips it.
pub fn embedding_model() -> Option<PathBuf> {
    let path = std::env::var_os("CLOISTER_TEST_EMBEDDING_MODEL")
        .map_or_else(|| models_dir().join("all-MiniLM-L6-v2.gguf"), PathBuf::from);
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var("CLOISTER_REQUIRE_MODEL").as_deref() != Ok("1"),
        "embedding model not found at {} and CLOISTER_REQUIRE_MODEL=1 (run scripts/fetch-embedding-model.sh)",
        path.display()
    );
    eprintln!("skipping: embedding model not found at {}", path.display());
    None
}
