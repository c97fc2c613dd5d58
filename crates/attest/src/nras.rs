//! NVIDIA Remote Attestation Service (NRAS): the request body for `POST /v3/attest/gpu`, and
//! verification of its answer.
//!
//! NRAS answers with a JSON array: `[["JWT", <overall token>], {"GPU-0": <token>, …}]`. Every token
//! is an ES384 JWS signed by a key of NVIDIA's JWKS (chosen by `kid`). [`verify_nras_response`]
//! checks, at the caller's explicit time and against a JWKS the caller supplies:
//! every token's signature, its `nbf`/`iat`/`exp`, its `eat_nonce` (our nonce), the overall
//! `x-nvidia-overall-att-result`, every GPU's `measres`, and that the overall token's `submods`
//! lists exactly the GPU tokens it came with (by their SHA-256). It is pure: fetching the JWKS and
//! the response is [`attest_remote`]'s job (feature `fetch`).
//!
//! An NRAS token is NVIDIA's statement about the evidence it was sent; it proves nothing unless
//! that evidence carried our nonce, which the `eat_nonce` check enforces.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p384::ecdsa::signature::Verifier as _;
use p384::ecdsa::{Signature, VerifyingKey};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::check::{Check, Checks, NrasCheck};
use crate::gpu::EvidenceItem;

/// NRAS GPU attestation endpoint.
pub const NRAS_GPU_URL: &str = "https://nras.attestation.nvidia.com/v3/attest/gpu";
/// NRAS signing keys.
pub const NRAS_JWKS_URL: &str = "https://nras.attestation.nvidia.com/.well-known/jwks.json";
/// Largest NRAS response or JWKS this module reads.
pub const MAX_BODY_BYTES: usize = 4 << 20;
/// Most GPU tokens in one response.
pub const MAX_GPU_TOKENS: usize = 64;
/// The claims version requested (the one private-ml-sdk uses).
pub const CLAIMS_VERSION: &str = "2.0";

/// One token of the response, decoded. Its claims are NVIDIA's only when the verdict passed.
#[derive(Clone, Debug, Serialize)]
pub struct NrasToken {
    /// `overall`, or the GPU's name (`GPU-0`, …).
    pub name: String,
    /// The `kid` of its header.
    pub kid: Option<String>,
    /// Its claims.
    pub claims: Value,
}

/// The result of [`verify_nras_response`].
#[derive(Clone, Debug, Default, Serialize)]
pub struct NrasVerdict {
    /// Every check, in order; per-token checks name the token in their detail.
    pub checks: Checks,
    /// The decoded tokens, overall first.
    pub tokens: Vec<NrasToken>,
}

impl NrasVerdict {
    /// [`Checks::passed`]: no check failed (so the overall result passed: every other path fails
    /// a check).
    pub fn passed(&self) -> bool {
        self.checks.passed()
    }

    /// The first failing check, if any.
    pub fn first_failure(&self) -> Option<&Check> {
        self.checks.first_failure()
    }
}

/// The body NRAS expects for `nonce` and the devices' evidence (`arch` e.g. `HOPPER`).
pub fn request_body(nonce: &[u8; 32], arch: &str, evidence: &[EvidenceItem]) -> Value {
    serde_json::json!({
        "nonce": hex::encode(nonce),
        "arch": arch,
        "claims_version": CLAIMS_VERSION,
        "evidence_list": evidence
            .iter()
            .map(|e| serde_json::json!({"certificate": e.certificate, "evidence": e.evidence}))
            .collect::<Vec<_>>(),
    })
}

/// A JWS split into its parts.
struct Jws<'a> {
    signed: &'a str,
    header: Value,
    claims: Value,
    signature: Vec<u8>,
}

fn decode_jws(token: &str) -> Result<Jws<'_>, String> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err("not a three-part JWS".to_owned());
    };
    let json = |part: &str, what: &str| -> Result<Value, String> {
        let bytes = URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|e| format!("{what} is not base64url: {e}"))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("{what} is not JSON: {e}"))
    };
    Ok(Jws {
        signed: &token[..h.len() + 1 + p.len()],
        header: json(h, "header")?,
        claims: json(p, "payload")?,
        signature: URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|e| format!("signature is not base64url: {e}"))?,
    })
}

