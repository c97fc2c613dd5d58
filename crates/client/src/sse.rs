//! Server-sent event framing: split a byte stream into events at blank lines, byte for byte (the
//! signature covers the exact bytes, so frames keep their terminator).

use crate::{Error, Result};

/// Largest event we buffer; a node that never ends an event is refused, not followed.
const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// Splits bytes into SSE events (each ending in `\n\n`).
#[derive(Debug, Default)]
pub(crate) struct SseFramer {
    buf: Vec<u8>,
}

impl SseFramer {
    /// Adds bytes; returns every event completed by them, each with its `\n\n`.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(at) = self.buf.windows(2).position(|w| w == b"\n\n") {
            let rest = self.buf.split_off(at + 2);
            out.push(std::mem::replace(&mut self.buf, rest));
        }
        if self.buf.len() > MAX_EVENT_BYTES {
            return Err(Error::MalformedResponse("an SSE event over 16 MiB".into()));
        }
        Ok(out)
    }

    /// Whether anything but whitespace is left unframed.
    pub(crate) fn has_partial_event(&self) -> bool {
        self.buf.iter().any(|b| !b.is_ascii_whitespace())
    }
}

/// The `data:` payload of one event (lines joined with `\n`, one leading space removed), and its
/// `event:` name if any.
pub(crate) fn parse_event(frame: &[u8]) -> Result<(Option<String>, String)> {
    let text = std::str::from_utf8(frame)
        .map_err(|_| Error::MalformedResponse("an SSE event is not UTF-8".into()))?;
    let mut name = None;
    let mut data: Vec<&str> = Vec::new();
    for line in text.lines() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some(v) = line.strip_prefix("data:") {
            data.push(v.strip_prefix(' ').unwrap_or(v));
        } else if let Some(v) = line.strip_prefix("event:") {
            name = Some(v.trim().to_owned());
        }
    }
    Ok((name, data.join("\n")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_across_pushes_keep_their_bytes() {
        let mut f = SseFramer::default();
        let a = f.push(b"data: one\n").unwrap_or_default();
        assert!(a.is_empty());
        let b = f.push(b"\ndata: two\n\nevent: x\ndata: 3").unwrap_or_default();
        assert_eq!(b, vec![b"data: one\n\n".to_vec(), b"data: two\n\n".to_vec()]);
        assert!(f.has_partial_event());
        let c = f.push(b"\n\n").unwrap_or_default();
        assert_eq!(c, vec![b"event: x\ndata: 3\n\n".to_vec()]);
        let (name, data) = parse_event(&c[0]).unwrap_or_default();
        assert_eq!((name.as_deref(), data.as_str()), (Some("x"), "3"));
    }
}
