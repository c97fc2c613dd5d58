//! The attestation report served at `GET /v1/attestation/report` and the report_data layout.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Address, Error, Result};

/// A 32-byte nonce, written as 64 hex digits on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Nonce(pub [u8; 32]);

impl Nonce {
    /// Lower-case hex without `0x`.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Nonce({})", self.to_hex())
    }
}

impl fmt::Display for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl FromStr for Nonce {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        let s = s.strip_prefix("0x").unwrap_or(s);
        if s.len() != 64 {
            return Err(Error::BadNonce);
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| Error::BadNonce)?;
        Ok(Self(out))
    }
}

/// The 64 bytes a TEE quote carries for its caller.
///
/// Layout (ECDSA signing keys): the 20-byte signing address right-padded with zeros to 32 bytes,
/// then the 32-byte nonce. This is the layout of the Phala/NEAR private-ml-sdk proxies.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ReportData(pub [u8; 64]);

impl ReportData {
    /// Binds a signing address and a nonce.
    pub fn new(signing_address: Address, nonce: Nonce) -> Self {
        let mut out = [0u8; 64];
        out[..20].copy_from_slice(signing_address.as_slice());
        out[32..].copy_from_slice(&nonce.0);
        Self(out)
    }

    /// Reads report_data from a slice that must be exactly 64 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        let arr: [u8; 64] = bytes
            .try_into()
            .map_err(|_| Error::BadReportDataLength(bytes.len()))?;
        Ok(Self(arr))
    }

    /// The first 20 bytes (the signing address under the ECDSA layout).
    pub fn signing_address(&self) -> Address {
        Address::from_slice(&self.0[..20])
    }

    /// Whether bytes 20..32 are the zero padding the layout requires.
    pub fn padding_is_zero(&self) -> bool {
        self.0[20..32].iter().all(|b| *b == 0)
    }

    /// The last 32 bytes.
    pub fn nonce(&self) -> Nonce {
        let mut n = [0u8; 32];
        n.copy_from_slice(&self.0[32..]);
        Nonce(n)
    }

    /// Whether this report_data binds exactly `signing_address` and `nonce`.
    pub fn binds(&self, signing_address: Address, nonce: Nonce) -> bool {
        *self == Self::new(signing_address, nonce)
    }
}

impl fmt::Debug for ReportData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReportData({})", hex::encode(self.0))
    }
}

/// Which kind of TEE produced the evidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TeeKind {
    /// Intel TDX quote from Linux configfs-tsm.
    Tdx,
    /// Intel TDX quote from the dstack guest agent (with its event log and app info).
    Dstack,
    /// Development only: a TDX-shaped quote with a dev signature. Every verifier refuses it unless
    /// explicitly told to accept simulated evidence.
    Simulated,
}

impl fmt::Display for TeeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tdx => "tdx",
            Self::Dstack => "dstack",
            Self::Simulated => "simulated",
        })
    }
}

/// The signature scheme of the response-signing key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SigningAlgo {
    /// secp256k1 ECDSA, EIP-191 `personal_sign`, Ethereum address as the key id. report_data
    /// binds the address zero-padded to 32 bytes. Cloister nodes sign this way.
    Ecdsa,
    /// Ed25519 over the signed text, the 32-byte public key as the key id (NEAR AI's model
    /// servers when asked for `signing_algo=ed25519`). report_data binds
    /// `SHA-256(public key ‖ TLS SPKI fingerprint)`.
    Ed25519,
}

impl SigningAlgo {
    /// Reads a report's or record's `signing_algo` (any case); `None` for an unknown scheme.
    pub fn parse(s: &str) -> Option<Self> {
        if s.eq_ignore_ascii_case("ecdsa") {
            Some(Self::Ecdsa)
        } else if s.eq_ignore_ascii_case("ed25519") {
            Some(Self::Ed25519)
        } else {
            None
        }
    }
}

impl fmt::Display for SigningAlgo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ecdsa => "ecdsa",
            Self::Ed25519 => "ed25519",
        })
    }
}

/// The attested key that signs a node's answers: what a verified report binds, and what every
/// response signature must come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Signer {
    /// A secp256k1 key, named by its Ethereum address.
    Ecdsa(Address),
    /// An Ed25519 public key.
    Ed25519([u8; 32]),
}

impl Signer {
    /// The Ethereum address, for an ECDSA signer.
    pub fn address(&self) -> Option<Address> {
        match self {
            Self::Ecdsa(a) => Some(*a),
            Self::Ed25519(_) => None,
        }
    }

    /// The scheme.
    pub fn algo(&self) -> SigningAlgo {
        match self {
            Self::Ecdsa(_) => SigningAlgo::Ecdsa,
            Self::Ed25519(_) => SigningAlgo::Ed25519,
        }
    }
}

