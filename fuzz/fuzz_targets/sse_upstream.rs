//! The upstream engine's SSE parser and stream pass-through on arbitrary bytes (what a hostile or
//! broken OpenAI-compatible upstream can send). The first byte picks where the body is split
//! across reads. The parser must give the same events however the reads split, and the engine's
//! stream must keep its contract: an error only as the last item, otherwise a first chunk with a
//! role and one usage chunk at the end. Never a panic.
#![no_main]

use cloister_engine::fuzzing::{check_stream_contract, sse_split_agrees, upstream_stream};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, body)) = data.split_first() else {
        return;
    };
    let cut = usize::from(split) * body.len() / 255;
    assert!(
        sse_split_agrees(body, cut, 1 << 16),
        "split at {cut} changed the events"
    );
    let read = usize::from(split % 16) + 1;
    let items = upstream_stream(body.chunks(read).map(<[u8]>::to_vec).collect());
    if let Err(why) = check_stream_contract(&items) {
        panic!("stream contract broken: {why}");
    }
});
