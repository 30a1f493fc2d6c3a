//! The window (crates/gui) against a real `tails-server service` on a private dbus-daemon
//! (configured like the system bus, with the repository's policy) and a real tor, in this
//! process on an X display: `scripts/test` runs the tests under `xvfb-run`. Every screen the
//! test reaches is saved as a PNG in target/gui-screens/, for review and for the README.
//!
//! One test function: GTK lives on the one thread that initialized it.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Bus, KillOnDrop, LocalTor, TestEnv};
use tails_server_dbus::{ServerProxy, BUS_NAME};
use tails_server_gui::adw::prelude::*;
use tails_server_gui::gtk::{self, glib};
use tails_server_gui::window::{page, Window};

/// `tails-server service` on `bus` with `tor`, allowing the callers `authorization` names.
fn start_service(env: &TestEnv, bus: &Bus, tor: &LocalTor, authorization: &str) -> KillOnDrop {
    let log = std::fs::File::create(env.root.path().join("service.log")).unwrap();
    KillOnDrop(
        env.command()
            .env("TAILS_SERVER_CONTROL_PORT", tor.control())
            .args(["service", "--bus", &bus.address, "--authorization", authorization])
            .args(["--persistent-storage", "none"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

/// Runs GTK's main loop until `done` holds; fails after a minute, saying what it waited for.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let context = glib::MainContext::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    // Wakes the loop at least every 50 ms, so the deadline is noticed when nothing happens.
    let tick = glib::timeout_add_local(Duration::from_millis(50), || glib::ControlFlow::Continue);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        context.iteration(true);
    }
    tick.remove();
}

/// Saves what the window shows now as target/gui-screens/NAME.png.
fn screenshot(window: &Window, name: &str) {
    wait_until("the page to settle", || !window.transition_running());
    let widget = window.widget();
    let paintable = gtk::WidgetPaintable::new(Some(widget));
    let snapshot = gtk::Snapshot::new();
    paintable.snapshot(&snapshot, f64::from(widget.width()), f64::from(widget.height()));
    let node = snapshot.to_node().expect("the window drew something");
    let renderer = widget.native().and_then(|n| n.renderer()).expect("the window has a renderer");
    let texture = renderer.render_texture(&node, None);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("gui-screens");
    std::fs::create_dir_all(&dir).unwrap();
    texture.save_to_png(dir.join(format!("{name}.png"))).unwrap();
}

#[test]
fn the_window_shows_what_the_service_says_and_follows_it_without_polling() {
    if tails_server_core::unix::euid() != 0 {
        // The repository's bus policy lets only root own org.boum.tails.Server (as on Tails).
        eprintln!("skipped: the service owns org.boum.tails.Server, which the bus policy allows root only");
        return;
    }
    assert!(
        std::env::var_os("DISPLAY").is_some(),
        "the window needs an X display: run the tests with `xvfb-run -a cargo test` (scripts/test does)"
    );
    let bus = Bus::start();
    let env = TestEnv::new();
    let mut tor = LocalTor::start();
    // The window's system bus (zbus reads it when it connects).
    std::env::set_var("DBUS_SYSTEM_BUS_ADDRESS", &bus.address);
    tails_server_gui::adw::init().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();

    let window = Window::new(None);
    window.widget().present();
    window.start();

    // No service on the bus: a page saying so, never a frozen window.
    wait_until("the not-running page", || window.page() == page::PROBLEM);
    assert_eq!(window.problem().0, "Tails Server is not running");
    screenshot(&window, "not-running");

    // The service starts: the window hears its name appear, and shows that nothing is there.
    let service = start_service(&env, &bus, &tor, "uids:0");
    wait_until("the empty page once the service is on the bus", || window.page() == page::EMPTY);
    screenshot(&window, "empty");

    // A service added elsewhere (the CLI, another window) appears through `Changed`.
    let connection = rt.block_on(bus.connect());
    let server = rt.block_on(ServerProxy::new(&connection)).unwrap();
    let add = |name: &str, port: &str| {
        let options = HashMap::from([("name".to_owned(), name.to_owned()), ("local-port".to_owned(), port.to_owned())]);
        rt.block_on(server.add("custom", options)).unwrap();
    };
    add("web", "8080");
    add("notes", "8081");
    rt.block_on(server.enable("web")).unwrap();
    wait_until("two rows, web on", || window.rows().len() == 2 && window.rows()[1].switched_on);
    let rows = window.rows();
    assert_eq!(rows[0].name, "notes");
    assert_eq!(rows[0].state, "Off: Tor does not publish it");
    assert_eq!(rows[1].name, "web");
    assert!(rows[1].switched_on);
    // This tor has DisableNetwork 1, as Tails' tor until the person connects.
    assert_eq!(rows[1].state, "Saved; Tor will publish it when it is connected");
    assert_eq!(
        window.tor_notice().unwrap(),
        "Tor is not connected yet. Connect to Tor with the Tor Connection assistant: 1 service will be published \
         as soon as it is connected."
    );
    screenshot(&window, "services");

    // tor goes away: nobody calls anything, the service's loop notices and says so.
    tor.stop();
    wait_until("the window to hear that tor went away", || {
        window.tor_notice().is_some_and(|n| n.starts_with("Tor cannot be reached right now"))
    });

    // The person flips a switch: the service stores it, the window shows what is stored.
    window.switch("notes").unwrap().set_active(true);
    wait_until("notes switched on and stored", || {
        window.rows()[0].switched_on && !window.rows()[0].busy && window.last_notice().is_some()
    });
    let stored: serde_json::Value = serde_json::from_str(&rt.block_on(server.info("notes")).unwrap()).unwrap();
    assert_eq!(stored["enabled"], true);
    assert_eq!(window.last_notice().unwrap(), "Saved; Tor will publish it when it is back.");
    window.switch("web").unwrap().set_active(false);
    wait_until("web switched off", || !window.rows()[1].switched_on && window.rows()[1].state.starts_with("Off"));
    let stored: serde_json::Value = serde_json::from_str(&rt.block_on(server.info("web")).unwrap()).unwrap();
    assert_eq!(stored["enabled"], false);

    // The service stops: the window says so.
    drop(service);
    wait_until("the not-running page again", || window.page() == page::PROBLEM);
    assert_eq!(window.problem().0, "Tails Server is not running");

    // A service that refuses this user (polkit's answer) gets a page of its own.
    let _service = start_service(&env, &bus, &tor, "uids:65534");
    wait_until("the refusal page", || window.problem().0 == "You may not manage onion services here");
    assert_eq!(window.page(), page::PROBLEM);
    screenshot(&window, "not-authorized");
    let owner = rt.block_on(async {
        let dbus = zbus::fdo::DBusProxy::new(&connection).await.unwrap();
        dbus.name_has_owner(BUS_NAME.try_into().unwrap()).await.unwrap()
    });
    assert!(owner);
}
