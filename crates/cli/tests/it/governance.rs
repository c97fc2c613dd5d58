//! `cloister governance` on a devnet deployed with a 60 s measurement delay: `list` shows the
//! announced simulated measurement with its eta, `execute` before the eta is refused by name,
//! `announce` and `cancel` work for the owner, and after the delay the operator executes it;
//! `nodes list` shows the pending changes after its table.

use cloister_chain::alloy::primitives::B256;
use cloister_chain::devnet::{self, DeployParams, Devnet, DevnetOptions};

use crate::cloister;

fn run(args: &[&str]) -> (bool, String, String) {
    let out = cloister().args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn governance_announce_list_execute_cancel() {
    if !crate::anvil_available() {
        return;
    }
    let dn = Devnet::spawn(DevnetOptions::default()).await.unwrap();
    let params = DeployParams {
        measurement_delay: 60,
        ..DeployParams::default()
    };
    let file = devnet::deploy_devnet(dn.rpc_url(), &params).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("devnet.json");
    file.save(&path).unwrap();
    let chain = path.to_str().unwrap().to_owned();
    let simulated = format!("{:#x}", devnet::simulated_measurement().unwrap());
    let other = format!("{:#x}", B256::repeat_byte(0x42));

    let chain2 = chain.clone();
    let (sim2, other2) = (simulated.clone(), other.clone());
    tokio::task::spawn_blocking(move || {
        let (chain, simulated, other) = (chain2.as_str(), sim2.as_str(), other2.as_str());
        let (ok, out, err) = run(&["governance", "list", "--chain", chain]);
        assert!(ok, "{err}");
        assert!(out.contains("measurement delay 60s"), "{out}");
        assert!(out.contains("allowed measurements (0)"), "{out}");
        let row = out.lines().find(|l| l.contains(simulated)).unwrap_or_default();
        assert!(row.contains("allow") && !row.contains("executable now"), "{out}");

        let (ok, _, err) = run(&[
            "governance",
            "execute",
            simulated,
            "--chain",
            chain,
            "--dev-account",
            "operator",
        ]);
        assert!(!ok && err.contains("TooEarly"), "{err}");
        let (ok, _, err) = run(&[
            "governance",
            "announce",
            other,
            "--disallow",
            "--chain",
            chain,
            "--dev-account",
            "operator",
        ]);
        assert!(!ok && err.contains("OwnableUnauthorizedAccount"), "{err}");
        let (ok, out, err) = run(&[
            "governance",
            "announce",
            other,
            "--disallow",
            "--chain",
            chain,
            "--dev-account",
            "governance",
        ]);
        assert!(ok, "{err}");
        assert!(out.contains("pending measurement changes (2)"), "{out}");
        let (ok, out, err) = run(&["nodes", "list", "--chain", chain]);
        assert!(ok, "{err}");
        assert!(out.contains("pending measurement changes (2)"), "{out}");
        assert!(
            out.lines().any(|l| l.contains(other) && l.contains("disallow")),
            "{out}"
        );
        let (ok, _, err) = run(&[
            "governance",
            "cancel",
            other,
            "--chain",
            chain,
            "--dev-account",
            "governance",
        ]);
        assert!(ok, "{err}");
        let (ok, out, _) = run(&["governance", "list", "--chain", chain, "--json"]);
        assert!(ok);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["measurement_delay"], 60);
        assert_eq!(v["pending"].as_array().unwrap().len(), 1, "{v}");
        assert_eq!(v["pending"][0]["measurement"], simulated, "{v}");
    })
    .await
    .unwrap();

    let provider = cloister_chain::read_provider(dn.rpc_url()).unwrap();
    devnet::increase_time(&provider, 61).await.unwrap();

    tokio::task::spawn_blocking(move || {
        let (ok, out, err) = run(&[
            "governance",
            "execute",
            &simulated,
            "--chain",
            &chain,
            "--dev-account",
            "operator",
        ]);
        assert!(ok, "{err}");
        assert!(out.contains(&format!("{simulated} is now allowed")), "{out}");
        let (ok, out, err) = run(&["governance", "list", "--chain", &chain]);
        assert!(ok, "{err}");
        assert!(out.contains("allowed measurements (1)"), "{out}");
        assert!(out.contains("no pending measurement changes"), "{out}");
        let (ok, _, err) = run(&[
            "governance",
            "cancel",
            &other,
            "--chain",
            &chain,
            "--dev-account",
            "governance",
        ]);
        assert!(!ok && err.contains("NoPendingChange"), "{err}");
    })
    .await
    .unwrap();
}
