//! Model sources: local resolution and a Hugging Face download that cannot succeed offline.

use std::time::Duration;

use cloister_engine::Error;
use cloister_engine::source::{LoadProgress, ModelSource, ResolveOptions};

#[tokio::test]
async fn local_files_resolve_and_missing_ones_say_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("m.gguf");
    std::fs::write(&file, b"GGUF").expect("write");
    let source: ModelSource = file.to_str().expect("utf-8 path").parse().expect("parse");
    assert_eq!(source.resolve(false).await.expect("resolve"), file);

    let missing: ModelSource = dir
        .path()
        .join("absent.gguf")
        .to_str()
        .expect("utf-8")
        .parse()
        .expect("parse");
    match missing.resolve(false).await {
        Err(Error::Load(m)) => assert!(m.contains("not found") && m.contains("absent.gguf"), "{m}"),
        other => panic!("expected a Load error, got {other:?}"),
    }
    let folder = ModelSource::Local(dir.path().to_path_buf());
    assert!(matches!(folder.resolve(false).await, Err(Error::Load(m)) if m.contains("not a file")));
}

#[tokio::test]
async fn unreachable_hub_fails_fast_with_a_clear_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let cache = tempfile::tempdir().expect("tempdir");
    let source: ModelSource = "hf:no-such-owner/no-such-repo/model.gguf".parse().expect("parse");
    let opts = ResolveOptions {
        progress: true,
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        cache_dir: Some(cache.path().to_path_buf()),
    };
    let result = tokio::time::timeout(Duration::from_secs(10), source.resolve_with(&opts))
        .await
        .expect("the download gave up within 10 s");
    match result {
        Err(Error::Load(m)) => {
            assert!(m.contains("no-such-owner/no-such-repo/model.gguf"), "{m}");
            assert!(
                m.to_lowercase().contains("connect") || m.contains("refused"),
                "{m}"
            );
        }
        other => panic!("expected a Load error, got {other:?}"),
    }
}

#[test]
fn load_progress_can_be_hidden_or_forced() {
    LoadProgress::start("loading", false).clear();
    LoadProgress::start("loading", true).finish("loaded");
}

#[tokio::test]
async fn cached_hf_file_resolves_without_network() {
    let cache = tempfile::tempdir().expect("tempdir");
    let repo = cache.path().join("models--o--r");
    std::fs::create_dir_all(repo.join("refs")).expect("mkdir");
    std::fs::create_dir_all(repo.join("snapshots/abc123")).expect("mkdir");
    std::fs::write(repo.join("refs/main"), "abc123").expect("write");
    std::fs::write(repo.join("snapshots/abc123/m.gguf"), b"GGUF").expect("write");
    let source: ModelSource = "o/r:m.gguf".parse().expect("parse");
    let opts = ResolveOptions {
        progress: false,
        // Nothing listens there: a network request would fail.
        endpoint: Some("http://127.0.0.1:9".into()),
        cache_dir: Some(cache.path().to_path_buf()),
    };
    let path = source.resolve_with(&opts).await.expect("resolved from the cache");
    assert_eq!(path, repo.join("snapshots/abc123/m.gguf"));
}
