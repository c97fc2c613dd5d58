//! The response-signature text and record (`GET /v1/signature/{id}`).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The text a node signs for one exchange: `sha256hex(request body) ":" sha256hex(response body)`.
///
/// Both hashes cover exactly the bytes on the wire (for SSE, the concatenated stream as sent,
/// including the final `data: [DONE]` event, but not the trailing signature event).
pub fn signature_text(request_body: &[u8], response_body: &[u8]) -> String {
    format!("{}:{}", sha256_hex(request_body), sha256_hex(response_body))
}

/// A signature as served by `GET /v1/signature/{id}`, inline in the `X-Cloister-Signature` header
/// (JSON) and in the final `cloister.signature` SSE event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureRecord {
    /// The signed text, see [`signature_text`].
    pub text: String,
    /// `0x` + r‖s‖v (65 bytes hex), EIP-191 personal_sign over `text`.
    pub signature: String,
    /// `0x`-prefixed address of the signer.
    pub signing_address: String,
    /// `ecdsa`.
    pub signing_algo: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_two_sha256_hex() {
        let t = signature_text(b"", b"abc");
        assert_eq!(
            t,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855:\
             ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
