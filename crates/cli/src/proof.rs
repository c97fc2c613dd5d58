//! Client-side proof checking shared by `attest verify`, `chat` and `demo`: fetch a report with a
//! fresh nonce, verify it, send a chat, check its signature against the attested signer.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use clap::Args;
use cloister_attest::report::{ReportVerdict, verify_report};
use cloister_attest::verify::{Check, Policy};
use cloister_crypto::{format_address, parse_signature, recover_personal};
use cloister_types::{AttestationReport, Nonce, SignatureRecord, signature_text};
use dcap_qvl::QuoteCollateralV3;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

/// Flags that say how to verify a node.
#[derive(Debug, Clone, Args)]
pub(crate) struct VerifyOpts {
    /// Collateral JSON file (dcap-qvl QuoteCollateralV3) instead of fetching from a PCCS. Repeat
    /// it for reports from several platforms: each quote gets the file whose TCB info FMSPC is the
    /// quote's. Without it, collateral comes from the on-disk cache or the PCCS (and is cached).
    #[arg(long)]
    pub collateral: Vec<PathBuf>,
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
    /// Also send each report's GPU evidence to NVIDIA's attestation service (NRAS, online) and check
    /// its signed answer: ES384 JWTs against NVIDIA's key set, overall result, nonce, per-GPU result.
    #[arg(long)]
    pub nras: bool,
    /// NRAS GPU attestation endpoint.
    #[arg(long, default_value = cloister_attest::nras::NRAS_GPU_URL)]
    pub nras_url: String,
    /// NRAS key set (JWKS) URL.
    #[arg(long, default_value = cloister_attest::nras::NRAS_JWKS_URL)]
    pub nras_jwks_url: String,
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

/// A verified (or refused) attestation report.
#[derive(Debug, Serialize)]
pub(crate) struct NodeProof {
    /// Which report of the answer this is: `report` for a single report, else `gateway`,
    /// `model[0]`, ... (NEAR AI cloud).
    pub label: String,
    pub url: String,
    pub nonce: String,
    pub report: AttestationReport,
    /// Where the quote's collateral came from (or why there is none).
    pub collateral: String,
    #[serde(skip)]
    pub verdict: ReportVerdict,
    pub passed: bool,
}

/// A `--collateral` file, loaded once.
#[derive(Debug)]
pub(crate) struct CollateralFile {
    path: PathBuf,
    collateral: QuoteCollateralV3,
    /// The `fmspc` of its TCB info, upper-case hex, when it can be read.
    fmspc: Option<String>,
}

/// Loads every `--collateral` file.
pub(crate) fn load_collateral_files(paths: &[PathBuf]) -> anyhow::Result<Vec<CollateralFile>> {
    paths
        .iter()
        .map(|path| {
            let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let collateral = cloister_attest::collateral::load_collateral_json(&bytes)
                .with_context(|| format!("parsing collateral {}", path.display()))?;
            let fmspc = tcb_info_fmspc(&collateral);
            Ok(CollateralFile {
                path: path.clone(),
                collateral,
                fmspc,
            })
        })
        .collect()
}

/// The `fmspc` field of the collateral's TCB info (the signed text), upper-case.
fn tcb_info_fmspc(collateral: &QuoteCollateralV3) -> Option<String> {
    #[derive(Deserialize)]
    struct TcbInfo {
        fmspc: String,
    }
    serde_json::from_str::<TcbInfo>(&collateral.tcb_info)
        .ok()
        .map(|t| t.fmspc.to_ascii_uppercase())
}

/// Picks the collateral for `quote` (hex or binary): the `--collateral` file whose TCB info FMSPC
/// is the quote's; without files, the on-disk cache, else the PCCS (stored in the cache). Returns
/// the collateral and a line saying where it came from, or why there is none.
pub(crate) async fn collateral_for(
    quote: &[u8],
    files: &[CollateralFile],
    opts: &VerifyOpts,
) -> (Option<QuoteCollateralV3>, String) {
    let raw = cloister_attest::quote::decode_quote_bytes(quote).unwrap_or_default();
    if cloister_attest::simulated::is_simulated(&raw) {
        // A simulated quote has no Intel collateral; the verifier refuses it unless allowed.
        return (None, "none (simulated quote)".to_owned());
    }
    let info = cloister_attest::collateral::pck_info(quote);
    if !files.is_empty() {
        let info = match info {
            Ok(info) => info,
            // Without an FMSPC there is nothing to match; with a single file, let the verifier
            // say what is wrong with the quote.
            Err(e) => {
                return match files {
                    [only] => (
                        Some(only.collateral.clone()),
                        format!("{} (the quote's FMSPC is unreadable: {e})", only.path.display()),
                    ),
                    _ => (None, format!("none: the quote's FMSPC is unreadable: {e}")),
                };
            }
        };
        return match files
            .iter()
            .find(|f| f.fmspc.as_deref() == Some(info.fmspc.as_str()))
        {
            Some(f) => (
                Some(f.collateral.clone()),
                format!(
                    "{} (TCB info FMSPC {} matches the quote)",
                    f.path.display(),
                    info.fmspc
                ),
            ),
            None => {
                let have = files
                    .iter()
                    .map(|f| {
                        format!(
                            "{} is for {}",
                            f.path.display(),
                            f.fmspc.as_deref().unwrap_or("an unreadable FMSPC")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                (
                    None,
                    format!(
                        "none: no --collateral file is for the quote's FMSPC {} ({have})",
                        info.fmspc
                    ),
                )
            }
        };
    }
    let now = opts.now();
    let cache = cloister_attest::collateral_cache::CollateralCache::in_default_dir();
    if let (Some(cache), Ok(info)) = (&cache, &info)
        && let Some(c) = cache.lookup(info, now)
    {
        return (Some(c), format!("cached ({})", cache.entry_path(info).display()));
    }
    let fetched = match &cache {
        Some(cache) => cache.get(&opts.pccs, quote, now).await,
        None => cloister_attest::collateral::fetch_collateral(&opts.pccs, quote).await,
    };
    match fetched {
        Ok(c) => {
            let stored = match (&cache, &info) {
                (Some(cache), Ok(info)) => format!(", cached in {}", cache.entry_path(info).display()),
                _ => String::new(),
            };
            (Some(c), format!("fetched from {}{stored}", opts.pccs))
        }
        Err(e) => {
            tracing::warn!("could not fetch collateral from {}: {e}", opts.pccs);
            (None, format!("none: fetching from {} failed: {e}", opts.pccs))
        }
    }
}

/// Fetches `GET {base}/v1/attestation/report?nonce=..[&model=..]` and returns the body.
async fn fetch_report_body(
    client: &reqwest::Client,
    base: &str,
    nonce: &Nonce,
    model: Option<&str>,
) -> anyhow::Result<Bytes> {
    let endpoint = format!("{base}/v1/attestation/report");
    let mut query = vec![("nonce", nonce.to_hex())];
    if let Some(model) = model {
        query.push(("model", model.to_owned()));
    }
    let resp = client
        .get(&endpoint)
        .query(&query)
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
    Ok(body)
}

/// Splits an attestation answer into labelled reports: one report at top level (`report`), or
/// NEAR AI cloud's `{gateway_attestation, model_attestations: [..]}` (`gateway`, `model[0]`, ...).
pub(crate) fn split_reports(body: &[u8]) -> anyhow::Result<Vec<(String, AttestationReport)>> {
    let mut value: serde_json::Value =
        serde_json::from_slice(body).context("attestation report is not JSON")?;
    let Some(obj) = value.as_object_mut() else {
        bail!("attestation report is not a JSON object");
    };
    if !obj.contains_key("gateway_attestation") && !obj.contains_key("model_attestations") {
        let report = serde_json::from_value(value).context("attestation report is not valid report JSON")?;
        return Ok(vec![("report".to_owned(), report)]);
    }
    let mut reports = Vec::new();
    if let Some(gateway) = obj.remove("gateway_attestation").filter(|g| !g.is_null()) {
        let report =
            serde_json::from_value(gateway).context("gateway_attestation is not valid report JSON")?;
        reports.push(("gateway".to_owned(), report));
    }
    match obj.remove("model_attestations") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::Array(models)) => {
            for (i, model) in models.into_iter().enumerate() {
                let report = serde_json::from_value(model)
                    .with_context(|| format!("model_attestations[{i}] is not valid report JSON"))?;
                reports.push((format!("model[{i}]"), report));
            }
        }
        Some(_) => bail!("model_attestations is not a list"),
    }
    if reports.is_empty() {
        bail!("the answer has neither a gateway attestation nor model attestations");
    }
    Ok(reports)
}

/// Fetches the attestation answer at `url` with a nonce (`--nonce`, else fresh) and verifies
/// every report in it under `opts`. `model` is sent as the `model` query parameter.
pub(crate) async fn verify_endpoint(
    client: &reqwest::Client,
    url: &str,
    opts: &VerifyOpts,
    model: Option<&str>,
) -> anyhow::Result<Vec<NodeProof>> {
    let base = node_base(url);
    let nonce = opts.nonce()?;
    let files = load_collateral_files(&opts.collateral)?;
    let body = fetch_report_body(client, &base, &nonce, model).await?;
    let mut proofs = Vec::new();
    for (label, report) in split_reports(&body)? {
        let (collateral, source) = collateral_for(report.intel_quote.as_bytes(), &files, opts).await;
        let mut verdict = verify_report(&report, &nonce, collateral.as_ref(), opts.now(), &opts.policy());
        let mut passed = verdict.passed();
        if opts.nras {
            let nras_passed = nras_checks(&report, &nonce, opts, &mut verdict.checks).await;
            passed &= nras_passed;
        }
        proofs.push(NodeProof {
            label,
            url: base.clone(),
            nonce: nonce.to_hex(),
            report,
            collateral: source,
            verdict,
            passed,
        });
    }
    Ok(proofs)
}

/// The online GPU check: posts the report's GPU evidence to NRAS and verifies its JWTs. Appends checks
/// named `NRAS: ...`; returns whether they all held (a report without GPU evidence has nothing to send).
async fn nras_checks(
    report: &AttestationReport,
    nonce: &Nonce,
    opts: &VerifyOpts,
    checks: &mut Vec<Check>,
) -> bool {
    let Some(payload) = report
        .nvidia_payload
        .as_deref()
        .filter(|p| !p.trim().is_empty() && p.trim() != "null")
    else {
        checks.push(Check::skip("NRAS", "no GPU evidence to send"));
        return true;
    };
    match cloister_attest::nras::attest_remote(&opts.nras_url, payload, &opts.nras_jwks_url).await {
        Ok((body, jwks)) => {
            let v = cloister_attest::nras::verify_nras_response(&body, &jwks, &nonce.0, opts.now());
            checks.extend(v.checks.iter().map(|c| Check {
                name: format!("NRAS: {}", c.name),
                ..c.clone()
            }));
            v.passed()
        }
        Err(e) => {
            checks.push(Check::fail(
                "NRAS: service answered",
                format!("{}: {e}", opts.nras_url),
            ));
            false
        }
    }
}

/// Fetches a node's report with a nonce and verifies it under `opts`; the node must answer with
/// exactly one report (a Cloister node does).
pub(crate) async fn verify_node(
    client: &reqwest::Client,
    url: &str,
    opts: &VerifyOpts,
) -> anyhow::Result<NodeProof> {
    let mut proofs = verify_endpoint(client, url, opts, None).await?;
    match proofs.pop() {
        Some(proof) if proofs.is_empty() => Ok(proof),
        _ => bail!("{url} answered with several attestation reports; use `cloister attest verify`"),
    }
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

    fn report_json(address: &str) -> serde_json::Value {
        serde_json::json!({
            "signing_address": address,
            "signing_algo": "ecdsa",
            "request_nonce": "00",
            "intel_quote": "",
        })
    }

    #[test]
    fn a_single_report_is_labelled_report() {
        let body = serde_json::to_vec(&report_json("0x01")).unwrap_or_default();
        let reports = split_reports(&body).unwrap_or_default();
        let labels: Vec<&str> = reports.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(labels, ["report"]);
    }

    #[test]
    fn a_nearai_answer_splits_into_gateway_and_models() {
        let body = serde_json::json!({
            "gateway_attestation": report_json("0x01"),
            "model_attestations": [report_json("0x02"), report_json("0x03")],
        });
        let reports = split_reports(&serde_json::to_vec(&body).unwrap_or_default()).unwrap_or_default();
        let got: Vec<(&str, &str)> = reports
            .iter()
            .map(|(l, r)| (l.as_str(), r.signing_address.as_str()))
            .collect();
        assert_eq!(
            got,
            [("gateway", "0x01"), ("model[0]", "0x02"), ("model[1]", "0x03")]
        );
    }

    #[test]
    fn malformed_answers_are_errors() {
        for body in [
            &b"[]"[..],
            br#"{"gateway_attestation": null, "model_attestations": []}"#,
            br#"{"model_attestations": {}}"#,
            br#"{"model_attestations": [{"signing_address": 1}]}"#,
            b"not json",
        ] {
            assert!(split_reports(body).is_err(), "{}", String::from_utf8_lossy(body));
        }
    }
}
