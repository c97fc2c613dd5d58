use std::time::Duration;

use cloister_crypto::Error;
use cloister_crypto::e2ee::{
    ClientResponseKeys, E2eeKeyPair, NodeResponseKeys, ReplayGuard, SealedRequest, TAG_LEN, open_request,
    seal_request,
};
use proptest::prelude::*;

const SIGNER: cloister_crypto::Address = cloister_crypto::Address::repeat_byte(0xab);

fn exchange(body: &[u8]) -> (ClientResponseKeys, NodeResponseKeys) {
    let node = E2eeKeyPair::generate();
    let (sealed, client) = seal_request(&node.public_key_bytes(), &SIGNER, body, b"aad").unwrap();
    let (opened, node_keys) = open_request(&node, &SIGNER, &sealed, b"aad").unwrap();
    assert_eq!(opened, body);
    (client, node_keys)
}

fn stream(node: NodeResponseKeys, parts: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut sealer = node.sealer();
    let mut chunks: Vec<Vec<u8>> = parts.iter().map(|p| sealer.seal_chunk(p)).collect();
    chunks.push(sealer.finish());
    chunks
}

#[test]
fn request_and_stream_round_trip() {
    let (client, node) = exchange(b"{\"stream\":true}");
    let chunks = stream(node, &[b"data: a", b"", b"data: bc"]);
    assert_eq!(chunks.last().unwrap().len(), TAG_LEN);
    assert_eq!(client.open_stream(&chunks).unwrap(), b"data: adata: bc");
}

#[test]
fn body_round_trip_and_truncation() {
    let (client, node) = exchange(b"{}");
    let sealed = node.seal_body(b"{\"choices\":[]}");
    assert_eq!(client.open_body(&sealed).unwrap(), b"{\"choices\":[]}");

    let (client, node) = exchange(b"{}");
    let sealed = node.seal_body(b"{\"choices\":[]}");
    assert!(matches!(
        client.open_body(&sealed[..sealed.len() - TAG_LEN]),
        Err(Error::Truncated)
    ));
}

#[test]
fn wire_encoding_round_trips_and_rejects_short_input() {
    let node = E2eeKeyPair::generate();
    let (sealed, _) = seal_request(&node.public_key_bytes(), &SIGNER, b"x", b"").unwrap();
    let text = sealed.to_base64();
    assert_eq!(SealedRequest::from_base64(&text).unwrap(), sealed);
    assert_eq!(sealed.to_bytes().len(), 32 + 1 + 16);
    assert!(matches!(
        SealedRequest::from_bytes(&[0; 47]),
        Err(Error::MalformedEnvelope(_))
    ));
    assert!(matches!(
        SealedRequest::from_base64("not base64!"),
        Err(Error::MalformedEnvelope(_))
    ));
}

#[test]
fn tampered_request_is_refused() {
    let node = E2eeKeyPair::generate();
    let (mut sealed, _) = seal_request(&node.public_key_bytes(), &SIGNER, b"body", b"").unwrap();
    sealed.ciphertext[0] ^= 1;
    assert!(matches!(
        open_request(&node, &SIGNER, &sealed, b""),
        Err(Error::Tampered)
    ));
}

#[test]
fn wrong_aad_or_signer_is_refused() {
    let node = E2eeKeyPair::generate();
    let (sealed, _) = seal_request(&node.public_key_bytes(), &SIGNER, b"body", b"a").unwrap();
    assert!(matches!(
        open_request(&node, &SIGNER, &sealed, b"b"),
        Err(Error::Tampered)
    ));
    assert!(matches!(
        open_request(&node, &cloister_crypto::Address::ZERO, &sealed, b"a"),
        Err(Error::Tampered)
    ));
}

#[test]
fn wrong_node_key_is_indistinguishable_from_tampering() {
    let node = E2eeKeyPair::generate();
    let other = E2eeKeyPair::generate();
    let (sealed, _) = seal_request(&node.public_key_bytes(), &SIGNER, b"body", b"").unwrap();
    assert!(matches!(
        open_request(&other, &SIGNER, &sealed, b""),
        Err(Error::Tampered)
    ));
}

#[test]
fn low_order_keys_are_refused() {
    let node = E2eeKeyPair::generate();
    assert!(matches!(
        seal_request(&[0; 32], &SIGNER, b"body", b""),
        Err(Error::InvalidPublicKey)
    ));
    let sealed = SealedRequest {
        enc: [0; 32],
        ciphertext: vec![0; 20],
    };
    assert!(matches!(
        open_request(&node, &SIGNER, &sealed, b""),
        Err(Error::MalformedEnvelope(_))
    ));
}

