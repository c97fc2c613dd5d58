//! Test doubles shared by Cloister's test suites (a dev-dependency only; never linked into a
//! binary). Each double is named as one: it stands in for something that cannot, or need not, run
//! in the test (a misbehaving node, an upstream server, a remote service).

pub mod evil_gateway;
pub mod evil_node;

pub use evil_node::{EvilNode, Misbehaviour};

pub mod models;
mod server;

pub use server::serve_in_thread;

/// Deterministic hostile bytes for parser tests (xorshift over `alphabet`, so the characters a
/// parser cares about come up often): the same `seed` always gives the same bytes, so a failure
/// names a reproducible input.
pub fn hostile_bytes(seed: u64, len: usize, alphabet: &[u8]) -> Vec<u8> {
    if alphabet.is_empty() {
        return Vec::new();
    }
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            alphabet[(x % alphabet.len() as u64) as usize]
        })
        .collect()
}
