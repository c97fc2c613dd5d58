//! `fetch_collateral` against `IntelPcsTestDouble`: a local axum server that answers the Intel
//! PCS endpoints with the bodies and headers teep captured from the real service on 2026-06-29.
//! The fetched collateral must equal the collateral re-packed from those captures, field by
//! field, and must verify the quote of the same session.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cloister_attest::Error;
use cloister_attest::collateral::{fetch_collateral, load_collateral_json, pck_info};
use cloister_attest::verify::{Policy, verify_quote};

use crate::corpus::{self, corpus_or_skip};

const SESSION: &str = "teep/neardirect_qwen3.5-122b_20260629";
const AT: u64 = 1_782_698_793;

/// Which captured exchange answers which endpoint.
const PCKCRL: &str = "0004_api.trustedservices.intel.com_sgx_certification_v4_pckcrl";
const TCB: &str = "0002_api.trustedservices.intel.com_tdx_certification_v4_tcb";
const QE_IDENTITY: &str = "0003_api.trustedservices.intel.com_tdx_certification_v4_qe_identity";
const ROOT_CA_CRL: &str = "0005_certificates.trustedservices.intel.com_intelsgxrootca.der";

/// A stand-in for Intel PCS (plus a PCCS-style `rootcacrl`), replaying captured answers.
#[derive(Clone)]
struct IntelPcsTestDouble {
    session: PathBuf,
    /// Every request, as `path?query`.
    requests: Arc<Mutex<Vec<String>>>,
    /// Leave the issuer-chain header off the TCB info answer.
    drop_tcb_header: bool,
}

impl IntelPcsTestDouble {
    /// Replays one captured exchange: its body, and its response headers.
    fn replay(&self, capture: &str) -> Response {
        let body = std::fs::read(self.session.join(format!("{capture}.body"))).unwrap();
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.session.join(format!("{capture}.json"))).unwrap())
                .unwrap();
        let mut response = body.into_response();
        for (name, values) in meta["headers"].as_object().unwrap() {
            let lower = name.to_ascii_lowercase();
            if ["content-length", "transfer-encoding", "connection"].contains(&lower.as_str()) {
                continue;
            }
            if self.drop_tcb_header && lower == "tcb-info-issuer-chain" {
                continue;
            }
            for v in values.as_array().unwrap() {
                response.headers_mut().append(
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_str(v.as_str().unwrap()).unwrap(),
                );
            }
        }
        response
    }

    fn log(&self, path: &str, query: Option<&str>) {
        self.requests
            .lock()
            .unwrap()
            .push(format!("{path}?{}", query.unwrap_or("")));
    }

    /// Serves on a random loopback port; returns its base URL.
    async fn start(self) -> String {
        let app = Router::new()
            .route(
                "/sgx/certification/v4/pckcrl",
                get(|State(s): State<Self>, RawQuery(q): RawQuery| async move {
                    s.log("pckcrl", q.as_deref());
                    // The quote's PCK leaf is issued by the Platform CA.
                    if q.as_deref() != Some("ca=platform&encoding=der") {
                        return StatusCode::BAD_REQUEST.into_response();
                    }
                    s.replay(PCKCRL)
                }),
            )
            .route(
                "/tdx/certification/v4/tcb",
                get(|State(s): State<Self>, RawQuery(q): RawQuery| async move {
                    s.log("tcb", q.as_deref());
                    if !q.unwrap_or_default().eq_ignore_ascii_case("fmspc=90c06f000000") {
                        return StatusCode::NOT_FOUND.into_response();
                    }
                    s.replay(TCB)
                }),
            )
            .route(
                "/tdx/certification/v4/qe/identity",
                get(|State(s): State<Self>, RawQuery(q): RawQuery| async move {
                    s.log("qe/identity", q.as_deref());
                    s.replay(QE_IDENTITY)
                }),
            )
            .route(
                "/sgx/certification/v4/rootcacrl",
                get(|State(s): State<Self>, RawQuery(q): RawQuery| async move {
                    s.log("rootcacrl", q.as_deref());
                    s.replay(ROOT_CA_CRL)
                }),
            )
            .with_state(self);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://{addr}")
    }
}

fn double(dir: &Path) -> IntelPcsTestDouble {
    IntelPcsTestDouble {
        session: dir.join(SESSION),
        requests: Arc::default(),
        drop_tcb_header: false,
    }
}

#[tokio::test]
async fn fetched_collateral_equals_the_repacked_capture_and_verifies() {
    let dir = corpus_or_skip!();
    let quote = corpus::read(&dir, &format!("{SESSION}/derived/model_intel_quote.bin"));
    let info = pck_info(&quote).unwrap();
    assert_eq!(
        (info.fmspc.as_str(), info.ca, info.is_sgx),
        ("90C06F000000", "platform", false)
    );

    let pcs = double(&dir);
    let requests = pcs.requests.clone();
    let base = pcs.start().await;
    let fetched = fetch_collateral(&format!("{base}/"), &quote).await.unwrap();

    let want = load_collateral_json(&corpus::read(
        &dir,
        &format!("{SESSION}/derived/collateral_90c06f000000.json"),
    ))
    .unwrap();
    assert_eq!(fetched.pck_crl_issuer_chain, want.pck_crl_issuer_chain);
    assert_eq!(fetched.root_ca_crl, want.root_ca_crl);
    assert_eq!(fetched.pck_crl, want.pck_crl);
    assert_eq!(fetched.tcb_info_issuer_chain, want.tcb_info_issuer_chain);
    assert_eq!(
        fetched.tcb_info, want.tcb_info,
        "the signed text is kept byte for byte"
    );
    assert_eq!(fetched.tcb_info_signature, want.tcb_info_signature);
    assert_eq!(fetched.qe_identity_issuer_chain, want.qe_identity_issuer_chain);
    assert_eq!(fetched.qe_identity, want.qe_identity);
    assert_eq!(fetched.qe_identity_signature, want.qe_identity_signature);
    assert_eq!(
        fetched.pck_certificate_chain, None,
        "the quote carries its own PCK chain"
    );

    let v = verify_quote(&quote, Some(&fetched), AT, &Policy::default());
    assert!(v.passed(), "{:#?}", v.checks);
    assert_eq!(v.tcb_status.as_deref(), Some("UpToDate"));

    let requests = requests.lock().unwrap().clone();
    println!("requests to the PCS test double: {requests:?}");
    assert_eq!(requests.len(), 4);
    assert!(requests.contains(&"tcb?fmspc=90C06F000000".to_owned()));
}

#[tokio::test]
async fn fetch_failures_are_typed() {
    let dir = corpus_or_skip!();
    let quote = corpus::read(&dir, &format!("{SESSION}/derived/model_intel_quote.bin"));

    let base = IntelPcsTestDouble {
        drop_tcb_header: true,
        ..double(&dir)
    }
    .start()
    .await;
    let err = fetch_collateral(&base, &quote).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::MissingHeader {
                header: "TCB-Info-Issuer-Chain",
                ..
            }
        ),
        "{err}"
    );

    // A quote for another FMSPC: the double has no TCB info for it.
    let other = corpus::read(&dir, "dcap-qvl/tdx_quote");
    let base = double(&dir).start().await;
    let err = fetch_collateral(&base, &other).await.unwrap_err();
    assert!(matches!(err, Error::HttpStatus { .. }), "{err}");

    let err = fetch_collateral(&base, b"not a quote").await.unwrap_err();
    assert!(matches!(err, Error::QuoteTruncated { .. }), "{err}");
}
