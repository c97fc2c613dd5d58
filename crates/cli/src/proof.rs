//! The CLI side of proof checking shared by `attest verify`, `chat`, `demo` and `proxy`: the
//! verification flags, turned into a [`cloister_client::Policy`]. The checking itself, the
//! measurement allowlist and NRAS included, lives in `cloister-client`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use cloister_client::{CollateralFile, CollateralSource, E2eeMode, MeasurementAllowlist, NrasPolicy};
use cloister_types::Nonce;

pub(crate) use cloister_client::node_base;

/// A verified (or refused) attestation report.
pub(crate) type NodeProof = cloister_client::ReportProof;

/// The node-acceptance flags `proxy` and `gateway` share.
#[derive(Debug, Clone, Args)]
pub(crate) struct PolicyArgs {
    /// File of allowed measurement digests (one hex digest per line, `#` comments) [default: any
    /// measurement whose quote verifies, or with --chain the ones governance allows there].
    #[arg(long)]
    pub allowed_measurements: Option<PathBuf>,
    /// TCB statuses to accept (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "UpToDate")]
    pub accept_tcb: Vec<String>,
    /// DEVELOPMENT ONLY: accept nodes with a SIMULATED TEE (no hardware protects them at all).
    #[arg(long)]
    pub allow_simulated: bool,
    /// Collateral JSON file(s) instead of fetching from a PCCS.
    #[arg(long)]
    pub collateral: Vec<PathBuf>,
    /// PCCS or Intel PCS base URL for collateral.
    #[arg(long, default_value = cloister_attest::collateral::PHALA_PCCS_URL)]
    pub pccs: String,
}

impl PolicyArgs {
    /// The verification options these flags give (the rest as `VerifyOpts::dev_simulated`, whose
    /// `allow_simulated` these flags replace).
    pub(crate) fn verify_opts(&self) -> VerifyOpts {
        VerifyOpts {
            collateral: self.collateral.clone(),
            pccs: self.pccs.clone(),
            accept_tcb: self.accept_tcb.clone(),
            allow_simulated: self.allow_simulated,
            allowed_measurements: self.allowed_measurements.clone(),
            ..VerifyOpts::dev_simulated()
        }
    }
}

/// Flags that say how to verify a node.
#[derive(Debug, Clone, Args)]
pub(crate) struct VerifyOpts {
    /// Collateral JSON file (dcap-qvl QuoteCollateralV3) instead of fetching from a PCCS. Repeat
    /// it for reports from several platforms: each quote gets the file whose TCB info FMSPC is the
    /// quote's. Without it, collateral comes from the on-disk cache or the PCCS (and is cached).
    #[arg(long)]
    pub collateral: Vec<PathBuf>,
    /// PCCS or Intel PCS base URL for collateral.
    #[arg(long, default_value = cloister_attest::collateral::PHALA_PCCS_URL)]
    pub pccs: String,
    /// Verification time (unix seconds) [default: now].
    #[arg(long)]
    pub at: Option<u64>,
    /// TCB statuses to accept (comma-separated) [default: UpToDate].
    #[arg(long, value_delimiter = ',', default_value = "UpToDate")]
    pub accept_tcb: Vec<String>,
    /// DEVELOPMENT ONLY: accept a simulated TEE (no hardware root of trust at all).
    #[arg(long)]
    pub allow_simulated: bool,
    /// File of allowed measurement digests (one hex digest per line, `#` comments; docs/protocol.md
    /// §7) [default: any measurement whose quote verifies].
    #[arg(long)]
    pub allowed_measurements: Option<PathBuf>,
    /// Nonce to send (64 hex) [default: 32 fresh random bytes].
    #[arg(long)]
    pub nonce: Option<String>,
    /// Also send each report's GPU evidence to NVIDIA's attestation service (NRAS, online) and check
    /// its signed answer: ES384 JWTs against NVIDIA's key set, overall result, nonce, per-GPU result.
    #[arg(long)]
    pub nras: bool,
    /// NRAS GPU attestation endpoint.
    #[arg(long, default_value = cloister_attest::nras::NRAS_GPU_URL)]
    pub nras_url: String,
    /// NRAS key set (JWKS) URL.
    #[arg(long, default_value = cloister_attest::nras::NRAS_JWKS_URL)]
    pub nras_jwks_url: String,
}

impl VerifyOpts {
    /// Verification of a local simulated node (the demo): no collateral, simulated evidence allowed.
    pub(crate) fn dev_simulated() -> Self {
        Self {
            collateral: Vec::new(),
            pccs: cloister_attest::collateral::PHALA_PCCS_URL.to_owned(),
            at: None,
            accept_tcb: vec!["UpToDate".into()],
            allow_simulated: true,
            allowed_measurements: None,
            nonce: None,
            nras: false,
            nras_url: cloister_attest::nras::NRAS_GPU_URL.to_owned(),
            nras_jwks_url: cloister_attest::nras::NRAS_JWKS_URL.to_owned(),
        }
    }

    /// The client policy these flags describe.
    pub(crate) fn client_policy(&self, e2ee: E2eeMode) -> anyhow::Result<cloister_client::Policy> {
        let collateral = if self.collateral.is_empty() {
            CollateralSource::Pccs {
                url: self.pccs.clone(),
            }
        } else {
            CollateralSource::Files(
                self.collateral
                    .iter()
                    .map(|p| CollateralFile::load(p))
                    .collect::<Result<_, _>>()?,
            )
        };
        let allowed_measurements = match &self.allowed_measurements {
            Some(path) => MeasurementAllowlist::load(path)?,
            None => MeasurementAllowlist::any(),
        };
        Ok(cloister_client::Policy {
            allowed_measurements,
            quote: cloister_attest::verify::Policy {
                accepted_tcb_statuses: self.accept_tcb.clone(),
                allow_simulated: self.allow_simulated,
                ..cloister_attest::verify::Policy::default()
            },
            verdict_ttl: Duration::from_secs(300),
            collateral,
            e2ee,
            verify_at: self.at,
            nras: self.nras.then(|| NrasPolicy {
                url: self.nras_url.clone(),
                jwks_url: self.nras_jwks_url.clone(),
            }),
            dev_fixed_nonce: None,
        })
    }

    pub(crate) fn nonce(&self) -> anyhow::Result<Nonce> {
        match &self.nonce {
            Some(n) => n.parse().context("--nonce must be 64 hex digits"),
            None => Ok(Nonce(rand::random())),
        }
    }
}

pub(crate) fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(cloister_client::default_http_client()?)
}

/// Fetches the attestation answer at `url` with a nonce (`--nonce`, else fresh) and verifies
/// every report in it under the policy of `opts` (NRAS and the measurement allowlist included
/// when given). `model` is sent as the `model` query parameter.
pub(crate) async fn verify_endpoint(
    client: &reqwest::Client,
    url: &str,
    opts: &VerifyOpts,
    model: Option<&str>,
) -> anyhow::Result<Vec<NodeProof>> {
    let policy = opts.client_policy(E2eeMode::Off)?;
    let nonce = opts.nonce()?;
    Ok(cloister_client::report::verify_endpoint(client, url, &policy, nonce, model).await?)
}

/// A [`cloister_client::NodeClient`] for `url` under `opts`, sharing `http`.
pub(crate) fn node_client(
    http: &reqwest::Client,
    url: &str,
    opts: &VerifyOpts,
    e2ee: E2eeMode,
) -> anyhow::Result<cloister_client::NodeClient> {
    Ok(cloister_client::NodeClient::with_http(
        url,
        Arc::new(opts.client_policy(e2ee)?),
        http.clone(),
    ))
}
