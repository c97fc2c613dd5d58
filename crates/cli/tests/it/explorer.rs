//! The gateway's explorer (`GET /explorer`) in a real headless Chromium, against a devnet with two
//! paid nodes: one whose measurement governance allows, and one whose (distinct, simulated)
//! measurement governance allowed for its registration and then withdrew. The page must show the
//! first verified and the second refused, naming the measurement check; it also shows a pending
//! governance change and a settlement of a paid request. A phone-width screenshot is saved under
//! `target/test-outputs/explorer.png`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cloister_attest::collect::simulated::DEV_CONFIG_ID_ENV;
use cloister_attest::measurements::measurement_digest;
use cloister_attest::quote::parse_quote;
use cloister_attest::simulated::simulated_quote_with_config_id;
use cloister_chain::alloy::primitives::B256;
use cloister_chain::devnet;
use cloister_types::{Nonce, ReportData, wire};

use crate::paid::PaidNet;
use crate::proxy::stack::{chat_body, start_proxy};

/// The MR_CONFIG_ID of the second node's simulated TEE (development only).
const OTHER_CONFIG_ID: &str = "0badc0de";

/// The Chromium to drive: `$CLOISTER_CHROMIUM`, else `chromium` or `chromium-browser` in PATH.
/// `None` (with a printed reason) when absent, a panic when `CLOISTER_REQUIRE_CLIENTS=1`.
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CLOISTER_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    assert!(
        std::env::var("CLOISTER_REQUIRE_CLIENTS").as_deref() != Ok("1"),
        "chromium not found and CLOISTER_REQUIRE_CLIENTS=1 (run scripts/setup-test-clients.sh)"
    );
    eprintln!("SKIP: chromium not found (run scripts/setup-test-clients.sh or set CLOISTER_CHROMIUM)");
    None
}

/// Settle each voucher at once (the page shows settlements).
const SETTLE_AT_ONCE: [&str; 4] = ["--settle-interval-secs", "1", "--settle-threshold", "1"];

/// The measurement digest of the simulated TEE with MR_CONFIG_ID `hex` (zero-padded).
fn variant_measurement(hex_id: &str) -> B256 {
    let mut id = [0u8; 48];
    let bytes = hex::decode(hex_id).unwrap();
    id[..bytes.len()].copy_from_slice(&bytes);
    let quote = simulated_quote_with_config_id(
        &ReportData::new(cloister_types::Address::repeat_byte(1), Nonce([0; 32])),
        &id,
    );
    B256::from(measurement_digest(&parse_quote(&quote).unwrap()).unwrap())
}

