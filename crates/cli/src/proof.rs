//! Client-side proof checking shared by `attest verify`, `chat` and `demo`: fetch a report with a
//! fresh nonce, verify it, send a chat, check its signature against the attested signer.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use clap::Args;
use cloister_attest::report::{ReportVerdict, verify_report};
use cloister_attest::verify::Policy;
use cloister_crypto::{format_address, parse_signature, recover_personal};
use cloister_types::{AttestationReport, Nonce, SignatureRecord, signature_text};
use futures::StreamExt;
use serde::Serialize;

/// Flags that say how to verify a node.
#[derive(Debug, Clone, Args)]
pub(crate) struct VerifyOpts {
    /// Collateral JSON file (dcap-qvl QuoteCollateralV3) instead of fetching from a PCCS.
    #[arg(long)]
    pub collateral: Option<PathBuf>,
    /// PCCS or Intel PCS base URL for collateral.
    #[arg(long, default_value = cloister_attest::collateral::PHALA_PCCS_URL)]
    pub pccs: String,
    /// Verification time (unix seconds) [default: now].
    #[arg(long)]
    pub at: Option<u64>,
    /// TCB statuses to accept (comma-separated) [default: UpToDate].
    #[arg(long, value_delimiter = ',', default_value = "UpToDate")]
    pub accept_tcb: Vec<String>,
    /// DEVELOPMENT ONLY: accept a simulated TEE (no hardware root of trust at all).
    #[arg(long)]
    pub allow_simulated: bool,
    /// Nonce to send (64 hex) [default: 32 fresh random bytes].
    #[arg(long)]
    pub nonce: Option<String>,
}

impl VerifyOpts {
    pub(crate) fn policy(&self) -> Policy {
        Policy {
            accepted_tcb_statuses: self.accept_tcb.clone(),
            allow_simulated: self.allow_simulated,
            ..Policy::default()
        }
    }

    pub(crate) fn now(&self) -> u64 {
        self.at.unwrap_or_else(unix_now)
    }

    fn nonce(&self) -> anyhow::Result<Nonce> {
        match &self.nonce {
            Some(n) => n.parse().context("--nonce must be 64 hex digits"),
            None => Ok(Nonce(rand::random())),
        }
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `http://host:port`, `http://host:port/`, `http://host:port/v1` → `http://host:port`.
pub(crate) fn node_base(url: &str) -> String {
    let url = url.trim_end_matches('/');
    url.strip_suffix("/v1").unwrap_or(url).to_owned()
}

pub(crate) fn http_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(600))
        .build()
        .context("building HTTP client")
}

/// A verified (or refused) node.
#[derive(Debug, Serialize)]
pub(crate) struct NodeProof {
    pub url: String,
    pub nonce: String,
    pub report: AttestationReport,
    #[serde(skip)]
    pub verdict: ReportVerdict,
    pub passed: bool,
}

