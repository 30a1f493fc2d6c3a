//! The window end to end over AT-SPI, as Tails' test suite drives Tails' own applications:
//! the real `tails-server-gui` binary, driven by Dogtail (tests/atspi/drive_window.py) in a
//! session bus of its own with accessibility on, against a real `tails-server service` on a
//! private system bus and a real tor. Needs an X display (scripts/test runs under xvfb-run)
//! and Debian's python3-dogtail (./scripts/deps).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use common::{luks_volume, Bus, KillOnDrop, LocalTor, TestEnv};
use tails_server_dbus::ServerProxy;

const PASSPHRASE: &str = "correct horse battery staple";

#[test]
fn a_person_adds_publishes_invites_revokes_and_removes_through_the_accessibility_tree() {
    if tails_server_core::unix::euid() != 0 {
        eprintln!("skipped: the service owns org.boum.tails.Server, which the bus policy allows root only");
        return;
    }
    assert!(std::env::var_os("DISPLAY").is_some(), "needs an X display: run under `xvfb-run -a` (scripts/test does)");
    let bus = Bus::start();
    let env = TestEnv::new();
    let tor = LocalTor::start();
    let storage = luks_volume(env.root.path(), PASSPHRASE);
    let log = std::fs::File::create(env.root.path().join("service.log")).unwrap();
    let _service = KillOnDrop(
        env.command()
            .env("TAILS_SERVER_CONTROL_PORT", tor.control())
            .args(["service", "--bus", &bus.address, "--authorization", "uids:0", "--persistent-storage", "none"])
            .arg("--presence")
            .arg(format!("luks:{}", storage.display()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/atspi/drive_window.py");
    // Built beside this package's binary by the workspace's build (scripts/test).
    let gui = Path::new(env!("CARGO_BIN_EXE_tails-server")).with_file_name("tails-server-gui");
    assert!(gui.exists(), "{} is not built: cargo build -p tails-server-gui", gui.display());
    // Kept for review: the last tree the script saw.
    let tree = Path::new(env!("CARGO_TARGET_TMPDIR")).join("accessibility-tree.txt");
    let drive = |phase: &str| -> Vec<(String, String)> {
        let start = Instant::now();
        let driven = Command::new("dbus-run-session")
            .args(["--", "sh", "-c"])
            .arg(
                // Dogtail needs the toolkit's accessibility on, kept by dconf on the session bus.
                "gsettings set org.gnome.desktop.interface toolkit-accessibility true && \
                 exec /usr/bin/python3 \"$0\" \"$1\" \"$2\" \"$3\" \"$4\"",
            )
            .arg(&script)
            .arg(&gui)
            .arg(PASSPHRASE)
            .arg(&tree)
            .arg(phase)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
            .env("GDK_BACKEND", "x11")
            .output()
            .expect("dbus-run-session is installed (Debian: dbus-bin; ./scripts/deps)");
        let said = String::from_utf8_lossy(&driven.stdout).into_owned();
        assert!(
            driven.status.success() && said.contains(&format!("DONE {phase}")),
            "phase {phase} failed after {:?}:\n{said}\n{}\nthe window's accessibility tree:\n{}",
            start.elapsed(),
            String::from_utf8_lossy(&driven.stderr),
            std::fs::read_to_string(&tree).unwrap_or_default()
        );
        println!("{said}");
        said.lines().filter_map(|l| l.split_once(' ')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
    };
    let fact = |facts: &[(String, String)], key: &str| -> String {
        facts.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).unwrap_or_else(|| panic!("no {key}: {facts:?}"))
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let connection = rt.block_on(bus.connect());
    let server = rt.block_on(ServerProxy::new(&connection)).unwrap();

    // Added in the Add window (bob its first friend), published by its switch, alice invited
    // and her key shown after the passphrase: the key the sheet shows is the one the service
    // keeps.
    let facts = drive("invite");
    let info: serde_json::Value = serde_json::from_str(&rt.block_on(server.info("shared")).unwrap()).unwrap();
    assert_eq!(info["enabled"], true, "published by the switch");
    assert_eq!(info["local-port"], 9000);
    assert_eq!(fact(&facts, "ADDRESS"), info["address"].as_str().unwrap());
    rt.block_on(server.prove_presence(PASSPHRASE)).unwrap();
    let key: serde_json::Value =
        serde_json::from_str(&rt.block_on(server.credential("shared", "alice", "key")).unwrap()).unwrap();
    assert_eq!(fact(&facts, "KEY"), key["value"].as_str().unwrap());
    let clients = || -> Vec<String> {
        let listed: serde_json::Value = serde_json::from_str(&rt.block_on(server.clients("shared")).unwrap()).unwrap();
        listed.as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(clients(), ["bob", "alice"]);

    // A new window: alice revoked, then the service removed, each confirmed in its question.
    drive("revoke");
    let listed: serde_json::Value = serde_json::from_str(&rt.block_on(server.list()).unwrap()).unwrap();
    assert_eq!(listed, serde_json::json!([]), "removed");
}
