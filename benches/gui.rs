//! The window's figures (crates/gui), in this process on an X display (run under
//! `xvfb-run -a`, as scripts/test does): from a new window to its list of 20 services shown,
//! against a real `tails-server service` on a private dbus-daemon and a local tor; a switch
//! flipped on until tor runs the service (`onions/detached`) and the row shows it; and the
//! process's peak resident memory afterwards (this process is the window, its GTK and its bus
//! thread; the service runs in a process of its own). Not measured here: the process start
//! and GTK's own initialization before the first window (printed once, as "GTK init").
//! Run with `xvfb-run -a cargo bench --bench gui` (as root: the bus policy lets only root own
//! the service's name).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/gui.rs"]
mod gui;
mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Bus, KillOnDrop, LocalTor, TestEnv};
use gui::wait_until;
use support::{median, ms, peak_rss_mib};
use tails_server_dbus::{ServerProxy, BUS_NAME};
use tails_server_gui::adw::prelude::*;
use tails_server_gui::window::{page, Window};

const SERVICES: usize = 20;

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    if tails_server_core::unix::euid() != 0 {
        println!("gui bench: skipped (needs root: only root may own org.boum.tails.Server)");
        return;
    }
    assert!(std::env::var_os("DISPLAY").is_some(), "the window needs an X display: run under `xvfb-run -a`");
    let runs = if quick { 2 } else { 21 };
    let env = TestEnv::new();
    for i in 0..SERVICES {
        env.run(&["add", "custom", "--name", &format!("s{i:02}"), "--local-port", &(8000 + i).to_string()]).ok();
    }
    let tor = LocalTor::start();
    let bus = Bus::start();
    let log = std::fs::File::create(env.root.path().join("service.log")).unwrap();
    let _service = KillOnDrop(
        env.command()
            .env("TAILS_SERVER_CONTROL_PORT", tor.control())
            .args(["service", "--bus", &bus.address, "--authorization", "uids:0", "--persistent-storage", "none"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let connection = rt.block_on(bus.connect());
    let server = rt.block_on(ServerProxy::new(&connection)).unwrap();
    let dbus = rt.block_on(zbus::fdo::DBusProxy::new(&connection)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !rt.block_on(dbus.name_has_owner(BUS_NAME.try_into().unwrap())).unwrap() {
        assert!(Instant::now() < deadline, "the service never appeared on the bus");
        rt.block_on(async { tokio::time::sleep(Duration::from_millis(20)).await });
    }
    std::env::set_var("DBUS_SYSTEM_BUS_ADDRESS", &bus.address);
    let init = Instant::now();
    tails_server_gui::adw::init().unwrap();
    let init = init.elapsed();

    let mut launches = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        let window = Window::new(None);
        window.widget().present();
        window.start();
        wait_until("the list of services", || window.page() == page::SERVICES && window.rows().len() == SERVICES);
        launches.push(start.elapsed());
        let gone = window.downgrade();
        window.widget().destroy();
        drop(window);
        wait_until("the window freed", || gone.is_gone());
    }

    let window = Window::new(None);
    window.widget().present();
    window.start();
    wait_until("the list", || window.rows().len() == SERVICES);
    let mut flips = Vec::new();
    for i in 0..runs.min(SERVICES) {
        let name = format!("s{i:02}");
        let start = Instant::now();
        window.switch(&name).unwrap().set_active(true);
        let id = {
            let info: serde_json::Value = serde_json::from_str(&rt.block_on(server.info(&name)).unwrap()).unwrap();
            info["address"].as_str().unwrap().trim_end_matches(".onion").to_owned()
        };
        wait_until("tor to run it and the row to show it", || {
            let row = window.rows().into_iter().find(|r| r.name == name).unwrap();
            row.switched_on && !row.busy && tor.detached().contains(&id)
        });
        flips.push(start.elapsed());
    }

    println!("gui: GTK init {:.1} ms (once per process)", ms(init));
    println!(
        "gui: new window to {SERVICES} services listed: median {:.1} ms over {runs} runs (goal <= 300 ms)",
        ms(median(launches))
    );
    println!(
        "gui: switch flipped on to tor running the service and the row showing it: median {:.1} ms over {} flips",
        ms(median(flips.clone())),
        flips.len()
    );
    println!("gui: peak resident memory of this process: {:.1} MiB (goal <= 80 MB)", peak_rss_mib());
}
