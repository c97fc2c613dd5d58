//! `cloister demo`: a local chain (anvil + the contracts), a node with the built-in engine and a
//! simulated TEE that registers on it, a client that deposits and mints an API key, a verified and
//! sealed chat, and the settlement that pays the operator.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use cloister_client::{E2eeMode, RequestOptions};
use cloister_node::{Node, NodeSettings};

use crate::chat_cmd::{ask, print_summary, request_bytes, verified_node};
use crate::demo_chain::DemoChain;
use crate::proof::{VerifyOpts, http_client};
use crate::shutdown::shutdown_signal;
use crate::table::render_checks;

/// `cloister demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// GGUF model (path or hf:owner/repo/file.gguf).
    #[arg(
        long,
        env = "CLOISTER_MODEL",
        default_value = "models/SmolLM2-135M-Instruct.Q4_1.gguf"
    )]
    pub model: String,
    /// The question to ask.
    #[arg(long, default_value = "Explain in a few sentences why the sky is blue.")]
    pub prompt: String,
    /// Token limit for the answer.
    #[arg(long, default_value_t = 160)]
    pub max_tokens: u32,
    /// Address for the demo node [default: a free loopback port].
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Engine threads [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Keep the node serving after the demo, until Ctrl-C.
    #[arg(long)]
    pub keep_running: bool,
    /// Skip the chain (no anvil, no registration, no payment): node and verified chat only.
    #[arg(long)]
    pub no_chain: bool,
}

pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    eprintln!("cloister demo: a node with the built-in engine and a SIMULATED TEE (development only:");
    eprintln!("no hardware protects this run; verifiers accept it only with --allow-simulated)");
    let mut settings = NodeSettings {
        listen: args.listen,
        model: Some(args.model.clone()),
        threads: args.threads,
        slots: Some(2),
        dev_simulated_tee: true,
        ..NodeSettings::default()
    };
    let dir = tempfile::tempdir().context("a temporary directory for the demo chain and ledger")?;
    let chain = if args.no_chain {
        None
    } else {
        let chain = DemoChain::start(dir.path()).await?;
        chain.configure(&mut settings);
        eprintln!(
            "chain 2/4 registering the node with its quote (report_data binds the chain, registry and operator) ..."
        );
        Some(chain)
    };
    let running = Node::start(settings).await?;
    let payer = match &chain {
        Some(chain) => Some(chain.fund_client(&running).await?),
        None => None,
    };
    let url = running.url();
    eprintln!("node listening on {url}");

    let http = http_client()?;
    let opts = VerifyOpts::dev_simulated();
    eprintln!("1/2 verifying the node's attestation with a fresh nonce ...");
    let (client, node) = verified_node(&http, &url, &opts, E2eeMode::Required).await?;
    println!("== attestation of {url} ==");
    print!("{}", render_checks(&node.proof.verdict.checks));
    eprintln!(
        "2/2 asking (sealed to the node's attested E2EE key): {}",
        args.prompt
    );
    let model = crate::chat_cmd::pick_model(&http, &url, None).await?;
    let body = request_bytes(
        model.clone(),
        None,
        &args.prompt,
        args.max_tokens,
        Some(0.0),
        None,
        true,
    )?;
    let opts = RequestOptions {
        authorization: payer.as_ref().map(|p| format!("Bearer {}", p.api_key)),
    };
    let chat = ask(&client, body, true, &opts).await?;
    println!();
    println!("== answer from {model} ==");
    println!("{}", chat.answer.trim());
    println!();
    print_summary(&node, &chat);
    println!();
    if let Some(receipt) = &chat.receipt {
        println!(
            "metering receipt: cumulative {} base units, voucher signed by the enclave key {}",
            receipt["cumulative_amount"].as_str().unwrap_or("?"),
            receipt["signature"]
                .as_str()
                .map_or("?", |s| &s[..s.len().min(18)])
        );
    }
    println!();
    println!("verdict: VERIFIED answer (simulated TEE: development only)");

    if args.keep_running {
        eprintln!("node keeps serving on {url}; Ctrl-C to stop");
        shutdown_signal().await;
    }
    match (chain, payer) {
        (Some(chain), Some(payer)) => chain.settle_and_report(&payer, running).await?,
        _ => running.shutdown().await?,
    }
    Ok(ExitCode::SUCCESS)
}
