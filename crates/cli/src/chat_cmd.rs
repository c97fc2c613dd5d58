//! `cloister chat <url> "prompt"`: verify the node, seal the prompt to its attested E2EE key, ask,
//! open and verify the signed answer.

use std::process::ExitCode;

use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use clap::Args;
use cloister_attest::check::{CheckId, PolicyCheck, Scoped};
use cloister_client::{E2eeMode, NodeClient, RequestOptions, StreamEvent, VerifiedNode};
use cloister_types::openai::{
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatMessage, ModelList, Usage,
};
use cloister_types::{SignatureRecord, wire};
use futures::StreamExt;
use serde::Serialize;

use crate::proof::{VerifyOpts, http_client, node_base, node_client};

/// `cloister chat`.
#[derive(Debug, Args)]
pub(crate) struct ChatArgs {
    /// Node URL, e.g. http://127.0.0.1:8080
    pub url: String,
    /// The question.
    pub prompt: String,
    /// Model id [default: the node's first model].
    #[arg(long)]
    pub model: Option<String>,
    /// System prompt.
    #[arg(long)]
    pub system: Option<String>,
    /// Token limit for the answer.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: u32,
    /// Sampling temperature (0 = greedy) [default: the model's].
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Seed for sampling.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Ask for a streamed answer (the signature then comes as the last SSE event).
    #[arg(long)]
    pub stream: bool,
    /// Send the prompt in the clear instead of sealing it to the node's attested E2EE key.
    #[arg(long)]
    pub no_e2ee: bool,
    /// API key for a paid node (`ck1_…` from `cloister key mint`; also CLOISTER_API_KEY), sent as
    /// `Authorization: Bearer`.
    #[arg(long, env = "CLOISTER_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    #[command(flatten)]
    pub verify: VerifyOpts,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Picks the node's first model when none is given.
pub(crate) async fn pick_model(
    client: &reqwest::Client,
    url: &str,
    model: Option<String>,
) -> anyhow::Result<String> {
    if let Some(m) = model {
        return Ok(m);
    }
    let endpoint = format!("{}{}", node_base(url), wire::MODELS_PATH);
    let list: ModelList = client
        .get(&endpoint)
        .send()
        .await
        .with_context(|| format!("GET {endpoint}"))?
        .error_for_status()?
        .json()
        .await
        .context("model list")?;
    match list.data.into_iter().next() {
        Some(m) => Ok(m.id),
        None => bail!("the node serves no models"),
    }
}

/// Builds the exact request bytes we send (and later hash).
pub(crate) fn request_bytes(
    model: String,
    system: Option<&str>,
    prompt: &str,
    max_tokens: u32,
    temperature: Option<f32>,
    seed: Option<u64>,
    stream: bool,
) -> anyhow::Result<Bytes> {
    let mut messages = Vec::new();
    if let Some(s) = system {
        messages.push(ChatMessage::text("system", s));
    }
    messages.push(ChatMessage::text("user", prompt));
    let req = ChatCompletionRequest {
        model,
        messages,
        max_tokens: Some(max_tokens),
        temperature,
        seed,
        stream,
        ..Default::default()
    };
    Ok(Bytes::from(serde_json::to_vec(&req)?))
}

/// The outcome of one verified chat exchange (the client refuses anything that does not verify).
#[derive(Debug, Serialize)]
pub(crate) struct ChatProof {
    pub answer: String,
    pub id: String,
    pub record: SignatureRecord,
    /// The address the signature recovers to: the attested signer.
    pub recovered_signer: String,
    /// Request and answer were sealed to the node's attested E2EE key.
    pub sealed: bool,
    pub usage: Option<Usage>,
    /// The node's metering receipt (paid nodes): the enclave-signed cumulative voucher.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipt: Option<serde_json::Value>,
}

/// Sends `body` through `client` (sealed unless its policy says otherwise), reads the whole
/// answer and returns it with its checked signature.
pub(crate) async fn ask(
    client: &NodeClient,
    body: Bytes,
    stream: bool,
    opts: &RequestOptions,
) -> anyhow::Result<ChatProof> {
    let refused = |e: cloister_client::Error| anyhow!("refused [{}]: {e}", e.code());
    if !stream {
        let r = client.chat(body, opts).await.map_err(refused)?;
        let completion: ChatCompletion =
            serde_json::from_slice(&r.body).context("the answer is not a chat completion")?;
        return Ok(ChatProof {
            answer: completion
                .choices
                .first()
                .map(|c| c.message.text_content())
                .unwrap_or_default(),
            id: r.signature_id.unwrap_or(completion.id),
            recovered_signer: r.node.signer_hex.clone(),
            record: r.signature,
            sealed: r.sealed,
            usage: completion.usage,
            receipt: r.receipt.as_deref().and_then(|t| serde_json::from_str(t).ok()),
        });
    }
    let mut s = client.chat_stream(body, opts).await.map_err(refused)?;
    let sealed = s.sealed;
    let (mut answer, mut id, mut usage) = (String::new(), String::new(), None);
    while let Some(item) = s.next().await {
        match item.map_err(refused)? {
            StreamEvent::Data(event) => {
                let text = String::from_utf8_lossy(&event);
                let Some(data) = text.trim().strip_prefix("data:") else {
                    continue;
                };
                let chunk: ChatCompletionChunk =
                    serde_json::from_str(data.trim()).with_context(|| format!("bad stream chunk: {data}"))?;
                id.clone_from(&chunk.id);
                usage = chunk.usage.or(usage);
                for choice in &chunk.choices {
                    if let Some(text) = &choice.delta.content {
                        answer.push_str(text);
                    }
                }
            }
            StreamEvent::Done(proof) => {
                return Ok(ChatProof {
                    answer,
                    id,
                    recovered_signer: proof.node.signer_hex.clone(),
                    record: proof.signature,
                    sealed,
                    usage,
                    receipt: proof.receipt,
                });
            }
        }
    }
    bail!("the answer stream ended without its proof")
}

/// Prints the verification summary shared by `chat` and `demo`.
pub(crate) fn print_summary(node: &VerifiedNode, chat: &ChatProof) {
    let quote = &node.proof.verdict.quote;
    let quote_verdict = format!("verified, TCB {}", quote.tcb_status.as_deref().unwrap_or("-"));
    println!("--- verification -------------------------------------------------");
    println!("signer            {}", node.proof.report.signing_address);
    println!("TEE               {}", node.tee_name());
    println!("quote             {quote_verdict}");
    println!(
        "measurement       {}",
        node.measurement.as_deref().unwrap_or("(unreadable)")
    );
    println!("attestation       verified");
    println!(
        "e2ee              {}",
        if chat.sealed {
            "prompt and answer sealed to the attested key (HPKE X25519/ChaCha20-Poly1305)"
        } else {
            "OFF (--no-e2ee): prompt and answer crossed the network in the clear"
        }
    );
    println!(
        "signature         valid, from the attested signer (recovered {})",
        chat.recovered_signer
    );
    println!("signed text       {}", chat.record.text);
    println!("signature id      {}", chat.id);
    if let Some(u) = chat.usage {
        println!(
            "tokens            {} prompt + {} completion",
            u.prompt_tokens, u.completion_tokens
        );
    }
}

/// Verifies the node at `url` (printing every check when it is refused) and returns its client
/// and verdict.
pub(crate) async fn verified_node(
    http: &reqwest::Client,
    url: &str,
    opts: &VerifyOpts,
    e2ee: E2eeMode,
) -> anyhow::Result<(NodeClient, Arc<VerifiedNode>)> {
    // With `--nras` the policy sends the GPU evidence to NRAS too (`NRAS: …` checks).
    let client = node_client(http, url, opts, e2ee)?;
    let proof = client.fetch_proof(opts.nonce()?).await?;
    let checks = proof.verdict.checks.clone();
    match client.adopt(proof).await {
        Ok(node) => Ok((client, node)),
        Err(e) => {
            eprint!("{}", crate::table::render_checks(&checks));
            if let cloister_client::Error::AttestationRefused {
                check: CheckId::Scoped(Scoped::Nras(_)) | CheckId::Policy(PolicyCheck::NrasServiceAnswered),
                ..
            } = e
            {
                bail!("the node's GPU attestation (NRAS) did not verify; not sending the prompt");
            }
            bail!("refused [{}]: {e}; not sending the prompt", e.code())
        }
    }
}

pub(crate) async fn run(args: ChatArgs) -> anyhow::Result<ExitCode> {
    let http = http_client()?;
    let e2ee = if args.no_e2ee {
        E2eeMode::Off
    } else {
        E2eeMode::Required
    };
    let (client, node) = verified_node(&http, &args.url, &args.verify, e2ee).await?;
    let model = pick_model(&http, &args.url, args.model.clone()).await?;
    let body = request_bytes(
        model,
        args.system.as_deref(),
        &args.prompt,
        args.max_tokens,
        args.temperature,
        args.seed,
        args.stream,
    )?;
    if e2ee == E2eeMode::Required {
        eprintln!(
            "prompt sealed to the node's attested E2EE key (bound by {})",
            node.signer_hex
        );
    } else {
        eprintln!("--no-e2ee: the prompt goes to the node in the clear");
    }
    let opts = RequestOptions {
        authorization: args.api_key.as_ref().map(|k| format!("Bearer {k}")),
    };
    let chat = ask(&client, body, args.stream, &opts).await?;
    if args.json {
        let out = serde_json::json!({
            "attestation": node.proof,
            "checks": node.proof.verdict.checks,
            "measurement": node.measurement,
            "chat": chat,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{}", chat.answer.trim());
        println!();
        print_summary(&node, &chat);
    }
    Ok(ExitCode::SUCCESS)
}
