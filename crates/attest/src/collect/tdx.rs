//! TDX quotes through Linux configfs-tsm (`Documentation/ABI/testing/configfs-tsm`).
//!
//! One quote is one report entry: `mkdir <root>/<fresh name>`, check `provider`, read
//! `generation`, write the 64-byte `inblob`, read `outblob` (the kernel asks the quoting service
//! and blocks until the quote is ready), read `generation` again, `rmdir` the entry. `generation`
//! counts writes to the entry: if it moved by more than our one write, someone else wrote the
//! entry between our write and our read, and the quote may carry their report_data, so it is
//! discarded. Quote generation is serialised within a process by a mutex.

use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use cloister_types::{ReportData, TeeKind};
use serde_json::json;

use super::{Attester, Evidence, check_report_data};
use crate::{Error, Result};

/// Where configfs-tsm report entries live on Linux.
pub const DEFAULT_CONFIGFS_TSM_ROOT: &str = "/sys/kernel/config/tsm/report";

/// The `provider` a TDX guest's configfs-tsm reports.
pub const TDX_PROVIDER: &str = "tdx_guest";

/// How long to wait for an entry's attributes and quote by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The most bytes read from one attribute (a TDX quote is ~5 KB; the kernel caps outblob at 32 KiB).
const MAX_ATTRIBUTE: u64 = 1 << 20;

static ENTRY_COUNTER: AtomicU64 = AtomicU64::new(0);

/// TDX evidence from configfs-tsm.
#[derive(Debug)]
pub struct ConfigfsTsm {
    root: PathBuf,
    timeout: Duration,
    lock: tokio::sync::Mutex<()>,
}

impl ConfigfsTsm {
    /// Uses the report directory `root` (normally [`DEFAULT_CONFIGFS_TSM_ROOT`]). Whether it
    /// exists is checked on each [`Attester::evidence`] call.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            timeout: DEFAULT_TIMEOUT,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Sets how long to wait for attributes to appear and for the quote.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The report directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

#[async_trait]
impl Attester for ConfigfsTsm {
    fn tee(&self) -> TeeKind {
        TeeKind::Tdx
    }

    async fn evidence(&self, report_data: &ReportData) -> Result<Evidence> {
        let _one_at_a_time = self.lock.lock().await;
        let root = self.root.clone();
        let rd = *report_data;
        let timeout = self.timeout;
        let (quote, provider) = tokio::task::spawn_blocking(move || generate(&root, &rd, timeout))
            .await
            .map_err(|e| Error::Task(e.to_string()))??;
        check_report_data(&quote, report_data)?;
        Ok(Evidence {
            quote,
            event_log: json!([]),
            info: json!({ "tee": "tdx", "provider": provider }),
        })
    }
}

/// Makes one report entry, gets its quote, removes the entry.
fn generate(root: &Path, rd: &ReportData, timeout: Duration) -> Result<(Vec<u8>, String)> {
    if !root.is_dir() {
        return Err(Error::ConfigfsMissing(root.to_path_buf()));
    }
    let entry = make_entry(root)?;
    let result = quote_in_entry(&entry, rd, Instant::now() + timeout);
    if let Err(e) = std::fs::remove_dir(&entry) {
        tracing::warn!(entry = %entry.display(), error = %e, "configfs-tsm: could not remove report entry");
    }
    result
}

fn make_entry(root: &Path) -> Result<PathBuf> {
    let mut last_err = None;
    for _ in 0..16 {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let n = ENTRY_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = root.join(format!("cloister-{}-{n}-{nanos}", std::process::id()));
        match std::fs::create_dir(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => last_err = Some(e),
            Err(e) => {
                return Err(Error::Configfs {
                    op: "mkdir",
                    path,
                    source: e,
                });
            }
        }
    }
    Err(Error::Configfs {
        op: "mkdir",
        path: root.to_path_buf(),
        source: last_err.unwrap_or_else(|| ErrorKind::AlreadyExists.into()),
    })
}

fn quote_in_entry(entry: &Path, rd: &ReportData, deadline: Instant) -> Result<(Vec<u8>, String)> {
    let provider_path = entry.join("provider");
    let provider = String::from_utf8_lossy(&read_attr(&provider_path, deadline)?)
        .trim()
        .to_owned();
    if provider != TDX_PROVIDER {
        return Err(Error::UnsupportedTsmProvider(provider));
    }
    let generation = entry.join("generation");
    let before = read_generation(&generation, deadline)?;
    write_attr(&entry.join("inblob"), &rd.0, deadline)?;
    let quote = read_attr(&entry.join("outblob"), deadline)?;
    let after = read_generation(&generation, deadline)?;
    if after != before.saturating_add(1) {
        return Err(Error::ConcurrentReport { before, after });
    }
    Ok((quote, provider))
}

fn read_generation(path: &Path, deadline: Instant) -> Result<u64> {
    let raw = read_attr(path, deadline)?;
    let text = String::from_utf8_lossy(&raw);
    text.trim().parse().map_err(|_| Error::ConfigfsAttribute {
        path: path.to_path_buf(),
        content: text.chars().take(40).collect(),
        expected: "a decimal generation counter",
    })
}

/// Whether an I/O error means "not ready yet": the attribute is not there yet, or the kernel
/// is busy with another request (EBUSY, EAGAIN) or was interrupted.
fn transient(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::NotFound | ErrorKind::Interrupted | ErrorKind::WouldBlock
    ) || e.raw_os_error() == Some(16) // EBUSY
}

