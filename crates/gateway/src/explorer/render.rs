//! The explorer's HTML. Every string from the chain or a node passes through [`esc`]; numbers and
//! addresses are formatted here and escaped all the same.

use std::fmt::Write;

use alloy_primitives::{Address, U256};
use cloister_attest::check::{Check, Outcome};

use super::chain::{ChainView, Earnings};
use crate::GatewayConfig;
use crate::directory::{NodeEntry, Snapshot};

/// Longest check detail or refusal shown (the rest is cut).
const MAX_DETAIL_CHARS: usize = 600;

/// What one page is made of.
#[derive(Debug)]
pub struct PageInput<'a> {
    /// The gateway's configuration (chain, registry, escrow).
    pub config: &'a GatewayConfig,
    /// The gateway's signing address.
    pub gateway_signer: Address,
    /// The directory's view of the nodes.
    pub snapshot: &'a Snapshot,
    /// The explorer's chain reads.
    pub chain: &'a ChainView,
    /// Now (unix seconds).
    pub now: u64,
}

/// `text` made safe for HTML text and attribute values, cut to `MAX_DETAIL_CHARS` characters.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, c) in text.chars().enumerate() {
        if i == MAX_DETAIL_CHARS {
            out.push('…');
            break;
        }
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "\
*{box-sizing:border-box}\
body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;background:#f4f6f8;color:#1b1f24}\
header,main,footer{max-width:1100px;margin:0 auto;padding:10px 14px}\
header{background:#1d2b3a;color:#fff;max-width:none}header p{margin:.2em 0;color:#c9d6e3}\
h1{font-size:1.35em;margin:.2em 0}h2{font-size:1.15em;margin:1em 0 .4em}h3{font-size:1em;margin:0 0 .4em}\
.mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.86em;word-break:break-all}\
.grid{display:grid;gap:10px;grid-template-columns:repeat(auto-fit,minmax(min(100%,150px),1fr))}\
.nodes{display:grid;gap:12px;grid-template-columns:repeat(auto-fit,minmax(min(100%,480px),1fr))}\
.card{background:#fff;border:1px solid #d7dde4;border-radius:8px;padding:10px 12px;min-width:0}\
.card.verified{border-left:6px solid #1f9d49}.card.refused{border-left:6px solid #c8322a}\
.figure{font-size:1.3em;font-weight:650;overflow-wrap:anywhere}.label{color:#56606b;font-size:.85em}\
.badge{display:inline-block;padding:0 8px;border-radius:10px;font-weight:650;font-size:.85em;white-space:nowrap}\
.ok{background:#d8f3df;color:#0f5f2a}.bad{background:#fbe0de;color:#8c1a13}\
.warn{background:#fff0c2;color:#694c00}.skip{background:#e9edf1;color:#4a5563}\
.why{background:#fbe0de;border-radius:6px;padding:6px 8px;margin:.4em 0;overflow-wrap:anywhere}\
dl{display:grid;grid-template-columns:max-content minmax(0,1fr);gap:3px 12px;margin:.5em 0}\
dt{color:#56606b}dd{margin:0;min-width:0}\
ul{margin:.2em 0;padding-left:1.1em}ul.checks{list-style:none;padding:0}\
ul.checks li{padding:3px 0;border-top:1px solid #eef1f4}\
.detail{color:#56606b;font-size:.85em;display:block;overflow-wrap:anywhere}\
.scroll{overflow-x:auto}table{border-collapse:collapse;width:100%;background:#fff}\
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #e3e7ec;vertical-align:top}\
@media (max-width:600px){dl{grid-template-columns:1fr}dt{margin-top:5px;font-weight:600}\
.summary td:nth-child(3),.summary th:nth-child(3){display:none}}";

