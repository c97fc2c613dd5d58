//! Response sealing: numbered ChaCha20-Poly1305 chunks and an authenticated end marker.
//!
//! Two implementations of the one AEAD: the node seals with ring's (assembly, on the node's path for
//! every stream chunk), the client opens with RustCrypto's `chacha20poly1305`. Every round trip in the
//! tests is therefore also a check of one implementation against the other.

use chacha20poly1305::aead::{Aead as _, Payload};
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce};
use zeroize::Zeroizing;

use super::{CHUNK_AAD, END_AAD, TAG_LEN};
use crate::{Error, Result};

/// How far either side of the expected counter a failed chunk is tried again, to report
/// [`Error::OutOfOrder`] rather than [`Error::Tampered`]. Bounded so a forged chunk costs at most
/// this many tag checks.
const REORDER_WINDOW: u64 = 32;

/// The response key and base nonce exported from one HPKE context.
pub(crate) struct ResponseKeys {
    pub(crate) key: Zeroizing<[u8; 32]>,
    pub(crate) base_nonce: [u8; 12],
}

impl ResponseKeys {
    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new((&*self.key).into())
    }

    fn sealing_key(&self) -> ring::aead::LessSafeKey {
        super::suite::chacha20_poly1305_key(&self.key)
    }
}

/// `base_nonce` XOR the big-endian counter in the last 8 bytes (the construction of RFC 9180 §5.2).
fn chunk_nonce_bytes(base_nonce: &[u8; 12], counter: u64) -> [u8; 12] {
    let mut nonce = *base_nonce;
    for (n, c) in nonce[4..].iter_mut().zip(counter.to_be_bytes()) {
        *n ^= c;
    }
    nonce
}

fn chunk_nonce(base_nonce: &[u8; 12], counter: u64) -> Nonce {
    chunk_nonce_bytes(base_nonce, counter).into()
}

fn seal_at(key: &ring::aead::LessSafeKey, base: &[u8; 12], counter: u64, pt: &[u8], aad: &[u8]) -> Vec<u8> {
    // Unique: each sealer's counter only goes up, and each request exports its own key.
    let nonce = ring::aead::Nonce::assume_unique_for_key(chunk_nonce_bytes(base, counter));
    let mut out = Vec::with_capacity(pt.len() + TAG_LEN);
    out.extend_from_slice(pt);
    match key.seal_in_place_append_tag(nonce, ring::aead::Aad::from(aad), &mut out) {
        Ok(()) => out,
        // ChaCha20-Poly1305 refuses only plaintexts over 256 GiB, which no response chunk reaches.
        Err(_) => Vec::new(),
    }
}

fn open_at(
    cipher: &ChaCha20Poly1305,
    base: &[u8; 12],
    counter: u64,
    ct: &[u8],
    aad: &[u8],
) -> Option<Vec<u8>> {
    cipher
        .decrypt(&chunk_nonce(base, counter), Payload { msg: ct, aad })
        .ok()
}

/// The node's side of a request's response keys: it can only seal.
pub struct NodeResponseKeys(ResponseKeys);

impl NodeResponseKeys {
    pub(crate) fn new(keys: ResponseKeys) -> Self {
        Self(keys)
    }

    /// A sealer for a streamed response, starting at chunk 0.
    pub fn sealer(self) -> ResponseSealer {
        ResponseSealer {
            key: self.0.sealing_key(),
            base_nonce: self.0.base_nonce,
            counter: 0,
        }
    }

    /// Seals a whole (non-streamed) body: chunk 0 ‖ end marker (16 bytes).
    pub fn seal_body(self, body: &[u8]) -> Vec<u8> {
        let mut sealer = self.sealer();
        let mut out = sealer.seal_chunk(body);
        out.extend_from_slice(&sealer.finish());
        out
    }
}

impl std::fmt::Debug for NodeResponseKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeResponseKeys(..)")
    }
}

