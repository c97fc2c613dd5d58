//! §9.1: verify an ACI service's workload identity from its report, under one policy, failing
//! closed on anything the policy needs and the report lacks.

use dcap_qvl::QuoteCollateralV3;
use serde::Serialize;
use serde_json::Value;

use cloister_types::Nonce;

use super::{API_VERSION, ED25519, TEE_TYPE_TDX, WorkloadKeyset, keyset_digest, report_data};
use crate::check::{AciCheck, Check, Checks, QuoteCheck, Scoped};
use crate::report::Transport;
use crate::verify::{Policy, QuoteVerdict, verify_quote};

/// The longest keyset lifetime accepted by default (§3.1: "reject an implausibly distant
/// `not_after`"): 90 days from now.
pub(crate) const DEFAULT_MAX_KEYSET_LIFETIME_SECS: u64 = 90 * 24 * 3600;

/// What an ACI verifier accepts (§1.3).
#[derive(Clone, Debug)]
pub struct AciPolicy {
    /// The quote policy (TCB statuses, simulated evidence).
    pub quote: Policy,
    /// Measurement digests (hex, docs/protocol.md §7) whose workloads this verifier has reviewed:
    /// the measurement is what backs the source provenance and the custody of the listed keys
    /// (Cloister generates every key inside the measured workload). Empty: none is accepted.
    pub allowed_measurements: Vec<String>,
    /// `not_after` further than this from now is refused.
    pub max_keyset_lifetime_secs: u64,
}

impl AciPolicy {
    /// `quote`, with `allowed_measurements`, and the default lifetime bound.
    pub fn new(quote: Policy, allowed_measurements: Vec<String>) -> Self {
        Self {
            quote,
            allowed_measurements,
            max_keyset_lifetime_secs: DEFAULT_MAX_KEYSET_LIFETIME_SECS,
        }
    }
}

/// The result of [`verify_aci_report`].
#[derive(Clone, Debug, Serialize)]
pub struct AciVerdict {
    /// Every check, in order, the quote's scoped (`quote: …`).
    pub checks: Checks,
    /// The quote's verdict.
    pub quote: QuoteVerdict,
    /// The keyset, when it parsed. Trust it only when [`AciVerdict::passed`].
    pub keyset: Option<WorkloadKeyset>,
    /// The recomputed `workload_keyset_digest`.
    pub keyset_digest: Option<String>,
    /// The registry measurement digest of the quote (hex), when it parsed.
    pub measurement_digest: Option<String>,
}

impl AciVerdict {
    /// [`Checks::passed`] over every check.
    pub fn passed(&self) -> bool {
        self.checks.passed()
    }

    /// The first failing check.
    pub fn first_failure(&self) -> Option<&Check> {
        self.checks.first_failure()
    }
}

