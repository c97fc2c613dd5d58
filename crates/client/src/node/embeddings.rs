//! Embeddings (`POST /v1/embeddings`): sent, sealed when the node offers E2EE, and checked exactly
//! as a plain chat answer is (the signature over the request and answer bytes, by the attested
//! signer).

use bytes::Bytes;
use cloister_types::wire;

use super::{NodeClient, RequestOptions};
use crate::Result;
use crate::node::VerifiedResponse;

impl NodeClient {
    /// [`NodeClient::chat`] for embeddings (`POST /v1/embeddings`): `body` is the exact JSON to send
    /// and have signed; the answer is opened and its signature checked.
    pub async fn embeddings(&self, body: Bytes, opts: &RequestOptions) -> Result<VerifiedResponse> {
        self.plain(body, opts, wire::EMBEDDINGS_PATH).await
    }
}
