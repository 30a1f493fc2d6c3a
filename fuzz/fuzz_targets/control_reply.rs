//! What tor's control port says back: key=value pairs with quoted strings.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = tails_server::tor::command::parse_pairs(text);
    }
});
