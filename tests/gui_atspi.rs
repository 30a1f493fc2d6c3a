//! The window end to end over AT-SPI, as Tails' test suite drives Tails' own applications:
//! the real `tails-server-gui` binary, driven by Dogtail (tests/atspi/drive_window.py) in a
//! session bus of its own with accessibility on, against a real `tails-server service` on a
//! private system bus and a real tor. Needs an X display (scripts/test runs under xvfb-run)
//! and Debian's python3-dogtail (./scripts/deps).
//!
//! Run twice: with this machine's GTK 4.8 and libadwaita 1.2, and with Debian 13's GTK 4.18
//! and libadwaita 1.7 (Tails 7's) in a Docker container, the same binary and script.

mod common;
#[path = "common/language.rs"]
mod language;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use common::{luks_volume, serve_for_the_window, Bus, LocalTor, TestEnv};
use tails_server_dbus::ServerProxy;

const PASSPHRASE: &str = "correct horse battery staple";

/// Names GTK and libadwaita give their own widgets, translated in their own text domains
/// (the title bar's buttons), and the program's name.
const TOOLKIT_NAMES: [&str; 7] = [
    "Close",
    "Close the window",
    "Minimize",
    "Minimize the window",
    "Maximize",
    "Maximize the window",
    "tails-server-gui",
];

/// GTK 4.8 names a widget nobody named by its class (`AdwGizmo`, `GtkScrollbar`): not words a
/// translator could give.
fn is_class_name(text: &str) -> bool {
    (text.starts_with("Gtk") || text.starts_with("Adw")) && text.chars().all(|c| c.is_ascii_alphanumeric())
}

/// Whose GTK and libadwaita the window runs with.
enum Toolkit {
    /// This machine's (Debian 12: GTK 4.8, libadwaita 1.2), on the test's X display.
    Here,
    /// Debian 13's, as on Tails 7 (GTK 4.18, libadwaita 1.7): the same binary and script in
    /// a container of this Docker image (tests/atspi/trixie-image.sh), with an X display and
    /// session bus of its own, reaching the test's system bus through its socket.
    Debian13(String),
}

#[test]
fn a_person_adds_publishes_invites_revokes_and_removes_through_the_accessibility_tree() {
    if tails_server_core::unix::euid() != 0 {
        eprintln!("skipped: the service owns org.boum.tails.Server, which the bus policy allows root only");
        return;
    }
    assert!(std::env::var_os("DISPLAY").is_some(), "needs an X display: run under `xvfb-run -a` (scripts/test does)");
    drive_the_window_with(Toolkit::Here);
}

#[test]
fn the_same_with_tails_7s_gtk_and_libadwaita() {
    if tails_server_core::unix::euid() != 0 {
        eprintln!("skipped: the service owns org.boum.tails.Server, which the bus policy allows root only");
        return;
    }
    let recipe = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/atspi/trixie-image.sh");
    let built = Command::new(&recipe).stderr(Stdio::inherit()).output().expect("runs the image recipe");
    assert!(built.status.success(), "{} failed (Docker and mmdebstrap are needed: ./scripts/deps)", recipe.display());
    let image = String::from_utf8(built.stdout).unwrap().trim().to_owned();
    drive_the_window_with(Toolkit::Debian13(image));
}

