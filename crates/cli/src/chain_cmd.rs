//! On-chain commands: `cloister devnet up`, `nodes list`, `escrow deposit|withdraw|balance`,
//! `key mint`. Private keys come from flags or environment variables and are never printed
//! (except the public anvil test keys that `devnet up` writes to devnet.json, which are no secret).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use cloister_chain::alloy::primitives::{Address, B256};
use cloister_chain::alloy::signers::local::PrivateKeySigner;
use cloister_chain::devnet::{self, DeployParams, Devnet, DevnetOptions};
use cloister_chain::{Chain, ChainConfig, DevnetFile, Token, format_amount, parse_private_key};
use cloister_types::eip712;

/// `cloister devnet ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum DevnetCommand {
    /// Start anvil, deploy every contract (simulated quote verifier), fund the dev accounts, write
    /// devnet.json, and stay in the foreground until Ctrl-C.
    Up(DevnetUpArgs),
}

/// `cloister devnet up`.
#[derive(Debug, Args)]
pub(crate) struct DevnetUpArgs {
    /// Port on 127.0.0.1 for anvil's JSON-RPC.
    #[arg(long, default_value_t = 8545)]
    pub port: u16,
    /// Where to write the deployment (addresses, dev accounts).
    #[arg(long, default_value = "devnet.json")]
    pub out: PathBuf,
    /// anvil binary (default: $CLOISTER_ANVIL, contracts/node_modules/.bin/anvil, PATH).
    #[arg(long)]
    pub anvil: Option<PathBuf>,
    /// Escrow withdrawal delay, seconds.
    #[arg(long, default_value_t = 60)]
    pub withdraw_delay: u64,
}

/// Where the chain is: a devnet.json / chain config file, or an RPC URL plus addresses.
#[derive(Debug, Args)]
pub(crate) struct ChainOpts {
    /// devnet.json (from `cloister devnet up`) or a chain config JSON
    /// ({rpc_url, chain_id, token, registry, escrow, oracle}).
    #[arg(long, env = "CLOISTER_CHAIN")]
    pub chain: Option<PathBuf>,
    /// JSON-RPC URL (instead of --chain; overrides its rpc_url if both are given).
    #[arg(long, env = "CLOISTER_RPC_URL")]
    pub rpc_url: Option<String>,
    /// NodeRegistry address (with --rpc-url).
    #[arg(long)]
    pub registry: Option<Address>,
    /// Escrow address (with --rpc-url).
    #[arg(long)]
    pub escrow: Option<Address>,
    /// Payment token address (with --rpc-url).
    #[arg(long)]
    pub token: Option<Address>,
}

/// A sending key.
#[derive(Debug, Args)]
pub(crate) struct KeyOpts {
    /// Private key (hex). Prefer the environment variable: flags show up in `ps`.
    #[arg(long, env = "CLOISTER_PRIVATE_KEY", hide_env_values = true)]
    pub private_key: Option<String>,
    /// DEVNET ONLY: use the devnet.json account with this role (governance, operator, client,
    /// requester).
    #[arg(long, conflicts_with = "private_key")]
    pub dev_account: Option<String>,
}

