//! A report fetched over HTTPS is checked against the certificate the connection presented: a
//! real TLS server (rustls, with a certificate `openssl` makes for the test) serves ed25519
//! reports in NEAR AI's layout, whose quote (simulated) binds `SHA-256(key ‖ TLS SPKI
//! fingerprint)`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use cloister_attest::check::{Outcome, ReportCheck};
use cloister_attest::report::ed25519_report_data_prefix;
use cloister_attest::simulated::simulated_quote;
use cloister_client::Policy;
use cloister_types::{AttestationReport, Nonce, ReportData, Signer, TeeKind};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_rustls::rustls;

const KEY: [u8; 32] = [0x5a; 32];

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed P-256 certificate for 127.0.0.1 (DER), its PKCS#8 key (DER), and the SHA-256 of
/// its SubjectPublicKeyInfo as openssl itself computes it (an independent check of ours).
fn certificate(dir: &Path) -> (Vec<u8>, Vec<u8>, [u8; 32]) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            // An end-entity certificate (webpki refuses a CA certificate as the server's).
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-addext",
            "extendedKeyUsage=serverAuth",
        ],
    );
    openssl(
        dir,
        &["x509", "-in", "cert.pem", "-outform", "DER", "-out", "cert.der"],
    );
    openssl(
        dir,
        &[
            "pkcs8", "-topk8", "-nocrypt", "-in", "key.pem", "-outform", "DER", "-out", "key.der",
        ],
    );
    openssl(
        dir,
        &["x509", "-in", "cert.pem", "-pubkey", "-noout", "-out", "pub.pem"],
    );
    openssl(
        dir,
        &[
            "pkey", "-pubin", "-in", "pub.pem", "-outform", "DER", "-out", "spki.der",
        ],
    );
    let spki = std::fs::read(dir.join("spki.der")).unwrap();
    let fingerprint = <[u8; 32]>::from(<sha2::Sha256 as sha2::Digest>::digest(&spki));
    (
        std::fs::read(dir.join("cert.der")).unwrap(),
        std::fs::read(dir.join("key.der")).unwrap(),
        fingerprint,
    )
}

/// An ed25519 report for `nonce` that claims (and whose quote binds) the TLS fingerprint `fp`.
fn report(nonce: Nonce, fp: [u8; 32]) -> AttestationReport {
    let mut rd = [0u8; 64];
    rd[..32].copy_from_slice(&ed25519_report_data_prefix(&KEY, &fp));
    rd[32..].copy_from_slice(&nonce.0);
    AttestationReport {
        signing_address: hex::encode(KEY),
        signing_algo: "ed25519".into(),
        request_nonce: nonce.to_hex(),
        intel_quote: hex::encode(simulated_quote(&ReportData(rd))),
        nvidia_payload: None,
        event_log: serde_json::Value::Null,
        info: serde_json::Value::Null,
        tee: Some(TeeKind::Simulated),
        hpke_public_key: None,
        key_binding: None,
        signing_public_key: Some(hex::encode(KEY)),
        tls_cert_fingerprint: Some(hex::encode(fp)),
    }
}

/// A test double of an HTTPS report endpoint: answers every request with `body` over TLS.
async fn serve_tls(cert: Vec<u8>, key: Vec<u8>, body: Vec<u8>) -> SocketAddr {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.into()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let body = Arc::new(body);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, body) = (acceptor.clone(), Arc::clone(&body));
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.write_all(&body).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn the_tls_fingerprint_is_checked_against_the_presented_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, fingerprint) = certificate(dir.path());
    // Ours and openssl's SPKI hash agree.
    assert_eq!(cloister_attest::tls::spki_sha256(&cert).unwrap(), fingerprint);

    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_der(&cert).unwrap())
        .tls_info(true)
        .build()
        .unwrap();
    let policy = Policy::dev_allow_simulated();
    let nonce = Nonce([0x42; 32]);

    // The report binds the certificate this server presents: every check passes, TLS included.
    let honest = serde_json::to_vec(&report(nonce, fingerprint)).unwrap();
    let addr = serve_tls(cert.clone(), key.clone(), honest).await;
    let proofs =
        cloister_client::report::verify_endpoint(&http, &format!("https://{addr}"), &policy, nonce, None)
            .await
            .unwrap();
    let v = &proofs[0].verdict;
    assert!(v.passed(), "{:#?}", v.checks);
    assert_eq!(v.checks.outcome(ReportCheck::TlsFingerprint), Some(Outcome::Pass));
    assert_eq!(v.signer, Some(Signer::Ed25519(KEY)));

    // A report (and quote) bound to another certificate, relayed by a server with this one: the
    // binding itself holds, but the connection is not the enclave's.
    let relayed = serde_json::to_vec(&report(nonce, [7; 32])).unwrap();
    let addr = serve_tls(cert, key, relayed).await;
    let proofs =
        cloister_client::report::verify_endpoint(&http, &format!("https://{addr}"), &policy, nonce, None)
            .await
            .unwrap();
    let v = &proofs[0].verdict;
    assert!(!v.passed());
    assert_eq!(v.checks.outcome(ReportCheck::BindsAddress), Some(Outcome::Pass));
    assert_eq!(
        v.first_failure().map(|c| c.id),
        Some(ReportCheck::TlsFingerprint.into())
    );
}
