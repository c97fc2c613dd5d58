//! Test doubles shared by Cloister's test suites (a dev-dependency only; never linked into a
//! binary). Each double is named as one: it stands in for something that cannot, or need not, run
//! in the test (a misbehaving node, an upstream server, a remote service).

pub mod evil_node;

pub use evil_node::{EvilNode, Misbehaviour};

mod server;

pub use server::serve_in_thread;