/// The whole page.
pub fn page(input: &PageInput<'_>) -> String {
    let mut h = String::with_capacity(32 * 1024);
    h.push_str(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Cloister network explorer</title><style>",
    );
    h.push_str(STYLE);
    h.push_str("</style></head><body>");
    header(&mut h, input);
    h.push_str("<main>");
    totals(&mut h, input);
    summary(&mut h, input);
    h.push_str("<h2>Nodes</h2><div class=\"nodes\">");
    for node in &input.snapshot.nodes {
        node_card(&mut h, input, node);
    }
    if input.snapshot.nodes.is_empty() {
        h.push_str("<p>The registry lists no node.</p>");
    }
    h.push_str("</div>");
    pending(&mut h, input);
    settlements(&mut h, input);
    h.push_str("</main>");
    footer(&mut h, input);
    h.push_str("</body></html>");
    h
}

fn header(h: &mut String, input: &PageInput<'_>) {
    let c = input.config;
    let _ = write!(
        h,
        "<header><h1>Cloister network explorer</h1>\
         <p>Chain {} · registry <span class=\"mono\">{}</span>{}</p>\
         <p>Every verdict below is this gateway's own fresh verification \
         (gateway <span class=\"mono\">{}</span>); verify nodes yourself before trusting them.</p></header>",
        c.registry.chain_id,
        esc(&format!("{:#x}", c.registry.registry)),
        c.escrow.map_or(String::new(), |e| format!(
            " · escrow <span class=\"mono\">{}</span>",
            esc(&format!("{e:#x}"))
        )),
        esc(&format!("{:#x}", input.gateway_signer)),
    );
}

fn totals(h: &mut String, input: &PageInput<'_>) {
    let nodes = &input.snapshot.nodes;
    let active = nodes.iter().filter(|n| n.registered.active).count();
    let verified = nodes.iter().filter(|n| n.verdict.is_ok()).count();
    let stake = nodes
        .iter()
        .fold(U256::ZERO, |sum, n| sum.saturating_add(n.registered.stake));
    let tally = &input.chain.tally;
    let settled = if input.chain.has_escrow {
        format!(
            "{}<div class=\"label\">{}</div>",
            esc(&tally.total_paid.to_string()),
            plural(tally.count, "settlement")
        )
    } else {
        "–<div class=\"label\">escrow unknown</div>".to_owned()
    };
    let _ = write!(
        h,
        "<h2>Network</h2><div class=\"grid\" id=\"totals\">\
         <div class=\"card\"><div class=\"label\">Nodes registered</div><div class=\"figure\" id=\"total-nodes\">{}</div><div class=\"label\">{active} active</div></div>\
         <div class=\"card\"><div class=\"label\">Verified now</div><div class=\"figure\" id=\"total-verified\">{verified}</div><div class=\"label\">by this gateway</div></div>\
         <div class=\"card\"><div class=\"label\">Total stake</div><div class=\"figure\">{}</div><div class=\"label\">token base units</div></div>\
         <div class=\"card\"><div class=\"label\">Total settled</div><div class=\"figure\" id=\"total-settled\">{settled}</div></div>\
         </div>",
        nodes.len(),
        esc(&stake.to_string()),
    );
}

/// (class, label) of a node's verdict.
fn verdict_badge(node: &NodeEntry) -> (&'static str, &'static str) {
    match &node.verdict {
        Ok(_) => ("verified", "verified"),
        Err(_) if !node.registered.active => ("refused", "inactive"),
        Err(_) => ("refused", "refused"),
    }
}

fn badge_class(verdict_class: &str) -> &'static str {
    if verdict_class == "verified" { "ok" } else { "bad" }
}

/// One line per node: the verdicts at a glance (what a phone shows first).
fn summary(h: &mut String, input: &PageInput<'_>) {
    if input.snapshot.nodes.is_empty() {
        return;
    }
    h.push_str(
        "<h2>Verdicts</h2><div class=\"scroll\"><table class=\"summary\"><tr><th>Node</th><th>Verdict</th><th>Signer</th></tr>",
    );
    for node in &input.snapshot.nodes {
        let (class, label) = verdict_badge(node);
        let why = match &node.verdict {
            Ok(_) => String::new(),
            Err(e) => format!(
                "<span class=\"detail\">{}</span>",
                esc(e.split(':').next().unwrap_or_default())
            ),
        };
        let _ = write!(
            h,
            "<tr><td class=\"mono\">{}</td><td><span class=\"badge {}\">{label}</span>{why}</td><td class=\"mono\">{}</td></tr>",
            esc(&node.registered.endpoint),
            badge_class(class),
            esc(&short(&format!("{:#x}", node.registered.signer))),
        );
    }
    h.push_str("</table></div>");
}

