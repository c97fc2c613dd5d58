//! `cloister chat <url> "prompt"`: verify the node, ask, verify the signed answer.

use std::process::ExitCode;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use cloister_types::openai::{ChatCompletionRequest, ChatMessage, ModelList};

use crate::proof::{ChatProof, NodeProof, VerifyOpts, chat_with_proof, http_client, node_base, verify_node};

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
    let endpoint = format!("{}/v1/models", node_base(url));
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

/// Prints the verification summary shared by `chat` and `demo`.
pub(crate) fn print_summary(node: &NodeProof, chat: &ChatProof) {
    let tee = node
        .report
        .tee
        .map(|t| t.to_string())
        .unwrap_or_else(|| "(not stated)".into());
    let quote = &node.verdict.quote;
    let quote_verdict = match (&quote.error, quote.passed()) {
        (Some(e), _) => format!("REFUSED ({e})"),
        (None, true) => format!("verified, TCB {}", quote.tcb_status.as_deref().unwrap_or("-")),
        (None, false) => format!("REFUSED, TCB {}", quote.tcb_status.as_deref().unwrap_or("-")),
    };
    println!("--- verification -------------------------------------------------");
    println!("signer            {}", node.report.signing_address);
    println!("TEE               {tee}");
    println!("quote             {quote_verdict}");
    println!(
        "attestation       {}",
        if node.passed { "verified" } else { "NOT VERIFIED" }
    );
    println!(
        "signature         {} (recovered {})",
        if chat.signature_valid {
            "valid, from the attested signer"
        } else {
            "INVALID"
        },
        chat.recovered_signer.as_deref().unwrap_or("nothing")
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

pub(crate) async fn run(args: ChatArgs) -> anyhow::Result<ExitCode> {
    let client = http_client()?;
    let node = verify_node(&client, &args.url, &args.verify).await?;
    if !node.passed {
        eprint!("{}", crate::table::render_checks(&node.verdict.checks));
        bail!("the node's attestation did not verify; not sending the prompt");
    }
    let model = pick_model(&client, &args.url, args.model.clone()).await?;
    let body = request_bytes(
        model,
        args.system.as_deref(),
        &args.prompt,
        args.max_tokens,
        args.temperature,
        args.seed,
        args.stream,
    )?;
    let chat = chat_with_proof(
        &client,
        &args.url,
        body,
        args.stream,
        &node.report.signing_address,
    )
    .await?;
    if args.json {
        let out = serde_json::json!({ "attestation": node, "checks": node.verdict.checks, "chat": chat });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{}", chat.answer.trim());
        println!();
        print_summary(&node, &chat);
    }
    Ok(if chat.signature_valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
