//! Prompt admission, shared by chat and text completions: a token prompt is checked against the
//! slot context and queued for the decode thread.

use std::sync::mpsc::TrySendError;

use llama_cpp_2::token::LlamaToken;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use super::params::GenParams;
use super::worker::{Event, Job};
use super::{BuiltinEngine, Inner};
use crate::{Error, Result};

impl BuiltinEngine {
    /// Runs `tokenize` and queues its prompt with `params`.
    pub(super) async fn enqueue(
        &self,
        tokenize: impl FnOnce() -> Result<Vec<LlamaToken>> + Send + 'static,
        params: GenParams,
    ) -> Result<UnboundedReceiver<Event>> {
        // Long prompts take a while to tokenize: keep that off the async threads when there are any.
        let prompt = match tokio::runtime::Handle::try_current() {
            Ok(handle) => handle
                .spawn_blocking(tokenize)
                .await
                .map_err(|e| Error::Inference(format!("tokenizer task failed: {e}")))??,
            Err(_) => tokenize()?,
        };
        let (events, rx) = unbounded_channel();
        match self.inner.jobs.try_send(Job {
            prompt,
            params,
            events,
            reuse_prefix: true,
        }) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_)) => Err(Error::Overloaded(self.inner.config.max_queue)),
            Err(TrySendError::Disconnected(_)) => Err(Error::Closed),
        }
    }
}

impl Inner {
    /// `tokens` as a prompt: not empty, and at least one generated token must fit the slot context.
    pub(super) fn fit(&self, tokens: Vec<LlamaToken>) -> Result<Vec<LlamaToken>> {
        if tokens.is_empty() {
            return Err(Error::InvalidRequest("the prompt is empty".into()));
        }
        let context = self.config.ctx_per_slot as usize;
        if tokens.len() >= context {
            return Err(Error::ContextOverflow {
                prompt: tokens.len(),
                context,
            });
        }
        Ok(tokens)
    }
}
