//! Where the chain is: [`ChainConfig`], read from a file (`devnet.json` or a flat config) and/or
//! resolved from flags with [`ChainConfig::resolve`] (or [`ChainConfig::resolve_on`] with a named
//! [`Network`]'s settings).

use std::path::Path;

use alloy::primitives::Address;
use alloy::providers::Provider as _;
use serde::{Deserialize, Serialize};

use cloister_types::logscan::{DEFAULT_MAX_LOG_RANGE, LogScanLimits};

use crate::error::{ChainError, Result};
use crate::fees::{FeeCaps, ResendPolicy, SendPolicy};
use crate::network::Network;

/// Where the chain is and where the contracts live.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainConfig {
    /// JSON-RPC endpoint.
    pub rpc_url: String,
    /// More JSON-RPC endpoints of the same chain, tried in order when the one in use fails at the
    /// transport level (see `docs/networks.md`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rpc_urls_fallback: Vec<String>,
    /// Chain id the endpoint must report.
    pub chain_id: u64,
    /// Payment and stake token.
    pub token: Address,
    /// `NodeRegistry`.
    pub registry: Address,
    /// `Escrow`.
    pub escrow: Address,
    /// `InferenceOracle`.
    pub oracle: Address,
    /// `ExampleConsumer`, where deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer: Option<Address>,
    /// The block the contracts were deployed in: log scans start there [default: 0].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub deploy_block: u64,
    /// The named network's settings (confirmations, log range, fee caps), when one was named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    /// When a sent transaction counts as stuck and is replaced at a higher fee.
    #[serde(default, skip_serializing_if = "ResendPolicy::is_default")]
    pub resend: ResendPolicy,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The contracts of a deployment, as `devnet.json` lists them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractAddresses {
    /// `DevToken` (or the production payment token).
    pub token: Address,
    /// The `IQuoteVerifier` the registry uses.
    pub quote_verifier: Address,
    /// `NodeRegistry`.
    pub registry: Address,
    /// `Escrow`.
    pub escrow: Address,
    /// `InferenceOracle`.
    pub oracle: Address,
    /// `ExampleConsumer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer: Option<Address>,
}

/// One development account. The keys are anvil's well-known test keys (public knowledge).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevAccount {
    /// `governance`, `operator`, `client` or `requester`.
    pub role: String,
    /// Its address.
    pub address: Address,
    /// Its private key (`0x` hex): anvil's public test key, worthless anywhere else.
    pub private_key: String,
}

/// `devnet.json`, written by `cloister devnet up`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevnetFile {
    /// Chain id.
    pub chain_id: u64,
    /// JSON-RPC endpoint.
    pub rpc_url: String,
    /// Deployed contracts.
    pub contracts: ContractAddresses,
    /// Development accounts, funded with tokens.
    #[serde(default)]
    pub accounts: Vec<DevAccount>,
    /// A reminder that the keys are public.
    #[serde(default)]
    pub note: String,
}

impl DevnetFile {
    /// The chain configuration it describes.
    pub fn chain_config(&self) -> ChainConfig {
        ChainConfig {
            rpc_url: self.rpc_url.clone(),
            chain_id: self.chain_id,
            token: self.contracts.token,
            registry: self.contracts.registry,
            escrow: self.contracts.escrow,
            oracle: self.contracts.oracle,
            consumer: self.contracts.consumer,
            deploy_block: 0,
            network: None,
            rpc_urls_fallback: Vec::new(),
            resend: ResendPolicy::default(),
        }
    }

    /// The account with `role`.
    pub fn account(&self, role: &str) -> Option<&DevAccount> {
        self.accounts.iter().find(|a| a.role == role)
    }

    /// Reads a `devnet.json`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = read(path)?;
        serde_json::from_str(&text).map_err(|source| ChainError::ConfigJson {
            path: path.display().to_string(),
            source,
        })
    }

    /// Writes it as pretty JSON.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        write_pretty(self, path.as_ref())
    }
}

/// Writes `value` to `path` as pretty JSON with a final newline.
fn write_pretty<T: Serialize>(value: &T, path: &Path) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|source| ChainError::ConfigJson {
        path: path.display().to_string(),
        source,
    })?;
    std::fs::write(path, text + "\n").map_err(|source| ChainError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| ChainError::Io {
        path: path.display().to_string(),
        source,
    })
}

