//! See `tails_server_core::fuzz_targets::control_reply` (shared with tests/fuzz_seeds.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tails_server_core::fuzz_targets::control_reply(data));
