//! See `tails_server_core::fuzz_targets::tor_events` (shared with tests/fuzz_seeds.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tails_server_core::fuzz_targets::tor_events(data));
