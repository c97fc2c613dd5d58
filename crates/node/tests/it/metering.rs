//! Metering under load: many paid requests at once (plain and streamed, several API keys) through
//! the real router, billing and fsync'd SQLite ledger. Every answer is charged exactly once: the
//! receipts of one key are the running totals 1·c … n·c, and the ledger holds n·c.
//!
//! No model or chain is needed: the engine is [`FixedUsageEngine`] and deposits come from
//! [`FixedDeposits`], both test doubles named as such.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::{Address, B256, U256};
use async_trait::async_trait;
use axum::body::Body;
use axum::http::Request;
use cloister_crypto::EnclaveKey;
use cloister_engine::{ChunkStream, Engine, ModelCard};
use cloister_node::NodeConfig;
use cloister_node::billing::{Billing, DepositSource, Ledger, Price};
use cloister_types::eip712::{ApiKey, SpendAuthorization, authorization_id, escrow_domain};
use cloister_types::openai::{
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatMessage, Choice, ChunkChoice, Delta,
    Usage,
};
use cloister_types::wire::{CHAT_COMPLETIONS_PATH, RECEIPT_HEADER, SIGNATURE_EVENT};
use serde_json::{Value, json};

use crate::common::{chat_body, oneshot, split_sse, state};

/// The model the doubles serve.
pub const MODEL: &str = "fixed-usage";
/// Usage of every answer: 7 prompt tokens, 5 completion tokens.
pub const USAGE: Usage = Usage {
    prompt_tokens: 7,
    completion_tokens: 5,
    total_tokens: 12,
};

/// Test double engine: answers at once with "ok" and [`USAGE`], plain or streamed (one content
/// chunk, then a usage-only chunk).
pub struct FixedUsageEngine;

#[async_trait]
impl Engine for FixedUsageEngine {
    fn models(&self) -> Vec<ModelCard> {
        vec![ModelCard {
            id: MODEL.into(),
            sha256: None,
            owned_by: "test-double".into(),
        }]
    }

    async fn complete(&self, _req: ChatCompletionRequest) -> cloister_engine::Result<ChatCompletion> {
        Ok(ChatCompletion {
            id: "chatcmpl-double".into(),
            object: "chat.completion".into(),
            model: MODEL.into(),
            choices: vec![Choice {
                message: ChatMessage::text("assistant", "ok"),
                finish_reason: Some("stop".into()),
                ..Choice::default()
            }],
            usage: Some(USAGE),
            ..ChatCompletion::default()
        })
    }

    async fn stream(&self, _req: ChatCompletionRequest) -> cloister_engine::Result<ChunkStream> {
        let chunk = |choices: Vec<ChunkChoice>, usage: Option<Usage>| ChatCompletionChunk {
            id: "chatcmpl-double".into(),
            object: "chat.completion.chunk".into(),
            model: MODEL.into(),
            choices,
            usage,
            ..ChatCompletionChunk::default()
        };
        let content = chunk(
            vec![ChunkChoice {
                delta: Delta {
                    content: Some("ok".into()),
                    ..Delta::default()
                },
                finish_reason: Some("stop".into()),
                ..ChunkChoice::default()
            }],
            None,
        );
        let usage = chunk(Vec::new(), Some(USAGE));
        Ok(Box::pin(futures::stream::iter([Ok(content), Ok(usage)])))
    }
}

/// Test double deposit source: every client has the balance given in escrow.
pub struct FixedDeposits(pub U256);

#[async_trait]
impl DepositSource for FixedDeposits {
    async fn balance(&self, _client: Address) -> Result<U256, String> {
        Ok(self.0)
    }
}

fn price() -> Price {
    Price {
        input: U256::from(1_000u64),
        output: U256::from(3_000u64),
    }
}

/// What one answer costs at [`price`].
fn cost() -> U256 {
    U256::from(7u64 * 1_000 + 5 * 3_000)
}

pub fn api_key(domain: &cloister_types::eip712::Domain, operator: Address) -> (ApiKey, B256) {
    let client = EnclaveKey::generate();
    let auth = SpendAuthorization {
        client: client.address(),
        node: operator,
        maxAmount: U256::from(1_000_000_000u64),
        expiry: 4_000_000_000,
        salt: B256::from(rand::random::<[u8; 32]>()),
    };
    let id = authorization_id(domain, &auth);
    (ApiKey::new(auth, client.sign_prehash(&id.0)), id)
}

/// The `cumulative_amount` of a paid answer's receipt (header, or the signature event).
fn receipt_total(headers: &axum::http::HeaderMap, body: &[u8], stream: bool) -> U256 {
    let receipt: Value = if stream {
        let answer = split_sse(body);
        let event = answer
            .signature
            .unwrap_or_else(|| panic!("no {SIGNATURE_EVENT} event"));
        event["receipt"].clone()
    } else {
        serde_json::from_str(headers[RECEIPT_HEADER].to_str().unwrap()).unwrap()
    };
    receipt["cumulative_amount"].as_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_paid_requests_meter_exactly() {
    const KEYS: usize = 3;
    const PER_KEY: usize = 24;
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Ledger::open(&dir.path().join("ledger.sqlite")).unwrap());
    let domain = escrow_domain(31337, Address::repeat_byte(0xee));
    let operator = Address::repeat_byte(0x0b);
    let billing = Arc::new(Billing::new(
        Arc::clone(&ledger),
        domain.clone(),
        operator,
        HashMap::from([(MODEL.to_owned(), price())]),
        Arc::new(FixedDeposits(U256::from(1u64))),
        Duration::from_secs(60),
    ));
    let state = state(Arc::new(FixedUsageEngine), NodeConfig::default()).with_billing(billing);
    let keys: Vec<(ApiKey, B256)> = (0..KEYS).map(|_| api_key(&domain, operator)).collect();

    let mut tasks = Vec::new();
    for i in 0..KEYS * PER_KEY {
        let (key, id) = keys[i % KEYS].clone();
        let state = state.clone();
        let stream = i % 2 == 1;
        tasks.push(tokio::spawn(async move {
            let request = Request::post(CHAT_COMPLETIONS_PATH)
                .header("authorization", format!("Bearer {}", key.encode()))
                .header(
                    cloister_types::wire::INLINE_SIGNATURE_HEADER,
                    cloister_types::wire::INLINE_SIGNATURE_ON,
                )
                .body(Body::from(chat_body(MODEL, "hi", stream, json!({}))))
                .unwrap();
            let (response, body) = oneshot(&state, request).await;
            assert_eq!(response.status(), 200, "{}", String::from_utf8_lossy(&body));
            (id, receipt_total(response.headers(), &body, stream))
        }));
    }
    let mut totals: HashMap<B256, Vec<U256>> = HashMap::new();
    for task in tasks {
        let (id, total) = task.await.unwrap();
        totals.entry(id).or_default().push(total);
    }
    for (_, id) in &keys {
        let mut seen = totals.remove(id).unwrap();
        seen.sort_unstable();
        let expected: Vec<U256> = (1..=PER_KEY as u64).map(|n| cost() * U256::from(n)).collect();
        assert_eq!(seen, expected, "each answer charged once, in sequence ({id})");
        assert_eq!(
            ledger.cumulative(*id).await.unwrap(),
            cost() * U256::from(PER_KEY as u64),
            "the ledger agrees with the receipts"
        );
    }
    let unsettled = ledger.unsettled().await.unwrap();
    assert_eq!(unsettled.len(), KEYS);
}
