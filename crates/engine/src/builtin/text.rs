//! Turning sampled token bytes into text that is safe to send.
//!
//! Two things stand between a token and the client: a token may end in the middle of a multi-byte
//! UTF-8 character ([`Utf8Decoder`] keeps the partial bytes until the character is whole), and the
//! text may be the start of a stop string ([`StopMatcher`] holds it back until it is clear either way,
//! so a stop string never reaches the client, not even in part).

/// Incremental UTF-8 decoding of token bytes.
#[derive(Debug, Default)]
pub(crate) struct Utf8Decoder {
    pending: Vec<u8>,
}

impl Utf8Decoder {
    /// Adds `bytes` and returns the text that is now complete. Invalid sequences become U+FFFD;
    /// an incomplete character at the end is kept for the next call.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // `valid` is valid UTF-8 by construction of `valid_up_to`.
                    out.push_str(&String::from_utf8_lossy(valid));
                    match e.error_len() {
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = after.get(n..).unwrap_or_default();
                        }
                        // Incomplete character at the end: wait for more bytes.
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        self.pending = rest.to_vec();
        out
    }

    /// Ends the text: whatever partial character is left comes out as U+FFFD.
    pub(crate) fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

/// Holds back text that could be the start of a stop string.
#[derive(Debug, Default)]
pub(crate) struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

/// What [`StopMatcher::push`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum StopScan {
    /// No stop string yet: this text can be sent.
    Continue(String),
    /// A stop string was found: this is the text before it, and generation ends.
    Stopped(String),
}

impl StopMatcher {
    /// A matcher for these stop strings (empty ones are ignored).
    pub(crate) fn new(stops: Vec<String>) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            held: String::new(),
        }
    }

    /// Adds newly decoded text.
    pub(crate) fn push(&mut self, text: &str) -> StopScan {
        self.held.push_str(text);
        if self.stops.is_empty() {
            return StopScan::Continue(std::mem::take(&mut self.held));
        }
        let first_stop = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min();
        if let Some(at) = first_stop {
            let mut before = std::mem::take(&mut self.held);
            before.truncate(at);
            return StopScan::Stopped(before);
        }
        let keep = self.partial_stop_len();
        let cut = self.held.len() - keep;
        let tail = self.held.split_off(cut);
        StopScan::Continue(std::mem::replace(&mut self.held, tail))
    }

    /// Ends the text: what was held back is sent after all.
    pub(crate) fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Length of the longest suffix of the held text that is a proper prefix of a stop string.
    fn partial_stop_len(&self) -> usize {
        let held = self.held.as_bytes();
        let mut best = 0;
        for stop in &self.stops {
            let stop = stop.as_bytes();
            let longest = stop.len().saturating_sub(1).min(held.len());
            for len in (best + 1..=longest).rev() {
                let start = held.len() - len;
                if held[start..] == stop[..len] && self.held.is_char_boundary(start) {
                    best = len;
                    break;
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_across_tokens_comes_out_whole() {
        let mut d = Utf8Decoder::default();
        let bytes = "é🙂x".as_bytes();
        let mut out = String::new();
        for b in bytes {
            out.push_str(&d.push(std::slice::from_ref(b)));
        }
        out.push_str(&d.finish());
        assert_eq!(out, "é🙂x");
    }

    #[test]
    fn utf8_invalid_bytes_become_replacement_and_do_not_stall() {
        let mut d = Utf8Decoder::default();
        assert_eq!(d.push(&[b'a', 0xff, b'b']), "a\u{fffd}b");
        assert_eq!(d.push(&[0xf0, 0x9f]), "");
        assert_eq!(d.finish(), "\u{fffd}");
        assert_eq!(d.push(b"ok"), "ok");
    }

    #[test]
    fn stop_string_is_cut_and_prefix_held_back() {
        let mut m = StopMatcher::new(vec!["END".into(), String::new()]);
        assert_eq!(m.push("hello E"), StopScan::Continue("hello ".into()));
        assert_eq!(m.push("N"), StopScan::Continue(String::new()));
        assert_eq!(m.push("Dtrailing"), StopScan::Stopped(String::new()));
        let mut m = StopMatcher::new(vec!["END".into()]);
        assert_eq!(m.push("a EN"), StopScan::Continue("a ".into()));
        assert_eq!(m.push("x"), StopScan::Continue("ENx".into()));
        assert_eq!(m.push("E"), StopScan::Continue(String::new()));
        assert_eq!(m.finish(), "E");
    }

    #[test]
    fn earliest_of_several_stops_wins_and_multibyte_is_safe() {
        let mut m = StopMatcher::new(vec!["zz".into(), "é!".into()]);
        assert_eq!(m.push("ab é"), StopScan::Continue("ab ".into()));
        assert_eq!(m.push("! zz"), StopScan::Stopped(String::new()));
        let mut m = StopMatcher::new(vec!["\n\n".into()]);
        assert_eq!(m.push("line\n"), StopScan::Continue("line".into()));
        assert_eq!(m.push("\nnext"), StopScan::Stopped(String::new()));
    }

    #[test]
    fn no_stops_passes_everything() {
        let mut m = StopMatcher::new(Vec::new());
        assert_eq!(m.push("abc"), StopScan::Continue("abc".into()));
        assert_eq!(m.finish(), "");
    }
}
