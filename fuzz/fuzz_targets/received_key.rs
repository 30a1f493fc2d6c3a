//! A key received from a service's owner, pasted or read from a file (`key add`): every
//! form accepted must give the same key back from its `.auth_private` line.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tails_server::keys::{parse_received_key, ClientSecretKey};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok((address, key)) = parse_received_key(text, None) {
        let line = key.auth_private_line(&address);
        assert_eq!(ClientSecretKey::parse_auth_private_line(&line).unwrap(), (address, key.clone()));
        assert_eq!(parse_received_key(&line, Some(address)).unwrap(), (address, key));
    }
});
