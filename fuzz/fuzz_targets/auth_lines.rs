//! `.auth` and `.auth_private` lines, public keys as typed, onion addresses.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tails_server::keys::{ClientPublicKey, ClientSecretKey, OnionAddress};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(key) = ClientPublicKey::parse(text) {
        assert_eq!(ClientPublicKey::parse(&key.auth_line()).unwrap(), key);
    }
    if let Ok((address, key)) = ClientSecretKey::parse_auth_private_line(text) {
        let line = key.auth_private_line(&address);
        assert_eq!(ClientSecretKey::parse_auth_private_line(&line).unwrap(), (address, key));
    }
    let _ = text.parse::<OnionAddress>();
});