impl ChainConfig {
    /// Writes it as pretty JSON (the chain file `--chain` reads).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        write_pretty(self, path.as_ref())
    }

    /// Reads a chain configuration: either a `devnet.json` ([`DevnetFile`]) or a flat
    /// [`ChainConfig`] JSON object.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = read(path)?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| ChainError::ConfigJson {
                path: path.display().to_string(),
                source,
            })?;
        let parsed = if value.get("contracts").is_some() {
            serde_json::from_value::<DevnetFile>(value).map(|d| d.chain_config())
        } else {
            serde_json::from_value::<ChainConfig>(value)
        };
        parsed.map_err(|source| ChainError::ConfigJson {
            path: path.display().to_string(),
            source,
        })
    }
}

/// What flags (or a settings file) say about the chain on top of, or instead of, a chain file: the
/// RPC endpoint and contract addresses. `None` leaves the file's value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChainOverrides {
    /// JSON-RPC endpoint (replaces the file's; without a file, required).
    pub rpc_url: Option<String>,
    /// Payment and stake token.
    pub token: Option<Address>,
    /// `NodeRegistry`.
    pub registry: Option<Address>,
    /// `Escrow`.
    pub escrow: Option<Address>,
    /// `InferenceOracle`.
    pub oracle: Option<Address>,
}

impl ChainConfig {
    /// The chain that flags name, resolved the one way every command does it: the chain `file`
    /// (see [`ChainConfig::load`]) if given, else `overrides.rpc_url` with the chain id asked from
    /// the endpoint; then every address (and the RPC URL) in `overrides` replaces the file's.
    /// Contracts named nowhere stay [`Address::ZERO`], which the contract clients refuse with
    /// [`ChainError::MissingContract`].
    ///
    /// `Ok(None)`: neither a file nor an RPC URL was given (the caller is not on chain).
    ///
    /// ```no_run
    /// # async fn f() -> cloister_chain::Result<()> {
    /// use cloister_chain::{ChainConfig, ChainOverrides};
    /// let over = ChainOverrides { rpc_url: Some("http://127.0.0.1:8545".into()), ..Default::default() };
    /// let chain = ChainConfig::resolve(Some("devnet.json".as_ref()), &over).await?;
    /// # Ok(()) }
    /// ```
    pub async fn resolve(file: Option<&Path>, overrides: &ChainOverrides) -> Result<Option<Self>> {
        let mut config = match (file, &overrides.rpc_url) {
            (Some(path), _) => Self::load(path)?,
            (None, Some(rpc_url)) => {
                let chain_id = crate::read_provider(rpc_url)?.get_chain_id().await?;
                Self {
                    rpc_url: rpc_url.clone(),
                    chain_id,
                    token: Address::ZERO,
                    registry: Address::ZERO,
                    escrow: Address::ZERO,
                    oracle: Address::ZERO,
                    consumer: None,
                    deploy_block: 0,
                    network: None,
                    rpc_urls_fallback: Vec::new(),
                    resend: ResendPolicy::default(),
                }
            }
            (None, None) => return Ok(None),
        };
        let ChainOverrides {
            rpc_url,
            token,
            registry,
            escrow,
            oracle,
        } = overrides;
        if let Some(url) = rpc_url {
            config.rpc_url.clone_from(url);
        }
        for (field, value) in [
            (&mut config.token, token),
            (&mut config.registry, registry),
            (&mut config.escrow, escrow),
            (&mut config.oracle, oracle),
        ] {
            if let Some(address) = value {
                *field = *address;
            }
        }
        Ok(Some(config))
    }

