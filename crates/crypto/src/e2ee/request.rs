//! Sealing a request to a node and opening it there.

use zeroize::Zeroizing;

use super::stream::{ClientResponseKeys, NodeResponseKeys, ResponseKeys};
use super::suite::{self, Context};
use super::{
    E2eeKeyPair, ENC_LEN, RESPONSE_KEY_LABEL, RESPONSE_NONCE_LABEL, TAG_LEN, decode_base64, encode_base64,
    info,
};
use crate::{Address, Error, Result};

/// A sealed request: the HPKE encapsulated key and the AEAD ciphertext of the body (tag included).
#[derive(Clone, PartialEq, Eq)]
pub struct SealedRequest {
    /// The sender's ephemeral X25519 public key; unique per request, so also the replay key.
    pub enc: [u8; ENC_LEN],
    /// ChaCha20-Poly1305 ciphertext ‖ 16-byte tag, HPKE sequence number 0.
    pub ciphertext: Vec<u8>,
}

impl SealedRequest {
    /// Wire bytes: `enc` (32) ‖ `ciphertext` (plaintext length + 16).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ENC_LEN + self.ciphertext.len());
        out.extend_from_slice(&self.enc);
        out.extend_from_slice(&self.ciphertext);
        out
    }

    /// Parses wire bytes; shorter than 32 + 16 bytes is [`Error::MalformedEnvelope`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < ENC_LEN + TAG_LEN {
            return Err(Error::MalformedEnvelope("request shorter than enc and tag"));
        }
        let (enc, ciphertext) = bytes.split_at(ENC_LEN);
        let mut out = [0u8; ENC_LEN];
        out.copy_from_slice(enc);
        Ok(Self {
            enc: out,
            ciphertext: ciphertext.to_vec(),
        })
    }

    /// Base64 (standard, padded) of [`Self::to_bytes`]: the body a client sends.
    pub fn to_base64(&self) -> String {
        encode_base64(&self.to_bytes())
    }

    /// Parses [`Self::to_base64`].
    pub fn from_base64(text: &str) -> Result<Self> {
        Self::from_bytes(&decode_base64(text)?)
    }
}

impl std::fmt::Debug for SealedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedRequest")
            .field("enc", &hex::encode(self.enc))
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

/// Seals `plaintext` to the node whose HPKE public key is `node_public_key` and whose attested
/// signing address is `signing_address`. `aad` is authenticated but not encrypted; the node must
/// pass the same bytes to [`open_request`].
///
/// Returns the envelope and the keys with which the client opens the response.
///
/// # Errors
/// [`Error::InvalidPublicKey`] for a node key of low order (the Diffie-Hellman result is all
/// zeros), [`Error::Rng`] if the operating system's RNG fails.
pub fn seal_request(
    node_public_key: &[u8; 32],
    signing_address: &Address,
    plaintext: &[u8],
    aad: &[u8],
) -> Result<(SealedRequest, ClientResponseKeys)> {
    let (enc, ciphertext, context) = suite::seal(node_public_key, &info(signing_address), plaintext, aad)?;
    Ok((
        SealedRequest { enc, ciphertext },
        ClientResponseKeys::new(export_response_keys(&context)),
    ))
}

/// [`seal_request`] with the ephemeral key derived from `ephemeral_ikm` (RFC 9180 `ikmE`).
///
/// Only for test vectors: the same `ikm` gives the same ephemeral key, and reusing one across
/// requests breaks replay protection and confidentiality of the response.
#[cfg(test)]
pub(crate) fn seal_request_deterministic(
    node_public_key: &[u8; 32],
    signing_address: &Address,
    plaintext: &[u8],
    aad: &[u8],
    ephemeral_ikm: &[u8; 32],
) -> Result<(SealedRequest, ClientResponseKeys)> {
    let (enc, ciphertext, context) = suite::seal_deterministic(
        node_public_key,
        &info(signing_address),
        plaintext,
        aad,
        ephemeral_ikm,
    )?;
    Ok((
        SealedRequest { enc, ciphertext },
        ClientResponseKeys::new(export_response_keys(&context)),
    ))
}