/// Fetches the report with a fresh nonce and verifies it under `opts`.
pub(crate) async fn verify_node(
    client: &reqwest::Client,
    url: &str,
    opts: &VerifyOpts,
) -> anyhow::Result<NodeProof> {
    let base = node_base(url);
    let nonce = opts.nonce()?;
    let endpoint = format!("{base}/v1/attestation/report?nonce={}", nonce.to_hex());
    let resp = client
        .get(&endpoint)
        .send()
        .await
        .with_context(|| format!("GET {endpoint}"))?;
    let status = resp.status();
    let body = resp.bytes().await.context("reading attestation report")?;
    if !status.is_success() {
        bail!(
            "node answered {status} for its attestation report: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let report: AttestationReport =
        serde_json::from_slice(&body).context("attestation report is not valid report JSON")?;

    let quote = hex::decode(report.intel_quote.trim_start_matches("0x")).unwrap_or_default();
    let collateral = match (&opts.collateral, cloister_attest::simulated::is_simulated(&quote)) {
        (Some(path), _) => {
            let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            Some(
                cloister_attest::collateral::load_collateral_json(&bytes)
                    .with_context(|| format!("parsing collateral {}", path.display()))?,
            )
        }
        // A simulated quote has no Intel collateral; the verifier refuses it unless allowed.
        (None, true) => None,
        (None, false) => match cloister_attest::collateral::fetch_collateral(&opts.pccs, &quote).await {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!("could not fetch collateral from {}: {e}", opts.pccs);
                None
            }
        },
    };
    let verdict = verify_report(&report, &nonce, collateral.as_ref(), opts.now(), &opts.policy());
    let passed = verdict.passed();
    Ok(NodeProof {
        url: base,
        nonce: nonce.to_hex(),
        report,
        verdict,
        passed,
    })
}

/// The outcome of one chat exchange and its signature check.
#[derive(Debug, Serialize)]
pub(crate) struct ChatProof {
    pub answer: String,
    pub id: String,
    pub record: SignatureRecord,
    /// The text we computed from the bytes we sent and received.
    pub expected_text: String,
    pub recovered_signer: Option<String>,
    /// Signature recovers to the attested signer and covers exactly our bytes.
    pub signature_valid: bool,
    pub usage: Option<cloister_types::openai::Usage>,
}

/// Sends `request` (raw JSON bytes) and checks the signature against `attested_signer`.
pub(crate) async fn chat_with_proof(
    client: &reqwest::Client,
    url: &str,
    request: Bytes,
    stream: bool,
    attested_signer: &str,
) -> anyhow::Result<ChatProof> {
    let base = node_base(url);
    let endpoint = format!("{base}/v1/chat/completions");
    let resp = client
        .post(&endpoint)
        .header("content-type", "application/json")
        .body(request.clone())
        .send()
        .await
        .with_context(|| format!("POST {endpoint}"))?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.bytes().await.unwrap_or_default();
        bail!("node answered {status}: {}", String::from_utf8_lossy(&body));
    }
    let (signed_bytes, record, answer, id, usage) = if stream {
        read_stream(resp).await?
    } else {
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let signature =
            header("x-cloister-signature").ok_or_else(|| anyhow!("no x-cloister-signature header"))?;
        let signer = header("x-cloister-signing-address").unwrap_or_default();
        let body = resp.bytes().await.context("reading the answer")?;
        let completion: cloister_types::openai::ChatCompletion =
            serde_json::from_slice(&body).context("answer is not a chat completion")?;
        let answer = completion
            .choices
            .first()
            .map(|c| c.message.text_content())
            .unwrap_or_default();
        let record = SignatureRecord {
            text: signature_text(&request, &body),
            signature,
            signing_address: signer,
            signing_algo: "ecdsa".into(),
        };
        (body.to_vec(), record, answer, completion.id, completion.usage)
    };
    let expected_text = signature_text(&request, &signed_bytes);
    let recovered = parse_signature(&record.signature)
        .ok()
        .and_then(|sig| recover_personal(expected_text.as_bytes(), &sig).ok())
        .map(|a| format_address(&a));
    let signature_valid = record.text == expected_text
        && recovered
            .as_deref()
            .is_some_and(|r| r.eq_ignore_ascii_case(attested_signer));
    Ok(ChatProof {
        answer,
        id,
        record,
        expected_text,
        recovered_signer: recovered,
        signature_valid,
        usage,
    })
}

type StreamParts = (
    Vec<u8>,
    SignatureRecord,
    String,
    String,
    Option<cloister_types::openai::Usage>,
);

/// Reads an SSE answer: returns the bytes before the signature event, the signature record, the
/// concatenated text, the id and usage.
async fn read_stream(resp: reqwest::Response) -> anyhow::Result<StreamParts> {
    let mut all = Vec::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        all.extend_from_slice(&chunk.context("reading the stream")?);
    }
    let marker = b"event: cloister.signature\n";
    let split = all
        .windows(marker.len())
        .position(|w| w == marker)
        .ok_or_else(|| anyhow!("stream ended without a signature event (truncated?)"))?;
    let (signed, tail) = all.split_at(split);
    let tail = std::str::from_utf8(tail).context("signature event is not UTF-8")?;
    let data = tail
        .lines()
        .find_map(|l| l.strip_prefix("data:"))
        .ok_or_else(|| anyhow!("signature event has no data"))?;
    let record: SignatureRecord = serde_json::from_str(data.trim()).context("signature event JSON")?;
    let mut answer = String::new();
    let mut id = String::new();
    let mut usage = None;
    for line in std::str::from_utf8(signed)
        .context("stream is not UTF-8")?
        .lines()
    {
        let Some(data) = line.strip_prefix("data:").map(str::trim) else {
            continue;
        };
        if data == "[DONE]" {
            continue;
        }
        let chunk: cloister_types::openai::ChatCompletionChunk =
            serde_json::from_str(data).with_context(|| format!("bad stream chunk: {data}"))?;
        id = chunk.id.clone();
        usage = chunk.usage.or(usage);
        for choice in &chunk.choices {
            if let Some(text) = &choice.delta.content {
                answer.push_str(text);
            }
        }
    }
    Ok((signed.to_vec(), record, answer, id, usage))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_normalisation() {
        assert_eq!(node_base("http://h:1/"), "http://h:1");
        assert_eq!(node_base("http://h:1/v1"), "http://h:1");
        assert_eq!(node_base("http://h:1/v1/"), "http://h:1");
    }
}
