//! A paid network on a devnet for the subprocess tests: anvil with the contracts, paid nodes of
//! several operators (`cloister node run --chain` in upstream mode over the echo upstream test
//! double), and gateways.

use std::path::PathBuf;

use cloister_chain::devnet::{self, DeployParams, Devnet, DevnetOptions, TOKEN};
use cloister_chain::{Chain, DevnetFile, parse_private_key};

use crate::proxy::stack::{MODEL, Proc, free_port, start_echo_node, wait_ready};

/// anvil with the contracts deployed, and the `devnet.json` the commands read.
pub(crate) struct PaidNet {
    /// The running anvil (stopped on drop).
    pub(crate) _anvil: Devnet,
    /// What was deployed, and the dev accounts.
    pub(crate) file: DevnetFile,
    /// The saved `devnet.json`.
    pub(crate) json: PathBuf,
}

impl PaidNet {
    /// Starts it in `dir`; `None` (after saying why) without anvil.
    pub(crate) async fn start(dir: &tempfile::TempDir) -> Option<Self> {
        if !crate::anvil_available() {
            return None;
        }
        let anvil = Devnet::spawn(DevnetOptions::default()).await.unwrap();
        let file = devnet::deploy_devnet(anvil.rpc_url(), &DeployParams::default())
            .await
            .unwrap();
        let json = dir.path().join("devnet.json");
        file.save(&json).unwrap();
        Some(Self {
            _anvil: anvil,
            file,
            json,
        })
    }

    /// The `--chain` argument.
    pub(crate) fn chain_arg(&self) -> &str {
        self.json.to_str().unwrap()
    }

    /// The private key of dev account `role`.
    pub(crate) fn key(&self, role: &str) -> String {
        self.file.account(role).unwrap().private_key.clone()
    }

    /// A chain client signing as dev account `role`.
    pub(crate) async fn chain(&self, role: &str) -> Chain {
        Chain::connect(
            self.file.chain_config(),
            Some(parse_private_key(&self.key(role)).unwrap()),
        )
        .await
        .unwrap()
    }

    /// Dev account `role` deposits one token into the escrow.
    pub(crate) async fn deposit(&self, role: &str) {
        self.chain(role)
            .await
            .escrow()
            .unwrap()
            .deposit(TOKEN)
            .await
            .unwrap();
    }

    /// A paid node registered by dev account `role` at `price` (`IN:OUT`), with `extra` flags and
    /// `env`; ready (registered) when this returns.
    pub(crate) async fn node(
        &self,
        dir: &tempfile::TempDir,
        role: &str,
        price: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> (Proc, String) {
        let ledger = dir.path().join(format!("{role}.sqlite"));
        let key = self.key(role);
        let price = format!("{MODEL}={price}");
        let mut args = vec![
            "--chain",
            self.chain_arg(),
            "--operator-key",
            &key,
            "--ledger",
            ledger.to_str().unwrap(),
            "--price",
            &price,
        ];
        args.extend_from_slice(extra);
        start_echo_node(&args, env, dir.path().join(format!("node-{role}.log"))).await
    }

    /// `cloister gateway` over this chain (simulated TEEs allowed, its own report simulated,
    /// refreshing every 2 s), logging to `dir/NAME.log`.
    pub(crate) async fn gateway(&self, dir: &tempfile::TempDir, name: &str) -> (Proc, String) {
        let listen = format!("127.0.0.1:{}", free_port());
        let url = format!("http://{listen}");
        let mut gw = Proc::spawn(
            &[
                "gateway",
                "--listen",
                &listen,
                "--chain",
                self.chain_arg(),
                "--allow-simulated",
                "--dev-simulated-tee",
                "--refresh-secs",
                "2",
            ],
            dir.path().join(format!("{name}.log")),
        );
        wait_ready(&url, &mut gw).await;
        (gw, url)
    }
}