fn node_card(h: &mut String, input: &PageInput<'_>, node: &NodeEntry) {
    let r = &node.registered;
    let (class, label) = verdict_badge(node);
    let signer = format!("{:#x}", r.signer);
    let _ = write!(
        h,
        "<article class=\"card {class}\" id=\"node-{}\" data-verdict=\"{label}\">\
         <h3><span class=\"badge {}\">{label}</span> <span class=\"mono\">{}</span></h3>",
        esc(&signer),
        badge_class(class),
        esc(&r.endpoint),
    );
    if let Err(why) = &node.verdict {
        let _ = write!(h, "<p class=\"why\">{}</p>", esc(why));
    }
    let allowed = if node.measurement_allowed {
        "<span class=\"badge ok\">allowed by governance</span>"
    } else {
        "<span class=\"badge bad\">not allowed by governance</span>"
    };
    let _ = write!(
        h,
        "<dl><dt>Signer</dt><dd class=\"mono\">{}</dd>\
         <dt>Operator</dt><dd class=\"mono\">{}</dd>\
         <dt>Measurement</dt><dd><span class=\"mono\">{}</span> {allowed}</dd>",
        esc(&signer),
        esc(&format!("{:#x}", r.operator)),
        esc(&format!("{:#x}", r.measurement)),
    );
    if let Ok(list) = &input.chain.pending {
        for p in list.iter().filter(|p| p.measurement == r.measurement) {
            let _ = write!(
                h,
                "<dt>Pending change</dt><dd><span class=\"badge warn\">{}</span> {}</dd>",
                if p.allowed {
                    "to be allowed"
                } else {
                    "to be withdrawn"
                },
                esc(&when(p.eta, input.now)),
            );
        }
    }
    h.push_str("<dt>Models</dt><dd><ul>");
    for p in &r.prices {
        let _ = write!(
            h,
            "<li><span class=\"mono\">{}</span>: {} in / {} out per token</li>",
            esc(&p.id),
            esc(&p.input.to_string()),
            esc(&p.output.to_string()),
        );
    }
    if r.prices.is_empty() {
        h.push_str("<li>none listed</li>");
    }
    let earnings = input
        .chain
        .tally
        .by_node
        .get(&r.operator)
        .copied()
        .unwrap_or(Earnings::default());
    let latency = node
        .stats
        .latency()
        .map_or("–".to_owned(), |d| format!("{:.1} ms", d.as_secs_f64() * 1e3));
    let _ = write!(
        h,
        "</ul></dd><dt>Stake</dt><dd>{}</dd>\
         <dt>Settled earnings</dt><dd class=\"earnings\">{} <span class=\"label\">({})</span></dd>\
         <dt>Through this gateway</dt><dd>{} forwarded, {} in flight, {latency} to first byte</dd>\
         <dt>Verified</dt><dd>{}</dd></dl>",
        esc(&r.stake.to_string()),
        esc(&earnings.paid.to_string()),
        plural(earnings.settlements, "settlement"),
        node.stats.forwarded(),
        node.stats.in_flight(),
        esc(&ago(node.checked_at, input.now)),
    );
    // A refused node's checks are open; a verified node's fold under their counts.
    checks(h, &node.checks, node.verdict.is_err());
    h.push_str("</article>");
}