fn pause(attempt: u32) {
    std::thread::sleep(Duration::from_millis(u64::from(attempt.min(20)) + 1));
}

/// Reads a whole attribute, waiting (until `deadline`) while it is absent, busy or empty.
fn read_attr(path: &Path, deadline: Instant) -> Result<Vec<u8>> {
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        match read_limited(path) {
            Ok(bytes) if !bytes.is_empty() => return Ok(bytes),
            Ok(_) => {}
            Err(e) if transient(&e) => {}
            Err(e) => {
                return Err(Error::Configfs {
                    op: "read",
                    path: path.to_path_buf(),
                    source: e,
                });
            }
        }
        if Instant::now() >= deadline {
            return Err(Error::ConfigfsTimeout {
                path: path.to_path_buf(),
                waited_ms: started.elapsed().as_millis(),
            });
        }
        pause(attempt);
        attempt += 1;
    }
}

fn read_limited(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_ATTRIBUTE)
        .read_to_end(&mut out)?;
    Ok(out)
}

/// Writes an attribute in one `write` (configfs binary attributes take the whole blob at once),
/// waiting while it is absent or busy.
fn write_attr(path: &Path, data: &[u8], deadline: Instant) -> Result<()> {
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        let result = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|mut f| {
                f.write_all(data)?;
                f.flush()
            });
        match result {
            Ok(()) => return Ok(()),
            Err(e) if transient(&e) && Instant::now() < deadline => {}
            Err(e) if transient(&e) => {
                return Err(Error::ConfigfsTimeout {
                    path: path.to_path_buf(),
                    waited_ms: started.elapsed().as_millis(),
                });
            }
            Err(e) => {
                return Err(Error::Configfs {
                    op: "write",
                    path: path.to_path_buf(),
                    source: e,
                });
            }
        }
        pause(attempt);
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[tokio::test]
    async fn missing_root_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let tsm = ConfigfsTsm::new(dir.path().join("absent"));
        let err = tsm.evidence(&ReportData([0; 64])).await.unwrap_err();
        assert!(matches!(err, Error::ConfigfsMissing(_)), "{err}");
    }

    #[tokio::test]
    async fn an_entry_that_never_answers_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let tsm = ConfigfsTsm::new(dir.path()).with_timeout(Duration::from_millis(50));
        let err = tsm.evidence(&ReportData([0; 64])).await.unwrap_err();
        assert!(matches!(err, Error::ConfigfsTimeout { .. }), "{err}");
        // The (empty) entry was removed again.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
