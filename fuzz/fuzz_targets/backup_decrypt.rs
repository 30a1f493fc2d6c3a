//! Whole backup files as they arrive: armor, age header, payload.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = tails_server::backup::decrypt(data, "fuzz");
});
