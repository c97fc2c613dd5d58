//! `cloister demo`: a local chain (anvil + the contracts), a node with the built-in engine and a
//! simulated TEE that registers on it, a client that deposits and mints an API key, a verified and
//! sealed chat, and the settlement that pays the operator.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use cloister_client::{E2eeMode, RequestOptions};

use crate::chat_cmd::{ask, print_summary, request_bytes, verified_node};
use crate::demo_chain::DemoChain;
use crate::node_cmd::{RunArgs, build_attester, build_engine, node_config, shutdown_signal};
use crate::proof::{VerifyOpts, http_client};
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
    let run_args = RunArgs {
        model: Some(args.model.clone()),
        threads: args.threads,
        slots: Some(2),
        dev_simulated_tee: true,
        ..Default::default()
    };
    let attester = build_attester(&run_args).await?;
    let engine = build_engine(&run_args).await?;
    let key = Arc::new(cloister_node::start_key(attester.as_ref()).await);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    let url = format!("http://{addr}");
    let mut state = cloister_node::AppState::new(
        Arc::clone(&engine),
        Arc::clone(&attester),
        Arc::clone(&key),
        node_config(&run_args),
    );
    let ledger_dir = tempfile::tempdir().context("a temporary directory for the demo ledger")?;
    let chain = if args.no_chain {
        None
    } else {
        let chain = DemoChain::start(
            engine,
            attester,
            key,
            &url,
            &ledger_dir.path().join("ledger.sqlite"),
        )
        .await?;
        state = state.with_billing(chain.billing());
        Some(chain)
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(cloister_node::serve(listener, state, async move {
        let _ = stop_rx.await;
    }));
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
        authorization: chain.as_ref().map(|c| format!("Bearer {}", c.api_key)),
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
    let _ = stop_tx.send(());
    server.await.context("node task")?.context("node server")?;
    if let Some(chain) = chain {
        chain.settle_and_report().await?;
    }
    Ok(ExitCode::SUCCESS)
}