/// `cloister nodes ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum NodesCommand {
    /// List the nodes in the registry.
    List {
        #[command(flatten)]
        chain: ChainOpts,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `cloister escrow ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum EscrowCommand {
    /// Deposit tokens into the escrow (approves first if needed).
    Deposit {
        #[command(flatten)]
        chain: ChainOpts,
        #[command(flatten)]
        key: KeyOpts,
        /// Amount in whole tokens (in the token's own decimals), e.g. `10` or `0.5`.
        amount: String,
    },
    /// Withdraw: the first call requests a withdrawal of AMOUNT and starts the delay; a later call
    /// (after the delay) completes it. Shows the pending state either way.
    Withdraw {
        #[command(flatten)]
        chain: ChainOpts,
        #[command(flatten)]
        key: KeyOpts,
        /// Amount in tokens to request (not needed to complete a pending withdrawal).
        amount: Option<String>,
        /// Wait for the delay and complete the withdrawal in this call.
        #[arg(long)]
        wait: bool,
    },
    /// Show an escrow balance and pending withdrawal.
    Balance {
        #[command(flatten)]
        chain: ChainOpts,
        #[command(flatten)]
        key: KeyOpts,
        /// Address to show (default: the key's address).
        #[arg(long)]
        address: Option<Address>,
    },
}

/// `cloister key ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum KeyCommand {
    /// Sign a spend authorization for one node and print it as an API key (`ck1_...`), usable as
    /// the Bearer token of any OpenAI SDK.
    Mint(KeyMintArgs),
}

/// `cloister key mint`.
#[derive(Debug, Args)]
pub(crate) struct KeyMintArgs {
    #[command(flatten)]
    pub chain: ChainOpts,
    /// The client's private key (hex). Prefer the environment variable.
    #[arg(long, env = "CLOISTER_CLIENT_KEY", hide_env_values = true)]
    pub client_key: Option<String>,
    /// DEVNET ONLY: use the devnet.json account with this role as the client.
    #[arg(long, conflicts_with = "client_key")]
    pub dev_account: Option<String>,
    /// The node's operator address (as `nodes list` shows it).
    #[arg(long)]
    pub node: Address,
    /// Most the node may charge, in tokens.
    #[arg(long)]
    pub max_amount: String,
    /// Validity from now, seconds.
    #[arg(long, default_value_t = 30 * 24 * 3600)]
    pub expiry_secs: u64,
}

/// The payment token of `chain`, read once (decimals and symbol) to show and parse amounts.
async fn token_of(chain: &Chain) -> anyhow::Result<Token> {
    chain
        .token()
        .await
        .context("reading the payment token's decimals and symbol")
}

/// "Now" for delays: the later of the latest block's time and this machine's clock (a devnet mines
/// no empty blocks, so its latest block can be old).
pub(crate) async fn chain_now(chain: &Chain) -> anyhow::Result<u64> {
    let block = chain.block_timestamp().await?;
    let local = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Ok(block.max(local))
}

fn load_devnet(opts: &ChainOpts) -> anyhow::Result<Option<DevnetFile>> {
    match &opts.chain {
        Some(p) => match DevnetFile::load(p) {
            Ok(f) => Ok(Some(f)),
            Err(_) => Ok(None),
        },
        None => Ok(None),
    }
}

pub(crate) async fn chain_config(opts: &ChainOpts) -> anyhow::Result<ChainConfig> {
    let overrides = cloister_chain::ChainOverrides {
        rpc_url: opts.rpc_url.clone(),
        token: opts.token,
        registry: opts.registry,
        escrow: opts.escrow,
        oracle: None,
    };
    ChainConfig::resolve(opts.chain.as_deref(), &overrides)
        .await
        .context("resolving the chain from --chain / --rpc-url")?
        .context("say where the chain is: --chain devnet.json, or --rpc-url with contract addresses")
}

pub(crate) fn signer_from(
    chain: &ChainOpts,
    key: Option<&str>,
    dev_account: Option<&str>,
    what: &str,
) -> anyhow::Result<PrivateKeySigner> {
    if let Some(role) = dev_account {
        let file = load_devnet(chain)?.context("--dev-account needs --chain devnet.json")?;
        let acct = file
            .account(role)
            .with_context(|| format!("devnet.json has no {role:?} account"))?;
        return Ok(parse_private_key(&acct.private_key)?);
    }
    let Some(key) = key else {
        bail!(
            "{what} needs a private key: --private-key / its environment variable, or --dev-account on a devnet"
        );
    };
    parse_private_key(key).with_context(|| format!("{what}: the private key"))
}

pub(crate) async fn devnet(cmd: DevnetCommand) -> anyhow::Result<ExitCode> {
    let DevnetCommand::Up(args) = cmd;
    let dn = Devnet::spawn(DevnetOptions {
        port: Some(args.port),
        chain_id: None,
        anvil: args.anvil.clone(),
    })
    .await
    .context("starting anvil")?;
    let params = DeployParams {
        withdraw_delay: args.withdraw_delay,
        ..DeployParams::default()
    };
    let file = devnet::deploy_devnet(dn.rpc_url(), &params)
        .await
        .context("deploying the contracts")?;
    file.save(&args.out)?;
    let token = token_of(&Chain::connect(file.chain_config(), None).await?).await?;

    let c = &file.contracts;
    println!(
        "Cloister devnet: anvil (pid {}) on {}, chain id {}",
        dn.pid(),
        file.rpc_url,
        file.chain_id
    );
    println!("  token (DevToken)        {:#x}", c.token);
    println!(
        "  quote verifier (SIMULATED, devnet only) {:#x}",
        c.quote_verifier
    );
    println!("  NodeRegistry            {:#x}", c.registry);
    println!("  Escrow                  {:#x}", c.escrow);
    println!("  InferenceOracle         {:#x}", c.oracle);
    if let Some(consumer) = c.consumer {
        println!("  ExampleConsumer         {consumer:#x}");
    }
    println!("  accounts ({} each):", token.format(params.mint_per_account));
    for a in &file.accounts {
        println!("    {:<10} {:#x}", a.role, a.address);
    }
    println!(
        "Wrote {} (it holds anvil's well-known PUBLIC test keys: never use them on a real chain).",
        args.out.display()
    );
    println!("Press Ctrl-C to stop.");

    wait_for_shutdown().await;
    eprintln!("stopping anvil");
    dn.stop();
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_shutdown() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub(crate) async fn nodes(cmd: NodesCommand) -> anyhow::Result<ExitCode> {
    let NodesCommand::List { chain, json } = cmd;
    let config = chain_config(&chain).await?;
    let chain = Chain::connect(config, None).await?;
    let registry = chain.registry()?;
    let nodes = registry.list_nodes().await?;
    let token = if nodes.is_empty() || json {
        None
    } else {
        Some(token_of(&chain).await?)
    };
    let mut active = Vec::with_capacity(nodes.len());
    for n in &nodes {
        active.push(registry.is_active(n.operator).await?);
    }
    if json {
        let list: Vec<_> = nodes
            .iter()
            .zip(&active)
            .map(|(n, a)| {
                let mut v = serde_json::to_value(n).unwrap_or_default();
                v["is_active"] = serde_json::Value::Bool(*a);
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    if nodes.is_empty() {
        println!("no nodes registered in {:#x}", registry.address());
        crate::governance_cmd::print_pending(&registry, chain_now(&chain).await?).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let Some(token) = token else {
        return Ok(ExitCode::SUCCESS);
    };
    println!(
        "{:<42}  {:<42}  {:<6}  {:<10}  {:<28}  MODELS (input/output price per model token, in {})",
        "OPERATOR",
        "SIGNER",
        "ACTIVE",
        "STAKE",
        "ENDPOINT",
        token.symbol()
    );
    for (n, a) in nodes.iter().zip(&active) {
        let models: Vec<String> = n
            .models
            .iter()
            .map(|m| {
                format!(
                    "{} ({}/{})",
                    m.id,
                    format_amount(m.input_price, token.decimals()),
                    format_amount(m.output_price, token.decimals())
                )
            })
            .collect();
        println!(
            "{:<42}  {:<42}  {:<6}  {:<10}  {:<28}  {}",
            format!("{:#x}", n.operator),
            format!("{:#x}", n.signer),
            if *a { "yes" } else { "no" },
            token.format(n.stake),
            n.endpoint,
            models.join(", ")
        );
    }
    crate::governance_cmd::print_pending(&registry, chain_now(&chain).await?).await?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn escrow(cmd: EscrowCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        EscrowCommand::Deposit { chain, key, amount } => {
            let signer = signer_from(
                &chain,
                key.private_key.as_deref(),
                key.dev_account.as_deref(),
                "deposit",
            )?;
            let me = signer.address();
            let chain = Chain::connect(chain_config(&chain).await?, Some(signer)).await?;
            let token = token_of(&chain).await?;
            let amount = token.parse(&amount)?;
            let escrow = chain.escrow()?;
            let tx = escrow.deposit(amount).await.context("deposit")?;
            println!(
                "deposited {} for {me:#x} (tx {:#x}, gas {})",
                token.format(amount),
                tx.tx_hash,
                tx.gas_used
            );
            println!("escrow balance: {}", token.format(escrow.balance_of(me).await?));
        }
        EscrowCommand::Withdraw {
            chain,
            key,
            amount,
            wait,
        } => {
            let signer = signer_from(
                &chain,
                key.private_key.as_deref(),
                key.dev_account.as_deref(),
                "withdraw",
            )?;
            let me = signer.address();
            let chain = Chain::connect(chain_config(&chain).await?, Some(signer)).await?;
            let token = token_of(&chain).await?;
            let escrow = chain.escrow()?;
            let mut pending = escrow.pending_withdrawal(me).await?;
            if pending.amount.is_zero() {
                let Some(amount) = amount else {
                    bail!("no withdrawal pending; give an AMOUNT to request one");
                };
                let amount = token.parse(&amount)?;
                let tx = escrow
                    .request_withdrawal(amount)
                    .await
                    .context("requesting the withdrawal")?;
                pending = escrow.pending_withdrawal(me).await?;
                println!(
                    "requested withdrawal of {} (tx {:#x}); ready at unix {}",
                    token.format(pending.amount),
                    tx.tx_hash,
                    pending.ready_at
                );
            } else if amount.is_some() {
                println!(
                    "a withdrawal of {} is already pending; completing it instead",
                    token.format(pending.amount)
                );
            }
            let now = chain_now(&chain).await?;
            if now < pending.ready_at {
                let left = pending.ready_at - now;
                if !wait {
                    println!(
                        "pending: {} ready in {left} s (unix {}); run `cloister escrow withdraw` again then, or pass --wait",
                        token.format(pending.amount),
                        pending.ready_at
                    );
                    return Ok(ExitCode::SUCCESS);
                }
                println!("waiting {left} s for the withdrawal delay");
                tokio::time::sleep(Duration::from_secs(left + 1)).await;
                // anvil without automine of empty blocks keeps the old timestamp; the next tx
                // gets a fresh one, so simply try.
            }
            let tx = escrow.withdraw().await.context("withdraw")?;
            println!(
                "withdrew {} to {me:#x} (tx {:#x}); escrow balance now {}",
                token.format(pending.amount),
                tx.tx_hash,
                token.format(escrow.balance_of(me).await?)
            );
        }
        EscrowCommand::Balance {
            chain: opts,
            key,
            address,
        } => {
            let who = match address {
                Some(a) => a,
                None => signer_from(
                    &opts,
                    key.private_key.as_deref(),
                    key.dev_account.as_deref(),
                    "balance",
                )
                .context("give --address, or a key")?
                .address(),
            };
            let chain = Chain::connect(chain_config(&opts).await?, None).await?;
            let token = token_of(&chain).await?;
            let escrow = chain.escrow()?;
            println!("{who:#x}");
            println!(
                "  escrow balance: {}",
                token.format(escrow.balance_of(who).await?)
            );
            let pending = escrow.pending_withdrawal(who).await?;
            if pending.amount.is_zero() {
                println!("  pending withdrawal: none");
            } else {
                let now = chain_now(&chain).await?;
                let state = if now >= pending.ready_at {
                    "ready".to_owned()
                } else {
                    format!("ready in {} s", pending.ready_at - now)
                };
                println!(
                    "  pending withdrawal: {} ({state}, unix {})",
                    token.format(pending.amount),
                    pending.ready_at
                );
            }
            println!(
                "  wallet token balance: {}",
                token.format(token.balance_of(who).await?)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn key(cmd: KeyCommand) -> anyhow::Result<ExitCode> {
    let KeyCommand::Mint(args) = cmd;
    let signer = signer_from(
        &args.chain,
        args.client_key.as_deref(),
        args.dev_account.as_deref(),
        "key mint",
    )?;
    let config = chain_config(&args.chain).await?;
    if config.escrow.is_zero() {
        bail!("key mint needs the Escrow address (--chain devnet.json, or --escrow)");
    }
    // The amount is in the token's decimals: read them from the chain (the key itself is signed
    // offline, but a wrong scale would authorize the wrong amount).
    let chain = Chain::connect(config.clone(), None)
        .await
        .context("connecting to read the payment token's decimals")?;
    let token = token_of(&chain).await?;
    let max_amount = token.parse(&args.max_amount)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let key = cloister_chain::mint_api_key(
        &signer,
        config.chain_id,
        config.escrow,
        args.node,
        max_amount,
        now.saturating_add(args.expiry_secs),
        B256::from(rand::random::<[u8; 32]>()),
    )?;
    let id = key.authorization_id(&eip712::escrow_domain(config.chain_id, config.escrow));

    // Advice, not a refusal: the key is valid offline; these say whether it will be useful.
    {
        if let Ok(escrow) = chain.escrow()
            && let Ok(bal) = escrow.balance_of(signer.address()).await
            && bal < max_amount
        {
            eprintln!(
                "note: escrow balance of {:#x} is {}, below the key's maximum {}",
                signer.address(),
                token.format(bal),
                token.format(max_amount)
            );
        }
        if let Ok(registry) = chain.registry()
            && let Ok(false) = registry.is_active(args.node).await
        {
            eprintln!("note: {:#x} is not an active node in the registry", args.node);
        }
    }
    eprintln!(
        "authorization id {id:#x}, client {:#x}, node {:#x}, max {}, expires unix {}",
        key.auth.client,
        key.auth.node,
        token.format(max_amount),
        key.auth.expiry
    );
    println!("{}", key.encode());
    Ok(ExitCode::SUCCESS)
}
