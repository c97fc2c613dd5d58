//! The client's SSE framing and event parsing on arbitrary bytes (what a hostile node can stream
//! back). The first byte picks the read size. Frames must be the input's own bytes, in order, each
//! ending in a blank line, with no complete event left unframed, and the same however the reads
//! split. Never a panic.
#![no_main]

use cloister_client::fuzzing::sse_frames;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, body)) = data.split_first() else {
        return;
    };
    let Ok(whole) = sse_frames(&[body]) else {
        return;
    };
    let framed = whole.frames.concat();
    assert!(body.starts_with(&framed), "frames are not the input's bytes");
    assert!(
        !body[framed.len()..].windows(2).any(|w| w == b"\n\n"),
        "an event left unframed"
    );
    assert!(whole.frames.iter().all(|f| f.ends_with(b"\n\n")));
    let pieces: Vec<&[u8]> = body.chunks(usize::from(split % 32) + 1).collect();
    assert_eq!(
        sse_frames(&pieces).ok().as_ref(),
        Some(&whole),
        "the split changed the frames"
    );
});
