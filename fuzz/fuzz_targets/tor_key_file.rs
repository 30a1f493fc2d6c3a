//! C tor's hs_ed25519_secret_key files and ED25519-V3 control-port blobs.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tails_server::keys::OnionSecretKey;

fuzz_target!(|data: &[u8]| {
    if let Ok(key) = OnionSecretKey::from_tor_secret_file(data) {
        assert_eq!(OnionSecretKey::from_tor_secret_file(&key.to_tor_secret_file()).unwrap(), key);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = OnionSecretKey::from_control_blob(text);
    }
});
