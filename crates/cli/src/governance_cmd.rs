//! `cloister governance list|announce|execute|cancel|delay`: the timelocked measurement allowlist
//! (docs/protocol.md, "Governance"). The registry's owner announces a change; anyone executes it
//! once `measurementDelay` has passed; the owner may cancel it before. `nodes list` and
//! `proxy --chain` show the pending changes too ([`print_pending`], [`log_pending`]).

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use cloister_chain::alloy::primitives::B256;
use cloister_chain::{Chain, ChainConfig, PendingChange, Registry, TxOutcome};

use crate::chain_cmd::{ChainOpts, KeyOpts, chain_config, chain_now, signer_from};

/// `cloister governance ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum GovernanceCommand {
    /// Show the delay, the pending changes (with their eta and time left) and the allowlist.
    List {
        #[command(flatten)]
        chain: ChainOpts,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Owner: announce that MEASUREMENT will be allowed (or, with --disallow, disallowed) once the
    /// delay has passed.
    Announce {
        #[command(flatten)]
        target: Target,
        /// Announce a removal from the allowlist instead of an addition.
        #[arg(long)]
        disallow: bool,
    },
    /// Anyone: apply the pending change for MEASUREMENT (from its eta).
    Execute {
        #[command(flatten)]
        target: Target,
    },
    /// Owner: drop the pending change for MEASUREMENT.
    Cancel {
        #[command(flatten)]
        target: Target,
    },
    /// The delay itself: raising applies at once, lowering is announced and applies after the
    /// current delay (`--execute` then applies it, `--cancel` drops it).
    Delay {
        #[command(flatten)]
        chain: ChainOpts,
        #[command(flatten)]
        key: KeyOpts,
        /// New delay in seconds (omit with --execute or --cancel).
        #[arg(required_unless_present_any = ["execute", "cancel"])]
        seconds: Option<u64>,
        /// Apply the pending lowering (anyone, from its eta).
        #[arg(long, conflicts_with_all = ["seconds", "cancel"])]
        execute: bool,
        /// Drop the pending lowering (owner).
        #[arg(long, conflicts_with = "seconds")]
        cancel: bool,
    },
}

/// The chain, the sending key and the measurement a change is about.
#[derive(Debug, Args)]
pub(crate) struct Target {
    #[command(flatten)]
    chain: ChainOpts,
    #[command(flatten)]
    key: KeyOpts,
    /// The registry measurement digest (32 bytes hex, as `cloister measure` prints it).
    measurement: B256,
}

