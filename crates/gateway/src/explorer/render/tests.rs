use std::sync::Arc;

use alloy_primitives::{Address, B256, U256};
use cloister_attest::check::{Check, PolicyCheck, QuoteCheck};
use cloister_client::discover::escrow::{PendingMeasurement, Settlement};
use cloister_client::discover::{ModelPrice, RegisteredNode, RegistryConfig};

use super::*;
use crate::directory::NodeStats;
use crate::explorer::chain::ChainView;

const HOSTILE: &str = "<script>alert('x')</script>\"&";

fn node(byte: u8, endpoint: &str, verdict: Result<Option<String>, String>) -> Arc<NodeEntry> {
    Arc::new(NodeEntry {
        registered: RegisteredNode {
            operator: Address::repeat_byte(byte),
            signer: Address::repeat_byte(byte + 0x10),
            endpoint: endpoint.into(),
            measurement: B256::repeat_byte(byte),
            attested_at: 1,
            active: true,
            models: vec![HOSTILE.into()],
            prices: vec![ModelPrice {
                id: HOSTILE.into(),
                input: U256::from(1000),
                output: U256::from(2000),
            }],
            stake: U256::from(5),
        },
        measurement_allowed: verdict.is_ok(),
        checks: vec![
            Check::pass(QuoteCheck::QuoteParses, "parsed"),
            if verdict.is_ok() {
                Check::pass(PolicyCheck::MeasurementAllowed, "in the list")
            } else {
                Check::fail(PolicyCheck::MeasurementAllowed, HOSTILE)
            },
        ],
        verdict,
        checked_at: 90,
        stats: Arc::new(NodeStats::default()),
    })
}

fn render(snapshot: &Snapshot, chain: &ChainView) -> String {
    let mut config = GatewayConfig::new(RegistryConfig {
        rpc_url: "http://rpc".into(),
        chain_id: 31337,
        registry: Address::repeat_byte(0xee),
    });
    config.escrow = Some(Address::repeat_byte(0xec));
    page(&PageInput {
        config: &config,
        gateway_signer: Address::repeat_byte(0x99),
        snapshot,
        chain,
        now: 100,
    })
}

#[test]
fn escaping_covers_markup_and_quotes_and_cuts_long_text() {
    assert_eq!(
        esc(HOSTILE),
        "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&quot;&amp;"
    );
    assert_eq!(esc("a\u{0}b"), "a\u{FFFD}b");
    assert_eq!(esc(&"x".repeat(5000)).chars().count(), MAX_DETAIL_CHARS + 1);
}

#[test]
fn a_page_shows_each_verdict_with_its_checks_and_never_raw_markup_from_the_chain() {
    let snapshot = Snapshot {
        nodes: vec![
            node(1, "http://good:1", Ok(Some("ab".into()))),
            node(2, HOSTILE, Err(format!("measurement_not_allowed: {HOSTILE}"))),
        ],
        registry_error: Some(HOSTILE.into()),
        read_at: 95,
    };
    let mut chain = ChainView::unread();
    chain.has_escrow = true;
    chain.read_at = 99;
    chain.pending = Ok(vec![PendingMeasurement {
        measurement: B256::repeat_byte(1),
        allowed: false,
        eta: 160,
    }]);
    chain.tally.add(
        &[Settlement {
            authorization: B256::ZERO,
            node: Address::repeat_byte(1),
            client: Address::repeat_byte(7),
            cumulative: U256::from(42),
            paid: U256::from(42),
        }],
        10,
    );
    let html = render(&snapshot, &chain);
    assert!(!html.contains("<script"), "raw markup from the chain");
    assert!(!html.contains(HOSTILE));
    assert!(html.contains("&lt;script&gt;"));
    assert!(html.contains("name=\"viewport\""));
    assert!(html.contains("data-verdict=\"verified\""));
    assert!(html.contains("data-verdict=\"refused\""));
    assert!(html.contains("measurement_not_allowed"));
    assert!(html.contains("<b>measurement in the allowed list</b>"));
    assert!(html.contains("not allowed by governance"));
    assert!(html.contains("to be withdrawn"));
    assert!(html.contains("in 60 s"));
    assert!(html.contains("id=\"total-nodes\">2<"));
    assert!(html.contains("id=\"total-verified\">1<"));
    assert!(html.contains("id=\"total-settled\">42<"));
    // The good node (operator 0x0101…) earned the settlement; the other nothing.
    assert!(html.contains("<dd class=\"earnings\">42 "));
    assert!(html.contains("<dd class=\"earnings\">0 "));
}

#[test]
fn an_empty_network_says_so() {
    let html = render(&Snapshot::default(), &ChainView::unread());
    assert!(html.contains("The registry lists no node."));
    assert!(html.contains("knows no escrow"));
    let mut chain = ChainView::unread();
    chain.has_escrow = true;
    assert!(render(&Snapshot::default(), &chain).contains("None yet."));
}
