//! The GPU certificate chain: each certificate signed by the next (ECDSA P-384 / SHA-384), each
//! valid at the verification time, ending at NVIDIA's Device Identity CA.

use der::{Decode, Reader, SliceReader};
use p384::ecdsa::signature::Verifier;
use p384::ecdsa::{Signature, VerifyingKey};
use x509_cert::Certificate;

/// NVIDIA's Device Identity CA, the root of GPU and NVSwitch identity certificates (public; from
/// NVIDIA/nvtrust `guest_tools/gpu_verifiers/local_gpu_verifier/src/verifier/certs/verifier_device_root.pem`).
pub const NVIDIA_DEVICE_IDENTITY_CA_PEM: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIICCzCCAZCgAwIBAgIQLTZwscoQBBHB/sDoKgZbVDAKBggqhkjOPQQDAzA1MSIw\n\
IAYDVQQDDBlOVklESUEgRGV2aWNlIElkZW50aXR5IENBMQ8wDQYDVQQKDAZOVklE\n\
SUEwIBcNMjExMTA1MDAwMDAwWhgPOTk5OTEyMzEyMzU5NTlaMDUxIjAgBgNVBAMM\n\
GU5WSURJQSBEZXZpY2UgSWRlbnRpdHkgQ0ExDzANBgNVBAoMBk5WSURJQTB2MBAG\n\
ByqGSM49AgEGBSuBBAAiA2IABA5MFKM7+KViZljbQSlgfky/RRnEQScW9NDZF8SX\n\
gAW96r6u/Ve8ZggtcYpPi2BS4VFu6KfEIrhN6FcHG7WP05W+oM+hxj7nyA1r1jkB\n\
2Ry70YfThX3Ba1zOryOP+MJ9vaNjMGEwDwYDVR0TAQH/BAUwAwEB/zAOBgNVHQ8B\n\
Af8EBAMCAQYwHQYDVR0OBBYEFFeF/4PyY8xlfWi3Olv0jUrL+0lfMB8GA1UdIwQY\n\
MBaAFFeF/4PyY8xlfWi3Olv0jUrL+0lfMAoGCCqGSM49BAMDA2kAMGYCMQCPeFM3\n\
TASsKQVaT+8S0sO9u97PVGCpE9d/I42IT7k3UUOLSR/qvJynVOD1vQKVXf0CMQC+\n\
EY55WYoDBvs2wPAH1Gw4LbcwUN8QCff8bFmV4ZxjCRr4WXTLFHBKjbfneGSBWwA=\n\
-----END CERTIFICATE-----\n";

/// OID of ecdsa-with-SHA384.
const ECDSA_WITH_SHA384: &str = "1.2.840.10045.4.3.3";
/// The most certificates a device chain may hold.
pub const MAX_CERTS: usize = 8;

/// A decoded certificate with the exact bytes its issuer signed.
pub struct ParsedCert {
    /// The decoded certificate.
    pub cert: Certificate,
    /// Its DER encoding.
    pub der: Vec<u8>,
    tbs: Vec<u8>,
}

impl ParsedCert {
    /// Decodes one DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, String> {
        let cert = Certificate::from_der(der).map_err(|e| format!("certificate DER: {e}"))?;
        let tbs = raw_tbs(der).map_err(|e| format!("certificate DER: {e}"))?;
        Ok(Self {
            cert,
            der: der.to_vec(),
            tbs,
        })
    }

    /// The subject's P-384 public key.
    pub fn p384_key(&self) -> Result<VerifyingKey, String> {
        let spki = &self.cert.tbs_certificate.subject_public_key_info;
        let bytes = spki
            .subject_public_key
            .as_bytes()
            .ok_or("public key has unused bits")?;
        VerifyingKey::from_sec1_bytes(bytes).map_err(|_| "public key is not a P-384 point".to_owned())
    }

    /// The subject name, for messages.
    pub fn subject(&self) -> String {
        self.cert.tbs_certificate.subject.to_string()
    }

    /// Checks that `issuer` signed this certificate.
    pub fn verify_signed_by(&self, issuer: &Self) -> Result<(), String> {
        let tbs = &self.cert.tbs_certificate;
        if tbs.issuer != issuer.cert.tbs_certificate.subject {
            return Err(format!(
                "issuer {} is not the next certificate's subject {}",
                tbs.issuer,
                issuer.subject()
            ));
        }
        let alg = self.cert.signature_algorithm.oid.to_string();
        if alg != ECDSA_WITH_SHA384 || tbs.signature.oid != self.cert.signature_algorithm.oid {
            return Err(format!("signature algorithm {alg} is not ecdsa-with-SHA384"));
        }
        let sig_bytes = self
            .cert
            .signature
            .as_bytes()
            .ok_or("signature has unused bits")?;
        let sig = Signature::from_der(sig_bytes).map_err(|_| "signature is not DER ECDSA")?;
        issuer
            .p384_key()?
            .verify(&self.tbs, &sig)
            .map_err(|_| format!("signature by {} does not verify", issuer.subject()))
    }

    /// Checks `not_before <= now <= not_after`.
    pub fn check_validity(&self, now_unix: u64) -> Result<(), String> {
        let v = &self.cert.tbs_certificate.validity;
        let nb = v.not_before.to_unix_duration().as_secs();
        let na = v.not_after.to_unix_duration().as_secs();
        if now_unix < nb {
            Err(format!(
                "{} is not valid before {nb} (now {now_unix})",
                self.subject()
            ))
        } else if now_unix > na {
            Err(format!("{} expired at {na} (now {now_unix})", self.subject()))
        } else {
            Ok(())
        }
    }
}

