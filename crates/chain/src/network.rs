//! Named networks as configuration: one TOML file per network in the repository's `networks/`
//! folder (chain id, confirmations, the widest `eth_getLogs` window, EIP-1559 fee caps, Automata's
//! DCAP verifier where it is deployed), shipped inside the library so that `--network base` works
//! from any directory. A network the files do not cover is a copy of `networks/template.toml`,
//! loaded by path. Field meanings: `docs/networks.md`.
//!
//! ```
//! use cloister_chain::Network;
//! let base = Network::named("base")?;
//! assert_eq!(base.chain_id, 8453);
//! assert!(Network::named("nowhere").is_err());
//! # Ok::<(), cloister_chain::ChainError>(())
//! ```

use std::path::Path;

use alloy::primitives::Address;
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{ChainError, Result};

/// The network files shipped with Cloister: `(name, TOML text)`.
pub const SHIPPED_NETWORKS: [(&str, &str); 4] = [
    ("base", include_str!("../../../networks/base.toml")),
    (
        "base-sepolia",
        include_str!("../../../networks/base-sepolia.toml"),
    ),
    ("op-mainnet", include_str!("../../../networks/op-mainnet.toml")),
    ("op-sepolia", include_str!("../../../networks/op-sepolia.toml")),
];

/// One network's settings, as its `networks/<name>.toml` file gives them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// The network's name (the file's stem for shipped files).
    pub name: String,
    /// The chain id its RPC endpoints must report.
    pub chain_id: u64,
    /// Blocks a registration or settlement must be buried under before it counts as final.
    pub confirmations: u64,
    /// The widest `eth_getLogs` window (in blocks) a scan asks for.
    pub max_log_range: u64,
    /// EIP-1559 cap: the most wei per gas any transaction offers.
    pub max_fee_per_gas_wei: u64,
    /// EIP-1559 cap: the most wei per gas any transaction tips.
    pub max_priority_fee_per_gas_wei: u64,
    /// Automata's on-chain DCAP verifier (`AutomataDcapAttestationFee`), where one is known to be
    /// deployed; the file's empty string is `None`.
    #[serde(
        deserialize_with = "address_or_empty",
        serialize_with = "address_or_empty_out"
    )]
    pub automata_dcap_verifier: Option<Address>,
}

impl Network {
    /// The network's EIP-1559 caps (`max_fee_per_gas_wei`, `max_priority_fee_per_gas_wei`).
    pub fn fee_caps(&self) -> crate::FeeCaps {
        crate::FeeCaps {
            max_fee_per_gas: u128::from(self.max_fee_per_gas_wei),
            max_priority_fee_per_gas: u128::from(self.max_priority_fee_per_gas_wei),
        }
    }

    /// A shipped network by name (`base`, `base-sepolia`, `op-mainnet`, `op-sepolia`).
    pub fn named(name: &str) -> Result<Self> {
        let (_, text) =
            SHIPPED_NETWORKS
                .iter()
                .find(|(n, _)| *n == name)
                .ok_or_else(|| ChainError::UnknownNetwork {
                    name: name.to_owned(),
                    known: SHIPPED_NETWORKS
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
        Self::parse(text, &format!("networks/{name}.toml"))
    }

    /// A network file at `path` (a filled-in copy of `networks/template.toml`).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ChainError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// What `--network` names: a shipped network's name, or else the path of a network file.
    pub fn resolve(name_or_path: &str) -> Result<Self> {
        if SHIPPED_NETWORKS.iter().any(|(n, _)| *n == name_or_path) {
            return Self::named(name_or_path);
        }
        let path = Path::new(name_or_path);
        if path.extension().is_some_and(|e| e == "toml") || path.exists() {
            return Self::load(path);
        }
        Self::named(name_or_path)
    }

    /// Parses and checks a network file's text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let network: Self = toml::from_str(text).map_err(|e| ChainError::NetworkFile {
            path: origin.to_owned(),
            reason: e.to_string(),
        })?;
        network.check().map_err(|reason| ChainError::NetworkFile {
            path: origin.to_owned(),
            reason: reason.to_owned(),
        })?;
        Ok(network)
    }

    fn check(&self) -> std::result::Result<(), &'static str> {
        if self.name.trim().is_empty() {
            return Err("name is empty");
        }
        if self.chain_id == 0 {
            return Err("chain_id is 0: fill in the chain id the network's RPC reports");
        }
        if self.max_log_range == 0 {
            return Err("max_log_range is 0: a log scan must read at least one block per call");
        }
        if self.max_fee_per_gas_wei == 0 {
            return Err("max_fee_per_gas_wei is 0: no transaction could be sent");
        }
        if self.max_priority_fee_per_gas_wei > self.max_fee_per_gas_wei {
            return Err("max_priority_fee_per_gas_wei exceeds max_fee_per_gas_wei");
        }
        Ok(())
    }
}

/// `""` is no address; anything else must parse as one.
fn address_or_empty<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<Address>, D::Error> {
    let text = String::deserialize(d)?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    text.trim()
        .parse::<Address>()
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("automata_dcap_verifier: {e}")))
}

fn address_or_empty_out<S: serde::Serializer>(
    a: &Option<Address>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match a {
        Some(a) => s.serialize_str(&a.to_checksum(None)),
        None => s.serialize_str(""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        name = "x"
        chain_id = 5
        confirmations = 1
        max_log_range = 10
        max_fee_per_gas_wei = 100
        max_priority_fee_per_gas_wei = 1
        automata_dcap_verifier = ""
    "#;

    #[test]
    fn every_shipped_network_parses() {
        for (name, _) in SHIPPED_NETWORKS {
            let n = Network::named(name).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(n.name, name);
        }
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let n = Network::parse(GOOD, "good").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n.automata_dcap_verifier, None);
        for (bad, why) in [
            (GOOD.replace("chain_id = 5", "chain_id = 0"), "chain_id is 0"),
            (
                GOOD.replace("max_log_range = 10", "max_log_range = 0"),
                "max_log_range",
            ),
            (
                GOOD.replace("= 1\n        automata", "= 101\n        automata"),
                "exceeds",
            ),
            (format!("{GOOD}\nextra = 1"), "unknown field"),
            (GOOD.replace("\"\"", "\"0x12\""), "automata_dcap_verifier"),
            (GOOD.replace("confirmations = 1", ""), "missing field"),
        ] {
            let err = match Network::parse(&bad, "bad.toml") {
                Ok(n) => panic!("{why}: accepted {n:?}"),
                Err(e) => e.to_string(),
            };
            assert!(err.contains("bad.toml") && err.contains(why), "{why}: {err}");
        }
    }

    #[test]
    fn a_file_round_trips_through_json() {
        let n = Network::named("base").unwrap_or_else(|e| panic!("{e}"));
        let json = serde_json::to_string(&n).unwrap_or_else(|e| panic!("{e}"));
        let back: Network = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, n);
    }
}