/// Verifies the ACI report `report` (the JSON of `GET /v1/aci/attestation?nonce=…`) fetched with
/// `nonce`, over `transport`, at `now_unix`, with `collateral` for its quote.
pub fn verify_aci_report(
    report: &Value,
    nonce: &Nonce,
    collateral: Option<&QuoteCollateralV3>,
    now_unix: u64,
    policy: &AciPolicy,
    transport: &Transport,
) -> AciVerdict {
    let mut checks = Checks::default();
    let att = &report["attestation"];

    let version = report["api_version"].as_str().unwrap_or_default();
    checks.push(if version == API_VERSION {
        Check::pass(AciCheck::ApiVersion, API_VERSION)
    } else {
        Check::fail(
            AciCheck::ApiVersion,
            format!("api_version is {:?}", short(version)),
        )
    });
    let tee_type = att["tee_type"].as_str().unwrap_or_default();
    checks.push(if tee_type == TEE_TYPE_TDX {
        Check::pass(AciCheck::TeeType, "Intel TDX quote")
    } else {
        Check::fail(
            AciCheck::TeeType,
            format!("tee_type {:?}: no verifier for it here", short(tee_type)),
        )
    });

    // The keyset, as parsed, canonicalized and hashed; the top-level copy must agree.
    let keyset_value = &att["workload_keyset"];
    let keyset: Option<WorkloadKeyset> = serde_json::from_value(keyset_value.clone()).ok();
    let digest = match (&keyset, keyset_digest(keyset_value)) {
        (Some(_), Ok(d)) if report["workload_keyset_digest"].as_str() == Some(d.as_str()) => {
            checks.push(Check::pass(AciCheck::KeysetDigest, d.clone()));
            Some(d)
        }
        (Some(_), Ok(d)) => {
            checks.push(Check::fail(
                AciCheck::KeysetDigest,
                format!(
                    "the keyset hashes to {d}, the report says {:?}",
                    short(report["workload_keyset_digest"].as_str().unwrap_or_default())
                ),
            ));
            None
        }
        (None, _) => {
            checks.push(Check::fail(AciCheck::KeysetDigest, "no parsable workload_keyset"));
            None
        }
        (Some(_), Err(e)) => {
            checks.push(Check::fail(AciCheck::KeysetDigest, e.to_string()));
            None
        }
    };

    let quote_bytes = att["evidence"]["quote"].as_str().unwrap_or_default();
    let quote = verify_quote(quote_bytes.as_bytes(), collateral, now_unix, &policy.quote);
    checks.absorb(
        quote.checks.clone(),
        true,
        Scoped::Quote(QuoteCheck::TcbAccepted),
        "the quote did not verify",
    );

    binding_checks(att, digest.as_deref(), nonce, &quote, &mut checks);
    if let Some(keyset) = &keyset {
        keyset_checks(keyset, now_unix, policy, transport, &mut checks);
    }
    provenance_checks(att, &quote, policy, &mut checks);

    let measurement_digest = quote
        .quote
        .as_ref()
        .and_then(crate::measurements::Measurements::from_quote)
        .map(|m| hex::encode(m.digest()));
    let measured = measurement_digest.as_ref().is_some_and(|d| {
        policy
            .allowed_measurements
            .iter()
            .any(|a| a.eq_ignore_ascii_case(d))
    });
    checks.push(if measured && quote.passed() {
        Check::pass(
            AciCheck::MeasuredCustody,
            "the measured workload is allowed; it generates every listed key itself",
        )
    } else if quote.simulated && policy.quote.allow_simulated {
        Check::warn(
            AciCheck::MeasuredCustody,
            "SIMULATED TEE: no measurement backs provenance or key custody (development only)",
        )
    } else {
        Check::fail(
            AciCheck::MeasuredCustody,
            format!(
                "measurement {} is not in the policy's allowed list: nothing backs the provenance and key custody",
                measurement_digest.as_deref().unwrap_or("(none)")
            ),
        )
    });

    AciVerdict {
        checks,
        quote,
        keyset,
        keyset_digest: digest,
        measurement_digest,
    }
}

/// report_data is the statement digest for our nonce, and the quote binds it zero-padded.
fn binding_checks(
    att: &Value,
    digest: Option<&str>,
    nonce: &Nonce,
    quote: &QuoteVerdict,
    checks: &mut Checks,
) {
    let claimed = att["report_data"]
        .as_str()
        .and_then(|h| <[u8; 32]>::try_from(hex::decode(h).ok()?).ok());
    let Some(digest) = digest else {
        checks.push(Check::fail(
            AciCheck::StatementBinding,
            "no verified keyset digest to build the statement from",
        ));
        return;
    };
    let ours = report_data(digest, Some(nonce));
    let unchallenged = report_data(digest, None);
    checks.push(match claimed {
        Some(rd) if rd == ours || rd == unchallenged => Check::pass(
            AciCheck::StatementBinding,
            format!("sha256(statement) = {}", hex::encode(rd)),
        ),
        Some(rd) => Check::fail(
            AciCheck::StatementBinding,
            format!(
                "report_data {} is not the statement digest {}",
                hex::encode(rd),
                hex::encode(ours)
            ),
        ),
        None => Check::fail(AciCheck::StatementBinding, "report_data is not 32 bytes of hex"),
    });
    checks.push(if claimed == Some(ours) {
        Check::pass(AciCheck::Fresh, format!("nonce {nonce}"))
    } else if claimed == Some(unchallenged) {
        Check::fail(
            AciCheck::Fresh,
            "the unchallenged (nonce: null) statement proves no freshness",
        )
    } else {
        Check::fail(AciCheck::Fresh, "the statement does not name our nonce")
    });
    let in_quote = quote.quote.as_ref().map(crate::quote::Quote::report_data);
    checks.push(match (in_quote, claimed) {
        (Some(q), Some(rd)) if q[..32] == rd && q[32..].iter().all(|b| *b == 0) => {
            Check::pass(AciCheck::QuoteBindsReportData, "report_data ‖ 32 zero bytes")
        }
        (Some(q), _) => Check::fail(
            AciCheck::QuoteBindsReportData,
            format!("the quote's report_data is {}", hex::encode(q)),
        ),
        (None, _) => Check::fail(AciCheck::QuoteBindsReportData, "the quote did not parse"),
    });
}

