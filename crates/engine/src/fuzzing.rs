//! Entry points for the fuzz targets (`fuzz/`) and the hostile-input tests below: not an API
//! (hidden from the docs, changed at will). Each runs the engine's own code on untrusted bytes.

use cloister_types::openai::{ChatCompletionChunk, ChatCompletionRequest};

use crate::Result;
pub use crate::upstream::sse::{SseError, SseParser};

/// Runs `reads` (an upstream's streamed body, split as its reads arrived) through the upstream
/// engine's SSE parser and stream pass-through: every item it hands on, in order.
pub fn upstream_stream(reads: Vec<Vec<u8>>) -> Vec<Result<ChatCompletionChunk>> {
    crate::upstream::pass_through_reads(reads, "fuzz-model")
}

/// Whether `items` keep the stream contract of the crate docs, whatever the upstream sent: an
/// error, if any, is the last item; a stream that ends without one starts with a chunk whose first
/// choice has a role and ends with the one chunk that has no choices and carries usage.
pub fn check_stream_contract(items: &[Result<ChatCompletionChunk>]) -> std::result::Result<(), String> {
    if let Some(at) = items.iter().position(Result::is_err)
        && at + 1 != items.len()
    {
        return Err(format!(
            "item {at} is an error but {} items follow it",
            items.len() - at - 1
        ));
    }
    let Some(Ok(last)) = items.last() else {
        return Ok(());
    };
    if !(last.choices.is_empty() && last.usage.is_some()) {
        return Err("the stream does not end with a usage chunk".into());
    }
    let ok = &items[..items.len() - 1];
    if ok
        .iter()
        .flatten()
        .any(|c| c.choices.is_empty() && c.usage.is_some())
    {
        return Err("a usage chunk before the end".into());
    }
    match items.first() {
        Some(Ok(first)) if first.choices.first().is_some_and(|c| c.delta.role.is_some()) => Ok(()),
        _ => Err("the first chunk has no role".into()),
    }
}

/// The built-in engine's checks on a request's generation parameters (temperature, `top_p`,
/// `max_tokens`, `n`, stop sequences).
pub fn check_generation_params(req: &ChatCompletionRequest) -> Result<()> {
    crate::builtin::params::GenParams::from_request(req).map(|_| ())
}

