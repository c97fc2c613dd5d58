//! A paid network on a devnet for the subprocess tests: anvil with the contracts, paid nodes of
//! several operators (`cloister node run --chain` in upstream mode over the echo upstream test
//! double), and gateways.

use std::path::PathBuf;

use cloister_chain::alloy::primitives::B256;
use cloister_chain::devnet::{self, DeployParams, Devnet, DevnetOptions, TOKEN};
use cloister_chain::{Chain, DevnetFile, parse_private_key};
use cloister_types::eip712::{ApiKey, Domain, SpendAuthorization, authorization_id, escrow_domain};

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

    /// The `cloister node run` flags that make a node paid: registered on this chain by dev account
    /// `role` (its operator key), metering into `dir/ROLE.sqlite`, charging `price` (`IN:OUT`) for
    /// `model`.
    pub(crate) fn node_flags(
        &self,
        dir: &tempfile::TempDir,
        role: &str,
        model: &str,
        price: &str,
    ) -> Vec<String> {
        let ledger = dir.path().join(format!("{role}.sqlite"));
        vec![
            "--chain".into(),
            self.chain_arg().into(),
            "--operator-key".into(),
            self.key(role),
            "--ledger".into(),
            ledger.to_str().unwrap().into(),
            "--price".into(),
            format!("{model}={price}"),
        ]
    }

    /// A paid node over the echo upstream test double, registered by dev account `role` at `price`
    /// (`IN:OUT`), with `extra` flags and `env`; ready (registered) when this returns.
    pub(crate) async fn node(
        &self,
        dir: &tempfile::TempDir,
        role: &str,
        price: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> (Proc, String) {
        let flags = self.node_flags(dir, role, MODEL, price);
        let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
        args.extend_from_slice(extra);
        start_echo_node(&args, env, dir.path().join(format!("node-{role}.log"))).await
    }

    /// The escrow's EIP-712 domain on this devnet.
    pub(crate) fn escrow_domain(&self) -> Domain {
        escrow_domain(self.file.chain_id, self.file.contracts.escrow)
    }

    /// An API key: a spend authorization of up to one token from dev account `client_role` to the
    /// operator `operator_role`, signed by the client (who must still [`Self::deposit`] for it to
    /// pay).
    pub(crate) fn api_key(&self, client_role: &str, operator_role: &str) -> String {
        let secret = hex::decode(self.key(client_role).trim_start_matches("0x")).unwrap();
        let signer = cloister_crypto::EnclaveKey::from_secret_bytes(&secret).unwrap();
        let auth = SpendAuthorization {
            client: signer.address(),
            node: self.file.account(operator_role).unwrap().address,
            maxAmount: TOKEN,
            expiry: 4_000_000_000,
            salt: B256::repeat_byte(3),
        };
        let id = authorization_id(&self.escrow_domain(), &auth);
        ApiKey::new(auth, signer.sign_prehash(&id.0)).encode()
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
