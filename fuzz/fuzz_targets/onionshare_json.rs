//! OnionShare persistent-mode settings files.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = tails_server::interop::parse_onionshare(std::path::Path::new("fuzz.json"), data);
});
