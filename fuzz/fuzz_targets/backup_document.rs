//! See `tails_server_core::fuzz_targets::backup_document` (shared with tests/fuzz_seeds.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tails_server_core::fuzz_targets::backup_document(data));
