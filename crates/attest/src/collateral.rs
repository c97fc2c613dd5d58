//! DCAP collateral: loading it from dcap-qvl's JSON, and (feature `fetch`) downloading it from a
//! PCCS or Intel PCS.
//!
//! Collateral is what a verifier needs besides the quote: Intel's signed TCB info for the
//! platform's FMSPC, the signed QE identity, the PCK and root CA CRLs, and the issuer chains of
//! each. It is per platform model (FMSPC), not per quote, so it can be cached and shared.
//!
//! The signed texts (`tcb_info`, `qe_identity`) are kept byte for byte as the server sent them:
//! Intel's signature covers those exact bytes, and re-serialising JSON may change them.

use dcap_qvl::QuoteCollateralV3;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::{Error, Result};

/// Phala Network's PCCS (the default of dcap-qvl and of the `cloister` CLI).
pub const PHALA_PCCS_URL: &str = "https://pccs.phala.network";
/// Intel's Provisioning Certification Service.
pub const INTEL_PCS_URL: &str = "https://api.trustedservices.intel.com";
/// The CRL distribution point of the Intel SGX Root CA certificate (Intel PCS has no
/// `rootcacrl` endpoint; a PCCS does).
pub const INTEL_ROOT_CA_CRL_URL: &str = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der";

/// Parses collateral in dcap-qvl's `QuoteCollateralV3` JSON form (the format of the
/// `*collateral*.json` test files and of `cloister attest fetch-collateral`).
pub fn load_collateral_json(json: &[u8]) -> Result<QuoteCollateralV3> {
    serde_json::from_slice(json).map_err(Error::CollateralJson)
}

/// Where the PCK certificate in a quote says to fetch collateral: FMSPC and issuing CA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PckInfo {
    /// FMSPC, 12 upper-case hex digits.
    pub fmspc: String,
    /// `"processor"` or `"platform"`: which PCK CA issued the leaf (selects the PCK CRL).
    pub ca: &'static str,
    /// Whether the quote is an SGX quote (else TDX): selects the `sgx`/`tdx` endpoints.
    pub is_sgx: bool,
}

/// Reads FMSPC and CA from the PCK certificate chain embedded in a quote (certification data
/// type 5), through dcap-qvl's own helpers.
pub fn pck_info(quote: &[u8]) -> Result<PckInfo> {
    let bytes = crate::quote::decode_quote_bytes(quote)?;
    // Our own parser first: it bounds-checks everything and gives typed errors.
    crate::quote::parse_quote(&bytes)?;
    let q = dcap_qvl::quote::Quote::parse(&bytes).map_err(|e| Error::PckCertificate(format!("{e:#}")))?;
    let cert_type = q.inner_cert_type();
    if cert_type != 5 {
        return Err(Error::UnsupportedCertificationData(cert_type));
    }
    let fmspc = dcap_qvl::intel::quote_fmspc(&q).map_err(|e| Error::PckCertificate(format!("{e:#}")))?;
    let ca = dcap_qvl::intel::quote_ca(&q).map_err(|e| Error::PckCertificate(format!("{e:#}")))?;
    Ok(PckInfo {
        fmspc: hex::encode_upper(fmspc),
        ca: ca.as_id_str(),
        is_sgx: q.header.is_sgx(),
    })
}

/// The raw HTTP answers that make up one collateral set, as a PCCS or Intel PCS serves them.
#[derive(Clone, Debug, Default)]
pub struct PcsResponses {
    /// Body of `/sgx/certification/v4/pckcrl?ca=..&encoding=der` (DER, or hex from a PCCS).
    pub pck_crl: Vec<u8>,
    /// Its `SGX-PCK-CRL-Issuer-Chain` header (URL-encoded PEM).
    pub pck_crl_issuer_chain: String,
    /// Body of `/{sgx|tdx}/certification/v4/tcb?fmspc=..` (`{"tcbInfo":..,"signature":..}`).
    pub tcb_info: Vec<u8>,
    /// Its `TCB-Info-Issuer-Chain` (or `SGX-TCB-Info-Issuer-Chain`) header.
    pub tcb_info_issuer_chain: String,
    /// Body of `/{sgx|tdx}/certification/v4/qe/identity` (`{"enclaveIdentity":..,"signature":..}`).
    pub qe_identity: Vec<u8>,
    /// Its `SGX-Enclave-Identity-Issuer-Chain` header.
    pub qe_identity_issuer_chain: String,
    /// The root CA CRL (DER, or hex from a PCCS `rootcacrl`).
    pub root_ca_crl: Vec<u8>,
}

