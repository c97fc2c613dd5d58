//! Legacy text completions (`/v1/completions`) passed through to the upstream: the request as sent
//! (unknown fields kept), the answer parsed as `text_completion` objects. Streams follow the same
//! rules as chat streams (see the parent module): chunks handed on as they arrive, the usage chunk
//! last, and an estimate when the upstream sends none.

use cloister_types::openai::{CompletionRequest, StreamOptions, TextCompletion};
use cloister_types::wire;

use super::UpstreamEngine;
use super::passthrough::Passthrough;
use crate::{Result, TextChunkStream};

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
        let state = Passthrough::<TextCompletion>::new(body, model);
        Ok(Box::pin(futures::stream::unfold(state, Passthrough::next_item)))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use cloister_types::openai::Usage;
    use futures::StreamExt as _;

    use super::*;
    use crate::Error;

    fn run(body: &str) -> Vec<Result<TextCompletion>> {
        let reads = futures::stream::iter([Ok(Bytes::from(body.to_owned()))]);
        let state = Passthrough::<TextCompletion>::new(Box::pin(reads), "m".into());
        futures::executor::block_on(futures::stream::unfold(state, Passthrough::next_item).collect())
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
