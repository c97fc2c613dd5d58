//! `cloister deploy` on real anvil running with Base Sepolia's chain id: the production contracts
//! are deployed and the chain file it writes is what `nodes list --chain` (like `node run`, `proxy`
//! and the escrow/key commands) reads; the wrong network is refused.

use cloister_chain::alloy::providers::Provider as _;
use cloister_chain::bindings::DevToken;
use cloister_chain::devnet::{DEV_KEYS, Devnet, DevnetOptions, dev_signer};
use cloister_chain::{ChainConfig, wallet_provider};

use crate::cloister;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_writes_a_chain_file_the_other_commands_read() {
    if !crate::anvil_available() {
        return;
    }
    let dn = Devnet::spawn(DevnetOptions::default()).await.unwrap();
    let gov = dev_signer("governance").unwrap();
    let p = wallet_provider(dn.rpc_url(), gov).unwrap();
    // The stand-in payment token mints only on a local chain id; then the chain becomes Base
    // Sepolia's.
    let token = *DevToken::deploy(&p).await.unwrap().address();
    let _: serde_json::Value = p
        .raw_request("anvil_setChainId".into(), (84_532u64,))
        .await
        .unwrap();
    let key = DEV_KEYS.iter().find(|(r, _)| *r == "governance").unwrap().1;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("base-sepolia.json");
    let rpc = dn.rpc_url().to_owned();
    let token_hex = format!("{token:#x}");

    let run = |network: &'static str, out: std::path::PathBuf| {
        let (rpc, token_hex) = (rpc.clone(), token_hex.clone());
        tokio::task::spawn_blocking(move || {
            cloister()
                .args([
                    "deploy",
                    "--network",
                    network,
                    "--rpc-url",
                    &rpc,
                    "--token",
                    &token_hex,
                ])
                .arg("--out")
                .arg(out)
                .env("CLOISTER_PRIVATE_KEY", key)
                .output()
                .unwrap()
        })
    };
    let out = run("base-sepolia", file.clone()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("AutomataDcapAdapter"), "{stdout}");
    let config = ChainConfig::load(&file).unwrap();
    assert_eq!(config.chain_id, 84_532);
    assert_eq!(
        config.network.as_ref().map(|n| n.name.as_str()),
        Some("base-sepolia")
    );

    let list = tokio::task::spawn_blocking({
        let file = file.clone();
        move || {
            cloister()
                .args(["nodes", "list", "--json", "--chain"])
                .arg(file)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(list.status.success(), "{}", String::from_utf8_lossy(&list.stderr));
    let nodes: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(nodes.as_array().map(Vec::len), Some(0), "{nodes}");

    // The endpoint is Base Sepolia: deploying "base" there is refused and writes nothing.
    let wrong = dir.path().join("base.json");
    let out = run("base", wrong.clone()).await.unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("8453") && err.contains("84532"), "{err}");
    assert!(!wrong.exists());
}
