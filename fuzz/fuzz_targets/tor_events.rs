//! Asynchronous events from tor's control port (`650` replies: HS_DESC, STATUS_CLIENT…).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let lines: Vec<String> = text.split("\r\n").map(str::to_owned).collect();
    let _ = tails_server::tor::TorEvent::parse(&lines);
});