/// `kid` → P-384 key, from a JWKS (`{"keys": [{kty: EC, crv: P-384, kid, x, y}]}`). Keys of other
/// types are ignored.
fn parse_jwks(jwks: &[u8]) -> Result<Vec<(String, VerifyingKey)>, String> {
    let doc: Value = serde_json::from_slice(jwks).map_err(|e| format!("JWKS is not JSON: {e}"))?;
    let keys = doc["keys"].as_array().ok_or("JWKS has no keys array")?;
    let mut out = Vec::new();
    for k in keys {
        if k["kty"] != "EC" || k["crv"] != "P-384" {
            continue;
        }
        let (Some(kid), Some(x), Some(y)) = (k["kid"].as_str(), k["x"].as_str(), k["y"].as_str()) else {
            continue;
        };
        let coord = |c: &str| URL_SAFE_NO_PAD.decode(c).ok().filter(|b| b.len() == 48);
        let (Some(x), Some(y)) = (coord(x), coord(y)) else {
            return Err(format!("JWKS key {kid}: x/y are not 48-byte base64url"));
        };
        let mut sec1 = vec![0x04];
        sec1.extend_from_slice(&x);
        sec1.extend_from_slice(&y);
        let key = VerifyingKey::from_sec1_bytes(&sec1)
            .map_err(|_| format!("JWKS key {kid} is not a P-384 point"))?;
        out.push((kid.to_owned(), key));
    }
    if out.is_empty() {
        return Err("JWKS holds no P-384 key".to_owned());
    }
    Ok(out)
}

fn verify_signature(jws: &Jws<'_>, keys: &[(String, VerifyingKey)]) -> Result<String, String> {
    if jws.header["alg"] != "ES384" {
        return Err(format!("alg is {}, not ES384", jws.header["alg"]));
    }
    let kid = jws.header["kid"].as_str().ok_or("header has no kid")?;
    let key = keys
        .iter()
        .find(|(k, _)| k == kid)
        .map(|(_, key)| key)
        .ok_or_else(|| format!("kid {kid} is not in the JWKS"))?;
    let sig = Signature::from_slice(&jws.signature)
        .map_err(|_| format!("signature is {} bytes, not a P-384 r||s", jws.signature.len()))?;
    key.verify(jws.signed.as_bytes(), &sig)
        .map_err(|_| format!("signature does not verify under {kid}"))?;
    Ok(kid.to_owned())
}

fn validity(claims: &Value, now: u64) -> Result<String, String> {
    let exp = claims["exp"].as_u64().ok_or("no exp")?;
    let iat = claims["iat"].as_u64().ok_or("no iat")?;
    let nbf = claims["nbf"].as_u64().unwrap_or(iat);
    if now < nbf || now < iat {
        return Err(format!("not yet valid at {now} (nbf {nbf}, iat {iat})"));
    }
    if now >= exp {
        return Err(format!("expired at {exp}, checked at {now}"));
    }
    Ok(format!("valid {nbf}..{exp}, checked at {now}"))
}

fn nonce_check(claims: &Value, expected_hex: &str) -> Result<(), String> {
    match claims["eat_nonce"].as_str() {
        Some(n) if n.eq_ignore_ascii_case(expected_hex) => Ok(()),
        Some(n) => Err(format!("eat_nonce is {n}, we sent {expected_hex}")),
        None => Err("no eat_nonce".to_owned()),
    }
}

fn push(checks: &mut Checks, id: NrasCheck, label: &str, r: Result<String, String>) {
    checks.push(Check::from_result(
        id,
        r.map(|d| format!("{label}: {d}"))
            .map_err(|d| format!("{label}: {d}")),
    ));
}

