//! Incremental server-sent-events parsing (the WHATWG event-stream format), for upstream streams.
//!
//! Bytes arrive in arbitrary pieces: an event, a line, even a `\r\n` pair may be split across reads.
//! The parser keeps the unfinished line and returns the `data` of each event as soon as its blank
//! line arrives. Comments (`: keep-alive`) and fields other than `data` are skipped.

/// Why a stream is not valid SSE.
#[derive(Debug, PartialEq, Eq)]
pub enum SseError {
    /// A line or an event is larger than the limit.
    TooLarge(usize),
    /// Event data is not UTF-8.
    NotUtf8,
}

impl std::fmt::Display for SseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLarge(limit) => write!(f, "an event is larger than {limit} bytes"),
            Self::NotUtf8 => f.write_str("event data is not UTF-8"),
        }
    }
}

/// The parser state between reads.
#[derive(Debug)]
pub struct SseParser {
    buf: Vec<u8>,
    /// `buf[..scanned]` holds no line terminator.
    scanned: usize,
    data: Vec<u8>,
    has_data: bool,
    max_event: usize,
}

impl SseParser {
    /// A parser that refuses events larger than `max_event` bytes.
    pub fn new(max_event: usize) -> Self {
        Self {
            buf: Vec::new(),
            scanned: 0,
            data: Vec::new(),
            has_data: false,
            max_event,
        }
    }

    /// Feeds bytes; returns the data of every event completed by them.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<String>, SseError> {
        self.buf.extend_from_slice(bytes);
        self.drain_lines(false)
    }

    /// The stream ended: a last unterminated line counts, and a pending event is dispatched.
    pub fn finish(&mut self) -> Result<Vec<String>, SseError> {
        let mut events = self.drain_lines(true)?;
        if !self.buf.is_empty() {
            let line = std::mem::take(&mut self.buf);
            self.scanned = 0;
            self.line(&line, &mut events)?;
        }
        self.dispatch(&mut events)?;
        Ok(events)
    }

    fn drain_lines(&mut self, at_eof: bool) -> Result<Vec<String>, SseError> {
        let mut events = Vec::new();
        let mut start = 0;
        let mut i = self.scanned;
        while i < self.buf.len() {
            let b = self.buf[i];
            if b != b'\n' && b != b'\r' {
                i += 1;
                continue;
            }
            // A `\r` at the very end may be the first half of `\r\n`: wait for the next read.
            if b == b'\r' && i + 1 == self.buf.len() && !at_eof {
                break;
            }
            let line = self.buf[start..i].to_vec();
            let skip = if b == b'\r' && self.buf.get(i + 1) == Some(&b'\n') {
                2
            } else {
                1
            };
            i += skip;
            start = i;
            self.line(&line, &mut events)?;
        }
        self.buf.drain(..start);
        self.scanned = i - start;
        if self.buf.len() > self.max_event {
            return Err(SseError::TooLarge(self.max_event));
        }
        Ok(events)
    }

    fn line(&mut self, line: &[u8], events: &mut Vec<String>) -> Result<(), SseError> {
        if line.is_empty() {
            return self.dispatch(events);
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(at) => {
                let value = &line[at + 1..];
                (&line[..at], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        if field == b"data" {
            if self.has_data {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(value);
            self.has_data = true;
            if self.data.len() > self.max_event {
                return Err(SseError::TooLarge(self.max_event));
            }
        }
        Ok(())
    }

    fn dispatch(&mut self, events: &mut Vec<String>) -> Result<(), SseError> {
        if !self.has_data {
            return Ok(());
        }
        self.has_data = false;
        let data = String::from_utf8(std::mem::take(&mut self.data)).map_err(|_| SseError::NotUtf8)?;
        events.push(data);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(pieces: &[&[u8]]) -> Vec<String> {
        let mut p = SseParser::new(1 << 20);
        let mut out = Vec::new();
        for piece in pieces {
            out.extend(p.push(piece).unwrap_or_else(|e| panic!("{e}")));
        }
        out.extend(p.finish().unwrap_or_else(|e| panic!("{e}")));
        out
    }

    #[test]
    fn events_split_anywhere_give_the_same_result() {
        let stream: &[u8] =
            b": comment\r\ndata: {\"a\":1}\r\n\r\nevent: x\ndata: two\ndata: lines\n\ndata:[DONE]\r\rdata: tail";
        let whole = feed_all(&[stream]);
        assert_eq!(whole, vec!["{\"a\":1}", "two\nlines", "[DONE]", "tail"]);
        for cut in 0..stream.len() {
            assert_eq!(feed_all(&[&stream[..cut], &stream[cut..]]), whole, "cut at {cut}");
        }
        let bytewise: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(feed_all(&bytewise), whole);
    }

    #[test]
    fn oversized_events_are_refused() {
        let mut p = SseParser::new(8);
        assert_eq!(p.push(b"data: 0123456789\n"), Err(SseError::TooLarge(8)));
        let mut p = SseParser::new(8);
        assert_eq!(p.push(b"data: 0123456789"), Err(SseError::TooLarge(8)));
    }

    #[test]
    fn field_without_colon_and_bad_utf8() {
        assert_eq!(feed_all(&[b"data\n\n"]), vec![String::new()]);
        let mut p = SseParser::new(64);
        assert_eq!(p.push(b"data: \xff\n\n"), Err(SseError::NotUtf8));
    }
}
