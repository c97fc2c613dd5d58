//! A minimal JSON-RPC client for the three calls discovery makes, and its errors. Answers are read
//! up to [`MAX_ANSWER_BYTES`]; an endpoint that sends more, or anything but the expected shape, is
//! refused with the method named.

use alloy_primitives::{Address, B256};
use alloy_sol_types::SolCall;
use cloister_types::logscan::BlockRange;
use futures::StreamExt;
use serde_json::{Value, json};

/// Largest JSON-RPC answer read (a full page of nodes is far smaller).
pub const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;
/// Longest RPC error message kept (the rest is cut).
const MAX_MESSAGE_CHARS: usize = 300;

/// Why discovery failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoverError {
    /// The registry address is zero (not deployed, or not configured).
    #[error("no NodeRegistry address configured")]
    NoRegistry,
    /// The endpoint could not be reached, or the connection broke.
    #[error("JSON-RPC transport: {0}")]
    Transport(String),
    /// The endpoint answered an HTTP error status.
    #[error("JSON-RPC {method}: HTTP {status}")]
    HttpStatus {
        /// The method called.
        method: &'static str,
        /// The HTTP status.
        status: u16,
    },
    /// The endpoint's answer exceeded [`MAX_ANSWER_BYTES`].
    #[error("JSON-RPC {method}: answer over {limit} bytes")]
    AnswerTooLarge {
        /// The method called.
        method: &'static str,
        /// The limit.
        limit: usize,
    },
    /// The endpoint answered a JSON-RPC error (a revert, an unknown method).
    #[error("JSON-RPC {method}: error {code}: {message}")]
    Rpc {
        /// The method called.
        method: &'static str,
        /// The JSON-RPC error code.
        code: i64,
        /// Its message (cut to a few hundred characters).
        message: String,
    },
    /// The answer is not what the method returns (not JSON, not hex, does not ABI-decode).
    #[error("JSON-RPC {method}: malformed answer: {detail}")]
    Malformed {
        /// The method or contract function.
        method: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The endpoint serves another chain than the configuration names.
    #[error("the RPC endpoint serves chain {actual}, not {expected}")]
    WrongChain {
        /// The configured chain id.
        expected: u64,
        /// The endpoint's chain id.
        actual: u64,
    },
    /// The registry lists more of something than discovery accepts.
    #[error("the registry lists more than {limit} {what}")]
    TooMany {
        /// What.
        what: &'static str,
        /// The cap.
        limit: u64,
    },
}

/// One endpoint.
pub(super) struct Rpc<'a> {
    http: &'a reqwest::Client,
    url: &'a str,
}

/// A log's topics and data.
pub(super) type RawLog = (Vec<B256>, Vec<u8>);

impl<'a> Rpc<'a> {
    pub(super) fn new(http: &'a reqwest::Client, url: &'a str) -> Self {
        Self { http, url }
    }

    /// The endpoint's chain id.
    pub(super) async fn chain_id(&self) -> Result<u64, DiscoverError> {
        self.quantity("eth_chainId").await
    }

    /// `eth_call` of `call` on `to` at the latest block, its answer ABI-decoded.
    pub(super) async fn call<C: SolCall>(&self, to: Address, call: &C) -> Result<C::Return, DiscoverError> {
        let params = json!([
            {"to": hex_string(to), "data": hex_string(call.abi_encode())},
            "latest",
        ]);
        let result = self.request("eth_call", params).await?;
        let bytes = hex_bytes(C::SIGNATURE, &result)?;
        C::abi_decode_returns(&bytes).map_err(|e| malformed(C::SIGNATURE, e.to_string()))
    }

    /// A parameterless method whose answer is a `0x` hex quantity.
    async fn quantity(&self, method: &'static str) -> Result<u64, DiscoverError> {
        let result = self.request(method, json!([])).await?;
        let text = result.as_str().ok_or_else(|| malformed(method, "not a string"))?;
        let digits = text
            .strip_prefix("0x")
            .ok_or_else(|| malformed(method, "not 0x-prefixed"))?;
        u64::from_str_radix(digits, 16).map_err(|e| malformed(method, e.to_string()))
    }

