//! An on-disk cache of DCAP collateral (feature `fetch`).
//!
//! Collateral is per platform model, not per quote: one entry serves every quote with the same
//! TEE type (SGX or TDX), FMSPC and PCK CA. An entry is used until the earliest `nextUpdate` of
//! the TCB info, the QE identity, the PCK CRL and the root CA CRL; after that (or when the entry
//! is missing, unreadable, or its dates cannot be read) it is downloaded again with
//! [`crate::collateral::fetch_collateral`] and the file replaced.
//!
//! The cache is a convenience, not a trust anchor: every entry is still verified (Intel
//! signatures, dates) by [`crate::verify::verify_quote`]. Writing it is best effort: a
//! read-only or full disk costs a download, never a verification.
//!
//! Files: `<dir>/<sgx|tdx>-<FMSPC>-<processor|platform>.json`, each dcap-qvl's
//! `QuoteCollateralV3` JSON (the format of [`crate::collateral::load_collateral_json`]).

use std::path::{Path, PathBuf};

use dcap_qvl::QuoteCollateralV3;
use serde::Deserialize;

use crate::Result;
use crate::collateral::{PckInfo, fetch_collateral, load_collateral_json, pck_info};

/// A collateral cache in one directory.
#[derive(Clone, Debug)]
pub struct CollateralCache {
    dir: PathBuf,
}

