//! `/v1/embeddings` end to end with the official OpenAI Python SDK (`openai_embeddings.py`,
//! `client.embeddings.create`) through a real `cloister proxy`, in front of a real `cloister node run`
//! with each engine: the built-in one (`--embedding-model`, all-MiniLM-L6-v2 GGUF) and the upstream
//! one over a real llama.cpp `llama-server --embedding` serving the same GGUF
//! (`scripts/build-llama-cpp.sh`; that half skips with a message when the binary is absent).

use std::path::PathBuf;

use serde_json::Value;

use crate::proxy::python;
use crate::proxy::stack::{Proc, free_port, start_proxy, wait_ready};
use crate::{model_path, workspace_root};

/// The id the built-in engine serves the embedding GGUF as (its file name without `.gguf`).
const EMBEDDING_MODEL: &str = "all-MiniLM-L6-v2";

fn embedding_model() -> Option<PathBuf> {
    cloister_testkit::models::embedding_model()
}

/// Starts `cloister node run ARGS --dev-simulated-tee --listen <free port>` and a proxy in front of
/// it, runs the SDK script through the proxy and checks what every answer must show.
async fn sdk_through_node(
    dir: &tempfile::TempDir,
    python: &std::path::Path,
    engine_args: &[&str],
    name: &str,
) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["node", "run"];
    args.extend_from_slice(engine_args);
    args.extend_from_slice(&["--dev-simulated-tee", "--listen", &listen]);
    let mut node = Proc::spawn(&args, dir.path().join(format!("{name}-node.log")));
    let node_url = format!("http://{listen}");
    wait_ready(&node_url, &mut node).await;
    let (_proxy, proxy_url) = start_proxy(
        dir,
        &["--node", &node_url, "--allow-simulated"],
        &format!("{name}-proxy"),
    )
    .await;

    let script = workspace_root().join("crates/cli/tests/it/openai_embeddings.py");
    let mut command = std::process::Command::new(python);
    command
        .arg(&script)
        .args([&format!("{proxy_url}/v1"), EMBEDDING_MODEL]);
    let stdout = crate::stdout_of(command, || format!("{name}: {}", node.log_text())).await;
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["count"], 3, "{name}: {v}");
    assert_eq!(v["dimensions"], serde_json::json!([384, 384, 384]), "{name}: {v}");
    assert_eq!(v["indices"], serde_json::json!([0, 1, 2]), "{name}: {v}");
    let num = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    assert!((num("norm") - 1.0).abs() < 1e-3, "{name}: normalised: {v}");
    assert!(
        num("same") > 0.9999,
        "{name}: the same text, the same vector: {v}"
    );
    assert!(num("different") < 0.99, "{name}: different texts differ: {v}");
    assert!(num("float_vs_base64") > 0.9999, "{name}: {v}");
    assert!(v["prompt_tokens"].as_u64().unwrap_or(0) > 0, "{name}: {v}");
    assert_eq!(v["verified"], "true", "{name}: {v}");
    assert_eq!(v["signature_verified"], "true", "{name}: {v}");
    assert_eq!(v["e2ee"], "sealed", "{name}: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_sdk_gets_embeddings_through_the_proxy_from_both_engines() {
    let (Some(python), Some(chat), Some(embedding)) = (python(), model_path(), embedding_model()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (chat, embedding) = (
        chat.to_string_lossy().into_owned(),
        embedding.to_string_lossy().into_owned(),
    );
    sdk_through_node(
        &dir,
        &python,
        &[
            "--model",
            &chat,
            "--embedding-model",
            &embedding,
            "--threads",
            "2",
        ],
        "builtin",
    )
    .await;

    let Some(server) = cloister_testkit::models::llama_server(
        std::path::Path::new(&embedding),
        &["--embedding", "--alias", EMBEDDING_MODEL],
    ) else {
        return;
    };
    let upstream_url = server.base_url.clone();
    sdk_through_node(
        &dir,
        &python,
        &["--upstream", &upstream_url, "--upstream-model", EMBEDDING_MODEL],
        "upstream",
    )
    .await;
}