    /// The latest block number.
    pub(super) async fn block_number(&self) -> Result<u64, DiscoverError> {
        self.quantity("eth_blockNumber").await
    }

    /// Every log of `address` with first topic `topic0` in `range`, in the endpoint's order.
    pub(super) async fn logs(
        &self,
        address: Address,
        topic0: B256,
        range: BlockRange,
    ) -> Result<Vec<RawLog>, DiscoverError> {
        const METHOD: &str = "eth_getLogs";
        let params = json!([{
            "address": hex_string(address),
            "fromBlock": format!("{:#x}", range.from),
            "toBlock": format!("{:#x}", range.to),
            "topics": [hex_string(topic0)],
        }]);
        let result = self.request(METHOD, params).await?;
        let Value::Array(entries) = result else {
            return Err(malformed(METHOD, "not a list of logs"));
        };
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            if entry.get("removed").and_then(Value::as_bool) == Some(true) {
                continue;
            }
            let topics = entry
                .get("topics")
                .and_then(Value::as_array)
                .ok_or_else(|| malformed(METHOD, "a log without topics"))?
                .iter()
                .map(|t| {
                    let bytes = hex_bytes(METHOD, t)?;
                    B256::try_from(bytes.as_slice()).map_err(|_| malformed(METHOD, "a topic is not 32 bytes"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let data = hex_bytes(METHOD, entry.get("data").unwrap_or(&Value::Null))?;
            out.push((topics, data));
        }
        Ok(out)
    }

    /// One JSON-RPC request; its `result`.
    async fn request(&self, method: &'static str, params: Value) -> Result<Value, DiscoverError> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let resp = self
            .http
            .post(self.url)
            .json(&body)
            .send()
            .await
            .map_err(|e| DiscoverError::Transport(e.to_string()))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(DiscoverError::HttpStatus {
                method,
                status: status.as_u16(),
            });
        }
        if resp.content_length().is_some_and(|n| n > MAX_ANSWER_BYTES as u64) {
            return Err(DiscoverError::AnswerTooLarge {
                method,
                limit: MAX_ANSWER_BYTES,
            });
        }
        let mut raw = Vec::new();
        let mut chunks = resp.bytes_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| DiscoverError::Transport(e.to_string()))?;
            if raw.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(DiscoverError::AnswerTooLarge {
                    method,
                    limit: MAX_ANSWER_BYTES,
                });
            }
            raw.extend_from_slice(&chunk);
        }
        let mut answer: Value =
            serde_json::from_slice(&raw).map_err(|e| malformed(method, format!("not JSON: {e}")))?;
        if let Some(err) = answer.get("error").filter(|e| !e.is_null()) {
            let code = err.get("code").and_then(Value::as_i64).unwrap_or_default();
            let message: String = err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("(no message)")
                .chars()
                .take(MAX_MESSAGE_CHARS)
                .collect();
            return Err(DiscoverError::Rpc {
                method,
                code,
                message,
            });
        }
        match answer.get_mut("result").map(Value::take) {
            Some(result) => Ok(result),
            None => Err(malformed(method, "neither result nor error")),
        }
    }
}

fn malformed(method: &'static str, detail: impl Into<String>) -> DiscoverError {
    DiscoverError::Malformed {
        method,
        detail: detail.into(),
    }
}

/// Bytes as a `0x`-hex JSON string.
fn hex_string(bytes: impl AsRef<[u8]>) -> String {
    format!("0x{}", hex::encode(bytes))
}

/// A `0x`-hex JSON string as bytes.
fn hex_bytes(method: &'static str, value: &Value) -> Result<Vec<u8>, DiscoverError> {
    let text = value
        .as_str()
        .ok_or_else(|| malformed(method, "expected a hex string"))?;
    let digits = text
        .strip_prefix("0x")
        .ok_or_else(|| malformed(method, "hex without 0x"))?;
    hex::decode(digits).map_err(|e| malformed(method, format!("bad hex: {e}")))
}