fn checks(h: &mut String, checks: &[Check], open: bool) {
    if checks.is_empty() {
        h.push_str("<p class=\"label\">No report was read, so no check ran.</p>");
        return;
    }
    let count = |o: Outcome| checks.iter().filter(|c| c.outcome == o).count();
    let _ = write!(
        h,
        "<details{}><summary>Checks: {} passed, {} failed, {} warnings, {} skipped</summary><ul class=\"checks\">",
        if open { " open" } else { "" },
        count(Outcome::Pass),
        count(Outcome::Fail),
        count(Outcome::Warn),
        count(Outcome::Skip),
    );
    for c in checks {
        let (class, label) = match c.outcome {
            Outcome::Pass => ("ok", "passed"),
            Outcome::Fail => ("bad", "failed"),
            Outcome::Warn => ("warn", "warning"),
            Outcome::Skip => ("skip", "skipped"),
        };
        let _ = write!(
            h,
            "<li class=\"check-{label}\"><span class=\"badge {class}\">{label}</span> <b>{}</b><span class=\"detail\">{}</span></li>",
            esc(&c.id.to_string()),
            esc(&c.detail),
        );
    }
    h.push_str("</ul></details>");
}

fn pending(h: &mut String, input: &PageInput<'_>) {
    h.push_str("<h2>Pending measurement changes</h2>");
    match &input.chain.pending {
        Err(e) => {
            let _ = write!(h, "<p class=\"why\">Could not read them: {}</p>", esc(e));
        }
        Ok(list) if list.is_empty() => h.push_str("<p>None.</p>"),
        Ok(list) => {
            h.push_str(
                "<div class=\"scroll\"><table><tr><th>Measurement</th><th>Change</th><th>When</th></tr>",
            );
            for p in list {
                let _ = write!(
                    h,
                    "<tr><td class=\"mono\">{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&format!("{:#x}", p.measurement)),
                    if p.allowed { "allow" } else { "withdraw" },
                    esc(&when(p.eta, input.now)),
                );
            }
            h.push_str("</table></div>");
        }
    }
}

fn settlements(h: &mut String, input: &PageInput<'_>) {
    h.push_str("<h2>Latest settlements</h2>");
    let chain = input.chain;
    if !chain.has_escrow {
        h.push_str("<p>The gateway knows no escrow to read.</p>");
        return;
    }
    if let Some(e) = &chain.settlement_error {
        let _ = write!(h, "<p class=\"why\">The last read failed: {}</p>", esc(e));
    }
    if chain.tally.recent.is_empty() {
        h.push_str("<p>None yet.</p>");
        return;
    }
    h.push_str(
        "<div class=\"scroll\"><table id=\"settlements\"><tr><th>Node (operator)</th><th>Client</th><th>Paid</th><th>Voucher total</th></tr>",
    );
    for s in &chain.tally.recent {
        let _ = write!(
            h,
            "<tr><td class=\"mono\">{}</td><td class=\"mono\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(&short(&format!("{:#x}", s.node))),
            esc(&short(&format!("{:#x}", s.client))),
            esc(&s.paid.to_string()),
            esc(&s.cumulative.to_string()),
        );
    }
    h.push_str("</table></div>");
}

fn footer(h: &mut String, input: &PageInput<'_>) {
    let snap = input.snapshot;
    h.push_str("<footer class=\"label\">");
    let _ = write!(
        h,
        "Registry read {}; chain figures read {}.",
        esc(&ago(snap.read_at, input.now)),
        esc(&ago(input.chain.read_at, input.now)),
    );
    if let Some(e) = &snap.registry_error {
        let _ = write!(
            h,
            " <span class=\"why\">Last registry read failed: {}</span>",
            esc(e)
        );
    }
    h.push_str("</footer>");
}

/// `1 settlement`, `2 settlements`.
fn plural(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// `0x1234…abcd`.
fn short(hex: &str) -> String {
    match (hex.get(..6), hex.get(hex.len().saturating_sub(4)..)) {
        (Some(head), Some(tail)) if hex.len() > 12 => format!("{head}…{tail}"),
        _ => hex.to_owned(),
    }
}

fn ago(at: u64, now: u64) -> String {
    if at == 0 {
        return "never".to_owned();
    }
    format!("{} s ago", now.saturating_sub(at))
}

fn when(eta: u64, now: u64) -> String {
    if eta <= now {
        format!("executable now (eta {eta})")
    } else {
        format!("in {} s (eta {eta})", eta - now)
    }
}

#[cfg(test)]
mod tests;
