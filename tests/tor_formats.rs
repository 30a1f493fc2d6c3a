//! Our key and credential formats, checked by tor itself: tor loads a HiddenServiceDir we
//! wrote and tells us, through the files and log lines it writes, what it understood.

mod common;

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};

use tails_server_core::keys::{ClientSecretKey, OnionSecretKey};

#[test]
fn tor_derives_our_address_and_loads_our_client_auth_files() {
    let root = tempfile::tempdir().unwrap();
    let hs = root.path().join("hs");
    for dir in [&hs, &hs.join("authorized_clients")] {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).unwrap();
    }
    let key = OnionSecretKey::generate().unwrap();
    fs::write(hs.join("hs_ed25519_secret_key"), key.to_tor_secret_file()).unwrap();
    fs::set_permissions(hs.join("hs_ed25519_secret_key"), fs::Permissions::from_mode(0o600)).unwrap();
    let clients: Vec<_> = (0..3).map(|_| ClientSecretKey::generate().unwrap()).collect();
    for (i, client) in clients.iter().enumerate() {
        fs::write(hs.join(format!("authorized_clients/c{i}.auth")), client.public_key().auth_line() + "\n").unwrap();
    }
    let log = common::run_hidden_service_dir(&hs);
    let hostname = hs.join("hostname");

    let written = fs::read_to_string(&hostname).unwrap_or_else(|_| panic!("tor wrote no hostname:\n{log}"));
    assert_eq!(written, format!("{}\n", key.address()));
    assert_eq!(fs::read(hs.join("hs_ed25519_public_key")).unwrap(), key.public_key().to_tor_public_file());
    for i in 0..clients.len() {
        assert!(
            log.contains(&format!("Loaded a client authorization key file c{i}.auth")),
            "c{i}.auth not loaded:\n{log}"
        );
    }
    assert!(!log.contains("Client authorization encoded"), "tor rejected a key:\n{log}");
}
