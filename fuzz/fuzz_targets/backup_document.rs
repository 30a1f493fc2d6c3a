//! The decrypted backup document: decoding, then validation.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(doc) = tails_server::backup::BackupDocument::from_json(data) {
        let _ = doc.validate(&tails_server::catalog::Catalog::builtin());
    }
});
