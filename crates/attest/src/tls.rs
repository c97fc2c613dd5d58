//! The TLS certificate fingerprint reports bind: SHA-256 of the certificate's DER
//! SubjectPublicKeyInfo (NEAR AI's `tls_cert_fingerprint`, the SPKI pin of RFC 7469).

use der::{Decode, Encode};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// SHA-256 of the DER SubjectPublicKeyInfo of the DER certificate `cert_der`.
pub fn spki_sha256(cert_der: &[u8]) -> Result<[u8; 32]> {
    let bad = |e: der::Error| Error::BadCertificate(format!("TLS certificate: {e}"));
    let cert = x509_cert::Certificate::from_der(cert_der).map_err(bad)?;
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(bad)?;
    Ok(Sha256::digest(spki).into())
}
