//! Named networks: every shipped file in `networks/` loads, names its own chain id, and equals
//! the copy compiled into the library; the template is refused until filled in; and
//! `ChainConfig::resolve_on` accepts an anvil whose chain id is set to the network's, and refuses
//! one that is not.

use std::path::PathBuf;

use cloister_chain::devnet::{Devnet, DevnetOptions};
use cloister_chain::{ChainConfig, ChainError, ChainOverrides, Network, SHIPPED_NETWORKS};

/// The chain ids each network's own documentation gives.
const EXPECTED: [(&str, u64); 4] = [
    ("base", 8453),
    ("base-sepolia", 84532),
    ("op-mainnet", 10),
    ("op-sepolia", 11_155_420),
];

fn networks_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../networks")
}

#[test]
fn every_shipped_network_file_loads_and_names_its_chain_id() {
    let mut on_disk = Vec::new();
    for entry in std::fs::read_dir(networks_dir()).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_str().unwrap().to_owned();
        if path.extension().is_none_or(|e| e != "toml") || stem == "template" {
            continue;
        }
        let loaded = Network::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(loaded.name, stem, "{}", path.display());
        let expected = EXPECTED
            .iter()
            .find(|(n, _)| *n == stem)
            .unwrap_or_else(|| panic!("{stem}: add its chain id to EXPECTED"))
            .1;
        assert_eq!(loaded.chain_id, expected, "{stem}");
        assert_eq!(
            Network::named(&stem).unwrap(),
            loaded,
            "the compiled-in copy of {stem}"
        );
        assert_eq!(Network::resolve(&stem).unwrap(), loaded);
        assert!(loaded.confirmations > 0 && loaded.max_log_range > 0, "{stem}");
        on_disk.push(stem);
    }
    on_disk.sort();
    let mut shipped: Vec<_> = SHIPPED_NETWORKS.iter().map(|(n, _)| n.to_string()).collect();
    shipped.sort();
    assert_eq!(
        on_disk, shipped,
        "networks/ and SHIPPED_NETWORKS list the same networks"
    );
    assert!(matches!(
        Network::resolve("no-such-network"),
        Err(ChainError::UnknownNetwork { .. })
    ));
}

#[test]
fn the_template_is_refused_until_filled_in() {
    let path = networks_dir().join("template.toml");
    let err = Network::load(&path).unwrap_err();
    assert!(
        matches!(&err, ChainError::NetworkFile { reason, .. } if reason.contains("chain_id is 0")),
        "{err}"
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let filled = text
        .replace("chain_id = 0", "chain_id = 424242")
        .replace("name = \"template\"", "name = \"my-l2\"");
    let dir = tempdir();
    let mine = dir.join("my-l2.toml");
    std::fs::write(&mine, filled).unwrap();
    let network = Network::resolve(mine.to_str().unwrap()).unwrap();
    assert_eq!((network.name.as_str(), network.chain_id), ("my-l2", 424_242));
    assert_eq!(
        network.automata_dcap_verifier, None,
        "the template names no verifier"
    );
    let _ = std::fs::remove_dir_all(dir);
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "cloister-networks-{}-{}",
        std::process::id(),
        cloister_types::unix_now()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn resolve_on_takes_an_anvil_with_each_networks_chain_id() {
    if !crate::anvil_available() {
        return;
    }
    for (name, chain_id) in EXPECTED {
        let network = Network::named(name).unwrap();
        let dn = Devnet::spawn(DevnetOptions {
            chain_id: Some(chain_id),
            ..DevnetOptions::default()
        })
        .await
        .unwrap();
        let over = ChainOverrides {
            rpc_url: Some(dn.rpc_url().to_owned()),
            ..ChainOverrides::default()
        };
        let config = ChainConfig::resolve_on(Some(&network), None, &over)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(config.chain_id, chain_id);
        assert_eq!(config.log_scan_limits().max_range, network.max_log_range);
        assert_eq!(config.confirmations(), network.confirmations);
        assert_eq!(config.network.as_ref(), Some(&network));

        // Any other network is refused against this endpoint.
        let other = EXPECTED.iter().find(|(n, _)| *n != name).unwrap().0;
        let err = ChainConfig::resolve_on(Some(&Network::named(other).unwrap()), None, &over)
            .await
            .unwrap_err();
        assert!(
            matches!(err, ChainError::WrongChain { actual, .. } if actual == chain_id),
            "{err}"
        );
        // Without a network nothing changes from resolve: no limits beyond the default.
        let plain: ChainConfig = ChainConfig::resolve(None, &over).await.unwrap().unwrap();
        assert_eq!(plain.network, None);
        assert_eq!(plain.confirmations(), 0);
    }
}