/// Verifies an NRAS `attest/gpu` response `body` against the NRAS `jwks`, for a request that sent
/// `expected_nonce`, at `now_unix`.
pub fn verify_nras_response(
    body: &[u8],
    jwks: &[u8],
    expected_nonce: &[u8; 32],
    now_unix: u64,
) -> NrasVerdict {
    let mut v = NrasVerdict::default();
    let parsed = parse_response(body).and_then(|tokens| Ok((tokens, parse_jwks(jwks)?)));
    let (tokens, keys) = match parsed {
        Ok(p) => p,
        Err(e) => {
            v.checks.push(Check::fail(NrasCheck::ResponseParses, e));
            return v;
        }
    };
    v.checks.push(Check::pass(
        NrasCheck::ResponseParses,
        format!(
            "overall token and {} GPU tokens; {} JWKS keys",
            tokens.len() - 1,
            keys.len()
        ),
    ));
    let expected_hex = hex::encode(expected_nonce);
    let mut gpu_digests = Vec::new();
    let mut overall_claims = None;
    for (i, (name, token)) in tokens.iter().enumerate() {
        let jws = match decode_jws(token) {
            Ok(j) => j,
            Err(e) => {
                v.checks
                    .push(Check::fail(NrasCheck::Signature, format!("{name}: {e}")));
                continue;
            }
        };
        let kid = jws.header["kid"].as_str().map(str::to_owned);
        let signed = verify_signature(&jws, &keys);
        let trusted = signed.is_ok();
        push(
            &mut v.checks,
            NrasCheck::Signature,
            name,
            signed.map(|k| format!("signed by {k}")),
        );
        if trusted {
            push(
                &mut v.checks,
                NrasCheck::Validity,
                name,
                validity(&jws.claims, now_unix),
            );
            push(
                &mut v.checks,
                NrasCheck::Nonce,
                name,
                nonce_check(&jws.claims, &expected_hex).map(|()| "our nonce".to_owned()),
            );
            if i == 0 {
                push(
                    &mut v.checks,
                    NrasCheck::OverallResult,
                    name,
                    match jws.claims["x-nvidia-overall-att-result"].as_bool() {
                        Some(true) => Ok("x-nvidia-overall-att-result is true".to_owned()),
                        other => Err(format!("x-nvidia-overall-att-result is {other:?}")),
                    },
                );
                overall_claims = Some(jws.claims.clone());
            } else {
                push(
                    &mut v.checks,
                    NrasCheck::Measurements,
                    name,
                    match jws.claims["measres"].as_str() {
                        Some("success") => Ok("measres is success".to_owned()),
                        other => Err(format!("measres is {other:?}")),
                    },
                );
                gpu_digests.push((name.clone(), hex::encode(Sha256::digest(token.as_bytes()))));
            }
        } else {
            let skipped = [NrasCheck::Validity, NrasCheck::Nonce];
            for n in skipped {
                v.checks
                    .push(Check::skip(n, format!("{name}: its signature did not verify")));
            }
            let last = if i == 0 {
                NrasCheck::OverallResult
            } else {
                NrasCheck::Measurements
            };
            v.checks.push(Check::fail(
                last,
                format!("{name}: unsigned claims are not evidence"),
            ));
        }
        v.tokens.push(NrasToken {
            name: name.clone(),
            kid,
            claims: jws.claims,
        });
    }
    if let Some(claims) = overall_claims {
        v.checks
            .push(match submods_match(&claims, &gpu_digests, tokens.len() - 1) {
                Ok(d) => Check::pass(NrasCheck::Submods, d),
                Err(d) => Check::fail(NrasCheck::Submods, d),
            });
    }
    v
}

/// `[(name, token)]`, overall first.
fn parse_response(body: &[u8]) -> Result<Vec<(String, String)>, String> {
    if body.len() > MAX_BODY_BYTES {
        return Err(format!("{} bytes, at most {MAX_BODY_BYTES}", body.len()));
    }
    let doc: Value = serde_json::from_slice(body).map_err(|e| format!("response is not JSON: {e}"))?;
    let arr = doc.as_array().ok_or("response is not a JSON array")?;
    let overall = match arr.first().and_then(Value::as_array).map(Vec::as_slice) {
        Some([kind, token]) if kind == "JWT" => token.as_str().ok_or("overall token is not a string")?,
        _ => return Err("first element is not [\"JWT\", token]".to_owned()),
    };
    let mut out = vec![("overall".to_owned(), overall.to_owned())];
    let gpus = arr
        .get(1)
        .and_then(Value::as_object)
        .ok_or("second element is not a map of GPU tokens")?;
    if gpus.is_empty() || gpus.len() > MAX_GPU_TOKENS || arr.len() != 2 {
        return Err(format!(
            "{} GPU tokens in {} elements; need 1 to {MAX_GPU_TOKENS} in 2",
            gpus.len(),
            arr.len()
        ));
    }
    for (name, token) in gpus {
        let token = token
            .as_str()
            .ok_or_else(|| format!("{name}: token is not a string"))?;
        out.push((name.clone(), token.to_owned()));
    }
    Ok(out)
}

