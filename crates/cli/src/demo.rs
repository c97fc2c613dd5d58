//! `cloister demo`: a node with the built-in engine and a simulated TEE, a verified chat, the proof.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use cloister_client::E2eeMode;

use crate::chat_cmd::{ask, print_summary, request_bytes, verified_node};
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
    let state = cloister_node::AppState::new(engine, attester, key, node_config(&run_args));
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
    let chat = ask(&client, body, true).await?;
    println!();
    println!("== answer from {model} ==");
    println!("{}", chat.answer.trim());
    println!();
    print_summary(&node, &chat);
    println!();
    println!("verdict: VERIFIED answer (simulated TEE: development only)");

    if args.keep_running {
        eprintln!("node keeps serving on {url}; Ctrl-C to stop");
        shutdown_signal().await;
    }
    let _ = stop_tx.send(());
    server.await.context("node task")?.context("node server")?;
    Ok(ExitCode::SUCCESS)
}