/// Opens a request sealed to `keypair` for the signer `signing_address`, with the same `aad` the
/// client sealed under. Returns the body and the keys with which the node seals the response.
///
/// Call [`super::ReplayGuard::check_and_insert`] with `sealed.enc` after this succeeds, before
/// acting on the body.
pub fn open_request(
    keypair: &E2eeKeyPair,
    signing_address: &Address,
    sealed: &SealedRequest,
    aad: &[u8],
) -> Result<(Vec<u8>, NodeResponseKeys)> {
    let (plaintext, context) = suite::open(
        &keypair.secret,
        &keypair.public,
        &sealed.enc,
        &info(signing_address),
        &sealed.ciphertext,
        aad,
    )?;
    Ok((plaintext, NodeResponseKeys::new(export_response_keys(&context))))
}

fn export_response_keys(context: &Context) -> ResponseKeys {
    let mut key = Zeroizing::new([0u8; 32]);
    let mut base_nonce = [0u8; 12];
    context.export(RESPONSE_KEY_LABEL, key.as_mut_slice());
    context.export(RESPONSE_NONCE_LABEL, &mut base_nonce);
    ResponseKeys { key, base_nonce }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn seq(start: u8) -> [u8; 32] {
        std::array::from_fn(|i| start + i as u8)
    }

    /// The vectors of `docs/protocol.md` §8. Printed so another implementation can be checked
    /// against them (`cargo test -p cloister-crypto vectors -- --nocapture`).
    #[test]
    fn vectors() {
        let ikm_r = seq(0x00);
        let ikm_e = seq(0x20);
        let address: Address = "0x00112233445566778899aabbccddeeff00112233".parse().unwrap();
        let node = E2eeKeyPair::derive(&ikm_r);
        let (sealed, client) =
            seal_request_deterministic(&node.public_key_bytes(), &address, b"hello cloister", b"", &ikm_e)
                .unwrap();
        let (body, node_keys) = open_request(&node, &address, &sealed, b"").unwrap();
        assert_eq!(body, b"hello cloister");
        let response_key = hex::encode(*client.0.key);
        let base_nonce = hex::encode(client.0.base_nonce);
        let mut sealer = node_keys.sealer();
        let chunk0 = sealer.seal_chunk(b"Hel");
        let chunk1 = sealer.seal_chunk(b"lo");
        let end = sealer.finish();
        assert_eq!(client.open_stream([&chunk0, &chunk1, &end]).unwrap(), b"Hello");

        let got = [
            ("pkR", hex::encode(node.public_key_bytes())),
            ("enc", hex::encode(sealed.enc)),
            ("request ciphertext", hex::encode(&sealed.ciphertext)),
            ("response key", response_key),
            ("response base nonce", base_nonce),
            ("chunk 0", hex::encode(&chunk0)),
            ("chunk 1", hex::encode(&chunk1)),
            ("end marker", hex::encode(&end)),
            ("request base64", sealed.to_base64()),
        ];
        for (name, value) in &got {
            println!("{name}: {value}");
        }
        let want = [
            (
                "pkR",
                "b1f1b840de7a3241b02748cf9b05b74dc8c5e8451298738817bd76aa8ebe8c2b",
            ),
            (
                "enc",
                "693658254630f73ad8da78fb331bf976cd42f90e0e9c9e83f40c51072a6f7417",
            ),
            (
                "request ciphertext",
                "3d5564eaa80e67a75cd05557d3e319fa70c95fd0ba976f65aeb631130177",
            ),
            (
                "response key",
                "9e3f1aab81ab135bdf32eb0c2569c672f7c6f7a5b64c092655c832c1b5f5a114",
            ),
            ("response base nonce", "8c54aa543e399026fac15a08"),
            ("chunk 0", "ec3a6cf12e62f10ad22c72ddecc4ed5c5b8311"),
            ("chunk 1", "5a7b834dccd1e442827f3e3f476075915c97"),
            ("end marker", "b5658024ca907a3e4c9add068f503321"),
            (
                "request base64",
                "aTZYJUYw9zrY2nj7Mxv5ds1C+Q4OnJ6D9AxRBypvdBc9VWTqqA5np1zQVVfT4xn6cMlf0LqXb2WutjETAXc=",
            ),
        ];
        for ((name, value), (want_name, want_value)) in got.iter().zip(want) {
            assert_eq!(
                (name.to_string(), value.as_str()),
                (want_name.to_string(), want_value)
            );
        }
    }
}