fn submods_match(
    overall: &Value,
    gpu_digests: &[(String, String)],
    n_gpu_tokens: usize,
) -> Result<String, String> {
    let submods = overall["submods"]
        .as_object()
        .ok_or("overall token has no submods")?;
    if submods.len() != n_gpu_tokens {
        return Err(format!(
            "submods lists {} GPUs, the response has {n_gpu_tokens} GPU tokens",
            submods.len()
        ));
    }
    for (name, digest) in gpu_digests {
        let listed = submods
            .get(name)
            .and_then(|s| s.pointer("/1/1"))
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{name} is not in submods"))?;
        if submods[name].pointer("/1/0").and_then(Value::as_str) != Some("SHA-256") {
            return Err(format!("{name}: submods digest is not SHA-256"));
        }
        if !listed.eq_ignore_ascii_case(digest) {
            return Err(format!(
                "{name}: SHA-256 of its token is {digest}, submods says {listed}"
            ));
        }
    }
    Ok(format!("{n_gpu_tokens} GPU token digests match"))
}

#[cfg(feature = "fetch")]
pub use remote::attest_remote;

#[cfg(feature = "fetch")]
mod remote {
    use crate::Result;
    use crate::http::{client, get_limited, send_limited};

    use super::MAX_BODY_BYTES;

    /// POSTs `payload_json` (the [`super::request_body`] or a report's `nvidia_payload`) to NRAS
    /// at `client_url` (e.g. [`super::NRAS_GPU_URL`]) and GETs the JWKS at `jwks_url`. Returns
    /// `(response body, JWKS)` for [`super::verify_nras_response`]; nothing is verified here.
    pub async fn attest_remote(
        client_url: &str,
        payload_json: &str,
        jwks_url: &str,
    ) -> Result<(Vec<u8>, Vec<u8>)> {
        let http = client(client_url)?;
        let req = http
            .post(client_url)
            .header(
                reqwest::header::CONTENT_TYPE,
                cloister_types::wire::JSON_CONTENT_TYPE,
            )
            .header(reqwest::header::ACCEPT, cloister_types::wire::JSON_CONTENT_TYPE)
            .body(payload_json.to_owned());
        let (_, body) = send_limited(client_url, req, MAX_BODY_BYTES).await?;
        let (_, jwks) = get_limited(&http, jwks_url, MAX_BODY_BYTES).await?;
        Ok((body, jwks))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn malformed_responses_fail_the_parse_check() {
        for body in [
            &b"{}"[..],
            b"[]",
            b"[[\"JWT\"]]",
            b"[[\"JWT\", \"a.b.c\"], {}]",
            b"not json",
        ] {
            let v = verify_nras_response(body, b"{\"keys\":[]}", &[0; 32], 0);
            assert!(!v.passed());
            assert_eq!(v.first_failure().unwrap().id, NrasCheck::ResponseParses.into());
        }
    }

    #[test]
    fn request_body_has_the_fields_nras_reads() {
        let item = EvidenceItem {
            certificate: "Y2VydA==".into(),
            evidence: "ZXY=".into(),
            arch: Some("HOPPER".into()),
        };
        let b = request_body(&[0xab; 32], "HOPPER", &[item]);
        assert_eq!(b["nonce"], "ab".repeat(32));
        assert_eq!(b["arch"], "HOPPER");
        assert_eq!(b["claims_version"], "2.0");
        assert_eq!(b["evidence_list"][0]["certificate"], "Y2VydA==");
        assert_eq!(b["evidence_list"][0]["evidence"], "ZXY=");
    }

    #[test]
    fn validity_window() {
        let c = serde_json::json!({"iat": 10, "nbf": 10, "exp": 20});
        assert!(validity(&c, 10).is_ok());
        assert!(validity(&c, 9).is_err());
        assert!(validity(&c, 20).is_err());
        assert!(validity(&serde_json::json!({"iat": 1}), 5).is_err());
    }
}
