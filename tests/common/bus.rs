//! A private D-Bus system bus for tests and benchmarks: a real dbus-daemon configured like
//! Debian's system bus, with the repository's policy for tails-server included.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Stdio};

use super::run::KillOnDrop;

/// Tails' Persistent Storage service name (the tests stand in for it).
pub const STAND_IN_NAME: &str = "org.boum.tails.PersistentStorage";

/// Stands in for Tails' Persistent Storage service (tpsd) on a test's bus: the same name
/// ([`STAND_IN_NAME`]), object, interface and properties; it stands in for tpsd only.
pub struct PersistentStorageStandIn {
    pub unlocked: bool,
}

#[zbus::interface(name = "org.boum.tails.PersistentStorage")]
impl PersistentStorageStandIn {
    #[zbus(property)]
    fn state(&self) -> String {
        if self.unlocked { "UNLOCKED" } else { "NOT_UNLOCKED" }.into()
    }

    #[zbus(property)]
    fn is_unlocked(&self) -> bool {
        self.unlocked
    }
}

/// A private bus configured like Debian's system bus (deny by default), plus the repo's
/// policy file and one line letting root own the Persistent Storage stand-in's name.
pub struct Bus {
    pub dir: tempfile::TempDir,
    _daemon: KillOnDrop,
    pub address: String,
}

impl Bus {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        // Other users (the unauthorized caller) must reach the socket.
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let socket = dir.path().join("system_bus_socket");
        // This package's directory, or the repository above it (the container suite).
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .find(|d| d.join("persistence-hooks").is_dir())
            .expect("the repository's persistence-hooks/");
        let policy = repo.join("persistence-hooks/dbus/org.boum.tails.Server.conf");
        let config = format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
  </policy>
  <policy user="root">
    <allow own="{STAND_IN_NAME}"/>
    <allow send_destination="{STAND_IN_NAME}"/>
  </policy>
  <include>{policy}</include>
</busconfig>
"#,
            socket = socket.display(),
            policy = policy.display(),
        );
        let config_path = dir.path().join("bus.conf");
        std::fs::write(&config_path, config).unwrap();
        let daemon = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config_path.display()))
            .args(["--nofork", "--nopidfile", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon is installed (Debian: dbus-daemon)");
        let mut daemon = KillOnDrop(daemon);
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(daemon.0.stdout.take().unwrap()), &mut line).unwrap();
        assert!(line.starts_with("unix:"), "dbus-daemon did not start: {line:?}");
        Bus { dir, _daemon: daemon, address: format!("unix:path={}", socket.display()) }
    }

    /// Runs `binary` as user nobody (a user without rights, as amnesia is to the service),
    /// with this bus as its system bus.
    pub fn run_as_nobody(&self, binary: &Path, args: &[&str]) -> super::run::Run {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            // No controlling terminal, as a program in the background: nothing can be asked.
            .args(["setsid", "--wait"])
            .arg(binary)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", "/nonexistent")
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.address)
            .stdin(Stdio::null())
            .output()
            .unwrap()
            .into()
    }

    pub async fn connect(&self) -> zbus::Connection {
        zbus::connection::Builder::address(self.address.as_str()).build().await.unwrap()
    }
}

/// Waits until `name` has an owner on the bus (at most 20 s; then fails with `log`, the
/// owner-to-be's).
pub async fn wait_for_name(connection: &zbus::Connection, name: &str, log: &Path) {
    let dbus = zbus::fdo::DBusProxy::new(connection).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let owned = dbus.name_has_owner(zbus::names::BusName::try_from(name).unwrap()).await.unwrap();
        if owned {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} never appeared:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A LUKS2 volume (a header in a file) whose passphrase is `passphrase`, standing in for
/// the Persistent Storage partition: cryptsetup reads it as it reads the partition on Tails.
/// PBKDF2 at its lowest cost, so that each check is fast.
pub fn luks_volume(dir: &Path, passphrase: &str) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("TailsData.img");
    std::fs::File::create(&path).unwrap().set_len(20 << 20).unwrap();
    let mut format = Command::new("cryptsetup")
        .args(["luksFormat", "-q", "--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"])
        .args(["--disable-locks", "--key-file", "-"])
        .arg(&path)
        .stdin(Stdio::piped())
        .spawn()
        .expect("cryptsetup is installed (./scripts/deps)");
    format.stdin.take().unwrap().write_all(passphrase.as_bytes()).unwrap();
    assert!(format.wait().unwrap().success(), "cryptsetup luksFormat");
    path
}
