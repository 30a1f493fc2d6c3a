//! See `tails_server_core::fuzz_targets::tor_key_file` (shared with tests/fuzz_seeds.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tails_server_core::fuzz_targets::tor_key_file(data));
