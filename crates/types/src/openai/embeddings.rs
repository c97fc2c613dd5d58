//! OpenAI embeddings (`POST /v1/embeddings`): one vector per input text.
//!
//! The answer is a `list` of `embedding` objects, each a vector of floats or, when the request asks
//! for `encoding_format: "base64"` (the OpenAI Python SDK's default), the base64 of its
//! little-endian `f32` bytes.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::Usage;

/// `encoding_format` value asking for base64 vectors.
pub const ENCODING_BASE64: &str = "base64";

/// `POST /v1/embeddings` body.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingRequest {
    /// Model id, as listed by `GET /v1/models`.
    pub model: String,
    /// A string or an array of strings (OpenAI also allows token ids; see
    /// [`EmbeddingRequest::input_texts`]).
    pub input: Value,
    /// `float` (default) or `base64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_format: Option<String>,
    /// Output dimensions (only models trained for it honour it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
    /// Everything else (`user`, ...), passed through to upstream engines.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl EmbeddingRequest {
    /// The inputs as texts: a JSON string, or a non-empty array of strings. Token-id inputs and
    /// anything else are `None`: callers refuse them.
    pub fn input_texts(&self) -> Option<Vec<&str>> {
        match &self.input {
            Value::String(s) => Some(vec![s.as_str()]),
            Value::Array(items) if !items.is_empty() => items.iter().map(Value::as_str).collect(),
            _ => None,
        }
    }

    /// Whether the answer should carry base64 vectors.
    pub fn wants_base64(&self) -> bool {
        self.encoding_format.as_deref() == Some(ENCODING_BASE64)
    }
}

/// An embeddings answer (`object: "list"`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingResponse {
    /// The node's id for this answer (the key of `/v1/signature/{id}`); OpenAI sends none, so it is
    /// left out when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// `list`.
    pub object: String,
    /// One embedding per input, in input order.
    pub data: Vec<Embedding>,
    /// Model id.
    pub model: String,
    /// Token usage (prompt tokens only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<EmbeddingUsage>,
    /// Other fields from an upstream.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One embedding.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Embedding {
    /// `embedding`.
    pub object: String,
    /// Position of its input.
    pub index: u32,
    /// The vector: floats, or a base64 string of little-endian `f32`s.
    pub embedding: Value,
    /// Other fields from an upstream.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `usage` of an embeddings answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbeddingUsage {
    /// Tokens in all inputs.
    pub prompt_tokens: u32,
    /// The same number (nothing is generated).
    pub total_tokens: u32,
}

impl EmbeddingUsage {
    /// Usage of `prompt_tokens` input tokens.
    pub fn new(prompt_tokens: u32) -> Self {
        Self {
            prompt_tokens,
            total_tokens: prompt_tokens,
        }
    }

    /// As chat usage (no completion tokens), for metering.
    pub fn as_usage(&self) -> Usage {
        Usage::new(self.prompt_tokens, 0)
    }
}

/// The base64 form of `vector` (little-endian `f32` bytes), as OpenAI sends it.
pub fn encode_vector_base64(vector: &[f32]) -> String {
    use base64::Engine as _;
    let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_strings() {
        let parse = |body: &str| serde_json::from_str::<EmbeddingRequest>(body).unwrap_or_default();
        assert_eq!(
            parse(r#"{"model":"m","input":"hi"}"#).input_texts(),
            Some(vec!["hi"])
        );
        assert_eq!(
            parse(r#"{"model":"m","input":["a","b"]}"#).input_texts(),
            Some(vec!["a", "b"])
        );
        assert_eq!(parse(r#"{"model":"m","input":[]}"#).input_texts(), None);
        assert_eq!(parse(r#"{"model":"m","input":[1,2]}"#).input_texts(), None);
        let req = parse(r#"{"model":"m","input":"x","encoding_format":"base64","user":"u"}"#);
        assert!(req.wants_base64() && req.extra.contains_key("user"));
    }

    #[test]
    fn base64_is_little_endian_f32() {
        assert_eq!(encode_vector_base64(&[1.0]), "AACAPw==");
    }
}
