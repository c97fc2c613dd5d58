//! OpenAI legacy text completions (`POST /v1/completions`): a raw prompt, no chat template.
//!
//! A streamed answer is a series of [`TextCompletion`] objects (`object: "text_completion"`, each
//! choice carrying the new text), then `data: [DONE]`, as OpenAI and vLLM send it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Stop, StreamOptions, Usage};

/// `POST /v1/completions` body.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionRequest {
    /// Model id, as listed by `GET /v1/models`.
    pub model: String,
    /// The prompt: a string (OpenAI also allows an array; see [`CompletionRequest::prompt_text`]).
    pub prompt: Value,
    /// Upper bound on generated tokens (OpenAI's default for this endpoint is 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Sampling temperature; 0 means greedy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Nucleus sampling mass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// Seed for reproducible sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Stop sequences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    /// Server-sent events instead of one JSON body.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    /// Streaming options (`include_usage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Everything else (`echo`, `suffix`, `logprobs`, `n`, ...), passed through to upstream engines.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl CompletionRequest {
    /// The prompt as one string: a JSON string, or an array holding exactly one string. Several
    /// prompts in one request (and token-id prompts) are `None`: callers refuse them.
    pub fn prompt_text(&self) -> Option<&str> {
        match &self.prompt {
            Value::String(s) => Some(s),
            Value::Array(items) => match items.as_slice() {
                [Value::String(s)] => Some(s),
                _ => None,
            },
            _ => None,
        }
    }
}

/// A text completion, whole or one streamed chunk of it (`object: "text_completion"`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TextCompletion {
    /// `cmpl-...`; the node sets its own id (the key of `/v1/signature/{id}`).
    pub id: String,
    /// `text_completion`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// Model id.
    pub model: String,
    /// Choices (one for the built-in engine); empty on a usage-only final chunk.
    pub choices: Vec<TextChoice>,
    /// Token usage (on the whole answer, and on the final chunk of a stream when asked for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Other fields from an upstream (system_fingerprint, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One choice of a text completion.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TextChoice {
    /// Position.
    pub index: u32,
    /// The generated text (in a stream: the new text of this chunk).
    pub text: String,
    /// `stop`, `length`, ...; set on the last chunk of a stream.
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// Other fields (logprobs, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_is_one_string() {
        let parse = |body: &str| serde_json::from_str::<CompletionRequest>(body).unwrap_or_default();
        assert_eq!(parse(r#"{"model":"m","prompt":"hi"}"#).prompt_text(), Some("hi"));
        assert_eq!(
            parse(r#"{"model":"m","prompt":["hi"]}"#).prompt_text(),
            Some("hi")
        );
        assert_eq!(parse(r#"{"model":"m","prompt":["a","b"]}"#).prompt_text(), None);
        assert_eq!(parse(r#"{"model":"m","prompt":[1,2]}"#).prompt_text(), None);
        let req = parse(r#"{"model":"m","prompt":"x","echo":true,"max_tokens":3}"#);
        assert_eq!(req.max_tokens, Some(3));
        assert!(req.extra.contains_key("echo"));
    }
}