/// The TBSCertificate exactly as encoded (re-encoding could differ from what was signed).
fn raw_tbs(der: &[u8]) -> der::Result<Vec<u8>> {
    let mut reader = SliceReader::new(der)?;
    let tbs = reader.sequence(|r| {
        let tbs = r.tlv_bytes()?;
        r.tlv_bytes()?;
        r.tlv_bytes()?;
        Ok(tbs.to_vec())
    })?;
    reader.finish(tbs)
}

/// NVIDIA's root, decoded.
pub fn nvidia_root() -> Result<ParsedCert, String> {
    let mut certs = parse_pem_chain(NVIDIA_DEVICE_IDENTITY_CA_PEM.as_bytes())
        .map_err(|e| format!("embedded root: {e}"))?;
    certs.pop().ok_or_else(|| "embedded root: empty".to_owned())
}

/// Decodes a PEM chain (leaf first). Strict: only `CERTIFICATE` blocks and whitespace.
// x509-cert's `load_pem_chain` panics on empty input, so the blocks are split here.
pub fn parse_pem_chain(pem: &[u8]) -> Result<Vec<ParsedCert>, String> {
    const END: &str = "-----END CERTIFICATE-----";
    let mut rest = std::str::from_utf8(pem).map_err(|_| "PEM chain is not UTF-8".to_owned())?;
    let mut certs = Vec::new();
    while let Some(at) = rest.find(END) {
        let (block, tail) = rest.split_at(at + END.len());
        rest = tail;
        if certs.len() == MAX_CERTS {
            return Err(format!("more than {MAX_CERTS} certificates"));
        }
        let (label, der) = der::pem::decode_vec(block.trim_start().as_bytes())
            .map_err(|e| format!("PEM certificate {}: {e}", certs.len()))?;
        if label != "CERTIFICATE" {
            return Err(format!("PEM block {} is a {label:?}", certs.len()));
        }
        certs.push(ParsedCert::from_der(&der)?);
    }
    // NVML hands the chain over in a fixed-size buffer: the driver pads it with NUL bytes (seen in
    // NEAR AI's 2026-06 reports). Anything else after the last certificate is refused.
    if !rest.trim_end_matches(['\0']).trim().is_empty() {
        return Err("PEM chain has data after its last certificate".to_owned());
    }
    if certs.is_empty() {
        return Err("PEM chain holds no certificate".to_owned());
    }
    Ok(certs)
}

/// Verifies `chain` (leaf first) link by link up to the NVIDIA root, at `now_unix`. The chain may
/// end with the root itself (byte for byte) or with a certificate the root signed.
pub fn verify_chain(chain: &[ParsedCert], now_unix: u64) -> Result<(), String> {
    let root = nvidia_root()?;
    let Some(last) = chain.last() else {
        return Err("empty chain".to_owned());
    };
    for (i, pair) in chain.windows(2).enumerate() {
        pair[0]
            .verify_signed_by(&pair[1])
            .map_err(|e| format!("link {i} -> {}: {e}", i + 1))?;
    }
    if last.der != root.der {
        last.verify_signed_by(&root)
            .map_err(|e| format!("chain does not end at the NVIDIA Device Identity CA: {e}"))?;
    }
    for (i, c) in chain.iter().enumerate() {
        c.check_validity(now_unix)
            .map_err(|e| format!("certificate {i}: {e}"))?;
    }
    root.check_validity(now_unix).map_err(|e| format!("root: {e}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn malformed_pem_is_an_error_not_a_panic() {
        for pem in [
            "",
            "\n\n",
            "-----END CERTIFICATE-----",
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        ] {
            assert!(parse_pem_chain(pem.as_bytes()).is_err(), "{pem:?}");
        }
        let root = NVIDIA_DEVICE_IDENTITY_CA_PEM;
        assert!(parse_pem_chain(format!("{root}junk").as_bytes()).is_err());
        assert!(parse_pem_chain(root.repeat(MAX_CERTS + 1).as_bytes()).is_err());
        assert_eq!(parse_pem_chain(root.repeat(2).as_bytes()).unwrap().len(), 2);
        // NUL padding after the chain (NVML's buffer) is tolerated; other bytes after it are not.
        assert_eq!(
            parse_pem_chain(format!("{root}\n\0\0\0").as_bytes())
                .unwrap()
                .len(),
            1
        );
        assert!(parse_pem_chain(format!("{root}\0x\0").as_bytes()).is_err());
    }
}