/// Feeds `bytes` to a fresh [`SseParser`] in one read and again split at `cut`, and says whether
/// both gave the same events (or both refused the stream).
pub fn sse_split_agrees(bytes: &[u8], cut: usize, max_event: usize) -> bool {
    let run = |pieces: &[&[u8]]| -> std::result::Result<Vec<String>, SseError> {
        let mut parser = SseParser::new(max_event);
        let mut events = Vec::new();
        for piece in pieces {
            events.extend(parser.push(piece)?);
        }
        events.extend(parser.finish()?);
        Ok(events)
    };
    let cut = cut.min(bytes.len());
    let (a, b) = bytes.split_at(cut);
    match (run(&[bytes]), run(&[a, b])) {
        (Ok(whole), Ok(split)) => whole == split,
        (Err(_), Err(_)) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use cloister_types::wire::SSE_DONE_EVENT;

    use super::*;
    use crate::Error;

    fn hostile(seed: u64, len: usize) -> Vec<u8> {
        cloister_testkit::hostile_bytes(seed, len, b"data:event: \r\n\n{}[]\",:DONE0\xff\xfe\xc3")
    }

    fn chunk(body: &str) -> String {
        format!(
            r#"data: {{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":{body}}}"#
        )
    }

    #[test]
    fn hostile_bytes_never_panic_and_splits_agree() {
        for seed in 1..400u64 {
            let bytes = hostile(seed, (seed as usize * 7) % 300);
            for cut in [0, 1, bytes.len() / 2, bytes.len().saturating_sub(1)] {
                assert!(sse_split_agrees(&bytes, cut, 1 << 20), "seed {seed} cut {cut}");
            }
            let items = upstream_stream(bytes.chunks(5).map(<[u8]>::to_vec).collect());
            assert!(
                !items.is_empty(),
                "seed {seed}: a stream always ends with an item"
            );
            if let Err(why) = check_stream_contract(&items) {
                panic!("seed {seed}: {why}");
            }
        }
    }

    #[test]
    fn oversized_and_non_utf8_events_are_refused_the_same_however_split() {
        let big = format!("data: {}\n\n", "x".repeat(100));
        assert!(sse_split_agrees(big.as_bytes(), 50, 64));
        let mut p = SseParser::new(64);
        assert_eq!(p.push(big.as_bytes()), Err(SseError::TooLarge(64)));
        assert!(sse_split_agrees(b"data: \xff\n\n", 3, 64));
    }

    #[test]
    fn hostile_upstream_streams_end_with_a_typed_error_or_the_contract() {
        // Nothing at all, and garbage: a typed protocol error, last.
        for body in [&b""[..], b"data: {not json\n\n", b"data: 42\n\ndata: [DONE]\n\n"] {
            let items = upstream_stream(vec![body.to_vec()]);
            assert!(
                matches!(items.last(), Some(Err(Error::UpstreamProtocol(_)))),
                "{:?}: {items:?}",
                String::from_utf8_lossy(body)
            );
            assert_eq!(check_stream_contract(&items), Ok(()));
        }
        // An upstream error event mid-stream keeps its status.
        let items = upstream_stream(vec![
            b"data: {\"error\":{\"message\":\"oom\",\"code\":503}}\n\n".to_vec(),
        ]);
        assert!(
            matches!(items.last(), Some(Err(Error::Upstream { status: 503, .. }))),
            "{items:?}"
        );
        // Only `[DONE]`: a role chunk and an estimated usage chunk are added.
        let items = upstream_stream(vec![SSE_DONE_EVENT.as_bytes().to_vec()]);
        assert_eq!(items.len(), 2, "{items:?}");
        assert_eq!(check_stream_contract(&items), Ok(()));
        // A usage chunk first, content after it, no role: the usage still goes last, a role is set.
        let body = format!(
            "{}\n\n{}\n\n{}\n\n{SSE_DONE_EVENT}",
            chunk(r#"[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}"#),
            chunk(r#"[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]"#),
            chunk(r#"[{"index":0,"delta":{},"finish_reason":"stop"}]"#),
        );
        let items = upstream_stream(body.as_bytes().chunks(3).map(<[u8]>::to_vec).collect());
        assert_eq!(check_stream_contract(&items), Ok(()));
        let usage = items.last().and_then(|c| c.as_ref().ok()).and_then(|c| c.usage);
        assert_eq!(usage.map(|u| u.completion_tokens), Some(2));
    }

    #[test]
    fn the_contract_check_can_fail() {
        let items = upstream_stream(vec![SSE_DONE_EVENT.as_bytes().to_vec()]);
        let mut reversed: Vec<_> = items.into_iter().collect();
        reversed.reverse();
        assert!(check_stream_contract(&reversed).is_err());
        let err_first = vec![Err(Error::UpstreamProtocol("x".into())), reversed.remove(0)];
        assert!(check_stream_contract(&err_first).is_err());
    }

    #[test]
    fn generation_params_out_of_range_are_refused() {
        let ok = ChatCompletionRequest::default();
        assert!(check_generation_params(&ok).is_ok());
        for bad in [
            ChatCompletionRequest {
                temperature: Some(f32::NAN),
                ..Default::default()
            },
            ChatCompletionRequest {
                temperature: Some(-0.5),
                ..Default::default()
            },
            ChatCompletionRequest {
                top_p: Some(0.0),
                ..Default::default()
            },
            ChatCompletionRequest {
                top_p: Some(f32::INFINITY),
                ..Default::default()
            },
            ChatCompletionRequest {
                max_tokens: Some(0),
                ..Default::default()
            },
        ] {
            assert!(
                matches!(check_generation_params(&bad), Err(Error::InvalidRequest(_))),
                "{bad:?}"
            );
        }
    }
}
