//! End-to-end encryption envelope (`docs/protocol.md` §8).
//!
//! A client seals a request body to a node's HPKE key (RFC 9180 base mode, DHKEM(X25519,
//! HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305) with info = `"cloister/e2ee/v1"` ‖ the node's
//! 20-byte signing address, so an envelope meant for one attested signer does not open under the
//! context of another. Both sides then take a response key and a response base nonce from the HPKE
//! exporter; the node seals the response as numbered ChaCha20-Poly1305 chunks and closes it with an
//! authenticated end marker, so a router that drops, reorders or cuts chunks is caught.
//!
//! ```
//! use cloister_crypto::e2ee::{E2eeKeyPair, open_request, seal_request};
//! let node = E2eeKeyPair::generate();
//! let signer = cloister_crypto::Address::repeat_byte(7);
//! let (sealed, client_keys) =
//!     seal_request(&node.public_key_bytes(), &signer, b"{\"model\":\"m\"}", b"").unwrap();
//! let (body, node_keys) = open_request(&node, &signer, &sealed, b"").unwrap();
//! assert_eq!(body, b"{\"model\":\"m\"}");
//!
//! let mut sealer = node_keys.sealer();
//! let chunks = vec![sealer.seal_chunk(b"hel"), sealer.seal_chunk(b"lo"), sealer.finish()];
//! assert_eq!(client_keys.open_stream(&chunks).unwrap(), b"hello");
//! ```

mod replay;
mod request;
mod stream;
mod suite;

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use crate::{Error, Result};

pub use replay::ReplayGuard;
pub use request::{SealedRequest, open_request, seal_request};
pub use stream::{ClientResponseKeys, NodeResponseKeys, ResponseOpener, ResponseSealer};

/// Prefix of the HPKE `info`; the node's 20-byte signing address follows it.
pub const INFO_PREFIX: &[u8] = b"cloister/e2ee/v1";
/// HPKE exporter context for the 32-byte response key.
pub const RESPONSE_KEY_LABEL: &[u8] = b"cloister/e2ee/v1 response";
/// HPKE exporter context for the 12-byte response base nonce.
pub const RESPONSE_NONCE_LABEL: &[u8] = b"cloister/e2ee/v1 response nonce";
/// AAD of every response data chunk.
pub const CHUNK_AAD: &[u8] = b"cloister/e2ee/v1 chunk";
/// AAD of the end marker: an empty plaintext sealed under the next counter.
pub const END_AAD: &[u8] = b"cloister/e2ee/v1 end";
/// Length of an encapsulated key (an X25519 public key).
pub const ENC_LEN: usize = 32;
/// Length of an X25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of a ChaCha20-Poly1305 tag; also the length of a sealed end marker.
pub const TAG_LEN: usize = 16;

/// The HPKE info string: `"cloister/e2ee/v1"` ‖ signing address.
pub(crate) fn info(signing_address: &crate::Address) -> [u8; 36] {
    let mut out = [0u8; 36];
    out[..INFO_PREFIX.len()].copy_from_slice(INFO_PREFIX);
    out[INFO_PREFIX.len()..].copy_from_slice(signing_address.as_slice());
    out
}

/// A node's E2EE key pair (X25519), held in memory for the node's lifetime.
///
/// The secret's 32 bytes are zeroized on drop; there is no public accessor for them and `Debug`
/// prints only the public key, which the pair holds so that opening a request needs no base-point
/// multiplication.
#[derive(Clone)]
pub struct E2eeKeyPair {
    secret: Zeroizing<[u8; 32]>,
    public: [u8; PUBLIC_KEY_LEN],
}

impl E2eeKeyPair {
    /// A fresh key pair from the operating system's RNG.
    ///
    /// # Panics
    /// If the operating system RNG fails (as `EnclaveKey::generate` would).
    pub fn generate() -> Self {
        let mut secret = Zeroizing::new([0u8; 32]);
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, secret.as_mut_slice());
        Self::from_secret(secret)
    }

    /// RFC 9180 `DeriveKeyPair(ikm)`: the same `ikm` always gives the same key pair. For test
    /// vectors, or for a key derived from a secret the enclave already holds (a dstack derived key);
    /// `ikm` must carry at least 32 bytes of entropy.
    pub fn derive(ikm: &[u8]) -> Self {
        Self::from_secret(suite::derive_secret(ikm))
    }

    fn from_secret(secret: Zeroizing<[u8; 32]>) -> Self {
        let public = suite::public_key(&secret);
        Self { secret, public }
    }

    /// The 32-byte X25519 public key that clients seal to.
    pub fn public_key_bytes(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.public
    }
}

impl fmt::Debug for E2eeKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("E2eeKeyPair")
            .field("public_key", &hex::encode(self.public_key_bytes()))
            .finish_non_exhaustive()
    }
}

/// The arithmetic of the node's X25519 (opening a sealed request) on this CPU: `"AVX-512 IFMA"`,
/// `"AVX2"` or `"serial"`, curve25519-dalek's backend as chosen at run time.
pub fn x25519_backend() -> &'static str {
    suite::x25519_backend()
}

/// Standard base64 with padding (RFC 4648 §4), the text form of every envelope on the wire.
pub fn encode_base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Decodes standard padded base64; anything else is [`Error::MalformedEnvelope`].
pub fn decode_base64(text: &str) -> Result<Vec<u8>> {
    STANDARD
        .decode(text.trim())
        .map_err(|_| Error::MalformedEnvelope("not standard base64"))
}
