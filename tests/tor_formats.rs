//! Our key and credential formats, checked by tor itself: tor loads a HiddenServiceDir we
//! wrote and tells us, through the files and log lines it writes, what it understood.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tails_server::keys::{ClientSecretKey, OnionSecretKey};

#[test]
fn tor_derives_our_address_and_loads_our_client_auth_files() {
    let tor = which("tor").expect("this test needs tor (Debian: apt-get install tor)");
    let root = tempfile::tempdir().unwrap();
    let hs = root.path().join("hs");
    let data = root.path().join("data");
    for dir in [&hs, &hs.join("authorized_clients"), &data] {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).unwrap();
    }
    let key = OnionSecretKey::generate().unwrap();
    fs::write(hs.join("hs_ed25519_secret_key"), key.to_tor_secret_file()).unwrap();
    fs::set_permissions(hs.join("hs_ed25519_secret_key"), fs::Permissions::from_mode(0o600)).unwrap();
    let clients: Vec<_> = (0..3).map(|_| ClientSecretKey::generate().unwrap()).collect();
    for (i, client) in clients.iter().enumerate() {
        fs::write(hs.join(format!("authorized_clients/c{i}.auth")), client.public_key().auth_line() + "\n").unwrap();
    }
    let torrc = root.path().join("torrc");
    fs::write(&torrc, "").unwrap();
    let mut child = Command::new(tor)
        .args(["-f", torrc.to_str().unwrap(), "--ignore-missing-torrc"])
        .args(["--DataDirectory", data.to_str().unwrap(), "--SocksPort", "0", "--DisableNetwork", "1"])
        .args(["--HiddenServiceDir", hs.to_str().unwrap(), "--HiddenServicePort", "80 127.0.0.1:1"])
        .args(["--GeoIPFile", "/dev/null", "--GeoIPv6File", "/dev/null", "--Log", "info stdout"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let hostname = hs.join("hostname");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !hostname.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    child.kill().unwrap();
    let log = String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).into_owned();

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

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .chain(["/usr/sbin", "/usr/bin"])
        .map(|dir| std::path::Path::new(dir).join(program))
        .find(|p| p.is_file())
}
