//! Integration tests of the `cloister` binary.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs, unreachable_pub)]

mod chaos;
mod commands;
mod deploy;
mod embeddings;
mod explorer;
mod gateway;
mod governance;
mod measure;
mod paid;
mod proxy;
mod proxy_llama;
mod third_party;
mod verify_quote;

use std::path::PathBuf;

/// The `cloister` binary under test.
pub fn cloister() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_cloister"))
}

/// Runs `command` off the async runtime and returns its stdout. A non-zero exit fails the test with
/// the stdout, the stderr and `context()` (the logs of the processes involved).
pub async fn stdout_of(mut command: std::process::Command, context: impl FnOnce() -> String) -> String {
    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        context()
    );
    stdout
}

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// The demo model, or None (with a printed reason) when it is absent and not required.
pub fn model_path() -> Option<PathBuf> {
    let path = std::env::var_os("CLOISTER_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    if path.is_file() {
        return Some(path);
    }
    if std::env::var("CLOISTER_REQUIRE_MODEL").as_deref() == Ok("1") {
        panic!(
            "model not found at {} and CLOISTER_REQUIRE_MODEL=1",
            path.display()
        );
    }
    eprintln!(
        "skipping: model not found at {}, run scripts/fetch-model.sh",
        path.display()
    );
    None
}

/// Whether anvil is here; false (with a printed reason) when absent and not required, a panic when
/// `CLOISTER_REQUIRE_ANVIL=1`.
pub fn anvil_available() -> bool {
    if cloister_chain::devnet::find_anvil().is_some() {
        return true;
    }
    assert!(
        std::env::var("CLOISTER_REQUIRE_ANVIL").as_deref() != Ok("1"),
        "anvil not found and CLOISTER_REQUIRE_ANVIL=1"
    );
    eprintln!("skipping: no anvil");
    false
}

/// Test doubles served over real sockets for the subprocess tests (the `cloister` binary talks to
/// them): see [`cloister_testkit::serve_in_thread`].
pub use cloister_testkit::serve_in_thread;
