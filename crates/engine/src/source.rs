//! Where a GGUF model comes from: a local file or a file in a Hugging Face repository.
//!
//! Spec forms (parsed by [`ModelSource::from_str`](std::str::FromStr)):
//! - a path: `models/SmolLM2-135M-Instruct.Q4_1.gguf`, `/abs/model.gguf`, `./owner/repo:odd.gguf`;
//! - `hf:owner/repo/file.gguf` (the file may sit in a folder: `hf:owner/repo/sub/file.gguf`);
//! - `owner/repo:file.gguf`;
//! - either Hugging Face form with `@revision` at the end (`hf:owner/repo/file.gguf@main`).
//!
//! ```no_run
//! # async fn demo() -> cloister_engine::Result<()> {
//! use cloister_engine::source::ModelSource;
//!
//! let source: ModelSource = "hf:HuggingFaceTB/SmolLM2-135M-Instruct-GGUF/smollm2-135m-instruct-q8_0.gguf".parse()?;
//! let path = source.resolve(true).await?;
//! # Ok(()) }
//! ```

use std::fmt;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use hf_hub::api::tokio::{ApiBuilder, Progress};
use hf_hub::{Cache, Repo, RepoType};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::{Error, Result};

/// A model file to load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSource {
    /// A file on this machine.
    Local(PathBuf),
    /// A file in a Hugging Face model repository.
    HuggingFace {
        /// `owner/repo`.
        repo: String,
        /// Path of the file inside the repository.
        file: String,
        /// Branch, tag or commit; `main` when absent.
        revision: Option<String>,
    },
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local(path) => write!(f, "{}", path.display()),
            Self::HuggingFace { repo, file, revision } => {
                write!(f, "hf:{repo}/{file}")?;
                if let Some(rev) = revision {
                    write!(f, "@{rev}")?;
                }
                Ok(())
            }
        }
    }
}

fn valid_repo_part(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(['.', '-'])
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn split_revision(s: &str) -> Result<(&str, Option<String>)> {
    match s.rsplit_once('@') {
        Some((rest, rev)) if !rev.is_empty() && !rev.contains('/') => Ok((rest, Some(rev.to_owned()))),
        Some((_, "")) => Err(Error::Load(format!("`{s}`: empty revision after `@`"))),
        _ => Ok((s, None)),
    }
}

fn hugging_face(repo: &str, file: &str, revision: Option<String>, spec: &str) -> Result<ModelSource> {
    let parts: Vec<&str> = repo.split('/').collect();
    if parts.len() != 2 || !parts.iter().all(|p| valid_repo_part(p)) {
        return Err(Error::Load(format!(
            "`{spec}`: `{repo}` is not a Hugging Face repository (owner/name)"
        )));
    }
    if file.is_empty() || file.starts_with('/') || file.split('/').any(|p| p.is_empty() || p == "..") {
        return Err(Error::Load(format!(
            "`{spec}`: `{file}` is not a file path inside the repository"
        )));
    }
    Ok(ModelSource::HuggingFace {
        repo: repo.to_owned(),
        file: file.to_owned(),
        revision,
    })
}

impl FromStr for ModelSource {
    type Err = Error;

    fn from_str(spec: &str) -> Result<Self> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err(Error::Load("empty model spec".into()));
        }
        if let Some(rest) = spec.strip_prefix("hf:") {
            let (rest, revision) = split_revision(rest)?;
            let mut parts = rest.splitn(3, '/');
            let (Some(owner), Some(name), Some(file)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(Error::Load(format!("`{spec}`: expected hf:owner/repo/file.gguf")));
            };
            return hugging_face(&format!("{owner}/{name}"), file, revision, spec);
        }
        // `owner/repo:file`: exactly one `/` before the colon and nothing path-like in front.
        if let Some((repo, file)) = spec.split_once(':')
            && repo.matches('/').count() == 1
            && repo.split('/').all(valid_repo_part)
        {
            let (file, revision) = split_revision(file)?;
            return hugging_face(repo, file, revision, spec);
        }
        Ok(Self::Local(PathBuf::from(spec)))
    }
}

/// Knobs for [`ModelSource::resolve_with`]; the defaults come from the environment as in
/// `huggingface-cli` (`HF_ENDPOINT`, `HF_HOME`, the token file under it).
#[derive(Clone, Debug, Default)]
pub struct ResolveOptions {
    /// Show a download progress bar (only drawn when stderr is a terminal).
    pub progress: bool,
    /// Hub URL instead of `HF_ENDPOINT` or `https://huggingface.co`.
    pub endpoint: Option<String>,
    /// Cache folder instead of `$HF_HOME/hub` or `~/.cache/huggingface/hub`.
    pub cache_dir: Option<PathBuf>,
}

impl ModelSource {
    /// The local path of the model file, downloading it into the Hugging Face cache first if need be.
    pub async fn resolve(&self, progress: bool) -> Result<PathBuf> {
        self.resolve_with(&ResolveOptions {
            progress,
            ..Default::default()
        })
        .await
    }

