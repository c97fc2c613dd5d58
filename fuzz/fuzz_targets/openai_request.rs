//! OpenAI chat-completion request JSON on arbitrary bytes, as the node parses it
//! (`cloister_types::openai::ChatCompletionRequest`), then the built-in engine's checks on its
//! generation parameters. A request that parses must survive a serialise/parse round trip
//! unchanged (the node and the upstream engine pass unknown fields through). Never a panic.
#![no_main]

use cloister_types::openai::ChatCompletionRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = serde_json::from_slice::<ChatCompletionRequest>(data) else {
        return;
    };
    let _ = req.max_new_tokens();
    let _ = req.stop_sequences();
    for message in &req.messages {
        let _ = message.text_content();
    }
    let _ = cloister_engine::fuzzing::check_generation_params(&req);
    let again = serde_json::to_vec(&req).expect("a parsed request serialises");
    let back: ChatCompletionRequest = serde_json::from_slice(&again).expect("and parses again");
    assert_eq!(back, req, "the round trip changed the request");
});
