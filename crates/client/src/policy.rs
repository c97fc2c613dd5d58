//! What a client accepts: measurements, TCB statuses, simulated evidence, GPU evidence checked by
//! NVIDIA (NRAS), how long a verdict lasts, where collateral comes from. The allowlist and NRAS
//! are applied as checks of the verdict by [`crate::report::verify_endpoint`].

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cloister_types::Nonce;
use dcap_qvl::QuoteCollateralV3;
use serde::Deserialize;

use crate::{Error, Result};

/// Whether requests are sealed to the node's attested E2EE key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum E2eeMode {
    /// Seal every request; refuse a node without a valid key binding.
    #[default]
    Required,
    /// Seal when the node offers a valid key binding, else send in the clear (still verified and
    /// signature-checked).
    Preferred,
    /// Never seal (the node still has to be attested and the answer signed).
    Off,
}

/// Measurement digests (docs/protocol.md §7) a client accepts; empty means any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MeasurementAllowlist(BTreeSet<String>);

impl MeasurementAllowlist {
    /// Accepts any measurement.
    pub fn any() -> Self {
        Self::default()
    }

    /// Exactly these digests (hex, any case, optional `0x`).
    pub fn of<I, S>(digests: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self(
            digests
                .into_iter()
                .map(|d| normalise_digest(d.as_ref()))
                .collect(),
        )
    }

    /// Parses a file: one hex digest per line, `#` starts a comment, blank lines ignored.
    pub fn parse(text: &str) -> Result<Self> {
        let mut out = BTreeSet::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let digest = normalise_digest(line);
            if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::Config(format!(
                    "line {}: {line:?} is not a 32-byte hex measurement digest",
                    n + 1
                )));
            }
            out.insert(digest);
        }
        if out.is_empty() {
            return Err(Error::Config(
                "the allowed-measurements file lists no digest (it would refuse every node)".into(),
            ));
        }
        Ok(Self(out))
    }

    /// Reads and parses an allowlist file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("reading {}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// Whether every measurement is accepted.
    pub fn is_any(&self) -> bool {
        self.0.is_empty()
    }

    /// The allowed digests (lowercase hex); empty for [`MeasurementAllowlist::any`].
    pub fn digests(&self) -> Vec<String> {
        self.0.iter().cloned().collect()
    }

    /// Whether `digest` is allowed.
    pub fn allows(&self, digest: Option<&str>) -> bool {
        self.is_any() || digest.is_some_and(|d| self.0.contains(&normalise_digest(d)))
    }
}

fn normalise_digest(d: &str) -> String {
    let d = d.trim();
    d.strip_prefix("0x").unwrap_or(d).to_ascii_lowercase()
}

/// A collateral file (dcap-qvl `QuoteCollateralV3` JSON), loaded once.
#[derive(Clone, Debug)]
pub struct CollateralFile {
    /// Where it came from.
    pub path: PathBuf,
    /// The collateral.
    pub collateral: QuoteCollateralV3,
    /// The `fmspc` of its TCB info, upper-case hex, when it can be read.
    pub fmspc: Option<String>,
}

impl CollateralFile {
    /// Reads and parses a collateral file.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes =
            std::fs::read(path).map_err(|e| Error::Config(format!("reading {}: {e}", path.display())))?;
        let collateral = cloister_attest::collateral::load_collateral_json(&bytes)
            .map_err(|e| Error::Config(format!("parsing collateral {}: {e}", path.display())))?;
        let fmspc = tcb_info_fmspc(&collateral);
        Ok(Self {
            path: path.to_owned(),
            collateral,
            fmspc,
        })
    }
}

/// The `fmspc` field of the collateral's TCB info (the signed text), upper-case.
fn tcb_info_fmspc(collateral: &QuoteCollateralV3) -> Option<String> {
    #[derive(Deserialize)]
    struct TcbInfo {
        fmspc: String,
    }
    serde_json::from_str::<TcbInfo>(&collateral.tcb_info)
        .ok()
        .map(|t| t.fmspc.to_ascii_uppercase())
}

/// Where quote collateral comes from.
#[derive(Clone, Debug)]
pub enum CollateralSource {
    /// These files; each quote gets the one whose TCB info FMSPC is the quote's.
    Files(Vec<CollateralFile>),
    /// A PCCS (or Intel PCS), through the on-disk cache when one is available.
    Pccs {
        /// Base URL.
        url: String,
    },
}

impl Default for CollateralSource {
    fn default() -> Self {
        Self::Pccs {
            url: cloister_attest::collateral::PHALA_PCCS_URL.to_owned(),
        }
    }
}

/// Where NVIDIA's Remote Attestation Service is, for checking a report's GPU evidence online.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NrasPolicy {
    /// The NRAS GPU attestation endpoint.
    pub url: String,
    /// NRAS's signing key set (JWKS).
    pub jwks_url: String,
}

impl Default for NrasPolicy {
    /// NVIDIA's production service.
    fn default() -> Self {
        Self {
            url: cloister_attest::nras::NRAS_GPU_URL.to_owned(),
            jwks_url: cloister_attest::nras::NRAS_JWKS_URL.to_owned(),
        }
    }
}