/// The client's side of a request's response keys: it can only open.
pub struct ClientResponseKeys(pub(crate) ResponseKeys);

impl ClientResponseKeys {
    pub(crate) fn new(keys: ResponseKeys) -> Self {
        Self(keys)
    }

    /// An opener for a streamed response, expecting chunk 0 first.
    pub fn opener(self) -> ResponseOpener {
        ResponseOpener {
            cipher: self.0.cipher(),
            base_nonce: self.0.base_nonce,
            counter: 0,
        }
    }

    /// Opens a body from [`NodeResponseKeys::seal_body`].
    pub fn open_body(self, sealed: &[u8]) -> Result<Vec<u8>> {
        let opener = self.opener();
        let split = sealed.len().checked_sub(TAG_LEN).filter(|&at| at >= TAG_LEN);
        let result = match split {
            Some(at) => {
                let (chunk, end) = sealed.split_at(at);
                let mut opener = opener.clone();
                opener
                    .open_chunk(chunk)
                    .and_then(|body| opener.open_end(end).map(|()| body))
            }
            None => Err(Error::MalformedEnvelope("body shorter than two tags")),
        };
        // A body that opens whole as chunk 0 lost its end marker.
        match result {
            Err(_) if open_at(&opener.cipher, &opener.base_nonce, 0, sealed, CHUNK_AAD).is_some() => {
                Err(Error::Truncated)
            }
            other => other,
        }
    }

    /// Opens a whole stream: data chunks then the end marker, in order. The concatenated plaintext,
    /// or [`Error::Truncated`] if the end marker is missing, [`Error::OutOfOrder`] if a chunk is
    /// misplaced, [`Error::Tampered`] if one does not authenticate, and
    /// [`Error::MalformedEnvelope`] if anything follows the end marker.
    pub fn open_stream<I>(self, chunks: I) -> Result<Vec<u8>>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let mut opener = self.opener();
        let mut out = Vec::new();
        let mut chunks = chunks.into_iter();
        while let Some(chunk) = chunks.next() {
            let chunk = chunk.as_ref();
            if opener.is_end(chunk) {
                return match chunks.next() {
                    None => Ok(out),
                    Some(_) => Err(Error::MalformedEnvelope("data after the end marker")),
                };
            }
            out.extend_from_slice(&opener.open_chunk(chunk)?);
        }
        Err(Error::Truncated)
    }
}

impl std::fmt::Debug for ClientResponseKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientResponseKeys(..)")
    }
}

/// Seals response chunks in order; [`Self::finish`] seals the end marker.
pub struct ResponseSealer {
    key: ring::aead::LessSafeKey,
    base_nonce: [u8; 12],
    counter: u64,
}

impl ResponseSealer {
    /// Seals the next chunk (ciphertext ‖ tag) under the next counter.
    pub fn seal_chunk(&mut self, plaintext: &[u8]) -> Vec<u8> {
        let ct = seal_at(&self.key, &self.base_nonce, self.counter, plaintext, CHUNK_AAD);
        // 2^64 chunks are never sealed, so the counter, and with it the nonce, never repeats.
        self.counter += 1;
        ct
    }

    /// Seals the end marker: an empty plaintext with AAD [`END_AAD`] under the next counter, so
    /// it also commits to the number of chunks. Always [`TAG_LEN`] bytes.
    pub fn finish(self) -> Vec<u8> {
        seal_at(&self.key, &self.base_nonce, self.counter, b"", END_AAD)
    }

    /// How many data chunks have been sealed.
    pub fn chunks_sealed(&self) -> u64 {
        self.counter
    }
}

impl std::fmt::Debug for ResponseSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseSealer")
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

/// Opens response chunks in order; [`Self::open_end`] checks the end marker.
#[derive(Clone)]
pub struct ResponseOpener {
    cipher: ChaCha20Poly1305,
    base_nonce: [u8; 12],
    counter: u64,
}