/// Runs Chromium headless on `args` (the URL last); its stdout.
async fn run_chromium(chromium: &Path, args: Vec<String>) -> String {
    let chromium = chromium.to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--no-first-run",
                "--timeout=15000",
            ])
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "chromium failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text of the element with id `id` in `dom` (up to its first closing tag), tags stripped.
fn element_text(dom: &str, id: &str) -> String {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the page:\n{dom}"));
    let rest = &dom[start..];
    let rest = &rest[rest.find('>').unwrap() + 1..];
    let end = rest.find("</article>").unwrap_or(rest.len());
    let mut text = String::new();
    let mut in_tag = false;
    for c in rest[..end].chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                text.push(' ');
            }
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_explorer_shows_each_nodes_verdict_in_a_real_browser() {
    if !crate::anvil_available() {
        return;
    }
    let Some(chromium) = chromium() else {
        return;
    };
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let Some(net) = PaidNet::start(&dir).await else {
        return;
    };
    let gov = net.chain("governance").await;
    let registry = gov.registry().unwrap();
    let client_key = net.key("client");
    net.deposit("client").await;

    // Governance allows the second image's measurement so that its node can register...
    let other = variant_measurement(OTHER_CONFIG_ID);
    assert_ne!(other, devnet::simulated_measurement().unwrap());
    registry.set_measurement(other, true).await.unwrap();
    let (_allowed, allowed_url) = net
        .node(&dir, "operator", "1000:2000", &SETTLE_AT_ONCE, &[])
        .await;
    let (withdrawn_node, withdrawn_url) = net
        .node(
            &dir,
            "requester",
            "1000:2000",
            &SETTLE_AT_ONCE,
            &[(DEV_CONFIG_ID_ENV, OTHER_CONFIG_ID)],
        )
        .await;
    assert!(
        withdrawn_node.log_text().contains(OTHER_CONFIG_ID),
        "the second node runs the other simulated image:\n{}",
        withdrawn_node.log_text()
    );
    // ...then withdraws it, and announces a change it has not applied yet.
    registry.set_measurement(other, false).await.unwrap();
    let announced = B256::repeat_byte(0x42);
    registry.announce_measurement(announced, true).await.unwrap();

    let (gw, gw_url) = net.gateway(&dir, "gateway").await;

    // One paid request through the gateway (to the only verified node), settled by that node.
    let (proxy, proxy_url) = start_proxy(
        &dir,
        &[
            "--gateway",
            &gw_url,
            "--chain",
            net.chain_arg(),
            "--allow-simulated",
            "--wallet",
            &client_key,
            "--budget",
            "1000000000",
        ],
        "proxy",
    )
    .await;
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{proxy_url}{}", wire::CHAT_COMPLETIONS_PATH))
        .json(&chat_body("hello explorer", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", proxy.log_text());
    assert_eq!(resp.headers()[wire::VERIFIED_HEADER], "true");

    // The page (read over plain HTTP) shows the settlement once the node has settled.
    let page_url = format!("{gw_url}{}", wire::EXPLORER_PATH);
    let deadline = Instant::now() + Duration::from_secs(60);
    let html = loop {
        let resp = http.get(&page_url).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(
            resp.headers()[reqwest::header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("default-src 'none'")
        );
        let html = resp.text().await.unwrap();
        if !html.contains("id=\"total-settled\">0<") && html.contains("id=\"settlements\"") {
            break html;
        }
        assert!(
            Instant::now() < deadline,
            "no settlement shown:\n{html}\n{}",
            gw.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(html.contains("name=\"viewport\""));

    // A real browser renders it: the verdicts as a person sees them.
    let dom = run_chromium(&chromium, vec!["--dump-dom".into(), page_url.clone()]).await;
    let allowed_signer = signer_of(&http, &allowed_url).await;
    let withdrawn_signer = signer_of(&http, &withdrawn_url).await;
    let allowed = element_text(&dom, &format!("node-{allowed_signer}"));
    let withdrawn = element_text(&dom, &format!("node-{withdrawn_signer}"));
    eprintln!("allowed node, as rendered: {allowed}");
    eprintln!("withdrawn node, as rendered: {withdrawn}");
    assert!(allowed.starts_with("verified "), "{allowed}");
    assert!(allowed.contains("allowed by governance"), "{allowed}");
    assert!(
        allowed.contains("passed measurement in the allowed list"),
        "{allowed}"
    );
    assert!(!allowed.contains("failed "), "{allowed}");
    assert!(!allowed.contains("Settled earnings 0 "), "{allowed}");
    assert!(withdrawn.starts_with("refused "), "{withdrawn}");
    assert!(withdrawn.contains("measurement_not_allowed"), "{withdrawn}");
    assert!(
        withdrawn.contains("failed measurement in the allowed list"),
        "{withdrawn}"
    );
    assert!(withdrawn.contains("not allowed by governance"), "{withdrawn}");
    assert!(withdrawn.contains(&format!("{other:#x}")), "{withdrawn}");
    assert!(withdrawn.contains("Settled earnings 0 "), "{withdrawn}");
    // The totals and the pending change.
    assert!(dom.contains("id=\"total-nodes\">2<"), "{dom}");
    assert!(dom.contains("id=\"total-verified\">1<"), "{dom}");
    assert!(dom.contains(&format!("{announced:#x}")), "{dom}");

    // A phone-width screenshot among the test's outputs.
    let outputs = crate::workspace_root().join("target/test-outputs");
    std::fs::create_dir_all(&outputs).unwrap();
    let shot = outputs.join("explorer.png");
    let _ = std::fs::remove_file(&shot);
    run_chromium(
        &chromium,
        vec![
            format!("--screenshot={}", shot.display()),
            "--window-size=412,1400".into(),
            page_url,
        ],
    )
    .await;
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    eprintln!(
        "explorer screenshot (412 px wide): {} ({} bytes); test took {:.1} s",
        shot.display(),
        png.len(),
        started.elapsed().as_secs_f64()
    );
}

/// The signing address a node's own report names (lower-case hex).
async fn signer_of(http: &reqwest::Client, node_url: &str) -> String {
    let nonce = "cd".repeat(32);
    let report: serde_json::Value = http
        .get(format!(
            "{node_url}{}?{}={nonce}",
            wire::ATTESTATION_REPORT_PATH,
            wire::QUERY_NONCE
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    report["signing_address"].as_str().unwrap().to_lowercase()
}