/// What a client accepts from a node.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Accepted measurement digests; empty accepts any (the quote must still verify). Applied as
    /// the `measurement in the allowed list` check.
    pub allowed_measurements: MeasurementAllowlist,
    /// Quote policy: accepted TCB statuses, debug TDs, rejected advisories, simulated evidence.
    pub quote: cloister_attest::verify::Policy,
    /// How long a verified report is trusted before the node is verified again.
    pub verdict_ttl: Duration,
    /// Where collateral comes from.
    pub collateral: CollateralSource,
    /// Whether requests are sealed.
    pub e2ee: E2eeMode,
    /// Verify as of this Unix time instead of now (tests, audits of old evidence).
    pub verify_at: Option<u64>,
    /// Also send each report's GPU evidence to NRAS and check its signed answer (`NRAS: …`
    /// checks). Default: off (the GPU evidence is still checked locally).
    pub nras: Option<NrasPolicy>,
    /// DEVELOPMENT ONLY: send this nonce in every verification instead of a fresh random one.
    /// Freshness is then lost (a replayed report passes); it exists so that replayed test evidence
    /// (a captured GPU attestation, signed over its captured nonce) can be verified end to end.
    pub dev_fixed_nonce: Option<Nonce>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            allowed_measurements: MeasurementAllowlist::any(),
            quote: cloister_attest::verify::Policy::default(),
            verdict_ttl: Duration::from_secs(300),
            collateral: CollateralSource::default(),
            e2ee: E2eeMode::Required,
            verify_at: None,
            nras: None,
            dev_fixed_nonce: None,
        }
    }
}

impl Policy {
    /// DEVELOPMENT ONLY: the default policy that also accepts simulated evidence.
    pub fn dev_allow_simulated() -> Self {
        let mut p = Self::default();
        p.quote.allow_simulated = true;
        p
    }

    /// Whether simulated evidence is accepted.
    pub fn allow_simulated(&self) -> bool {
        self.quote.allow_simulated
    }

    /// The verification time.
    pub fn now(&self) -> u64 {
        self.verify_at.unwrap_or_else(crate::unix_now)
    }
}

/// Picks the collateral for `quote` (hex or binary) under `source`. Returns the collateral and a
/// line saying where it came from, or why there is none.
pub async fn collateral_for(
    quote: &[u8],
    source: &CollateralSource,
    now: u64,
) -> (Option<QuoteCollateralV3>, String) {
    let raw = cloister_attest::quote::decode_quote_bytes(quote).unwrap_or_default();
    if cloister_attest::simulated::is_simulated(&raw) {
        // A simulated quote has no Intel collateral; the verifier refuses it unless allowed.
        return (None, "none (simulated quote)".to_owned());
    }
    let info = cloister_attest::collateral::pck_info(quote);
    let pccs = match source {
        CollateralSource::Files(files) => return collateral_from_files(files, info),
        CollateralSource::Pccs { url } => url,
    };
    let cache = cloister_attest::collateral_cache::CollateralCache::in_default_dir();
    if let (Some(cache), Ok(info)) = (&cache, &info)
        && let Some(c) = cache.lookup(info, now)
    {
        return (Some(c), format!("cached ({})", cache.entry_path(info).display()));
    }
    let fetched = match &cache {
        Some(cache) => cache.get(pccs, quote, now).await,
        None => cloister_attest::collateral::fetch_collateral(pccs, quote).await,
    };
    match fetched {
        Ok(c) => {
            let stored = match (&cache, &info) {
                (Some(cache), Ok(info)) => format!(", cached in {}", cache.entry_path(info).display()),
                _ => String::new(),
            };
            (Some(c), format!("fetched from {pccs}{stored}"))
        }
        Err(e) => {
            tracing::warn!("could not fetch collateral from {pccs}: {e}");
            (None, format!("none: fetching from {pccs} failed: {e}"))
        }
    }
}

fn collateral_from_files(
    files: &[CollateralFile],
    info: Result<cloister_attest::collateral::PckInfo, cloister_attest::Error>,
) -> (Option<QuoteCollateralV3>, String) {
    let info = match info {
        Ok(info) => info,
        // Without an FMSPC there is nothing to match; with a single file, let the verifier say
        // what is wrong with the quote.
        Err(e) => {
            return match files {
                [only] => (
                    Some(only.collateral.clone()),
                    format!("{} (the quote's FMSPC is unreadable: {e})", only.path.display()),
                ),
                _ => (None, format!("none: the quote's FMSPC is unreadable: {e}")),
            };
        }
    };
    match files
        .iter()
        .find(|f| f.fmspc.as_deref() == Some(info.fmspc.as_str()))
    {
        Some(f) => (
            Some(f.collateral.clone()),
            format!(
                "{} (TCB info FMSPC {} matches the quote)",
                f.path.display(),
                info.fmspc
            ),
        ),
        None => {
            let have = files
                .iter()
                .map(|f| {
                    format!(
                        "{} is for {}",
                        f.path.display(),
                        f.fmspc.as_deref().unwrap_or("an unreadable FMSPC")
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            (
                None,
                format!(
                    "none: no --collateral file is for the quote's FMSPC {} ({have})",
                    info.fmspc
                ),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_file_format() {
        let d = "ab".repeat(32);
        let text = format!(
            "# production build 1\n{d}  # trailing comment\n\n0x{}\n",
            "CD".repeat(32)
        );
        let list = MeasurementAllowlist::parse(&text).unwrap_or_default();
        assert!(list.allows(Some(&d)));
        assert!(list.allows(Some(&"cd".repeat(32))));
        assert!(!list.allows(Some(&"ef".repeat(32))));
        assert!(!list.allows(None));
        assert!(MeasurementAllowlist::parse("xyz\n").is_err());
        assert!(MeasurementAllowlist::parse("# nothing\n").is_err());
        assert!(MeasurementAllowlist::any().allows(None));
    }
}
