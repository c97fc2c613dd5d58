//! Entry points for the fuzz targets (`fuzz/`) and the hostile-input tests below: not an API
//! (hidden from the docs, changed at will). Each runs the client's own code on untrusted bytes.

use crate::Result;
use crate::sse::{SseFramer, parse_event};

/// What the client's SSE framing made of a node's streamed body.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Framed {
    /// Each complete event, byte for byte with its `\n\n`.
    pub frames: Vec<Vec<u8>>,
    /// Each frame's `event:` name and `data:` payload, or `None` where the frame is not UTF-8.
    pub events: Vec<Option<(Option<String>, String)>>,
    /// Whether anything but whitespace was left unframed at the end.
    pub partial: bool,
}

/// Frames `reads` (a node's streamed body, split as its reads arrived) as the client does, and
/// parses each event; the first framing error ends it.
pub fn sse_frames(reads: &[&[u8]]) -> Result<Framed> {
    let mut framer = SseFramer::default();
    let mut out = Framed::default();
    for read in reads {
        out.frames.extend(framer.push(read)?);
    }
    out.events = out.frames.iter().map(|f| parse_event(f).ok()).collect();
    out.partial = framer.has_partial_event();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use cloister_types::wire;

    use super::*;

    fn hostile(seed: u64, len: usize) -> Vec<u8> {
        cloister_testkit::hostile_bytes(seed, len, b"data:event: \r\n\n{}[]\"x\xff\xc3")
    }

    #[test]
    fn framing_keeps_every_byte_however_the_reads_split() {
        for seed in 1..400u64 {
            let bytes = hostile(seed, (seed as usize * 7) % 300);
            let whole = sse_frames(&[&bytes]).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            let framed: Vec<u8> = whole.frames.concat();
            assert!(
                bytes.starts_with(&framed),
                "seed {seed}: frames are the input's own bytes"
            );
            assert!(
                !bytes[framed.len()..].windows(2).any(|w| w == b"\n\n"),
                "seed {seed}: a complete event was left unframed"
            );
            assert!(whole.frames.iter().all(|f| f.ends_with(b"\n\n")));
            let pieces: Vec<&[u8]> = bytes.chunks(3).collect();
            assert_eq!(sse_frames(&pieces).ok(), Some(whole), "seed {seed}");
        }
    }

    #[test]
    fn events_parse_names_and_joined_data() {
        let named = format!("event: {}\r\ndata: {{\"a\"\ndata:1}}\n\n", wire::SIGNATURE_EVENT);
        let framed = sse_frames(&[named.as_bytes(), b"data: \xff\n\ntail"]).unwrap_or_default();
        assert_eq!(
            framed.events,
            vec![
                Some((Some(wire::SIGNATURE_EVENT.into()), "{\"a\"\n1}".into())),
                None
            ]
        );
        assert!(framed.partial);
    }

    #[test]
    fn an_event_that_never_ends_is_refused() {
        let endless = vec![b'x'; 16 * 1024 * 1024 + 1];
        assert!(matches!(
            sse_frames(&[b"data: ", &endless]),
            Err(crate::Error::MalformedResponse(_))
        ));
    }
}