    /// [`ModelSource::resolve`] with an explicit hub endpoint or cache folder.
    pub async fn resolve_with(&self, opts: &ResolveOptions) -> Result<PathBuf> {
        match self {
            Self::Local(path) => match tokio::fs::metadata(path).await {
                Ok(m) if m.is_file() => Ok(path.clone()),
                Ok(_) => Err(Error::Load(format!("{} is not a file", path.display()))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::Load(format!(
                    "model file {} not found (give a GGUF path, or hf:owner/repo/file.gguf)",
                    path.display()
                ))),
                Err(e) => Err(Error::Load(format!("model file {}: {e}", path.display()))),
            },
            Self::HuggingFace { repo, file, revision } => {
                let mut builder = ApiBuilder::from_env().with_progress(false);
                if let Some(endpoint) = &opts.endpoint {
                    builder = builder.with_endpoint(endpoint.trim_end_matches('/').to_owned());
                }
                if let Some(dir) = &opts.cache_dir {
                    builder = builder.with_cache_dir(dir.clone());
                }
                let revision = revision.clone().unwrap_or_else(|| "main".to_owned());
                let hf_repo = Repo::with_revision(repo.clone(), RepoType::Model, revision);
                // Already downloaded: no network at all (a node restarts offline).
                let cache = opts.cache_dir.clone().map_or_else(Cache::from_env, Cache::new);
                if let Some(path) = cache.repo(hf_repo.clone()).get(file) {
                    return Ok(path);
                }
                let api = builder
                    .build()
                    .map_err(|e| Error::Load(format!("Hugging Face client: {e}")))?;
                let repo_api = api.repo(hf_repo);
                let fetched = if opts.progress {
                    repo_api
                        .download_with_progress(file, DownloadBar::default())
                        .await
                } else {
                    repo_api.get(file).await
                };
                fetched.map_err(|e| {
                    Error::Load(format!(
                        "downloading {self} from Hugging Face failed: {}",
                        error_chain(&e)
                    ))
                })
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    msg
}

/// indicatif bar for hf-hub downloads.
#[derive(Clone, Default)]
struct DownloadBar(Option<ProgressBar>);

impl Progress for DownloadBar {
    async fn init(&mut self, size: usize, filename: &str) {
        let bar = ProgressBar::with_draw_target(Some(size as u64), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "{msg} [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(format!("downloading {filename}"));
        self.0 = Some(bar);
    }

    async fn update(&mut self, size: usize) {
        if let Some(bar) = &self.0 {
            bar.inc(size as u64);
        }
    }

    async fn finish(&mut self) {
        if let Some(bar) = self.0.take() {
            bar.finish_and_clear();
        }
    }
}

/// A spinner with elapsed time while a model loads and hashes.
///
/// On a terminal it animates; when stderr is not a terminal it stays silent, unless `force` was
/// given, and then it writes one line when it starts and one when it ends (useful in logs).
#[derive(Debug)]
pub struct LoadProgress {
    bar: Option<ProgressBar>,
    started: Instant,
}

impl LoadProgress {
    /// Starts the spinner with `message` (for example "loading model.gguf").
    pub fn start(message: impl Into<String>, force: bool) -> Self {
        let message = message.into();
        let bar = if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} [{elapsed}]") {
                bar.set_style(style);
            }
            bar.set_message(message);
            bar.enable_steady_tick(Duration::from_millis(120));
            Some(bar)
        } else {
            if force {
                eprintln!("{message} ...");
            }
            force.then(ProgressBar::hidden)
        };
        Self {
            bar,
            started: Instant::now(),
        }
    }

    /// Stops the spinner, leaving `message` and the elapsed time on the line.
    pub fn finish(self, message: impl Into<String>) {
        let line = format!(
            "{} ({:.1}s)",
            message.into(),
            self.started.elapsed().as_secs_f64()
        );
        match self.bar {
            Some(bar) if !bar.is_hidden() => bar.finish_with_message(line),
            Some(_) => eprintln!("{line}"),
            None => {}
        }
    }

    /// Stops the spinner and removes its line.
    pub fn clear(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hf(repo: &str, file: &str, rev: Option<&str>) -> ModelSource {
        ModelSource::HuggingFace {
            repo: repo.into(),
            file: file.into(),
            revision: rev.map(str::to_owned),
        }
    }

    #[test]
    fn parses_all_spec_forms() {
        let p = |s: &str| s.parse::<ModelSource>().unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(p("hf:o/r/f.gguf"), hf("o/r", "f.gguf", None));
        assert_eq!(p("hf:o/r/sub/f.gguf@v1.0"), hf("o/r", "sub/f.gguf", Some("v1.0")));
        assert_eq!(
            p("Owner-1/repo_2.x:f.Q4.gguf"),
            hf("Owner-1/repo_2.x", "f.Q4.gguf", None)
        );
        assert_eq!(p("o/r:f.gguf@abc123"), hf("o/r", "f.gguf", Some("abc123")));
        assert_eq!(p("models/x.gguf"), ModelSource::Local("models/x.gguf".into()));
        assert_eq!(p("./o/r:f.gguf"), ModelSource::Local("./o/r:f.gguf".into()));
        assert_eq!(p("/abs/a/b:c.gguf"), ModelSource::Local("/abs/a/b:c.gguf".into()));
        assert_eq!(
            p("C:\\models\\x.gguf"),
            ModelSource::Local("C:\\models\\x.gguf".into())
        );
        assert_eq!(p("hf:o/r/f.gguf@main").to_string(), "hf:o/r/f.gguf@main");
    }

    #[test]
    fn refuses_malformed_hf_specs() {
        for bad in [
            "",
            "hf:o/r",
            "hf:o/r/",
            "hf:o//f.gguf",
            "hf:o/r/../x.gguf",
            "hf:o/r/f.gguf@",
            "hf:../r/f",
        ] {
            assert!(
                matches!(bad.parse::<ModelSource>(), Err(Error::Load(_))),
                "{bad:?}"
            );
        }
    }
}
