//! Legacy text completions (`/v1/completions`) passed through to the upstream: the request as sent
//! (unknown fields kept), the answer parsed as `text_completion` objects. Streams follow the same
//! rules as chat streams (see the parent module): chunks handed on as they arrive, the usage chunk
//! last, and an estimate when the upstream sends none.

use std::collections::VecDeque;

use cloister_types::openai::{CompletionRequest, StreamOptions, TextCompletion, Usage};
use cloister_types::wire;
use futures::StreamExt as _;

use super::sse::SseParser;
use super::{ByteStream, MAX_UPSTREAM_BODY, UpstreamEngine, stream_event_error, transport_error};
use crate::{Error, Result, TextChunkStream};

impl UpstreamEngine {
    /// `POST {base}/completions`, whole.
    pub(super) async fn complete_text_upstream(&self, req: CompletionRequest) -> Result<TextCompletion> {
        self.check_model(&req.model)?;
        let mut body = req;
        body.stream = false;
        body.stream_options = None;
        self.post_whole(wire::COMPLETIONS_PATH, &body, "text completion")
            .await
    }

    /// `POST {base}/completions`, streamed, usage asked for.
    pub(super) async fn stream_text_upstream(&self, req: CompletionRequest) -> Result<TextChunkStream> {
        self.check_model(&req.model)?;
        let model = req.model.clone();
        let mut body = req;
        body.stream = true;
        body.stream_options = Some(StreamOptions { include_usage: true });
        let body = self.post_stream(wire::COMPLETIONS_PATH, &body).await?;
        let state = TextPassthrough::new(body, model);
        Ok(Box::pin(futures::stream::unfold(
            state,
            TextPassthrough::next_item,
        )))
    }
}

/// State of one upstream text stream.
struct TextPassthrough {
    body: ByteStream,
    parser: SseParser,
    ready: VecDeque<Result<TextCompletion>>,
    saw_done: bool,
    saw_finish: bool,
    ended: bool,
    text_chunks: u32,
    usage_chunk: Option<TextCompletion>,
    last_usage: Option<Usage>,
    /// id, created, model of the last chunk: for a usage chunk the engine adds.
    last_meta: (String, u64, String),
}

impl TextPassthrough {
    fn new(body: ByteStream, model: String) -> Self {
        Self {
            body,
            parser: SseParser::new(MAX_UPSTREAM_BODY),
            ready: VecDeque::new(),
            saw_done: false,
            saw_finish: false,
            ended: false,
            text_chunks: 0,
            usage_chunk: None,
            last_usage: None,
            last_meta: (String::new(), 0, model),
        }
    }

    fn event(&mut self, data: &str) {
        if self.saw_done || self.ended {
            return;
        }
        if data.trim() == wire::SSE_DONE {
            self.saw_done = true;
            return;
        }
        let chunk: TextCompletion = match serde_json::from_str(data) {
            Ok(c) => c,
            Err(e) => {
                self.ready.push_back(Err(stream_event_error(data, &e)));
                self.ended = true;
                return;
            }
        };
        self.last_meta = (chunk.id.clone(), chunk.created, chunk.model.clone());
        if chunk.usage.is_some() {
            self.last_usage = chunk.usage;
        }
        if chunk.choices.is_empty() && chunk.usage.is_some() {
            self.usage_chunk = Some(chunk);
            return;
        }
        for choice in &chunk.choices {
            self.text_chunks += u32::from(!choice.text.is_empty());
            self.saw_finish |= choice.finish_reason.is_some();
        }
        self.ready.push_back(Ok(chunk));
    }

    /// After `[DONE]`: the usage chunk, the upstream's or an estimate.
    fn finish(&mut self) {
        self.ended = true;
        let chunk = self.usage_chunk.take().unwrap_or_else(|| TextCompletion {
            id: self.last_meta.0.clone(),
            object: "text_completion".into(),
            created: self.last_meta.1,
            model: self.last_meta.2.clone(),
            choices: Vec::new(),
            usage: Some(self.last_usage.unwrap_or_else(|| Usage::new(0, self.text_chunks))),
            extra: Default::default(),
        });
        self.ready.push_back(Ok(chunk));
    }

    fn events(&mut self, parsed: std::result::Result<Vec<String>, super::sse::SseError>) {
        match parsed {
            Ok(events) => events.iter().for_each(|d| self.event(d)),
            Err(e) => {
                self.ready
                    .push_back(Err(Error::UpstreamProtocol(format!("bad event stream: {e}"))));
                self.ended = true;
            }
        }
    }

    async fn next_item(mut self) -> Option<(Result<TextCompletion>, Self)> {
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
                Some(Err(e)) => {
                    self.ready.push_back(Err(transport_error(e)));
                    self.ended = true;
                }
                None => {
                    let parsed = self.parser.finish();
                    self.events(parsed);
                    // Some servers close without `[DONE]`; a finished choice is end enough.
                    if !self.saw_done && !self.ended {
                        if self.saw_finish {
                            self.saw_done = true;
                        } else {
                            self.ready.push_back(Err(Error::UpstreamProtocol(
                                "the stream ended before it finished".into(),
                            )));
                            self.ended = true;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn run(body: &str) -> Vec<Result<TextCompletion>> {
        let reads = futures::stream::iter([Ok(Bytes::from(body.to_owned()))]);
        let state = TextPassthrough::new(Box::pin(reads), "m".into());
        futures::executor::block_on(futures::stream::unfold(state, TextPassthrough::next_item).collect())
    }

    #[test]
    fn text_chunks_pass_and_usage_comes_last() {
        let body = concat!(
            "data: {\"id\":\"c\",\"object\":\"text_completion\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"text\":\"Hi\",\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"c\",\"object\":\"text_completion\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":1,\"total_tokens\":3}}\n\n",
            "data: {\"id\":\"c\",\"object\":\"text_completion\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"text\":\"!\",\"finish_reason\":\"stop\"}]}\n\n",
            "data: [DONE]\n\n",
        );
        let items: Vec<TextCompletion> = run(body).into_iter().filter_map(Result::ok).collect();
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].choices[0].text, "Hi");
        assert_eq!(items[1].choices[0].finish_reason.as_deref(), Some("stop"));
        assert_eq!(items[2].usage, Some(Usage::new(2, 1)));
    }

    #[test]
    fn garbage_and_truncation_are_errors() {
        assert!(matches!(
            run("data: nonsense\n\n").first(),
            Some(Err(Error::UpstreamProtocol(_)))
        ));
        let cut = "data: {\"id\":\"c\",\"object\":\"text_completion\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"text\":\"Hi\"}]}\n\n";
        assert!(matches!(run(cut).last(), Some(Err(Error::UpstreamProtocol(_)))));
    }
}
