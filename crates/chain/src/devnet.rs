//! A local development chain: anvil spawned from `contracts/node_modules/.bin/anvil` (or
//! `$CLOISTER_ANVIL`, or `anvil` on `PATH`), and every Cloister contract deployed on it with the
//! simulated quote verifier.
//!
//! The development accounts are **anvil's well-known test keys** (from the public mnemonic
//! `test test … junk`): anyone can spend from them on any chain; they exist for local work only.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use cloister_attest::{measurements, quote, simulated};
use cloister_types::{Nonce, ReportData};

use crate::bindings::{
    DevToken, Escrow, ExampleConsumer, InferenceOracle, NodeRegistry, SimulatedQuoteVerifier,
};
use crate::config::{ChainConfig, ContractAddresses, DevAccount, DevnetFile};
use crate::error::{ChainError, Result};
use crate::revert::from_contract;
use crate::{parse_private_key, send, wallet_provider};

/// The EVM version the contracts are compiled for (`foundry.toml`'s `evm_version`).
pub const HARDFORK: &str = "cancun";

/// Env var naming the anvil binary.
pub const ANVIL_ENV: &str = "CLOISTER_ANVIL";

/// anvil's first four well-known test keys, with the role each plays on a Cloister devnet.
pub const DEV_KEYS: [(&str, &str); 4] = [
    (
        "governance",
        "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    ),
    (
        "operator",
        "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    ),
    (
        "client",
        "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    ),
    (
        "requester",
        "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    ),
];

/// The note written into `devnet.json`.
pub const DEV_KEYS_NOTE: &str = "Development chain. The private keys are anvil's well-known public test keys: never fund them on a real chain.";

/// The signer for the dev role `role` (`governance`, `operator`, `client`, `requester`).
pub fn dev_signer(role: &str) -> Option<PrivateKeySigner> {
    DEV_KEYS
        .iter()
        .find(|(r, _)| *r == role)
        .and_then(|(_, k)| parse_private_key(k).ok())
}

/// The measurement digest of every simulated quote (the one a devnet registry allows).
pub fn simulated_measurement() -> Result<B256> {
    let q = simulated::simulated_quote(&ReportData::new(
        cloister_types::Address::repeat_byte(1),
        Nonce([0; 32]),
    ));
    let parsed = quote::parse_quote(&q)
        .map_err(|e| ChainError::Anvil(format!("simulated quote does not parse: {e}")))?;
    measurements::measurement_digest(&parsed)
        .map(B256::from)
        .ok_or_else(|| ChainError::Anvil("simulated quote has no TD report".into()))
}

/// Where the anvil binary is: `$CLOISTER_ANVIL`, else the repository's
/// `contracts/node_modules/.bin/anvil` in the working directory or one above it, or above the
/// running executable (`target/debug/cloister`, a test binary), else `anvil` on `PATH`. `None` if
/// none exists. (Found at run time: the binary embeds no build path, so release builds stay
/// reproducible.)
pub fn find_anvil() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(ANVIL_ENV) {
        let p = PathBuf::from(p);
        return p.exists().then_some(p);
    }
    let rel = std::path::Path::new("contracts/node_modules/.bin/anvil");
    let cwd = std::env::current_dir().ok();
    let exe = std::env::current_exe().ok();
    if let Some(found) = cwd
        .iter()
        .chain(exe.iter())
        .flat_map(|base| base.ancestors())
        .map(|dir| dir.join(rel))
        .find(|p| p.exists())
    {
        return Some(found);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("anvil"))
            .find(|p| p.is_file())
    })
}

/// How to start anvil.
#[derive(Clone, Debug, Default)]
pub struct DevnetOptions {
    /// Port on 127.0.0.1; `None` picks a free one.
    pub port: Option<u16>,
    /// Chain id; `None` keeps anvil's 31337.
    pub chain_id: Option<u64>,
    /// anvil binary; `None` uses [`find_anvil`].
    pub anvil: Option<PathBuf>,
}

/// A running anvil. Killed when dropped.
#[derive(Debug)]
pub struct Devnet {
    child: Child,
    rpc_url: String,
    chain_id: u64,
    stderr_tail: Arc<Mutex<Vec<u8>>>,
}

/// Bytes of anvil's stderr kept for error messages.
const STDERR_TAIL: usize = 4096;

impl Devnet {
    /// Starts anvil (hardfork [`HARDFORK`]) and waits until it answers.
    pub async fn spawn(options: DevnetOptions) -> Result<Self> {
        let anvil = options.anvil.or_else(find_anvil).ok_or_else(|| {
            ChainError::Anvil(format!(
                "not found (set {ANVIL_ENV} or run `npm ci --prefix contracts`)"
            ))
        })?;
        let port = match options.port {
            Some(p) => p,
            None => free_port()?,
        };
        let mut cmd = Command::new(&anvil);
        cmd.args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--hardfork",
            HARDFORK,
            "--silent",
        ]);
        if let Some(id) = options.chain_id {
            cmd.args(["--chain-id", &id.to_string()]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| ChainError::Anvil(format!("{}: {e}", anvil.display())))?;
        // Drain stderr so a chatty anvil never blocks on a full pipe; keep its tail for errors.
        let stderr_tail = Arc::new(Mutex::new(Vec::new()));
        if let Some(mut pipe) = child.stderr.take() {
            let tail = Arc::clone(&stderr_tail);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = std::io::Read::read(&mut pipe, &mut buf) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut t) = tail.lock() {
                        t.extend_from_slice(&buf[..n]);
                        let excess = t.len().saturating_sub(STDERR_TAIL);
                        t.drain(..excess);
                    }
                }
            });
        }
        let mut devnet = Self {
            child,
            rpc_url: format!("http://127.0.0.1:{port}"),
            chain_id: 0,
            stderr_tail,
        };
        devnet.chain_id = devnet.wait_ready().await?;
        Ok(devnet)
    }

    async fn wait_ready(&mut self) -> Result<u64> {
        let url = self
            .rpc_url
            .parse()
            .map_err(|_| ChainError::BadRpcUrl(self.rpc_url.clone()))?;
        let provider = ProviderBuilder::new().connect_http(url);
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                // Give the drain thread a moment to collect anvil's last words.
                tokio::time::sleep(Duration::from_millis(100)).await;
                let err = self
                    .stderr_tail
                    .lock()
                    .map(|t| String::from_utf8_lossy(&t).into_owned())
                    .unwrap_or_default();
                return Err(ChainError::Anvil(format!("exited with {status}: {}", err.trim())));
            }
            if let Ok(id) = provider.get_chain_id().await {
                return Ok(id);
            }
            if start.elapsed() > Duration::from_secs(20) {
                return Err(ChainError::Anvil(format!(
                    "no answer on {} after 20 s",
                    self.rpc_url
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// JSON-RPC URL.
    pub fn rpc_url(&self) -> &str {
        &self.rpc_url
    }

    /// Chain id anvil reports.
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// anvil's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A provider that sends as `signer`.
    pub fn provider_for(&self, signer: PrivateKeySigner) -> Result<DynProvider> {
        wallet_provider(&self.rpc_url, signer)
    }

    /// Stops anvil and waits for it to exit.
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // anvil keeps its state in memory; there is nothing to flush, so SIGKILL is clean.
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| ChainError::Anvil(format!("no free port: {e}")))?;
    let port = l
        .local_addr()
        .map_err(|e| ChainError::Anvil(format!("no free port: {e}")))?
        .port();
    Ok(port)
}

/// Advances the chain's clock by `secs` and mines a block (anvil/hardhat only).
pub async fn increase_time(provider: &DynProvider, secs: u64) -> Result<()> {
    let _: serde_json::Value = provider.raw_request("evm_increaseTime".into(), (secs,)).await?;
    let _: serde_json::Value = provider
        .raw_request("evm_mine".into(), Vec::<serde_json::Value>::new())
        .await?;
    Ok(())
}

/// Parameters of a devnet deployment (token amounts in base units; the token has 18 decimals).
#[derive(Clone, Debug)]
pub struct DeployParams {
    /// `NodeRegistry.minStake`.
    pub min_stake: U256,
    /// `NodeRegistry.maxAge` (seconds).
    pub max_age: u64,
    /// `NodeRegistry.unbondingDelay` (seconds).
    pub unbonding_delay: u64,
    /// `NodeRegistry.measurementDelay` (seconds). 0 by default: a devnet allowlists a measurement
    /// in one step ([`crate::Registry::set_measurement`]).
    pub measurement_delay: u64,
    /// `Escrow.withdrawDelay` (seconds).
    pub withdraw_delay: u64,
    /// `InferenceOracle.timeout` (seconds).
    pub oracle_timeout: u64,
    /// Tokens minted to each dev account.
    pub mint_per_account: U256,
}

/// One whole token (18 decimals).
pub const TOKEN: U256 = U256::from_limbs([1_000_000_000_000_000_000, 0, 0, 0]);

impl Default for DeployParams {
    fn default() -> Self {
        Self {
            min_stake: TOKEN * U256::from(100u64),
            max_age: 24 * 3600,
            unbonding_delay: 3600,
            measurement_delay: 0,
            withdraw_delay: 60,
            oracle_timeout: 3600,
            mint_per_account: TOKEN * U256::from(1_000_000u64),
        }
    }
}

/// Deploys every contract to the chain at `rpc_url` as dev account `governance`, allows the
/// simulated measurement (with a non-zero `measurement_delay`, only announces it: execute it after
/// the delay) and TCB status 0 (UpToDate), and mints tokens to the dev accounts.
pub async fn deploy_devnet(rpc_url: &str, params: &DeployParams) -> Result<DevnetFile> {
    let gov = dev_signer("governance").ok_or(ChainError::BadPrivateKey)?;
    let gov_addr = gov.address();
    let p = wallet_provider(rpc_url, gov)?;
    let chain_id = p.get_chain_id().await?;

    let token = DevToken::deploy(&p).await.map_err(from_contract)?;
    let verifier = SimulatedQuoteVerifier::deploy(&p).await.map_err(from_contract)?;
    let registry = NodeRegistry::deploy(
        &p,
        gov_addr,
        *token.address(),
        *verifier.address(),
        params.min_stake,
        params.max_age,
        params.unbonding_delay,
        params.measurement_delay,
    )
    .await
    .map_err(from_contract)?;
    let escrow = Escrow::deploy(&p, *token.address(), *registry.address(), params.withdraw_delay)
        .await
        .map_err(from_contract)?;
    let oracle = InferenceOracle::deploy(&p, *token.address(), *registry.address(), params.oracle_timeout)
        .await
        .map_err(from_contract)?;
    let consumer = ExampleConsumer::deploy(&p, *oracle.address())
        .await
        .map_err(from_contract)?;

    let measurement = simulated_measurement()?;
    send(registry.announceMeasurement(measurement, true)).await?;
    if params.measurement_delay == 0 {
        send(registry.executeMeasurement(measurement)).await?;
    }
    send(registry.setTcbStatus(0, true)).await?;

    let mut accounts = Vec::new();
    for (role, key) in DEV_KEYS {
        let address = parse_private_key(key)?.address();
        send(token.mint(address, params.mint_per_account)).await?;
        accounts.push(DevAccount {
            role: role.to_owned(),
            address,
            private_key: key.to_owned(),
        });
    }

    Ok(DevnetFile {
        chain_id,
        rpc_url: rpc_url.to_owned(),
        contracts: ContractAddresses {
            token: *token.address(),
            quote_verifier: *verifier.address(),
            registry: *registry.address(),
            escrow: *escrow.address(),
            oracle: *oracle.address(),
            consumer: Some(*consumer.address()),
        },
        accounts,
        note: DEV_KEYS_NOTE.to_owned(),
    })
}

/// Deploys only `SimulatedQuoteVerifier` as `governance` (it refuses chains other than 31337/1337:
/// the error is [`ChainError::Reverted`] named `NotLocalChain`).
pub async fn deploy_simulated_verifier(rpc_url: &str) -> Result<Address> {
    let gov = dev_signer("governance").ok_or(ChainError::BadPrivateKey)?;
    let p = wallet_provider(rpc_url, gov)?;
    let v = SimulatedQuoteVerifier::deploy(&p).await.map_err(from_contract)?;
    Ok(*v.address())
}

/// Convenience: the [`ChainConfig`] of a deployment.
pub fn chain_config(file: &DevnetFile) -> ChainConfig {
    file.chain_config()
}
