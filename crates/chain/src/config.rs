use std::path::Path;

use alloy::primitives::Address;
use serde::{Deserialize, Serialize};

use crate::error::{ChainError, Result};

/// Where the chain is and where the contracts live.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainConfig {
    /// JSON-RPC endpoint.
    pub rpc_url: String,
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
        let path = path.as_ref();
        let text = serde_json::to_string_pretty(self).map_err(|source| ChainError::ConfigJson {
            path: path.display().to_string(),
            source,
        })?;
        std::fs::write(path, text + "\n").map_err(|source| ChainError::Io {
            path: path.display().to_string(),
            source,
        })
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| ChainError::Io {
        path: path.display().to_string(),
        source,
    })
}

impl ChainConfig {
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
