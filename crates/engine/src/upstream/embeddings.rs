//! Embeddings (`/v1/embeddings`) passed through to the upstream: the request as sent (unknown
//! fields kept, `encoding_format` included), the answer parsed as an embeddings list.

use cloister_types::openai::{EmbeddingRequest, EmbeddingResponse};
use cloister_types::wire;

use super::UpstreamEngine;
use crate::Result;

impl UpstreamEngine {
    /// `POST {base}/embeddings`, whole.
    pub(super) async fn embed_upstream(&self, req: EmbeddingRequest) -> Result<EmbeddingResponse> {
        self.check_model(&req.model)?;
        self.post_whole(wire::EMBEDDINGS_PATH, &req, "embeddings list")
            .await
    }
}