pub(crate) async fn run(cmd: GovernanceCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        GovernanceCommand::List { chain, json } => list(&chain, json).await,
        GovernanceCommand::Announce { target, disallow } => {
            let (chain, registry) = sender(&target.chain, &target.key).await?;
            let tx = registry
                .announce_measurement(target.measurement, !disallow)
                .await
                .context("announceMeasurement")?;
            print_tx("announced", &tx);
            print_pending(&registry, chain_now(&chain).await?).await?;
            Ok(ExitCode::SUCCESS)
        }
        GovernanceCommand::Execute { target } => {
            let (_, registry) = sender(&target.chain, &target.key).await?;
            let tx = registry
                .execute_measurement(target.measurement)
                .await
                .context("executeMeasurement")?;
            print_tx("executed", &tx);
            let allowed = registry.allowed_measurements().await?;
            let state = if allowed.contains(&target.measurement) {
                "allowed"
            } else {
                "not allowed"
            };
            println!("{:#x} is now {state}", target.measurement);
            Ok(ExitCode::SUCCESS)
        }
        GovernanceCommand::Cancel { target } => {
            let (_, registry) = sender(&target.chain, &target.key).await?;
            let tx = registry
                .cancel_measurement(target.measurement)
                .await
                .context("cancelMeasurement")?;
            print_tx("cancelled", &tx);
            Ok(ExitCode::SUCCESS)
        }
        GovernanceCommand::Delay {
            chain,
            key,
            seconds,
            execute,
            cancel,
        } => {
            let (_, registry) = sender(&chain, &key).await?;
            let tx = match (seconds, execute, cancel) {
                (_, true, _) => registry.execute_measurement_delay().await?,
                (_, _, true) => registry.cancel_measurement_delay().await?,
                (Some(s), _, _) => registry.announce_measurement_delay(s).await?,
                (None, false, false) => bail!("give SECONDS, --execute or --cancel"),
            };
            print_tx("sent", &tx);
            println!("measurement delay now {}s", registry.measurement_delay().await?);
            if let Some(p) = registry.pending_measurement_delay().await? {
                println!("pending lowering to {}s, executable from {}", p.delay, p.eta);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn sender(chain: &ChainOpts, key: &KeyOpts) -> anyhow::Result<(Chain, Registry)> {
    let signer = signer_from(
        chain,
        key.private_key.as_deref(),
        key.dev_account.as_deref(),
        "a governance transaction",
    )?;
    let chain = Chain::connect(chain_config(chain).await?, Some(signer)).await?;
    let registry = chain.registry()?;
    Ok((chain, registry))
}

fn print_tx(what: &str, tx: &TxOutcome) {
    println!(
        "{what}: tx {:#x} (block {})",
        tx.tx_hash,
        tx.block_number.unwrap_or_default()
    );
}

async fn list(opts: &ChainOpts, json: bool) -> anyhow::Result<ExitCode> {
    let chain = Chain::connect(chain_config(opts).await?, None).await?;
    let registry = chain.registry()?;
    let now = chain_now(&chain).await?;
    let delay = registry.measurement_delay().await?;
    let pending_delay = registry.pending_measurement_delay().await?;
    let allowed = registry.allowed_measurements().await?;
    if json {
        let pending = registry.pending_measurement_changes().await?;
        let v = serde_json::json!({
            "registry": format!("{:#x}", registry.address()),
            "now": now,
            "measurement_delay": delay,
            "pending_delay_change": pending_delay,
            "pending": pending,
            "allowed": allowed,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("registry {:#x}: measurement delay {delay}s", registry.address());
    if let Some(p) = pending_delay {
        println!(
            "pending delay lowering to {}s: eta {} ({})",
            p.delay,
            p.eta,
            left(p.eta.saturating_sub(now))
        );
    }
    println!("allowed measurements ({}):", allowed.len());
    for m in &allowed {
        println!("  {m:#x}");
    }
    print_pending(&registry, now).await?;
    Ok(ExitCode::SUCCESS)
}

/// Prints the registry's pending measurement changes (or that there are none), as of unix time
/// `now`.
pub(crate) async fn print_pending(registry: &Registry, now: u64) -> anyhow::Result<()> {
    let pending = registry
        .pending_measurement_changes()
        .await
        .context("reading the pending measurement changes")?;
    if pending.is_empty() {
        println!("no pending measurement changes");
        return Ok(());
    }
    println!("pending measurement changes ({}):", pending.len());
    println!(
        "  {:<66}  {:<8}  {:<12}  LEFT",
        "MEASUREMENT", "CHANGE", "ETA (unix)"
    );
    for p in &pending {
        println!("  {}", row(p, now));
    }
    Ok(())
}

/// Logs (to stderr) the pending measurement changes of the registry in `config`; a failed read is
/// a warning only (the listing is informational).
pub(crate) async fn log_pending(config: &ChainConfig) {
    let summary = async {
        let chain = Chain::connect(config.clone(), None).await?;
        let now = chain_now(&chain).await?;
        let pending = chain.registry()?.pending_measurement_changes().await?;
        anyhow::Ok((now, pending))
    };
    match summary.await {
        Ok((_, pending)) if pending.is_empty() => {
            eprintln!("registry {:#x}: no pending measurement changes", config.registry);
        }
        Ok((now, pending)) => {
            eprintln!(
                "registry {:#x}: {} pending measurement change(s):",
                config.registry,
                pending.len()
            );
            for p in &pending {
                eprintln!("  {}", row(p, now));
            }
        }
        Err(e) => eprintln!("warning: could not read pending measurement changes: {e:#}"),
    }
}

fn row(p: &PendingChange, now: u64) -> String {
    format!(
        "{:<66}  {:<8}  {:<12}  {}",
        format!("{:#x}", p.measurement),
        if p.allowed { "allow" } else { "disallow" },
        p.eta,
        left(p.seconds_left(now))
    )
}

fn left(secs: u64) -> String {
    if secs == 0 {
        return "executable now".to_owned();
    }
    let (d, h, m, s) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s:02}s"),
        (0, _, _) => format!("{h}h{m:02}m"),
        _ => format!("{d}d{h:02}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_left_is_readable() {
        assert_eq!(left(0), "executable now");
        assert_eq!(left(59), "59s");
        assert_eq!(left(61), "1m01s");
        assert_eq!(left(3 * 3600 + 120), "3h02m");
        assert_eq!(left(2 * 86_400 + 3600), "2d01h");
    }

    #[test]
    fn row_names_the_change_and_its_eta() {
        let p = PendingChange {
            measurement: B256::repeat_byte(0xab),
            allowed: false,
            eta: 1_000,
        };
        let r = row(&p, 940);
        assert!(r.starts_with("0xabab"), "{r}");
        assert!(
            r.contains("disallow") && r.contains("1000") && r.ends_with("1m00s"),
            "{r}"
        );
        assert!(row(&p, 2_000).ends_with("executable now"));
    }
}
