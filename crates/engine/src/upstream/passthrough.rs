//! The one stream pass-through state machine, shared by chat (`chat.completion.chunk`) and text
//! (`text_completion`) streams: SSE parsing, `[DONE]`, the usage chunk last, the chunks the engine
//! adds (an opening chunk for chat, a usage estimate when the upstream sends none), and failure.
//! What differs between the two chunk types is behind [`StreamChunk`].

use std::collections::VecDeque;

use cloister_types::openai::{ChatCompletionChunk, ChunkChoice, Delta, TextCompletion, Usage};
use cloister_types::wire;
use futures::StreamExt as _;
use serde::de::DeserializeOwned;
use tracing::debug;

use super::sse::{SseError, SseParser};
use super::{ByteStream, MAX_UPSTREAM_BODY, stream_event_error, transport_error};
use crate::{Error, Result};

/// id, created and model of the last chunk seen: what the chunks the engine adds carry.
#[derive(Clone, Debug)]
pub(super) struct Meta {
    pub(super) id: String,
    pub(super) created: u64,
    pub(super) model: String,
}

/// What the pass-through needs to know about one kind of stream chunk.
pub(super) trait StreamChunk: DeserializeOwned + Sized {
    /// id, created, model.
    fn meta(&self) -> Meta;
    /// The chunk's usage, if any.
    fn usage(&self) -> Option<Usage>;
    /// No choices: with usage, it is the usage chunk (handed on last).
    fn has_no_choices(&self) -> bool;
    /// Choices that carry generated output (for the estimate when the upstream sends no usage).
    fn output_choices(&self) -> u32;
    /// A choice has a finish reason.
    fn finished(&self) -> bool;
    /// The usage-only chunk the engine adds when the upstream sent none.
    fn usage_chunk(meta: &Meta, usage: Usage) -> Self;
    /// Called once, on the first chunk handed on (`Some`), or at the end when there was none
    /// (`None`): adjusts it, and may return a chunk to hand on before it.
    fn open(first: Option<&mut Self>, meta: &Meta) -> Option<Self>;
}

/// State of one upstream stream.
pub(super) struct Passthrough<C> {
    body: ByteStream,
    parser: SseParser,
    ready: VecDeque<Result<C>>,
    /// No chunk handed on yet.
    first: bool,
    saw_done: bool,
    saw_finish: bool,
    ended: bool,
    output_choices: u32,
    usage_chunk: Option<C>,
    last_usage: Option<Usage>,
    last_meta: Meta,
}

impl<C: StreamChunk> Passthrough<C> {
    /// A pass-through of `body`; `model` names the model until a chunk does.
    pub(super) fn new(body: ByteStream, model: String) -> Self {
        Self {
            body,
            parser: SseParser::new(MAX_UPSTREAM_BODY),
            ready: VecDeque::new(),
            first: true,
            saw_done: false,
            saw_finish: false,
            ended: false,
            output_choices: 0,
            usage_chunk: None,
            last_usage: None,
            last_meta: Meta {
                id: String::new(),
                created: 0,
                model,
            },
        }
    }

    /// One event's data.
    fn event(&mut self, data: &str) {
        if self.saw_done || self.ended {
            return;
        }
        if data.trim() == wire::SSE_DONE {
            self.saw_done = true;
            return;
        }
        let mut chunk: C = match serde_json::from_str(data) {
            Ok(c) => c,
            Err(e) => {
                self.fail(stream_event_error(data, &e));
                return;
            }
        };
        self.last_meta = chunk.meta();
        if let Some(usage) = chunk.usage() {
            self.last_usage = Some(usage);
        }
        // The usage chunk goes last, whatever the upstream sends after it.
        if chunk.has_no_choices() && chunk.usage().is_some() {
            self.usage_chunk = Some(chunk);
            return;
        }
        if self.first {
            self.first = false;
            if let Some(lead) = C::open(Some(&mut chunk), &self.last_meta) {
                self.ready.push_back(Ok(lead));
            }
        }
        self.output_choices += chunk.output_choices();
        self.saw_finish |= chunk.finished();
        self.ready.push_back(Ok(chunk));
    }

