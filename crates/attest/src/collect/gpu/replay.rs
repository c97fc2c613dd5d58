//! [`ReplayGpuEvidence`]: a TEST DOUBLE GPU evidence source that serves evidence captured from a
//! real machine.

use std::path::Path;

use async_trait::async_trait;
use serde_json::Value;

use super::{GpuError, GpuEvidence, GpuSummary, NvidiaPayload};

/// The largest replay file read, in bytes (a captured 8-GPU report is about 350 KB).
pub const MAX_REPLAY_FILE_BYTES: u64 = 16 << 20;

/// TEST DOUBLE, development only, NOT SECURE: serves one `nvidia_payload` captured from a real
/// machine (a file holding the payload itself, a report with an `nvidia_payload` field, or a
/// NEAR-wrapped `{"model_attestations": [report]}`), byte for byte, whatever nonce is asked.
///
/// Its evidence is genuine (real device signatures and certificate chains), so a verifier accepts
/// it for the captured nonce ([`ReplayGpuEvidence::captured_nonce`]) and, for any other nonce,
/// refuses it by name (`GpuCheck::PayloadNonce`, `GpuCheck::SpdmNonce`): it behaves as a node
/// replaying stale evidence would, which is what the nonce checks exist to catch.
#[derive(Clone, Debug)]
pub struct ReplayGpuEvidence {
    payload: String,
    nonce: [u8; 32],
    summary: GpuSummary,
}

impl ReplayGpuEvidence {
    /// Reads the captured evidence from `path`.
    pub fn load(path: &Path) -> Result<Self, GpuError> {
        let bad = |reason: String| GpuError::Replay {
            path: path.to_owned(),
            reason,
        };
        let len = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?.len();
        if len > MAX_REPLAY_FILE_BYTES {
            return Err(bad(format!("{len} bytes, at most {MAX_REPLAY_FILE_BYTES}")));
        }
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        Self::from_json(&text).map_err(bad)
    }

    /// The evidence in `text` (a payload, a report or a NEAR-wrapped report); the error says what
    /// is missing.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let payload = find_payload(&value, text).ok_or("holds no nvidia_payload (nor an evidence_list)")?;
        let parsed: NvidiaPayload =
            serde_json::from_str(&payload).map_err(|e| format!("nvidia_payload: {e}"))?;
        if parsed.evidence_list.is_empty() {
            return Err("nvidia_payload has an empty evidence_list".to_owned());
        }
        let mut nonce = [0u8; 32];
        let hex_nonce = parsed.nonce.trim();
        hex::decode_to_slice(hex_nonce.strip_prefix("0x").unwrap_or(hex_nonce), &mut nonce)
            .map_err(|_| "nvidia_payload.nonce is not 64 hex digits".to_owned())?;
        let arch = parsed
            .arch
            .or_else(|| parsed.evidence_list.iter().find_map(|i| i.arch.clone()));
        let summary = GpuSummary {
            count: parsed.evidence_list.len(),
            cc_mode: None,
            ready: None,
            arch,
            source: "replay",
        };
        Ok(Self {
            payload,
            nonce,
            summary,
        })
    }

    /// The nonce the evidence was captured for: the only one a verifier accepts it for.
    pub fn captured_nonce(&self) -> [u8; 32] {
        self.nonce
    }
}

/// The payload text: the document itself when it has an `evidence_list`, else its
/// `nvidia_payload` (a string, or an object), else that of its first `model_attestations` entry.
fn find_payload(value: &Value, text: &str) -> Option<String> {
    if value.get("evidence_list").is_some() {
        return Some(text.to_owned());
    }
    match value.get("nvidia_payload") {
        Some(Value::String(s)) => return Some(s.clone()),
        Some(v @ Value::Object(_)) => return serde_json::to_string(v).ok(),
        _ => {}
    }
    let first = value.get("model_attestations")?.as_array()?.first()?;
    let inner = serde_json::to_string(first).ok()?;
    find_payload(first, &inner)
}

#[async_trait]
impl GpuEvidence for ReplayGpuEvidence {
    fn summary(&self) -> GpuSummary {
        self.summary.clone()
    }

    async fn nvidia_payload(&self, nonce: &[u8; 32]) -> Result<String, GpuError> {
        if *nonce != self.nonce {
            tracing::debug!(
                asked = %hex::encode(nonce),
                captured = %hex::encode(self.nonce),
                "replayed GPU evidence is for another nonce; a verifier will refuse it"
            );
        }
        Ok(self.payload.clone())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::gpu::EvidenceItem;

    fn payload(nonce: &[u8; 32]) -> String {
        let item = EvidenceItem {
            certificate: "Y2VydA==".into(),
            evidence: "ZXY=".into(),
            arch: Some("HOPPER".into()),
        };
        super::super::build_payload(nonce, vec![item.clone(), item], None).unwrap()
    }

    #[tokio::test]
    async fn every_shape_loads_and_serves_the_capture_unchanged() {
        let n = [3u8; 32];
        let p = payload(&n);
        let report = serde_json::json!({ "nvidia_payload": p }).to_string();
        let wrapped = serde_json::json!({ "model_attestations": [{ "nvidia_payload": p }] }).to_string();
        for text in [p.clone(), report, wrapped] {
            let r = ReplayGpuEvidence::from_json(&text).unwrap();
            assert_eq!(r.captured_nonce(), n);
            let s = r.summary();
            assert_eq!(
                (s.count, s.arch.as_deref(), s.source),
                (2, Some("HOPPER"), "replay")
            );
            assert_eq!(r.nvidia_payload(&n).await.unwrap(), p);
            assert_eq!(r.nvidia_payload(&[4; 32]).await.unwrap(), p);
        }
    }

    #[test]
    fn unusable_files_are_named() {
        for (text, why) in [
            ("not json", "not JSON"),
            ("{}", "no nvidia_payload"),
            (r#"{"nvidia_payload": 5}"#, "no nvidia_payload"),
            (r#"{"nonce": "00", "evidence_list": []}"#, "empty evidence_list"),
            (
                r#"{"nonce": "zz", "evidence_list": [{"certificate": "", "evidence": ""}]}"#,
                "64 hex digits",
            ),
        ] {
            let err = ReplayGpuEvidence::from_json(text).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.json");
        let err = ReplayGpuEvidence::load(&missing).unwrap_err();
        assert!(err.to_string().contains("none.json"), "{err}");
    }
}