impl PcsResponses {
    /// Assembles dcap-qvl collateral from the raw answers: URL-decodes the issuer chains, takes
    /// the signed JSON texts byte for byte, hex-decodes the signatures, and accepts CRLs as DER
    /// or hex.
    pub fn into_collateral(self) -> Result<QuoteCollateralV3> {
        let (tcb_info, tcb_info_signature) = signed_body(&self.tcb_info, "tcbInfo", "TCB info")?;
        let (qe_identity, qe_identity_signature) =
            signed_body(&self.qe_identity, "enclaveIdentity", "QE identity")?;
        Ok(QuoteCollateralV3 {
            pck_crl_issuer_chain: percent_decode(&self.pck_crl_issuer_chain, "SGX-PCK-CRL-Issuer-Chain")?,
            root_ca_crl: crl_bytes(&self.root_ca_crl, "root CA CRL")?,
            pck_crl: crl_bytes(&self.pck_crl, "PCK CRL")?,
            tcb_info_issuer_chain: percent_decode(&self.tcb_info_issuer_chain, "TCB-Info-Issuer-Chain")?,
            tcb_info,
            tcb_info_signature,
            qe_identity_issuer_chain: percent_decode(
                &self.qe_identity_issuer_chain,
                "SGX-Enclave-Identity-Issuer-Chain",
            )?,
            qe_identity,
            qe_identity_signature,
            pck_certificate_chain: None,
        })
    }
}

/// Splits `{"<field>": {...}, "signature": "<hex>"}` into the exact text of `<field>` and the
/// decoded signature.
fn signed_body(body: &[u8], field: &'static str, what: &'static str) -> Result<(String, Vec<u8>)> {
    #[derive(Deserialize)]
    struct Signed<'a> {
        #[serde(borrow, rename = "tcbInfo")]
        tcb_info: Option<&'a RawValue>,
        #[serde(borrow, rename = "enclaveIdentity")]
        enclave_identity: Option<&'a RawValue>,
        signature: String,
    }
    let bad = |reason: String| Error::BadCollateralResponse {
        url: what.to_owned(),
        reason,
    };
    let text = std::str::from_utf8(body).map_err(|_| bad("body is not UTF-8".to_owned()))?;
    let parsed: Signed<'_> =
        serde_json::from_str(text).map_err(|e| bad(format!("not the expected JSON: {e}")))?;
    let raw = match field {
        "tcbInfo" => parsed.tcb_info,
        _ => parsed.enclave_identity,
    }
    .ok_or_else(|| bad(format!("no \"{field}\" object")))?;
    let signature =
        hex::decode(parsed.signature.trim()).map_err(|e| bad(format!("signature is not hex: {e}")))?;
    Ok((raw.get().to_owned(), signature))
}

/// A CRL as served: DER (starts with a SEQUENCE tag), or hex text (a PCCS's `rootcacrl`).
fn crl_bytes(body: &[u8], what: &'static str) -> Result<Vec<u8>> {
    let trimmed = body.trim_ascii();
    match trimmed.first() {
        None => Err(Error::BadCollateralResponse {
            url: what.to_owned(),
            reason: "empty CRL".to_owned(),
        }),
        Some(0x30) => Ok(body.to_vec()),
        Some(_) => hex::decode(trimmed).map_err(|e| Error::BadCollateralResponse {
            url: what.to_owned(),
            reason: format!("CRL is neither DER nor hex: {e}"),
        }),
    }
}

/// Decodes `%XX` escapes (the issuer-chain headers are URL-encoded PEM). `+` stays `+`.
fn percent_decode(s: &str, header: &'static str) -> Result<String> {
    let bad = |reason: &str| Error::BadCollateralResponse {
        url: header.to_owned(),
        reason: reason.to_owned(),
    };
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = bytes.get(i + 1).and_then(|c| (*c as char).to_digit(16));
            let lo = bytes.get(i + 2).and_then(|c| (*c as char).to_digit(16));
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(bad("bad %-escape in issuer chain"));
            };
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad("issuer chain is not UTF-8"))
}

#[cfg(feature = "fetch")]
pub use fetch::fetch_collateral;

#[cfg(feature = "fetch")]
mod fetch {
    use dcap_qvl::QuoteCollateralV3;

    use super::{INTEL_PCS_URL, INTEL_ROOT_CA_CRL_URL, PcsResponses, pck_info};
    use crate::{Error, Result};

    /// The most bytes read from one collateral response (real ones are < 64 KiB).
    const MAX_BODY: usize = crate::http::MAX_BODY_BYTES;