/// Lower-case hex: `0x` + the address for ECDSA, the bare 64-digit public key for Ed25519 (as
/// reports write them).
impl fmt::Display for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ecdsa(a) => write!(f, "0x{}", hex::encode(a)),
            Self::Ed25519(k) => f.write_str(&hex::encode(k)),
        }
    }
}

/// Parses a 32-byte Ed25519 public key written as 64 hex digits (an optional `0x` prefix is
/// allowed).
pub fn parse_ed25519_key(s: &str) -> Result<[u8; 32]> {
    let s = s.trim();
    let s = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")).unwrap_or(s);
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).map_err(|_| Error::BadAddress)?;
    Ok(out)
}

/// The attestation report JSON, in the shape the Phala/NEAR private-ml-sdk proxies serve, plus
/// Cloister's own fields (`tee`, `hpke_public_key`, `key_binding`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttestationReport {
    /// The signing key's id: the `0x` Ethereum address for `ecdsa`, the hex public key for
    /// `ed25519`.
    pub signing_address: String,
    /// `ecdsa` (always, for Cloister nodes) or `ed25519` (see [`SigningAlgo`]).
    pub signing_algo: String,
    /// The signing key's public key (hex), as NEAR AI's reports carry it. For `ed25519` it must
    /// equal `signing_address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_public_key: Option<String>,
    /// SHA-256 of the DER SubjectPublicKeyInfo of the TLS certificate the service presents (hex);
    /// `ed25519` reports bind it in report_data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert_fingerprint: Option<String>,
    /// The nonce the client asked for, 64 hex digits.
    pub request_nonce: String,
    /// Hex of the TDX quote whose report_data binds `signing_address` and `request_nonce`.
    pub intel_quote: String,
    /// JSON string `{nonce, evidence_list, arch}` with NVIDIA GPU evidence, or null without a GPU.
    #[serde(default)]
    pub nvidia_payload: Option<String>,
    /// Event log (dstack: JSON text of the RTMR event list; otherwise empty).
    #[serde(default)]
    pub event_log: serde_json::Value,
    /// Free-form TEE information (dstack `Info`, or the node's own description).
    #[serde(default)]
    pub info: serde_json::Value,
    /// Which evidence source produced `intel_quote`. Absent in third-party reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tee: Option<TeeKind>,
    /// HPKE public key for end-to-end encryption (hex), when the node offers it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hpke_public_key: Option<String>,
    /// EIP-191 signature by the signing key over the HPKE key, models and expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_binding: Option<crate::e2ee::KeyBinding>,
}

/// Parses a `0x`-prefixed (or bare) 20-byte hex address, any case (the EIP-55 checksum is not
/// enforced). The one address parser of the workspace.
pub fn parse_address(s: &str) -> Result<Address> {
    let s = s.trim();
    let s = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")).unwrap_or(s);
    let mut out = [0u8; 20];
    hex::decode_to_slice(s, &mut out).map_err(|_| Error::BadAddress)?;
    Ok(Address::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_parsing_is_strict() {
        assert!("ab".parse::<Nonce>().is_err());
        assert!("zz".repeat(32).parse::<Nonce>().is_err());
        assert!("00".repeat(33).parse::<Nonce>().is_err());
        let n: Nonce = format!("0x{}", "0f".repeat(32)).parse().unwrap_or(Nonce([0; 32]));
        assert_eq!(n.0, [0x0f; 32]);
    }

    #[test]
    fn report_data_layout() {
        let nonce = Nonce([7; 32]);
        let rd = ReportData::new(Address::repeat_byte(1), nonce);
        assert_eq!(&rd.0[..20], &Address::repeat_byte(1));
        assert_eq!(&rd.0[20..32], &[0; 12]);
        assert_eq!(&rd.0[32..], &[7; 32]);
        assert!(rd.binds(Address::repeat_byte(1), nonce));
        assert!(!rd.binds(Address::repeat_byte(2), nonce));
        assert!(!rd.binds(Address::repeat_byte(1), Nonce([8; 32])));
        assert!(ReportData::from_slice(&[0; 63]).is_err());
    }

    #[test]
    fn report_json_round_trip_and_third_party_shape() {
        // A Phala/NEAR report has no `tee` field and a null nvidia_payload: both must parse.
        let json = r#"{"signing_address":"0x00","signing_algo":"ecdsa","request_nonce":"aa",
            "intel_quote":"00","nvidia_payload":null,"event_log":"[]","info":{}}"#;
        let r: AttestationReport = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.tee, None);
        let again: AttestationReport = serde_json::from_str(&serde_json::to_string(&r).unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r, again);
    }
}
