//! Response signature checks (docs/protocol.md §4): the signed text must be
//! `sha256(request bytes) ":" sha256(response bytes)` of exactly the plaintext bytes we sent and
//! received, and the signature must recover to the attested signer.

use cloister_types::wire::{SIGNATURE_HEADER, SIGNING_ADDRESS_HEADER};
use cloister_types::{SignatureRecord, signature_text};

use crate::{Error, Result};

/// Builds the record from a plain answer's headers. [`SIGNATURE_HEADER`] holds either the JSON record or just
/// the hex signature (then the text is the one we expect, and is checked by recovery).
pub(crate) fn record_from_headers(
    headers: &reqwest::header::HeaderMap,
    request: &[u8],
    response: &[u8],
) -> Result<SignatureRecord> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let Some(value) = get(SIGNATURE_HEADER).filter(|v| !v.is_empty()) else {
        return Err(Error::SignatureMissing);
    };
    if value.starts_with('{') {
        return serde_json::from_str(value).map_err(|e| Error::SignatureInvalid {
            detail: format!("{SIGNATURE_HEADER} is not a signature record: {e}"),
        });
    }
    Ok(SignatureRecord {
        text: signature_text(request, response),
        signature: value.to_owned(),
        signing_address: get(SIGNING_ADDRESS_HEADER).unwrap_or_default().to_owned(),
        signing_algo: "ecdsa".into(),
    })
}

/// Checks that `record` signs exactly `request` and `response`; returns the address it recovers to.
/// Whether that address is the attested signer is the caller's check.
pub fn recover_signer(record: &SignatureRecord, request: &[u8], response: &[u8]) -> Result<[u8; 20]> {
    let expected = signature_text(request, response);
    if record.text != expected {
        return Err(Error::SignatureInvalid {
            detail: format!(
                "the signed text {:?} does not cover the bytes sent and received ({expected})",
                record.text
            ),
        });
    }
    let sig = cloister_crypto::parse_signature(&record.signature).map_err(|e| Error::SignatureInvalid {
        detail: format!("unreadable signature: {e}"),
    })?;
    cloister_crypto::recover_personal(expected.as_bytes(), &sig).map_err(|e| Error::SignatureInvalid {
        detail: format!("signature does not recover: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_the_signer_of_exactly_these_bytes() {
        let key = cloister_crypto::EnclaveKey::generate();
        let text = signature_text(b"req", b"resp");
        let record = SignatureRecord {
            signature: key.sign_personal_hex(text.as_bytes()),
            text,
            signing_address: key.address_hex(),
            signing_algo: "ecdsa".into(),
        };
        assert_eq!(recover_signer(&record, b"req", b"resp").ok(), Some(key.address()));
        assert!(matches!(
            recover_signer(&record, b"req", b"other"),
            Err(Error::SignatureInvalid { .. })
        ));
    }
}
