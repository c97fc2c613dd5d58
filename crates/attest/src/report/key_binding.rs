//! The E2EE key binding of a report (docs/protocol.md §8): `hpke_public_key` signed by the
//! attested signer, not expired.

use cloister_types::AttestationReport;

use super::BoundE2eeKey;
use crate::check::{Check, Checks, ReportCheck};

/// Checks `hpke_public_key` + `key_binding`: the binding must recover to the address the quote
/// binds, and must not have expired. A report without an HPKE key offers no E2EE (skipped).
pub(super) fn key_binding_checks(
    report: &AttestationReport,
    bound_address: Option<cloister_types::Address>,
    now_unix: u64,
    checks: &mut Checks,
) -> Option<BoundE2eeKey> {
    let Some(pk_hex) = report.hpke_public_key.as_deref() else {
        checks.push(Check::skip(
            ReportCheck::KeyBinding,
            "the report offers no HPKE key",
        ));
        return None;
    };
    let public_key: [u8; 32] = match hex::decode(pk_hex.trim_start_matches("0x")) {
        Ok(b) => match b.try_into() {
            Ok(k) => k,
            Err(_) => {
                checks.push(Check::fail(
                    ReportCheck::KeyBinding,
                    "hpke_public_key is not 32 bytes",
                ));
                return None;
            }
        },
        Err(_) => {
            checks.push(Check::fail(ReportCheck::KeyBinding, "hpke_public_key is not hex"));
            return None;
        }
    };
    let Some(binding) = report.key_binding.as_ref() else {
        checks.push(Check::fail(
            ReportCheck::KeyBinding,
            "hpke_public_key without a key_binding",
        ));
        return None;
    };
    let text = cloister_types::e2ee::key_binding_text(&public_key, &binding.models, binding.expires_at);
    let recovered = cloister_crypto::parse_signature(&binding.signature)
        .and_then(|sig| cloister_crypto::recover_personal(text.as_bytes(), &sig));
    let ok = match (recovered, bound_address) {
        (Ok(signer), Some(addr)) if signer == addr => {
            checks.push(Check::pass(
                ReportCheck::KeyBinding,
                format!(
                    "hpke key {}… bound by {}",
                    &pk_hex[..pk_hex.len().min(16)],
                    cloister_crypto::format_address(&addr)
                ),
            ));
            true
        }
        (Ok(signer), Some(addr)) => {
            checks.push(Check::fail(
                ReportCheck::KeyBinding,
                format!(
                    "signed by {}, but the quote binds {}",
                    cloister_crypto::format_address(&signer),
                    cloister_crypto::format_address(&addr)
                ),
            ));
            false
        }
        (Ok(_), None) => {
            checks.push(Check::fail(
                ReportCheck::KeyBinding,
                "no attested signer to check it against",
            ));
            false
        }
        (Err(e), _) => {
            checks.push(Check::fail(
                ReportCheck::KeyBinding,
                format!("bad signature: {e}"),
            ));
            false
        }
    };
    checks.push(if binding.expires_at > now_unix {
        Check::pass(
            ReportCheck::KeyBindingFresh,
            format!("expires at {}", binding.expires_at),
        )
    } else {
        Check::fail(
            ReportCheck::KeyBindingFresh,
            format!("expired at {}, now {now_unix}", binding.expires_at),
        )
    });
    (ok && binding.expires_at > now_unix).then(|| BoundE2eeKey {
        public_key,
        models: binding.models.clone(),
        expires_at: binding.expires_at,
    })
}