fn keyset_checks(
    keyset: &WorkloadKeyset,
    now: u64,
    policy: &AciPolicy,
    transport: &Transport,
    checks: &mut Checks,
) {
    checks.push(if keyset.not_after <= now {
        Check::fail(
            AciCheck::NotExpired,
            format!("not_after {} has passed", keyset.not_after),
        )
    } else if keyset.not_after - now > policy.max_keyset_lifetime_secs {
        Check::fail(
            AciCheck::NotExpired,
            format!("not_after {} is implausibly distant", keyset.not_after),
        )
    } else {
        Check::pass(AciCheck::NotExpired, format!("until {}", keyset.not_after))
    });
    let receipt_keys = keyset
        .receipt_signing_keys
        .iter()
        .filter(|k| k.algo == ED25519 && keyset.receipt_key(&k.key_id).is_some())
        .count();
    checks.push(if receipt_keys > 0 {
        Check::pass(AciCheck::ReceiptKey, format!("{receipt_keys} ed25519 key(s)"))
    } else {
        Check::fail(AciCheck::ReceiptKey, "no 32-byte ed25519 receipt signing key")
    });
    let listed = |spki: &[u8; 32]| {
        keyset
            .tls_public_keys
            .iter()
            .any(|k| k.spki_sha256.eq_ignore_ascii_case(&hex::encode(spki)))
    };
    checks.push(match transport {
        Transport::Tls { spki_sha256 } if listed(spki_sha256) => Check::pass(
            AciCheck::Channel,
            format!("TLS SPKI {} is listed", hex::encode(spki_sha256)),
        ),
        Transport::Tls { spki_sha256 } => Check::fail(
            AciCheck::Channel,
            format!(
                "the server's TLS SPKI {} is not in tls_public_keys: TLS ends outside the workload",
                hex::encode(spki_sha256)
            ),
        ),
        Transport::Unverified if !keyset.e2ee_public_keys.is_empty() => Check::warn(
            AciCheck::Channel,
            "not TLS-pinned: send only content sealed to a listed e2ee_public_keys key",
        ),
        Transport::Unverified => Check::fail(
            AciCheck::Channel,
            "neither a listed TLS key nor an E2EE key protects this channel",
        ),
    });
}

fn provenance_checks(att: &Value, quote: &QuoteVerdict, policy: &AciPolicy, checks: &mut Checks) {
    let p = &att["source_provenance"];
    let text = |k: &str| p[k].as_str().filter(|s| !s.trim().is_empty());
    let named = match (text("repo_url"), text("repo_commit"), text("image_digest")) {
        (_, _, Some(image)) => Some(format!("image {}", short(image))),
        (Some(url), Some(commit), None) => Some(format!("{} @ {}", short(url), short(commit))),
        _ => None,
    };
    checks.push(match named {
        Some(n) => Check::pass(AciCheck::Provenance, n),
        // Development deployments may omit it (§4.1); only a simulated TEE allowed as such.
        None if quote.simulated && policy.quote.allow_simulated => Check::warn(
            AciCheck::Provenance,
            "no source provenance (development deployment)",
        ),
        None => Check::fail(
            AciCheck::Provenance,
            "neither repo_url + repo_commit nor image_digest",
        ),
    });
}

fn short(s: &str) -> String {
    s.chars().take(80).collect()
}
