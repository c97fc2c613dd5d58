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

/// Set in the child process that [`load_progress_can_be_hidden_or_forced`] starts: which
/// `LoadProgress` to run there.
const PROGRESS_CHILD: &str = "CLOISTER_TEST_LOAD_PROGRESS";

/// Runs in a child process (stderr a pipe, not a terminal) and does what the parent asks.
#[test]
fn load_progress_child() {
    match std::env::var(PROGRESS_CHILD).as_deref() {
        Ok("hidden") => LoadProgress::start("loading hidden.gguf", false).finish("loaded hidden.gguf"),
        Ok("forced") => LoadProgress::start("loading forced.gguf", true).finish("loaded forced.gguf"),
        Ok("cleared") => LoadProgress::start("loading cleared.gguf", true).clear(),
        _ => {}
    }
}

/// Off a terminal, a spinner that is not forced writes nothing; a forced one writes one line when
/// it starts and one with the elapsed time when it finishes; a cleared one leaves no end line.
#[test]
fn load_progress_can_be_hidden_or_forced() {
    let stderr_of = |mode: &str| {
        let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "source::load_progress_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(PROGRESS_CHILD, mode)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run the child");
        assert!(out.status.success(), "{mode}: {out:?}");
        String::from_utf8(out.stderr).expect("utf-8 stderr")
    };
    let hidden = stderr_of("hidden");
    assert!(!hidden.contains("hidden.gguf"), "{hidden}");
    let forced = stderr_of("forced");
    assert!(forced.contains("loading forced.gguf ..."), "{forced}");
    let finished = forced
        .lines()
        .find(|l| l.starts_with("loaded forced.gguf ("))
        .unwrap_or_else(|| panic!("no end line: {forced}"));
    assert!(
        finished.ends_with("s)"),
        "elapsed time on the end line: {finished}"
    );
    let cleared = stderr_of("cleared");
    assert!(cleared.contains("loading cleared.gguf ..."), "{cleared}");
    assert!(!cleared.contains("cleared.gguf ("), "{cleared}");
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
    // The hub endpoint is a listener of ours: any request would show up as a connection.
    let hub = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    hub.set_nonblocking(true).expect("nonblocking");
    let opts = ResolveOptions {
        progress: false,
        endpoint: Some(format!("http://{}", hub.local_addr().expect("addr"))),
        cache_dir: Some(cache.path().to_path_buf()),
    };
    let path = source.resolve_with(&opts).await.expect("resolved from the cache");
    assert_eq!(path, repo.join("snapshots/abc123/m.gguf"));
    match hub.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the hub was contacted: {other:?}"),
    }

    // The same spec with nothing cached does go to the hub (so the check above can fail).
    let empty = tempfile::tempdir().expect("tempdir");
    let opts = ResolveOptions {
        cache_dir: Some(empty.path().to_path_buf()),
        ..opts
    };
    let asked = tokio::time::timeout(Duration::from_secs(10), source.resolve_with(&opts));
    let accepted = tokio::task::spawn_blocking(move || {
        hub.set_nonblocking(false).expect("blocking");
        hub.accept().map(|_| ())
    });
    // The client waits on an answer the test never sends: the timeout or an error ends it.
    let _ = asked.await;
    accepted
        .await
        .expect("join")
        .expect("the uncached file was asked of the hub");
}