impl ResponseOpener {
    /// Opens the next data chunk.
    pub fn open_chunk(&mut self, ciphertext: &[u8]) -> Result<Vec<u8>> {
        match open_at(
            &self.cipher,
            &self.base_nonce,
            self.counter,
            ciphertext,
            CHUNK_AAD,
        ) {
            Some(pt) => {
                self.counter += 1;
                Ok(pt)
            }
            None => Err(self.diagnose(ciphertext)),
        }
    }

    /// Whether `ciphertext` is the end marker at the current position.
    pub fn is_end(&self, ciphertext: &[u8]) -> bool {
        ciphertext.len() == TAG_LEN
            && open_at(&self.cipher, &self.base_nonce, self.counter, ciphertext, END_AAD).is_some()
    }

    /// Checks the end marker; after all chunks have been opened, this proves none is missing.
    pub fn open_end(self, ciphertext: &[u8]) -> Result<()> {
        if self.is_end(ciphertext) {
            return Ok(());
        }
        // A data chunk where the end belongs means the stream went on past what was received.
        if open_at(
            &self.cipher,
            &self.base_nonce,
            self.counter,
            ciphertext,
            CHUNK_AAD,
        )
        .is_some()
        {
            return Err(Error::Truncated);
        }
        Err(self.diagnose(ciphertext))
    }

    /// Why a chunk did not open at the current counter: it opens at a nearby one (a chunk or the
    /// end marker, reordered, duplicated or dropped), or it does not open at all.
    fn diagnose(&self, ciphertext: &[u8]) -> Error {
        let lo = self.counter.saturating_sub(REORDER_WINDOW);
        let hi = self.counter.saturating_add(REORDER_WINDOW);
        for found in (lo..=hi).filter(|&c| c != self.counter) {
            let chunk = open_at(&self.cipher, &self.base_nonce, found, ciphertext, CHUNK_AAD);
            if chunk.is_some()
                || open_at(&self.cipher, &self.base_nonce, found, ciphertext, END_AAD).is_some()
            {
                return Error::OutOfOrder {
                    expected: self.counter,
                    found,
                };
            }
        }
        Error::Tampered
    }

    /// How many data chunks have been opened.
    pub fn chunks_opened(&self) -> u64 {
        self.counter
    }
}

impl std::fmt::Debug for ResponseOpener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseOpener")
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// ring's sealing (the node) against RustCrypto's (the reference the client opens with), byte
    /// for byte, over lengths around the 64-byte block and 16-byte tag boundaries and both AADs.
    #[test]
    fn ring_seals_exactly_what_rustcrypto_seals() {
        let keys = ResponseKeys {
            key: Zeroizing::new(core::array::from_fn(|i| (i as u8).wrapping_mul(7) ^ 0x5a)),
            base_nonce: core::array::from_fn(|i| 0xa0 ^ i as u8),
        };
        let ring_key = keys.sealing_key();
        let reference = keys.cipher();
        for len in [0usize, 1, 15, 16, 17, 63, 64, 65, 175, 1000, 4096] {
            let pt: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            for (counter, aad) in [(0u64, CHUNK_AAD), (1, CHUNK_AAD), (u64::MAX - 1, END_AAD)] {
                let want = reference
                    .encrypt(&chunk_nonce(&keys.base_nonce, counter), Payload { msg: &pt, aad })
                    .unwrap_or_default();
                assert_eq!(
                    seal_at(&ring_key, &keys.base_nonce, counter, &pt, aad),
                    want,
                    "length {len}, counter {counter}"
                );
            }
        }
    }

    #[test]
    fn nonce_xors_counter_into_last_eight_bytes() {
        let base = [0xffu8; 12];
        let n = chunk_nonce(&base, 0x0102_0304_0506_0708);
        assert_eq!(
            n.as_slice(),
            &[
                0xff, 0xff, 0xff, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0xfa, 0xf9, 0xf8, 0xf7
            ]
        );
        assert_eq!(chunk_nonce(&base, 0).as_slice(), &base);
    }
}