#[test]
fn response_keys_of_another_request_do_not_open() {
    let (_, node) = exchange(b"one");
    let (client, _) = exchange(b"two");
    let chunks = stream(node, &[b"secret"]);
    assert!(matches!(client.open_stream(&chunks), Err(Error::Tampered)));
}

#[test]
fn replayed_enc_is_refused() {
    let node = E2eeKeyPair::generate();
    let (sealed, _) = seal_request(&node.public_key_bytes(), &SIGNER, b"body", b"").unwrap();
    let mut guard = ReplayGuard::new(Duration::from_secs(300), 1024);
    open_request(&node, &SIGNER, &sealed, b"").unwrap();
    guard.check_and_insert(&sealed.enc).unwrap();
    open_request(&node, &SIGNER, &sealed, b"").unwrap();
    assert!(matches!(
        guard.check_and_insert(&sealed.enc),
        Err(Error::Replayed)
    ));
}

#[test]
fn missing_end_marker_is_truncation() {
    let (client, node) = exchange(b"{}");
    let mut chunks = stream(node, &[b"a", b"b"]);
    chunks.pop();
    assert!(matches!(client.open_stream(&chunks), Err(Error::Truncated)));
}

#[test]
fn dropped_last_chunk_is_detected() {
    let (client, node) = exchange(b"{}");
    let mut chunks = stream(node, &[b"a", b"b"]);
    chunks.remove(1);
    assert!(matches!(
        client.open_stream(&chunks),
        Err(Error::OutOfOrder {
            expected: 1,
            found: 2
        })
    ));
}

#[test]
fn open_end_on_a_data_chunk_is_truncation() {
    let (client, node) = exchange(b"{}");
    let chunks = stream(node, &[b"a", b"b"]);
    let mut opener = client.opener();
    opener.open_chunk(&chunks[0]).unwrap();
    assert!(matches!(opener.open_end(&chunks[1]), Err(Error::Truncated)));
}

#[test]
fn reordered_chunks_are_refused() {
    let (client, node) = exchange(b"{}");
    let mut chunks = stream(node, &[b"a", b"b", b"c"]);
    chunks.swap(0, 1);
    assert!(matches!(
        client.open_stream(&chunks),
        Err(Error::OutOfOrder {
            expected: 0,
            found: 1
        })
    ));
}

#[test]
fn duplicated_chunk_is_refused() {
    let (client, node) = exchange(b"{}");
    let mut chunks = stream(node, &[b"a", b"b"]);
    chunks.insert(1, chunks[0].clone());
    assert!(matches!(
        client.open_stream(&chunks),
        Err(Error::OutOfOrder {
            expected: 1,
            found: 0
        })
    ));
}

#[test]
fn tampered_chunk_is_refused() {
    let (client, node) = exchange(b"{}");
    let mut chunks = stream(node, &[b"a", b"b"]);
    chunks[1][0] ^= 0x80;
    assert!(matches!(client.open_stream(&chunks), Err(Error::Tampered)));
}

#[test]
fn data_after_end_marker_is_refused() {
    let (client, node) = exchange(b"{}");
    let mut chunks = stream(node, &[b"a"]);
    chunks.push(b"trailing".to_vec());
    assert!(matches!(
        client.open_stream(&chunks),
        Err(Error::MalformedEnvelope(_))
    ));
}

#[test]
fn debug_never_prints_secrets() {
    let node = E2eeKeyPair::generate();
    let text = format!("{node:?}");
    assert!(text.contains(&hex::encode(node.public_key_bytes())));
    let (client, node_keys) = exchange(b"{}");
    assert_eq!(format!("{client:?}"), "ClientResponseKeys(..)");
    assert_eq!(format!("{node_keys:?}"), "NodeResponseKeys(..)");
}

#[test]
fn derive_is_deterministic() {
    let a = E2eeKeyPair::derive(&[9; 32]);
    let b = E2eeKeyPair::derive(&[9; 32]);
    assert_eq!(a.public_key_bytes(), b.public_key_bytes());
    assert_ne!(
        a.public_key_bytes(),
        E2eeKeyPair::derive(&[8; 32]).public_key_bytes()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn round_trip_any_request_and_stream(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        aad in proptest::collection::vec(any::<u8>(), 0..64),
        parts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8),
    ) {
        let node = E2eeKeyPair::generate();
        let (sealed, client) = seal_request(&node.public_key_bytes(), &SIGNER, &body, &aad).unwrap();
        let sealed = SealedRequest::from_base64(&sealed.to_base64()).unwrap();
        let (opened, node_keys) = open_request(&node, &SIGNER, &sealed, &aad).unwrap();
        prop_assert_eq!(opened, body);
        let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let chunks = stream(node_keys, &parts);
        prop_assert_eq!(client.open_stream(&chunks).unwrap(), parts.concat());
    }
}