fn drive_the_window_with(toolkit: Toolkit) {
    let bus = Bus::start();
    let env = TestEnv::new();
    let tor = LocalTor::start();
    let storage = luks_volume(env.root.path(), PASSPHRASE);
    let _service = serve_for_the_window(&env, &bus, &tor, &storage);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/atspi/drive_window.py");
    // Built beside this package's binary by the workspace's build (scripts/test).
    let gui = Path::new(env!("CARGO_BIN_EXE_tails-server")).with_file_name("tails-server-gui");
    assert!(gui.exists(), "{} is not built: cargo build -p tails-server-gui", gui.display());
    // Kept for review: the last tree the script saw.
    let dumps = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let tree = dumps.join(match toolkit {
        Toolkit::Here => "accessibility-tree.txt",
        Toolkit::Debian13(_) => "accessibility-tree-debian-13.txt",
    });
    // Dogtail needs the toolkit's accessibility on, kept by dconf on the session bus.
    let session = "gsettings set org.gnome.desktop.interface toolkit-accessibility true && \
                   exec /usr/bin/python3 \"$0\" \"$1\" \"$2\" \"$3\" \"$4\"";
    // The made-up language of tests/gui_language.rs, for the phase that reads every
    // accessible name and description in it.
    let language = language::compile(env.root.path());
    let language_dir = language::directory(env.root.path());
    let drive = |phase: &str| -> Vec<(String, String)> {
        let start = Instant::now();
        let environment: &[(String, String)] = if phase == "language" { &language } else { &[] };
        let mut command = match &toolkit {
            Toolkit::Here => {
                let mut command = Command::new("dbus-run-session");
                command.env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address).env("GDK_BACKEND", "x11");
                command.envs(environment.iter().map(|(k, v)| (k, v)));
                command
            }
            Toolkit::Debian13(image) => {
                let mut command = Command::new("docker");
                let mount = |path: &Path| format!("{0}:{0}", path.display());
                // --init: xvfb-run waits for Xvfb's SIGUSR1, which a shell running as PID 1
                // never gets.
                command
                    .args(["run", "--rm", "--init", "--network", "none"])
                    .args(["-v", &mount(bus.dir.path()), "-v", &mount(&gui), "-v", &mount(&script)])
                    .args(["-v", &mount(dumps), "-v", &mount(&language_dir)])
                    .args(["-e", &format!("DBUS_SYSTEM_BUS_ADDRESS={}", bus.address), "-e", "GDK_BACKEND=x11"])
                    .args(environment.iter().flat_map(|(k, v)| ["-e".to_owned(), format!("{k}={v}")]))
                    .args([image.as_str(), "xvfb-run", "-a", "dbus-run-session"]);
                command
            }
        };
        let driven = command
            .args(["--", "sh", "-c", session])
            .arg(&script)
            .arg(&gui)
            .arg(PASSPHRASE)
            .arg(&tree)
            .arg(phase)
            .output()
            .expect("dbus-run-session (Debian: dbus-bin) and Docker are installed (./scripts/deps)");
        let said = String::from_utf8_lossy(&driven.stdout).into_owned();
        assert!(
            driven.status.success() && said.contains(&format!("DONE {phase}")),
            "phase {phase} failed after {:?}:\n{said}\n{}\nthe window's accessibility tree:\n{}\nthe window said:\n{}",
            start.elapsed(),
            String::from_utf8_lossy(&driven.stderr),
            std::fs::read_to_string(&tree).unwrap_or_default(),
            std::fs::read_to_string(tree.with_extension("txt.window-log")).unwrap_or_default()
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

    // A new window in the made-up language: every accessible name and description a screen
    // reader would say, on the services page with a service's details open and in the Add
    // window, went through gettext (GTK cannot read them back in the window's own test).
    let facts = drive("language");
    let mut data =
        vec!["shared".to_owned(), "alice".to_owned(), "bob".to_owned(), info["address"].as_str().unwrap().to_owned()];
    let said: Vec<&String> = facts.iter().filter(|(k, _)| k == "SAYS").map(|(_, v)| v).collect();
    assert!(said.len() > 20, "the script read the tree: {said:?}");
    // A kind's name and its Debian packages are commands' words, the same in every language.
    let catalog: serde_json::Value = serde_json::from_str(&rt.block_on(server.catalog()).unwrap()).unwrap();
    for kind in catalog.as_array().unwrap() {
        data.push(kind["name"].as_str().unwrap().to_owned());
        data.extend(kind["packages"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_owned()));
    }
    let untranslated: Vec<&&String> = said
        .iter()
        .filter(|text| !TOOLKIT_NAMES.contains(&text.as_str()) && !is_class_name(text))
        .filter(|text| language::has_untranslated_words(text, &data))
        .collect();
    assert!(
        untranslated.is_empty(),
        "a screen reader says words that are not in the translators' template: {untranslated:#?}"
    );

    // A new window: alice revoked, then the service removed, each confirmed in its question.
    drive("revoke");
    let listed: serde_json::Value = serde_json::from_str(&rt.block_on(server.list()).unwrap()).unwrap();
    assert_eq!(listed, serde_json::json!([]), "removed");
}