    fn events(&mut self, parsed: std::result::Result<Vec<String>, SseError>) {
        match parsed {
            Ok(events) => events.iter().for_each(|d| self.event(d)),
            Err(e) => self.fail(Error::UpstreamProtocol(format!("bad event stream: {e}"))),
        }
    }

    fn fail(&mut self, e: Error) {
        self.ready.push_back(Err(e));
        self.ended = true;
    }

    /// After `[DONE]`: the usage chunk, the upstream's or an estimate.
    fn finish(&mut self) {
        self.ended = true;
        if self.first {
            self.first = false;
            if let Some(lead) = C::open(None, &self.last_meta) {
                self.ready.push_back(Ok(lead));
            }
        }
        let chunk = match self.usage_chunk.take() {
            Some(chunk) => chunk,
            None => {
                let usage = self.last_usage.unwrap_or_else(|| {
                    debug!(
                        chunks = self.output_choices,
                        "upstream sent no usage; counting output chunks"
                    );
                    Usage::new(0, self.output_choices)
                });
                C::usage_chunk(&self.last_meta, usage)
            }
        };
        self.ready.push_back(Ok(chunk));
    }

    /// The next item to hand on (`futures::stream::unfold` step).
    pub(super) async fn next_item(mut self) -> Option<(Result<C>, Self)> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some((item, self));
            }
            if self.ended {
                return None;
            }
            if self.saw_done {
                self.finish();
                continue;
            }
            match self.body.next().await {
                Some(Ok(bytes)) => {
                    let parsed = self.parser.push(&bytes);
                    self.events(parsed);
                }
                Some(Err(e)) => self.fail(transport_error(e)),
                None => {
                    let parsed = self.parser.finish();
                    self.events(parsed);
                    // Some servers close without `[DONE]`; a finished choice is end enough.
                    if !self.saw_done && !self.ended {
                        if self.saw_finish {
                            self.saw_done = true;
                        } else {
                            self.fail(Error::UpstreamProtocol(
                                "the stream ended before it finished".into(),
                            ));
                        }
                    }
                }
            }
        }
    }
}

impl StreamChunk for ChatCompletionChunk {
    fn meta(&self) -> Meta {
        Meta {
            id: self.id.clone(),
            created: self.created,
            model: self.model.clone(),
        }
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }

    fn has_no_choices(&self) -> bool {
        self.choices.is_empty()
    }

    /// Text deltas and tool-call deltas (a tool call's arguments stream with no content).
    fn output_choices(&self) -> u32 {
        let carries_output = |c: &&ChunkChoice| {
            c.delta.content.as_deref().is_some_and(|t| !t.is_empty())
                || c.delta.extra.get("tool_calls").is_some_and(|t| !t.is_null())
        };
        u32::try_from(self.choices.iter().filter(carries_output).count()).unwrap_or(u32::MAX)
    }

    fn finished(&self) -> bool {
        self.choices.iter().any(|c| c.finish_reason.is_some())
    }

    fn usage_chunk(meta: &Meta, usage: Usage) -> Self {
        chat_chunk(meta, Vec::new(), Some(usage))
    }

    /// The first chunk names the assistant role; with no choice to name it in (or no chunk at
    /// all), an opening chunk with the role and empty content goes first.
    fn open(first: Option<&mut Self>, meta: &Meta) -> Option<Self> {
        match first.and_then(|c| c.choices.first_mut()) {
            Some(choice) => {
                choice.delta.role.get_or_insert_with(|| "assistant".into());
                None
            }
            None => {
                let delta = Delta {
                    role: Some("assistant".into()),
                    content: Some(String::new()),
                    ..Default::default()
                };
                let choice = ChunkChoice {
                    index: 0,
                    delta,
                    finish_reason: None,
                    extra: Default::default(),
                };
                Some(chat_chunk(meta, vec![choice], None))
            }
        }
    }
}

fn chat_chunk(meta: &Meta, choices: Vec<ChunkChoice>, usage: Option<Usage>) -> ChatCompletionChunk {
    ChatCompletionChunk {
        id: meta.id.clone(),
        object: "chat.completion.chunk".into(),
        created: meta.created,
        model: meta.model.clone(),
        choices,
        usage,
        extra: Default::default(),
    }
}

