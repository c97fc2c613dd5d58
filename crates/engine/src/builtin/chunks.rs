//! Worker events to chat completion chunks that keep the stream contract (see the crate docs): a
//! role chunk first, text as it comes, the finish reason, then a usage chunk.

use cloister_types::openai::{ChatCompletionChunk, ChunkChoice, Delta, Usage};
use cloister_types::unix_now;
use tokio::sync::mpsc::UnboundedReceiver;

use super::worker::Event;
use crate::{ChunkStream, Error};

fn completion_id() -> String {
    format!("chatcmpl-{}", hex::encode(rand::random::<[u8; 12]>()))
}

/// Turns worker events into chunks that keep the stream contract (see the crate docs).
pub(super) fn chunk_stream(rx: UnboundedReceiver<Event>, model: String) -> ChunkStream {
    enum Phase {
        Role,
        Body,
        Usage(Usage),
        Done,
    }
    struct State {
        rx: UnboundedReceiver<Event>,
        phase: Phase,
        id: String,
        created: u64,
        model: String,
    }
    impl State {
        fn chunk(&self, choices: Vec<ChunkChoice>, usage: Option<Usage>) -> ChatCompletionChunk {
            ChatCompletionChunk {
                id: self.id.clone(),
                object: "chat.completion.chunk".into(),
                created: self.created,
                model: self.model.clone(),
                choices,
                usage,
                extra: Default::default(),
            }
        }
        fn delta(&self, delta: Delta, finish_reason: Option<&str>) -> ChatCompletionChunk {
            let choice = ChunkChoice {
                index: 0,
                delta,
                finish_reason: finish_reason.map(str::to_owned),
                extra: Default::default(),
            };
            self.chunk(vec![choice], None)
        }
    }
    let state = State {
        rx,
        phase: Phase::Role,
        id: completion_id(),
        created: unix_now(),
        model,
    };
    let stream = futures::stream::unfold(state, |mut st| async move {
        let item = match std::mem::replace(&mut st.phase, Phase::Done) {
            Phase::Role => {
                st.phase = Phase::Body;
                let delta = Delta {
                    role: Some("assistant".into()),
                    content: Some(String::new()),
                    ..Default::default()
                };
                Ok(st.delta(delta, None))
            }
            Phase::Body => match st.rx.recv().await {
                Some(Event::Text(text)) => {
                    st.phase = Phase::Body;
                    Ok(st.delta(
                        Delta {
                            content: Some(text),
                            ..Default::default()
                        },
                        None,
                    ))
                }
                Some(Event::Finished(f)) => {
                    let s = f.stats;
                    let usage = Usage::new(
                        u32::try_from(s.prompt_tokens).unwrap_or(u32::MAX),
                        u32::try_from(s.completion_tokens).unwrap_or(u32::MAX),
                    );
                    st.phase = Phase::Usage(usage);
                    let content = (!f.tail.is_empty()).then_some(f.tail);
                    Ok(st.delta(
                        Delta {
                            content,
                            ..Default::default()
                        },
                        Some(f.reason.as_str()),
                    ))
                }
                Some(Event::Failed(e)) => Err(e),
                None => Err(Error::Closed),
            },
            Phase::Usage(usage) => Ok(st.chunk(Vec::new(), Some(usage))),
            Phase::Done => return None,
        };
        Some((item, st))
    });
    Box::pin(stream)
}
