//! `ConfigfsTsm` against a fake configfs-tsm: a temporary directory and a thread that plays the
//! kernel. The production code is not told that it is fake.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use cloister_attest::Error;
use cloister_attest::collect::tdx::ConfigfsTsm;
use cloister_attest::collect::{Attester, DetectOptions, detect};
use cloister_attest::quote::parse_quote;
use cloister_attest::simulated::{is_simulated, simulated_quote};
use cloister_attest::verify::{Policy, verify_quote};
use cloister_types::{Nonce, ReportData, TeeKind};

/// Plays the kernel's side of configfs-tsm in a directory: a new entry gets `inblob`,
/// `provider` and `generation` attributes; when 64 bytes land in `inblob`, `generation` goes up
/// and `outblob` becomes a (simulated-layout) quote of them.
struct FakeTsmKernel {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Clone, Copy)]
struct Behaviour {
    provider: &'static str,
    /// Writes by "another process" between our inblob write and our outblob read.
    other_writers: u64,
}

const TDX: Behaviour = Behaviour {
    provider: "tdx_guest",
    other_writers: 0,
};

impl FakeTsmKernel {
    fn start(root: &Path, behaviour: Behaviour) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (root, flag) = (root.to_path_buf(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                if let Ok(entries) = std::fs::read_dir(&root) {
                    for entry in entries.flatten() {
                        let path = entry.path();
                        if path.is_dir() {
                            serve_entry(&path, behaviour);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeTsmKernel {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Atomically publishes an attribute (configfs attributes never appear half-written).
fn publish(entry: &Path, name: &str, data: &[u8]) {
    let tmp = entry.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, data).unwrap();
    std::fs::rename(&tmp, entry.join(name)).unwrap();
}

fn serve_entry(entry: &Path, b: Behaviour) {
    let generation = entry.join("generation");
    if !generation.exists() {
        std::fs::write(entry.join("inblob"), b"").unwrap();
        publish(entry, "provider", format!("{}\n", b.provider).as_bytes());
        publish(entry, "generation", b"0\n");
        return;
    }
    let inblob = std::fs::read(entry.join("inblob")).unwrap_or_default();
    if inblob.len() == 64 && !entry.join("outblob").exists() {
        let rd = ReportData::from_slice(&inblob).unwrap();
        publish(
            entry,
            "generation",
            format!("{}\n", 1 + b.other_writers).as_bytes(),
        );
        publish(entry, "outblob", &simulated_quote(&rd));
    }
}

fn entries(root: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(root)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect()
}

#[tokio::test]
async fn quotes_come_from_a_fresh_entry_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let _kernel = FakeTsmKernel::start(dir.path(), TDX);
    let tsm = ConfigfsTsm::new(dir.path());
    assert_eq!(tsm.tee(), TeeKind::Tdx);

    let rd = ReportData::new(cloister_types::Address::repeat_byte(0xaa), Nonce([0x01; 32]));
    let ev = tsm.evidence(&rd).await.unwrap();
    let q = parse_quote(&ev.quote).unwrap();
    assert_eq!(q.report_data(), rd.0);
    assert_eq!(ev.info["provider"], "tdx_guest");
    // The fake kernel signs like the simulator; the production verifier refuses it.
    assert!(is_simulated(&ev.quote));
    assert!(!verify_quote(&ev.quote, None, 0, &Policy::default()).passed());
    assert!(verify_quote(&ev.quote, None, 0, &Policy::dev_allow_simulated()).passed());

    // Concurrent requests are serialised and each gets its own report_data back.
    let tsm = Arc::new(tsm);
    let tasks: Vec<_> = (0u8..4)
        .map(|i| {
            let tsm = tsm.clone();
            tokio::spawn(async move {
                let rd = ReportData([i; 64]);
                let ev = tsm.evidence(&rd).await.unwrap();
                assert_eq!(parse_quote(&ev.quote).unwrap().report_data(), rd.0);
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    // One entry per request; our rmdir cannot empty the fake's plain directories.
    assert_eq!(entries(dir.path()).len(), 5);
}

#[tokio::test]
async fn a_concurrent_writer_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let _kernel = FakeTsmKernel::start(
        dir.path(),
        Behaviour {
            other_writers: 1,
            ..TDX
        },
    );
    let err = ConfigfsTsm::new(dir.path())
        .evidence(&ReportData([7; 64]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::ConcurrentReport { before: 0, after: 2 }),
        "{err}"
    );
}

#[tokio::test]
async fn another_provider_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let _kernel = FakeTsmKernel::start(
        dir.path(),
        Behaviour {
            provider: "sev_guest",
            ..TDX
        },
    );
    let err = ConfigfsTsm::new(dir.path())
        .evidence(&ReportData([7; 64]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::UnsupportedTsmProvider(p) if p == "sev_guest"),
        "{err}"
    );
}

#[tokio::test]
async fn detect_picks_configfs_when_present() {
    let dir = tempfile::tempdir().unwrap();
    let _kernel = FakeTsmKernel::start(dir.path(), TDX);
    let opts = DetectOptions {
        dev_simulated: false,
        dstack_socket: Some(dir.path().join("no-dstack.sock")),
        configfs_root: Some(dir.path().to_path_buf()),
    };
    let attester = detect(&opts).await.unwrap();
    assert_eq!(attester.tee(), TeeKind::Tdx);
    let rd = ReportData([9; 64]);
    assert_eq!(
        parse_quote(&attester.evidence(&rd).await.unwrap().quote)
            .unwrap()
            .report_data(),
        rd.0
    );
    assert!(attester.derived_signing_key().await.unwrap().is_none());
}