    /// [`ChainConfig::resolve`], then `network`'s settings on top: the chain must be the
    /// network's (the file's chain id, or the endpoint's when only an RPC URL was given), else
    /// [`ChainError::WrongChain`]. `network: None` is exactly [`ChainConfig::resolve`].
    ///
    /// ```no_run
    /// # async fn f() -> cloister_chain::Result<()> {
    /// use cloister_chain::{ChainConfig, ChainOverrides, Network};
    /// let over = ChainOverrides { rpc_url: Some("https://mainnet.base.org".into()), ..Default::default() };
    /// let base = Network::resolve("base")?;
    /// let chain = ChainConfig::resolve_on(Some(&base), Some("deployment.json".as_ref()), &over).await?;
    /// # Ok(()) }
    /// ```
    pub async fn resolve_on(
        network: Option<&Network>,
        file: Option<&Path>,
        overrides: &ChainOverrides,
    ) -> Result<Option<Self>> {
        let Some(mut config) = Self::resolve(file, overrides).await? else {
            return Ok(None);
        };
        if let Some(network) = network {
            if config.chain_id != network.chain_id {
                return Err(ChainError::WrongChain {
                    expected: network.chain_id,
                    actual: config.chain_id,
                });
            }
            config.network = Some(network.clone());
        }
        Ok(Some(config))
    }

    /// Where this chain's log scans start and how wide their windows may be: from
    /// [`ChainConfig::deploy_block`], in windows of the network's `max_log_range` (or
    /// [`DEFAULT_MAX_LOG_RANGE`] when no network was named).
    pub fn log_scan_limits(&self) -> LogScanLimits {
        LogScanLimits {
            from_block: self.deploy_block,
            max_range: self
                .network
                .as_ref()
                .map_or(DEFAULT_MAX_LOG_RANGE, |n| n.max_log_range),
        }
    }

    /// Blocks an event must be buried under before it counts as final: the network's
    /// `confirmations`, 0 when no network was named (a local devnet).
    pub fn confirmations(&self) -> u64 {
        self.network.as_ref().map_or(0, |n| n.confirmations)
    }

    /// Every RPC endpoint, in the order they are tried: `rpc_url`, then `rpc_urls_fallback`.
    pub fn rpc_urls(&self) -> Vec<&str> {
        std::iter::once(self.rpc_url.as_str())
            .chain(self.rpc_urls_fallback.iter().map(String::as_str))
            .collect()
    }

    /// The network's EIP-1559 caps; `None` (estimates used as they are) when no network was named.
    pub fn fee_caps(&self) -> Option<FeeCaps> {
        self.network.as_ref().map(crate::Network::fee_caps)
    }

    /// What sending follows on this chain: [`ChainConfig::fee_caps`] and [`ChainConfig::resend`].
    pub fn send_policy(&self) -> SendPolicy {
        SendPolicy {
            caps: self.fee_caps(),
            resend: self.resend,
        }
    }

