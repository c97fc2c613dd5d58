//! The `gpu` setting: whether the node attests its GPUs, and choosing the evidence source.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use cloister_attest::collect::gpu::{GpuDetectOptions, GpuError, GpuEvidence, detect};
use serde::{Deserialize, Serialize};

use super::NodeError;
use crate::NodeSettings;

/// Whether the node puts GPU evidence (`nvidia_payload`) in its attestation reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GpuMode {
    /// Include evidence when a usable GPU evidence source is found; otherwise run without.
    #[default]
    Auto,
    /// Refuse to start without a usable GPU evidence source, naming what is missing.
    Required,
    /// Never include GPU evidence.
    Off,
}

impl GpuMode {
    const NAMES: &'static str = "auto, required or off";
}

impl fmt::Display for GpuMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Required => "required",
            Self::Off => "off",
        })
    }
}

impl FromStr for GpuMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "required" => Ok(Self::Required),
            "off" => Ok(Self::Off),
            _ => Err(format!("gpu must be {}, not `{s}`", Self::NAMES)),
        }
    }
}

/// The GPU evidence source the settings ask for: `None` with `off`, or with `auto` and no usable
/// source; with `required` and none, the error names what is missing. A `dev_gpu_replay` file
/// that cannot be used is an error unless `gpu` is `off`.
pub(super) fn select(settings: &NodeSettings) -> Result<Option<Arc<dyn GpuEvidence>>, NodeError> {
    if settings.gpu == GpuMode::Off {
        return Ok(None);
    }
    let found = detect(&GpuDetectOptions {
        dev_replay: settings.dev_gpu_replay.clone(),
        ..GpuDetectOptions::default()
    })
    .and_then(|source| source.summary().usable().map(|()| source));
    match (found, settings.gpu) {
        (Ok(source), _) => {
            let s = source.summary();
            tracing::info!(
                gpus = s.count,
                cc_mode = ?s.cc_mode,
                ready = ?s.ready,
                source = s.source,
                "GPU evidence: on"
            );
            Ok(Some(source))
        }
        // A replay file given but unusable is a mistake to report, whatever the mode.
        (Err(source @ GpuError::Replay { .. }), _) | (Err(source), GpuMode::Required) => {
            Err(NodeError::Gpu(source))
        }
        (Err(why), _) => {
            tracing::info!(%why, "GPU evidence: none (gpu = auto)");
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_print() {
        for m in [GpuMode::Auto, GpuMode::Required, GpuMode::Off] {
            assert_eq!(m.to_string().parse::<GpuMode>(), Ok(m));
        }
        assert_eq!("REQUIRED".parse::<GpuMode>(), Ok(GpuMode::Required));
        assert!(
            "on".parse::<GpuMode>()
                .is_err_and(|e| e.contains("auto, required or off"))
        );
        assert_eq!(GpuMode::default(), GpuMode::Auto);
    }

    #[test]
    fn off_never_looks_and_a_bad_replay_file_is_refused() {
        let settings = NodeSettings {
            gpu: GpuMode::Off,
            dev_gpu_replay: Some("/nonexistent/replay.json".into()),
            ..NodeSettings::default()
        };
        assert!(matches!(select(&settings), Ok(None)));
        let required = NodeSettings {
            gpu: GpuMode::Required,
            ..settings.clone()
        };
        let err = select(&required)
            .err()
            .map(|e| std::error::Error::source(&e).map(ToString::to_string));
        assert!(
            matches!(&err, Some(Some(t)) if t.contains("replay.json")),
            "{err:?}"
        );
        let auto = NodeSettings {
            gpu: GpuMode::Auto,
            ..settings
        };
        assert!(matches!(
            select(&auto),
            Err(NodeError::Gpu(GpuError::Replay { .. }))
        ));
    }
}
