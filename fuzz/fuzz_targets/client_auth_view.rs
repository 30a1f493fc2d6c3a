//! tor's answer to ONION_CLIENT_AUTH_VIEW (the client keys it holds), and the GETINFO
//! values read beside it (key=value pairs).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let lines: Vec<String> = text.split("\r\n").map(str::to_owned).collect();
    let held = tails_server::publish::parse_client_auth_view(&lines);
    assert!(held.len() <= lines.len());
    let _ = tails_server::tor::command::parse_pairs(text);
});
