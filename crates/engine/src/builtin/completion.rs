//! Legacy text completions (`/v1/completions`) on the built-in engine: the prompt is tokenized as
//! it is, with no chat template, then decoded and sampled exactly as a chat prompt is; the chat
//! chunks the worker's events make are reshaped into `text_completion` chunks.

use std::sync::Arc;

use cloister_types::openai::{
    ChatCompletionChunk, ChatCompletionRequest, CompletionRequest, TextChoice, TextCompletion,
};
use futures::StreamExt as _;
use serde_json::Value;
use tokio::sync::mpsc::UnboundedReceiver;

use super::BuiltinEngine;
use super::params::GenParams;
use super::worker::Event;
use crate::{ChunkStream, Error, Result, TextChunkStream};

/// OpenAI's (and vLLM's) `max_tokens` when a text completion names none.
const DEFAULT_MAX_TOKENS: u32 = 16;

impl BuiltinEngine {
    /// Validates and tokenizes the raw prompt of `req` and queues it.
    pub(super) async fn submit_text(&self, req: &CompletionRequest) -> Result<UnboundedReceiver<Event>> {
        if req.model != self.inner.card.id {
            return Err(Error::UnknownModel(req.model.clone()));
        }
        let params = text_params(req)?;
        let prompt = req.prompt_text().map(str::to_owned).ok_or_else(|| {
            Error::InvalidRequest("prompt must be one string (several prompts are not supported)".into())
        })?;
        let inner = Arc::clone(&self.inner);
        self.enqueue(move || inner.fit(inner.tokenize(&prompt)?), params)
            .await
    }
}

/// The generation parameters of a text completion, validated as a chat request's are. Options
/// the built-in engine does not implement are refused rather than ignored.
fn text_params(req: &CompletionRequest) -> Result<GenParams> {
    let set = |name: &str| {
        req.extra
            .get(name)
            .is_some_and(|v| !v.is_null() && *v != Value::Bool(false))
    };
    for unsupported in ["echo", "suffix", "logprobs"] {
        if set(unsupported) {
            return Err(Error::InvalidRequest(format!(
                "`{unsupported}` is not supported by the built-in engine"
            )));
        }
    }
    if req
        .extra
        .get("best_of")
        .and_then(Value::as_u64)
        .is_some_and(|n| n != 1)
    {
        return Err(Error::InvalidRequest(
            "best_of must be 1 for the built-in engine".into(),
        ));
    }
    let mut view = ChatCompletionRequest {
        model: req.model.clone(),
        max_tokens: Some(req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)),
        temperature: req.temperature,
        top_p: req.top_p,
        seed: req.seed,
        stop: req.stop.clone(),
        ..Default::default()
    };
    if let Some(n) = req.extra.get("n") {
        view.extra.insert("n".into(), n.clone());
    }
    GenParams::from_request(&view)
}

/// The chat chunks of one generation as `text_completion` chunks: the role chunk is dropped, each
/// delta becomes a choice's `text`, and the usage chunk stays last.
pub(super) fn text_stream(chunks: ChunkStream) -> TextChunkStream {
    Box::pin(chunks.skip(1).map(|chunk| chunk.map(text_chunk)))
}

fn text_chunk(chunk: ChatCompletionChunk) -> TextCompletion {
    TextCompletion {
        id: text_id(&chunk.id),
        object: "text_completion".into(),
        created: chunk.created,
        model: chunk.model,
        choices: chunk
            .choices
            .into_iter()
            .map(|c| TextChoice {
                index: c.index,
                text: c.delta.content.unwrap_or_default(),
                finish_reason: c.finish_reason,
                extra: Default::default(),
            })
            .collect(),
        usage: chunk.usage,
        extra: Default::default(),
    }
}

/// `cmpl-` ids, as OpenAI gives text completions.
fn text_id(chat_id: &str) -> String {
    format!("cmpl-{}", chat_id.strip_prefix("chatcmpl-").unwrap_or(chat_id))
}

/// A whole text completion from its stream.
pub(super) async fn collect(mut chunks: TextChunkStream) -> Result<TextCompletion> {
    let mut whole = TextCompletion {
        object: "text_completion".into(),
        ..Default::default()
    };
    let mut choice = TextChoice::default();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        whole.id = chunk.id;
        whole.created = chunk.created;
        whole.model = chunk.model;
        for c in chunk.choices {
            choice.text.push_str(&c.text);
            choice.finish_reason = c.finish_reason.or(choice.finish_reason);
        }
        whole.usage = chunk.usage.or(whole.usage);
    }
    whole.choices = vec![choice];
    Ok(whole)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(body: &str) -> CompletionRequest {
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn params_default_to_sixteen_tokens_and_refuse_what_is_not_implemented() {
        let p = text_params(&req(r#"{"model":"m","prompt":"x"}"#)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.max_tokens, Some(DEFAULT_MAX_TOKENS));
        for body in [
            r#"{"model":"m","prompt":"x","echo":true}"#,
            r#"{"model":"m","prompt":"x","logprobs":2}"#,
            r#"{"model":"m","prompt":"x","best_of":3}"#,
            r#"{"model":"m","prompt":"x","n":2}"#,
            r#"{"model":"m","prompt":"x","temperature":5}"#,
        ] {
            assert!(
                matches!(text_params(&req(body)), Err(Error::InvalidRequest(_))),
                "{body}"
            );
        }
        assert!(text_params(&req(r#"{"model":"m","prompt":"x","echo":false,"suffix":null}"#)).is_ok());
    }

    #[test]
    fn ids_become_text_completion_ids() {
        assert_eq!(text_id("chatcmpl-ab"), "cmpl-ab");
    }
}
