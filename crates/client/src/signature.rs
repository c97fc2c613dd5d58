//! Response signature checks (docs/protocol.md §4): the signed text must be
//! `sha256(request bytes) ":" sha256(response bytes)` of exactly the plaintext bytes we sent and
//! received, and the signature must come from the attested signer: EIP-191 recovery for `ecdsa`
//! records, an Ed25519 check under the record's public key for `ed25519` records (NEAR AI).

use cloister_types::wire::{SIGNATURE_HEADER, SIGNING_ADDRESS_HEADER};
use cloister_types::{SignatureRecord, Signer, SigningAlgo, parse_ed25519_key, signature_text};

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

/// Checks that `record` signs exactly `request` and `response`; returns the key that signed it
/// (the address it recovers to for `ecdsa`, the record's public key for `ed25519`). Whether that
/// key is the attested signer is the caller's check.
pub fn check_record(record: &SignatureRecord, request: &[u8], response: &[u8]) -> Result<Signer> {
    let invalid = |detail: String| Error::SignatureInvalid { detail };
    let expected = signature_text(request, response);
    if record.text != expected {
        return Err(invalid(format!(
            "the signed text {:?} does not cover the bytes sent and received ({expected})",
            record.text
        )));
    }
    match SigningAlgo::parse(&record.signing_algo) {
        Some(SigningAlgo::Ecdsa) => {
            let sig = cloister_crypto::parse_signature(&record.signature)
                .map_err(|e| invalid(format!("unreadable signature: {e}")))?;
            cloister_crypto::recover_personal(expected.as_bytes(), &sig)
                .map(Signer::Ecdsa)
                .map_err(|e| invalid(format!("signature does not recover: {e}")))
        }
        Some(SigningAlgo::Ed25519) => {
            let key = parse_ed25519_key(&record.signing_address).map_err(|_| {
                invalid(format!(
                    "ed25519 record names no 32-byte public key: {:?}",
                    record.signing_address.chars().take(80).collect::<String>()
                ))
            })?;
            let sig = cloister_crypto::ed25519::parse_ed25519_signature(&record.signature)
                .map_err(|e| invalid(format!("unreadable signature: {e}")))?;
            cloister_crypto::ed25519::verify_ed25519(&key, expected.as_bytes(), &sig)
                .map_err(|e| invalid(format!("{e} under {}", hex::encode(key))))?;
            Ok(Signer::Ed25519(key))
        }
        None => Err(invalid(format!(
            "signing_algo {:?} is not ecdsa or ed25519",
            record.signing_algo.chars().take(40).collect::<String>()
        ))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

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
        assert_eq!(
            check_record(&record, b"req", b"resp").ok(),
            Some(Signer::Ecdsa(key.address()))
        );
        assert!(matches!(
            check_record(&record, b"req", b"other"),
            Err(Error::SignatureInvalid { .. })
        ));
        let mut unknown = record;
        unknown.signing_algo = "rsa".into();
        assert!(check_record(&unknown, b"req", b"resp").is_err());
    }

    /// An Ed25519 record (NEAR AI's `signing_algo=ed25519` answers): verified under the record's
    /// public key, and refused for any other bytes, key or signature.
    #[test]
    fn ed25519_records_verify_under_their_key() {
        use ring::signature::KeyPair as _;
        let pkcs8 =
            ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let public: [u8; 32] = pair.public_key().as_ref().try_into().unwrap();
        let text = signature_text(b"req", b"resp");
        let record = SignatureRecord {
            signature: hex::encode(pair.sign(text.as_bytes())),
            text,
            signing_address: hex::encode(public),
            signing_algo: "ed25519".into(),
        };
        assert_eq!(
            check_record(&record, b"req", b"resp").ok(),
            Some(Signer::Ed25519(public))
        );
        assert!(check_record(&record, b"req", b"other").is_err());
        let mut other_key = record.clone();
        other_key.signing_address = hex::encode([3u8; 32]);
        assert!(check_record(&other_key, b"req", b"resp").is_err());
        let mut short = record;
        short.signature.truncate(100);
        assert!(check_record(&short, b"req", b"resp").is_err());
    }
}
