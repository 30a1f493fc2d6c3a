//! The bodies of the fuzz targets in `fuzz/`, one per parser of outside input. They live
//! here so that `tests/fuzz_seeds.rs` replays the inputs kept in `fuzz/seeds/` through the
//! same code on every `cargo test` (stable toolchain): an input that once crashed a target
//! is kept there, and so becomes a regression test. Each panics only on a broken promise
//! (a round trip that does not hold), never on refused input.

use crate::keys::{parse_received_key, ClientPublicKey, ClientSecretKey, OnionAddress, OnionSecretKey};

/// A target's body: panics only on a broken promise.
pub type Target = fn(&[u8]);

/// Every target, by the name of its directory in `fuzz/seeds/` and its binary in `fuzz/`.
pub const TARGETS: &[(&str, Target)] = &[
    ("auth_lines", auth_lines),
    ("backup_decrypt", backup_decrypt),
    ("backup_document", backup_document),
    ("client_auth_view", client_auth_view),
    ("control_reply", control_reply),
    ("onionshare_json", onionshare_json),
    ("received_key", received_key),
    ("tor_events", tor_events),
    ("tor_key_file", tor_key_file),
];

/// `.auth` and `.auth_private` lines, public keys as typed, onion addresses.
pub fn auth_lines(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(key) = ClientPublicKey::parse(text) {
        assert_eq!(ClientPublicKey::parse(&key.auth_line()).unwrap(), key);
    }
    if let Ok((address, key)) = ClientSecretKey::parse_auth_private_line(text) {
        let line = key.auth_private_line(&address);
        assert_eq!(ClientSecretKey::parse_auth_private_line(&line).unwrap(), (address, key));
    }
    let _ = text.parse::<OnionAddress>();
}

/// Whole backup files as they arrive: armor, age header, payload.
pub fn backup_decrypt(data: &[u8]) {
    let _ = crate::backup::decrypt(data, "fuzz");
}

/// The decrypted backup document: decoding, then validation.
pub fn backup_document(data: &[u8]) {
    if let Ok(doc) = crate::backup::BackupDocument::from_json(data) {
        let _ = doc.validate(&crate::catalog::Catalog::builtin());
    }
}

/// tor's answer to ONION_CLIENT_AUTH_VIEW, and the GETINFO values read beside it.
pub fn client_auth_view(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let lines: Vec<String> = text.split("\r\n").map(str::to_owned).collect();
    assert!(crate::publish::parse_client_auth_view(&lines).len() <= lines.len());
    let _ = crate::tor::command::parse_pairs(text);
}

/// key=value pairs with quoted strings from tor's control port.
pub fn control_reply(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::tor::command::parse_pairs(text);
    }
}

/// OnionShare persistent-mode settings files.
pub fn onionshare_json(data: &[u8]) {
    let _ = crate::interop::parse_onionshare(std::path::Path::new("fuzz.json"), data);
}

/// A key received from a service's owner (`key add`): every form accepted gives the same
/// key back from its `.auth_private` line.
pub fn received_key(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok((address, key)) = parse_received_key(text, None) {
        let line = key.auth_private_line(&address);
        assert_eq!(ClientSecretKey::parse_auth_private_line(&line).unwrap(), (address, key.clone()));
        assert_eq!(parse_received_key(&line, Some(address)).unwrap(), (address, key));
    }
}

/// Asynchronous events from tor's control port (`650` replies).
pub fn tor_events(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let lines: Vec<String> = text.split("\r\n").map(str::to_owned).collect();
    let _ = crate::tor::TorEvent::parse(&lines);
}

/// C tor's hs_ed25519_secret_key files and ED25519-V3 control-port blobs.
pub fn tor_key_file(data: &[u8]) {
    if let Ok(key) = OnionSecretKey::from_tor_secret_file(data) {
        assert_eq!(OnionSecretKey::from_tor_secret_file(&key.to_tor_secret_file()).unwrap(), key);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = OnionSecretKey::from_control_blob(text);
    }
}