impl CollateralCache {
    /// A cache in `dir` (created on the first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// A cache in [`default_dir`]; `None` when neither `XDG_CACHE_HOME` nor `HOME` is set.
    pub fn in_default_dir() -> Option<Self> {
        default_dir().map(Self::new)
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file that holds the entry for this platform.
    pub fn entry_path(&self, info: &PckInfo) -> PathBuf {
        let tee = if info.is_sgx { "sgx" } else { "tdx" };
        // `fmspc` is hex and `ca` one of two fixed words (see `pck_info`): no path tricks.
        self.dir.join(format!("{tee}-{}-{}.json", info.fmspc, info.ca))
    }

    /// The collateral for `quote` (binary or hex): from disk while it is fresh
    /// (`now_unix` < its earliest `nextUpdate`), else downloaded from `pccs_url` and stored.
    ///
    /// Errors are those of reading the PCK certificate in the quote and of the download.
    pub async fn get(&self, pccs_url: &str, quote: &[u8], now_unix: u64) -> Result<QuoteCollateralV3> {
        let info = pck_info(quote)?;
        if let Some(fresh) = self.lookup(&info, now_unix) {
            return Ok(fresh);
        }
        let collateral = fetch_collateral(pccs_url, quote).await?;
        // Best effort (see the module docs): the downloaded collateral is good either way.
        let _ = self.store(&info, &collateral);
        Ok(collateral)
    }

    /// The cached collateral for a platform ([`pck_info`] of a quote) if present, for that
    /// FMSPC, and fresh at `now_unix`.
    pub fn lookup(&self, info: &PckInfo, now_unix: u64) -> Option<QuoteCollateralV3> {
        let bytes = std::fs::read(self.entry_path(info)).ok()?;
        let collateral = load_collateral_json(&bytes).ok()?;
        let tcb_fmspc = tcb_info_fmspc(&collateral)?;
        if !tcb_fmspc.eq_ignore_ascii_case(&info.fmspc) {
            return None;
        }
        let next_update = collateral_next_update(&collateral)?;
        (now_unix < next_update).then_some(collateral)
    }

    /// Stores `collateral` as the entry for a platform ([`pck_info`] of a quote), without any
    /// PCK chain (that is per quote). Replaces the file atomically.
    pub fn store(&self, info: &PckInfo, collateral: &QuoteCollateralV3) -> std::io::Result<()> {
        let mut entry = collateral.clone();
        entry.pck_certificate_chain = None;
        let json = serde_json::to_vec(&entry).map_err(std::io::Error::other)?;
        std::fs::create_dir_all(&self.dir)?;
        let path = self.entry_path(info);
        let tmp = path.with_extension(format!("json.{}.tmp", std::process::id()));
        std::fs::write(&tmp, json)?;
        std::fs::rename(&tmp, &path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }
}

/// `$XDG_CACHE_HOME/cloister/collateral`, else `$HOME/.cache/cloister/collateral`.
pub fn default_dir() -> Option<PathBuf> {
    let nonempty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    nonempty("XDG_CACHE_HOME")
        .or_else(|| nonempty("HOME").map(|h| h.join(".cache")))
        .map(|base| base.join("cloister").join("collateral"))
}

/// The earliest `nextUpdate` (Unix seconds) of the TCB info, QE identity, PCK CRL and root CA
/// CRL; `None` when any of them cannot be read (such collateral is never served from cache).
pub fn collateral_next_update(c: &QuoteCollateralV3) -> Option<u64> {
    #[derive(Deserialize)]
    struct Dated {
        #[serde(rename = "nextUpdate")]
        next_update: String,
    }
    let json_date = |text: &str| {
        serde_json::from_str::<Dated>(text)
            .ok()
            .and_then(|d| parse_rfc3339_utc(&d.next_update))
    };
    [
        json_date(&c.tcb_info)?,
        json_date(&c.qe_identity)?,
        crl_next_update(&c.pck_crl)?,
        crl_next_update(&c.root_ca_crl)?,
    ]
    .into_iter()
    .min()
}

fn tcb_info_fmspc(c: &QuoteCollateralV3) -> Option<String> {
    #[derive(Deserialize)]
    struct Fmspc {
        fmspc: String,
    }
    serde_json::from_str::<Fmspc>(&c.tcb_info).ok().map(|f| f.fmspc)
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z` (Intel's format) to Unix seconds.
fn parse_rfc3339_utc(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let rest = &s[19..];
    let rest = rest.strip_prefix('.').map_or(Some(rest), |f| {
        f.trim_start_matches(|c: char| c.is_ascii_digit()).into()
    })?;
    if rest != "Z" {
        return None;
    }
    unix_seconds(
        digits(&b[0..4])?,
        digits(&b[5..7])?,
        digits(&b[8..10])?,
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    )
}

/// The `nextUpdate` of a DER CRL (or of hex text of one), in Unix seconds.
fn crl_next_update(crl: &[u8]) -> Option<u64> {
    let decoded;
    let der = if crl.first() == Some(&0x30) {
        crl
    } else {
        decoded = hex::decode(crl.trim_ascii()).ok()?;
        &decoded
    };
    // CertificateList ::= SEQUENCE { tbsCertList SEQUENCE { version INTEGER OPTIONAL,
    //   signature AlgorithmIdentifier, issuer Name, thisUpdate Time, nextUpdate Time OPTIONAL, .. } .. }
    let (tag, list, _) = der_tlv(der)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, tbs, _) = der_tlv(list)?;
    if tag != 0x30 {
        return None;
    }
    let (mut tag, _, mut rest) = der_tlv(tbs)?;
    if tag == 0x02 {
        (tag, _, rest) = der_tlv(rest)?;
    }
    let is_time = |t: u8| t == 0x17 || t == 0x18;
    if tag != 0x30 {
        return None; // signature AlgorithmIdentifier
    }
    let (issuer, _, rest) = der_tlv(rest)?;
    let (this_update, _, rest) = der_tlv(rest)?;
    if issuer != 0x30 || !is_time(this_update) {
        return None;
    }
    let (tag, value, _) = der_tlv(rest)?;
    der_time(tag, value)
}

/// One DER TLV: (tag, contents, what follows). Single-byte tags, definite lengths only.
fn der_tlv(buf: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = buf.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) to Unix seconds.
fn der_time(tag: u8, v: &[u8]) -> Option<u64> {
    let (year, rest) = match (tag, v.len()) {
        (0x17, 13) => {
            let yy = digits(&v[0..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &v[2..])
        }
        (0x18, 15) => (digits(&v[0..4])?, &v[4..]),
        _ => return None,
    };
    if rest.last() != Some(&b'Z') {
        return None;
    }
    unix_seconds(
        year,
        digits(&rest[0..2])?,
        digits(&rest[2..4])?,
        digits(&rest[4..6])?,
        digits(&rest[6..8])?,
        digits(&rest[8..10])?,
    )
}

fn digits(b: &[u8]) -> Option<u64> {
    b.iter().try_fold(0u64, |acc, c| {
        c.is_ascii_digit().then(|| acc * 10 + u64::from(c - b'0'))
    })
}

/// Unix seconds of a UTC civil time (Howard Hinnant's `days_from_civil`), for years ≥ 1970.
fn unix_seconds(y: u64, m: u64, d: u64, hh: u64, mm: u64, ss: u64) -> Option<u64> {
    if !(1970..=9999).contains(&y)
        || !(1..=12).contains(&m)
        || !(1..=31).contains(&d)
        || hh > 23
        || mm > 59
        || ss > 60
    {
        return None;
    }
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339_utc("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_utc("2026-03-20T10:41:15Z"), Some(1_774_003_275));
        assert_eq!(parse_rfc3339_utc("2026-03-20T10:41:15.123Z"), Some(1_774_003_275));
        assert_eq!(parse_rfc3339_utc("2026-03-20T10:41:15+01:00"), None);
        assert_eq!(parse_rfc3339_utc("2026-13-20T10:41:15Z"), None);
    }

    #[test]
    fn der_times() {
        assert_eq!(der_time(0x17, b"260320104115Z"), Some(1_774_003_275));
        assert_eq!(der_time(0x18, b"20260320104115Z"), Some(1_774_003_275));
        assert_eq!(der_time(0x17, b"2603201041Z"), None);
    }

    #[test]
    fn truncated_der_is_none() {
        assert_eq!(crl_next_update(&[0x30, 0x82, 0x01]), None);
        assert_eq!(crl_next_update(b""), None);
        assert_eq!(crl_next_update(&[0x30, 0x03, 0x30, 0x01, 0x02]), None);
    }

    #[test]
    fn default_dir_ends_in_cloister_collateral() {
        if let Some(dir) = default_dir() {
            assert!(dir.ends_with("cloister/collateral"));
        }
    }
}