impl StreamChunk for TextCompletion {
    fn meta(&self) -> Meta {
        Meta {
            id: self.id.clone(),
            created: self.created,
            model: self.model.clone(),
        }
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }

    fn has_no_choices(&self) -> bool {
        self.choices.is_empty()
    }

    fn output_choices(&self) -> u32 {
        u32::try_from(self.choices.iter().filter(|c| !c.text.is_empty()).count()).unwrap_or(u32::MAX)
    }

    fn finished(&self) -> bool {
        self.choices.iter().any(|c| c.finish_reason.is_some())
    }

    fn usage_chunk(meta: &Meta, usage: Usage) -> Self {
        Self {
            id: meta.id.clone(),
            object: "text_completion".into(),
            created: meta.created,
            model: meta.model.clone(),
            choices: Vec::new(),
            usage: Some(usage),
            extra: Default::default(),
        }
    }

    /// Text streams have no role: nothing to add.
    fn open(_first: Option<&mut Self>, _meta: &Meta) -> Option<Self> {
        None
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use serde_json::json;

    use super::*;

    fn run(body: &str) -> Vec<Result<ChatCompletionChunk>> {
        let reads = futures::stream::iter([Ok(Bytes::from(body.to_owned()))]);
        let state = Passthrough::<ChatCompletionChunk>::new(Box::pin(reads), "m".into());
        futures::executor::block_on(futures::stream::unfold(state, Passthrough::next_item).collect())
    }

    fn event(choices: serde_json::Value) -> String {
        let chunk = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": choices});
        format!("data: {chunk}\n\n")
    }

    /// llama-server's shape: an opening chunk with `content: null`, then tool-call deltas with no
    /// content at all, then `finish_reason: tool_calls`, and no usage.
    #[test]
    fn tool_call_deltas_pass_through_and_count_as_output() {
        let call = |args: &str| json!([{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": args}}]}}]);
        let body = [
            event(json!([{"index": 0, "delta": {"role": "assistant", "content": null}}])),
            event(
                json!([{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "x", "type": "function", "function": {"name": "get_weather", "arguments": "{"}}]}}]),
            ),
            event(call("\"city\": \"Paris\"")),
            event(call("}")),
            event(json!([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}])),
            "data: [DONE]\n\n".to_owned(),
        ]
        .concat();
        let items: Vec<ChatCompletionChunk> = run(&body)
            .into_iter()
            .map(|r| r.unwrap_or_else(|e| panic!("{e}")))
            .collect();
        assert_eq!(items.len(), 6, "{items:?}");
        assert_eq!(items[0].choices[0].delta.role.as_deref(), Some("assistant"));
        let args: String = items[1..4]
            .iter()
            .map(|c| {
                c.choices[0].delta.extra["tool_calls"][0]["function"]["arguments"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        assert_eq!(args, "{\"city\": \"Paris\"}");
        assert_eq!(
            items[1].choices[0].delta.extra["tool_calls"][0]["function"]["name"],
            "get_weather"
        );
        assert_eq!(items[4].choices[0].finish_reason.as_deref(), Some("tool_calls"));
        // No upstream usage: the estimate counts the three tool-call deltas.
        assert_eq!(items[5].usage, Some(Usage::new(0, 3)));
        assert!(items[5].choices.is_empty());
    }

    #[test]
    fn a_first_chunk_without_choices_gets_an_opening_chunk() {
        let body = [
            "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[]}\n\n".to_owned(),
            event(json!([{"index": 0, "delta": {"content": "Hi"}, "finish_reason": "stop"}])),
        ]
        .concat();
        let items: Vec<ChatCompletionChunk> = run(&body)
            .into_iter()
            .map(|r| r.unwrap_or_else(|e| panic!("{e}")))
            .collect();
        assert_eq!(items.len(), 4, "{items:?}");
        assert_eq!(items[0].choices[0].delta.role.as_deref(), Some("assistant"));
        assert_eq!(items[0].choices[0].delta.content.as_deref(), Some(""));
        assert!(items[1].choices.is_empty());
        assert_eq!(
            items[2].choices[0].delta.role, None,
            "only the first chunk names the role"
        );
        assert_eq!(items[3].usage, Some(Usage::new(0, 1)));
    }
}
