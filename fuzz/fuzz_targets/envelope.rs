//! E2EE envelope and API-key decoding on arbitrary bytes: request envelopes (base64 and binary)
//! opened with a fixed node key, sealed response bodies and chunk streams opened with fixed client
//! keys, and `ck1_` API keys. Every input must give a typed error or a value, never a panic.
#![no_main]

use cloister_crypto::e2ee::{E2eeKeyPair, SealedRequest, open_request, seal_request};
use libfuzzer_sys::fuzz_target;

const SIGNER: [u8; 20] = [0x42; 20];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let node = E2eeKeyPair::derive(&[7u8; 32]);
    match mode % 4 {
        0 => {
            if let Ok(text) = std::str::from_utf8(rest) {
                if let Ok(sealed) = SealedRequest::from_base64(text) {
                    let _ = open_request(&node, &SIGNER, &sealed, b"");
                }
            }
        }
        1 => {
            if let Ok(sealed) = SealedRequest::from_bytes(rest) {
                let _ = open_request(&node, &SIGNER, &sealed, rest);
            }
        }
        2 => {
            // A client that really sealed a request reads an arbitrary (hostile) answer.
            let Ok((_, keys)) = seal_request(&node.public_key_bytes(), &SIGNER, b"{}", b"") else {
                return;
            };
            let chunks: Vec<Vec<u8>> = rest.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
            if rest.first().is_some_and(|b| b % 2 == 0) {
                let _ = keys.open_body(rest);
            } else {
                let _ = keys.open_stream(&chunks);
            }
        }
        _ => {
            if let Ok(text) = std::str::from_utf8(rest) {
                let _ = cloister_types::eip712::ApiKey::decode(text);
            }
        }
    }
});