    /// Downloads the collateral for `quote` (binary or hex) from a PCCS or Intel PCS at
    /// `pccs_url` (e.g. [`super::PHALA_PCCS_URL`], [`super::INTEL_PCS_URL`]).
    ///
    /// FMSPC and PCK CA come from the PCK certificate chain embedded in the quote (certification
    /// data type 5). The result does not carry that chain (`pck_certificate_chain` is `None`):
    /// the quote has it, and collateral without it can be cached for every quote of the FMSPC.
    pub async fn fetch_collateral(pccs_url: &str, quote: &[u8]) -> Result<QuoteCollateralV3> {
        let info = pck_info(quote)?;
        let base = base_url(pccs_url);
        let tee = if info.is_sgx { "sgx" } else { "tdx" };
        let client = crate::http::client(&base)?;

        let url = format!("{base}/sgx/certification/v4/pckcrl?ca={}&encoding=der", info.ca);
        let (pck_crl, pck_crl_issuer_chain) = get(&client, &url, &["SGX-PCK-CRL-Issuer-Chain"]).await?;
        let url = format!("{base}/{tee}/certification/v4/tcb?fmspc={}", info.fmspc);
        let (tcb_info, tcb_info_issuer_chain) = get(
            &client,
            &url,
            &["TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain"],
        )
        .await?;
        let url = format!("{base}/{tee}/certification/v4/qe/identity?update=standard");
        let (qe_identity, qe_identity_issuer_chain) =
            get(&client, &url, &["SGX-Enclave-Identity-Issuer-Chain"]).await?;

        // A PCCS serves the root CA CRL; Intel PCS does not, the root certificate points to it.
        let root_ca_crl = if base.starts_with(INTEL_PCS_URL) {
            get(&client, INTEL_ROOT_CA_CRL_URL, &[]).await?.0
        } else {
            match get(&client, &format!("{base}/sgx/certification/v4/rootcacrl"), &[]).await {
                Ok((body, _)) => body,
                Err(_) => get(&client, INTEL_ROOT_CA_CRL_URL, &[]).await?.0,
            }
        };

        PcsResponses {
            pck_crl,
            pck_crl_issuer_chain,
            tcb_info,
            tcb_info_issuer_chain,
            qe_identity,
            qe_identity_issuer_chain,
            root_ca_crl,
        }
        .into_collateral()
    }

    fn base_url(url: &str) -> String {
        url.trim_end_matches('/')
            .trim_end_matches("/sgx/certification/v4")
            .trim_end_matches("/tdx/certification/v4")
            .to_owned()
    }

    /// GETs `url`, returning the body and the first of `headers` present (empty if none asked).
    async fn get(client: &reqwest::Client, url: &str, headers: &[&'static str]) -> Result<(Vec<u8>, String)> {
        let (response_headers, body) = crate::http::get_limited(client, url, MAX_BODY).await?;
        let header =
            match headers.first() {
                None => String::new(),
                Some(first) => {
                    let value = headers.iter().find_map(|h| response_headers.get(*h)).ok_or(
                        Error::MissingHeader {
                            url: url.to_owned(),
                            header: first,
                        },
                    )?;
                    value
                        .to_str()
                        .map_err(|_| Error::BadCollateralResponse {
                            url: url.to_owned(),
                            reason: format!("{first} is not ASCII"),
                        })?
                        .to_owned()
                }
            };
        Ok((body, header))
    }

    #[cfg(test)]
    mod tests {
        use super::base_url;

        #[test]
        fn base_url_normalisation() {
            assert_eq!(base_url("https://p.example/"), "https://p.example");
            assert_eq!(
                base_url("https://p.example/sgx/certification/v4"),
                "https://p.example"
            );
            assert_eq!(
                base_url("https://p.example/tdx/certification/v4/"),
                "https://p.example"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn signed_text_is_kept_byte_for_byte() {
        let body = br#"{"tcbInfo":{"b":1,  "a":[2, 3]},"signature":"0aff"}"#;
        let (text, sig) = signed_body(body, "tcbInfo", "t").unwrap();
        assert_eq!(text, r#"{"b":1,  "a":[2, 3]}"#);
        assert_eq!(sig, vec![0x0a, 0xff]);
        let body = br#"{"enclaveIdentity":{"id":"TD_QE"},"signature":"00"}"#;
        assert_eq!(
            signed_body(body, "enclaveIdentity", "q").unwrap().0,
            r#"{"id":"TD_QE"}"#
        );
        assert!(signed_body(body, "tcbInfo", "q").is_err());
        assert!(signed_body(br#"{"tcbInfo":{},"signature":"xyz"}"#, "tcbInfo", "t").is_err());
        assert!(signed_body(b"\xff", "tcbInfo", "t").is_err());
    }

    #[test]
    fn crls_as_der_or_hex() {
        assert_eq!(
            crl_bytes(&[0x30, 0x03, 1, 2, 3], "c").unwrap(),
            vec![0x30, 0x03, 1, 2, 3]
        );
        assert_eq!(
            crl_bytes(b"3003010203\n", "c").unwrap(),
            vec![0x30, 0x03, 1, 2, 3]
        );
        assert!(crl_bytes(b"", "c").is_err());
        assert!(crl_bytes(b"nothex", "c").is_err());
    }

    #[test]
    fn issuer_chains_are_url_decoded() {
        let s = percent_decode("-----BEGIN%20CERTIFICATE-----%0AMII%2B%2fx+y", "h").unwrap();
        assert_eq!(s, "-----BEGIN CERTIFICATE-----\nMII+/x+y");
        assert!(percent_decode("%zz", "h").is_err());
        assert!(percent_decode("%4", "h").is_err());
        assert!(percent_decode("%ff", "h").is_err());
    }

    #[test]
    fn bad_collateral_json_is_a_typed_error() {
        assert!(matches!(
            load_collateral_json(b"{}"),
            Err(Error::CollateralJson(_))
        ));
    }
}