    /// Refuses a configuration that lacks (has a zero address for) one of the contracts a node
    /// needs: token, registry, escrow, and the oracle when `oracle` is set.
    pub fn require_node_contracts(&self, oracle: bool) -> Result<()> {
        let needed = [
            ("token", self.token, true),
            ("registry", self.registry, true),
            ("escrow", self.escrow, true),
            ("oracle", self.oracle, oracle),
        ];
        match needed.into_iter().find(|(_, a, needed)| *needed && a.is_zero()) {
            Some((name, _, _)) => Err(ChainError::MissingContract(name)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn overrides_replace_the_file_and_nothing_means_off_chain() {
        let dir = std::env::temp_dir().join(format!("cloister-chain-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let path = dir.join("chain.json");
        let file = ChainConfig {
            rpc_url: "http://127.0.0.1:1".into(),
            chain_id: 31337,
            token: Address::repeat_byte(1),
            registry: Address::repeat_byte(2),
            escrow: Address::repeat_byte(3),
            oracle: Address::repeat_byte(4),
            consumer: None,
            deploy_block: 0,
            network: None,
            rpc_urls_fallback: Vec::new(),
            resend: ResendPolicy::default(),
        };
        std::fs::write(&path, serde_json::to_string(&file).unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"));
        let over = ChainOverrides {
            rpc_url: Some("http://127.0.0.1:2".into()),
            escrow: Some(Address::repeat_byte(9)),
            ..ChainOverrides::default()
        };
        let resolved = ChainConfig::resolve(Some(&path), &over)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("a file was given"));
        assert_eq!(resolved.rpc_url, "http://127.0.0.1:2");
        assert_eq!(resolved.escrow, Address::repeat_byte(9));
        assert_eq!(resolved.registry, file.registry);
        assert_eq!(resolved.chain_id, 31337);
        assert!(resolved.require_node_contracts(true).is_ok());
        let none = ChainConfig::resolve(None, &ChainOverrides::default()).await;
        assert!(matches!(none, Ok(None)));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_network_must_match_the_files_chain_and_sets_the_scan_limits() {
        let dir = std::env::temp_dir().join(format!("cloister-chain-network-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let path = dir.join("chain.json");
        let text = r#"{"rpc_url": "http://127.0.0.1:1", "chain_id": 8453, "deploy_block": 1234,
            "token": "0x0101010101010101010101010101010101010101",
            "registry": "0x0202020202020202020202020202020202020202",
            "escrow": "0x0303030303030303030303030303030303030303",
            "oracle": "0x0404040404040404040404040404040404040404"}"#;
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        let none = ChainOverrides::default();
        let plain = ChainConfig::resolve(Some(&path), &none)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("a file was given"));
        assert_eq!(
            plain.log_scan_limits(),
            LogScanLimits {
                from_block: 1234,
                max_range: DEFAULT_MAX_LOG_RANGE
            }
        );
        let base = Network::named("base").unwrap_or_else(|e| panic!("{e}"));
        let on_base = ChainConfig::resolve_on(Some(&base), Some(&path), &none)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("a file was given"));
        assert_eq!(on_base.log_scan_limits().max_range, base.max_log_range);
        assert_eq!(on_base.log_scan_limits().from_block, 1234);
        assert_eq!(on_base.confirmations(), base.confirmations);
        let op = Network::named("op-mainnet").unwrap_or_else(|e| panic!("{e}"));
        let wrong = ChainConfig::resolve_on(Some(&op), Some(&path), &none).await;
        assert!(
            matches!(
                wrong,
                Err(ChainError::WrongChain {
                    expected: 10,
                    actual: 8453
                })
            ),
            "{wrong:?}"
        );
        // The resolved configuration round-trips through its own JSON, network included.
        let json = serde_json::to_string(&on_base).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&path, json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ChainConfig::load(&path).ok(), Some(on_base));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn fallback_urls_and_resend_are_optional_and_round_trip() {
        let old = r#"{"rpc_url": "http://127.0.0.1:1", "chain_id": 1,
            "token": "0x0101010101010101010101010101010101010101",
            "registry": "0x0202020202020202020202020202020202020202",
            "escrow": "0x0303030303030303030303030303030303030303",
            "oracle": "0x0404040404040404040404040404040404040404"}"#;
        let mut config: ChainConfig = serde_json::from_str(old).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.rpc_urls(), vec!["http://127.0.0.1:1"]);
        assert_eq!(config.resend, ResendPolicy::default());
        assert_eq!(config.fee_caps(), None);
        let json = serde_json::to_string(&config).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !json.contains("rpc_urls_fallback") && !json.contains("resend"),
            "{json}"
        );
        config.rpc_urls_fallback = vec!["http://127.0.0.1:2".into()];
        config.resend.after_secs = 7;
        let json = serde_json::to_string(&config).unwrap_or_else(|e| panic!("{e}"));
        let back: ChainConfig = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.rpc_urls(), vec!["http://127.0.0.1:1", "http://127.0.0.1:2"]);
        assert_eq!(back.resend.after_secs, 7);
        let partial: ResendPolicy =
            serde_json::from_str(r#"{"after_secs": 9}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(partial.max_replacements, ResendPolicy::default().max_replacements);
        let base = Network::named("base").unwrap_or_else(|e| panic!("{e}"));
        config.network = Some(base.clone());
        assert_eq!(
            config.send_policy().caps.map(|c| c.max_fee_per_gas),
            Some(u128::from(base.max_fee_per_gas_wei))
        );
    }

    #[test]
    fn a_node_needs_its_contracts() {
        let config = ChainConfig {
            rpc_url: String::new(),
            chain_id: 1,
            token: Address::repeat_byte(1),
            registry: Address::repeat_byte(2),
            escrow: Address::repeat_byte(3),
            oracle: Address::ZERO,
            consumer: None,
            deploy_block: 0,
            network: None,
            rpc_urls_fallback: Vec::new(),
            resend: ResendPolicy::default(),
        };
        assert!(config.require_node_contracts(false).is_ok());
        assert!(matches!(
            config.require_node_contracts(true),
            Err(ChainError::MissingContract("oracle"))
        ));
    }
}
