//! `cloister`: run a confidential inference node, verify what a node proves, chat with proof,
//! and measure.

mod attest_cmd;
mod bench;
mod bench_e2ee;
mod bench_embeddings;
mod bench_gateway;
mod bench_quote;
mod chain_cmd;
mod chat_cmd;
mod demo;
mod demo_chain;
mod deploy_cmd;
mod gateway_cmd;
mod governance_cmd;
mod measure_cmd;
mod node_cmd;
mod proof;
mod proxy_cmd;
mod shutdown;
mod table;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's malloc: on the node's hot path (a plain request in front of a fast
/// upstream) glibc's malloc and free were ~12% of the node's CPU in a perf profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Confidential AI inference with proof: TEE-attested nodes that sign every answer.
#[derive(Debug, Parser)]
#[command(name = "cloister", version, about, long_about = None)]
struct Cli {
    /// Log filter (also RUST_LOG), e.g. `info`, `cloister_node=debug`.
    #[arg(long, global = true, env = "CLOISTER_LOG", default_value = "info")]
    log: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run and manage a node.
    #[command(subcommand)]
    Node(node_cmd::NodeCommand),
    /// Verify a node's attestation.
    #[command(subcommand)]
    Attest(attest_cmd::AttestCommand),
    /// Verify one TDX/SGX quote file against collateral at a given time.
    VerifyQuote(attest_cmd::VerifyQuoteArgs),
    /// Ask a node one question and verify the answer (attestation, binding, signature).
    Chat(chat_cmd::ChatArgs),
    /// One command: start a local node (built-in engine, simulated TEE), ask a verified question,
    /// print the proof.
    Demo(demo::DemoArgs),
    /// A local OpenAI-compatible endpoint that sends each request, sealed, only to nodes that verify,
    /// and checks every answer's signature.
    Proxy(proxy_cmd::ProxyArgs),
    /// The network's shared front door: discovers and verifies the registered nodes, and forwards
    /// requests sealed to a node byte for byte (it never sees a prompt).
    Gateway(gateway_cmd::GatewayArgs),
    /// Benchmarks: node overhead against its upstream, built-in engine against llama.cpp, quote
    /// verification against dcap-qvl.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Deploy the production contracts to a named network and write its chain file.
    Deploy(deploy_cmd::DeployArgs),
    /// Local development chain: anvil with every Cloister contract deployed.
    #[command(subcommand)]
    Devnet(chain_cmd::DevnetCommand),
    /// Nodes registered on chain.
    #[command(subcommand)]
    Nodes(chain_cmd::NodesCommand),
    /// The timelocked measurement allowlist: list, announce, execute, cancel changes.
    #[command(subcommand)]
    Governance(governance_cmd::GovernanceCommand),
    /// Client escrow: deposit, withdraw (after a delay), balance.
    #[command(subcommand)]
    Escrow(chain_cmd::EscrowCommand),
    /// API keys: signed spend authorizations for one node.
    #[command(subcommand)]
    Key(chain_cmd::KeyCommand),
    /// Compute a dstack app's compose hash, MR_CONFIG_ID and registry measurement digest before
    /// it boots, or check them against a report.
    Measure(measure_cmd::MeasureArgs),
}

fn init_logging(filter: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    tracing_subscriber::registry().with(log_layer(filter)).init();
}

/// The stderr log: `filter` (or `RUST_LOG`), with llama.cpp's info-level chatter held back.
///
/// The layer states the filter's most verbose level as its hint: tracing then skips every
/// `debug!`/`trace!` call site and span below it with one comparison. A filter without a hint (a
/// bare `filter_fn`) makes every call site ask the filters at run time, on the node's hot path.
fn log_layer<S>(filter: &str) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::Layer;

    let env = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let hint = env
        .max_level_hint()
        .unwrap_or(tracing_subscriber::filter::LevelFilter::TRACE);
    // llama.cpp reports every loader and graph detail at info level; keep its warnings only, unless
    // the user asks for debug output.
    let verbose_engine = filter.contains("debug") || filter.contains("trace");
    let quiet_llama = tracing_subscriber::filter::filter_fn(move |meta| {
        verbose_engine
            || !(meta.target().starts_with("llama") || meta.target().starts_with("ggml"))
            || *meta.level() <= tracing::Level::WARN
    })
    .with_max_level_hint(hint);
    tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(env)
        .with_filter(quiet_llama)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Node(cmd) => node_cmd::run(cmd).await,
            Command::Attest(cmd) => attest_cmd::run(cmd).await,
            Command::VerifyQuote(args) => attest_cmd::verify_quote(args),
            Command::Chat(args) => chat_cmd::run(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Proxy(args) => proxy_cmd::run(args).await,
            Command::Gateway(args) => gateway_cmd::run(args).await,
            Command::Bench(cmd) => bench::run(cmd).await,
            Command::Deploy(args) => deploy_cmd::run(args).await,
            Command::Devnet(cmd) => chain_cmd::devnet(cmd).await,
            Command::Nodes(cmd) => chain_cmd::nodes(cmd).await,
            Command::Governance(cmd) => governance_cmd::run(cmd).await,
            Command::Escrow(cmd) => chain_cmd::escrow(cmd).await,
            Command::Key(cmd) => chain_cmd::key(cmd).await,
            Command::Measure(args) => measure_cmd::run(args),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::LevelFilter;

    fn hint(filter: &str) -> Option<LevelFilter> {
        super::log_layer::<tracing_subscriber::Registry>(filter).max_level_hint()
    }

    /// The node runs with `--log warn` in production and benchmarks: tracing must know that no
    /// `debug!` can pass, or every call site is filtered at run time.
    #[test]
    fn the_log_layer_states_its_most_verbose_level() {
        if std::env::var_os("RUST_LOG").is_some() {
            return; // RUST_LOG replaces the filter under test
        }
        assert_eq!(hint("warn"), Some(LevelFilter::WARN));
        assert_eq!(hint("info"), Some(LevelFilter::INFO));
        assert_eq!(hint("warn,cloister_node=debug"), Some(LevelFilter::DEBUG));
    }
}
