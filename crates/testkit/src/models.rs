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

/// A real llama.cpp `llama-server` (built by `scripts/build-llama-cpp.sh`; see
/// `llama_server_binary`) on a free loopback port; killed and reaped when dropped. Not a double: the
/// OpenAI-compatible server the upstream engine is tested against.
#[derive(Debug)]
pub struct LlamaServer {
    child: std::process::Child,
    /// `http://127.0.0.1:<port>/v1`.
    pub base_url: String,
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The llama-server the tests run: `$CLOISTER_LLAMA_SERVER` (the test command sets it), else the
/// test build (`QUICK=1 scripts/build-llama-cpp.sh` → `tools/llama.cpp/test-bin`), else the
/// benchmark build (`tools/llama.cpp/bin`).
fn llama_server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CLOISTER_LLAMA_SERVER") {
        return PathBuf::from(path);
    }
    let tools = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/llama.cpp");
    let test_build = tools.join("test-bin/llama-server");
    if test_build.is_file() {
        test_build
    } else {
        tools.join("bin/llama-server")
    }
}

/// Starts `llama-server -m MODEL ARGS` and waits (up to 60 s) until its `/health` answers 200.
/// `None` (after saying why) when it is not built; a panic instead when
/// `CLOISTER_REQUIRE_LLAMA_SERVER=1` (the test command builds it and sets that).
pub fn llama_server(model: &std::path::Path, args: &[&str]) -> Option<LlamaServer> {
    use std::io::{Read, Write};
    let bin = llama_server_binary();
    if !bin.is_file() {
        assert!(
            std::env::var("CLOISTER_REQUIRE_LLAMA_SERVER").as_deref() != Ok("1"),
            "no llama-server at {} and CLOISTER_REQUIRE_LLAMA_SERVER=1 (run scripts/build-llama-cpp.sh)",
            bin.display()
        );
        eprintln!(
            "skipping the llama-server part: none at {} (scripts/build-llama-cpp.sh)",
            bin.display()
        );
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("a free port: {e}"));
    let child = std::process::Command::new(&bin)
        .arg("-m")
        .arg(model)
        .args(args)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "-t",
            "2",
            "--log-disable",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
    let mut server = LlamaServer {
        child,
        base_url: format!("http://127.0.0.1:{port}/v1"),
    };
    for _ in 0..600 {
        // A server that died (a crash at its first matmul, a bad flag) is reported as such.
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!(
                "llama-server ({}) exited before it became healthy: {status} (rerun it by hand with \
                 the same arguments to see its log)",
                bin.display()
            );
        }
        let healthy = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok_and(|mut tcp| {
            let mut answer = String::new();
            tcp.write_all(b"GET /health HTTP/1.0\r\n\r\n").is_ok()
                && tcp.read_to_string(&mut answer).is_ok()
                && answer.starts_with("HTTP/1.1 200")
        });
        if healthy {
            return Some(server);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("llama-server on port {port} did not become healthy in 60 s");
}

/// `crates/testkit/templates/hermes-tools.jinja`: a Hermes-style tool-calling chat template for
/// SmolLM2 (ChatML tokens), for `llama-server --jinja --chat-template-file`. SmolLM2's own template
/// has no tools; with this one llama.cpp's chat auto-parser finds the `<tool_call>` JSON format, so
/// `tool_choice: "required"` is grammar-constrained and answered as OpenAI `tool_calls`.
pub fn tool_chat_template() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("templates/hermes-tools.jinja")
}

/// [`llama_server`] serving `model` as `alias` with [`tool_chat_template`] (`--jinja`, 2048 tokens of
/// context), started off the async threads; `None` as [`llama_server`].
pub async fn tool_llama_server(model: PathBuf, alias: &str) -> Option<LlamaServer> {
    let template = tool_chat_template().to_string_lossy().into_owned();
    let alias = alias.to_owned();
    tokio::task::spawn_blocking(move || {
        llama_server(
            &model,
            &[
                "--alias",
                &alias,
                "-c",
                "2048",
                "--jinja",
                "--chat-template-file",
                &template,
            ],
        )
    })
    .await
    .unwrap_or_else(|e| panic!("the llama-server start task failed: {e}"))
}

/// The chat model GGUF: `$CLOISTER_TEST_MODEL`, else `models/SmolLM2-135M-Instruct.Q4_1.gguf`
/// (`None` when absent; a panic when `CLOISTER_REQUIRE_MODEL=1`).
pub fn chat_model() -> Option<PathBuf> {
    let path = std::env::var_os("CLOISTER_TEST_MODEL").map_or_else(
        || models_dir().join("SmolLM2-135M-Instruct.Q4_1.gguf"),
        PathBuf::from,
    );
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var("CLOISTER_REQUIRE_MODEL").as_deref() != Ok("1"),
        "chat model not found at {} and CLOISTER_REQUIRE_MODEL=1 (run scripts/fetch-model.sh)",
        path.display()
    );
    eprintln!("skipping: chat model not found at {}", path.display());
    None
}
