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
    let mut first_window_mib = None;
    for _ in 0..runs {
        let start = Instant::now();
        let window = Window::new(None);
        window.widget().present();
        window.start();
        wait_until("the list of services", || window.page() == page::SERVICES && window.rows().len() == SERVICES);
        launches.push(start.elapsed());
        first_window_mib.get_or_insert_with(peak_rss_mib);
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
    println!(
        "gui: peak resident memory of this process: {:.1} MiB once the first window showed the list, {:.1} MiB \
         after every run (goal <= 80 MB)",
        first_window_mib.unwrap_or_default(),
        peak_rss_mib()
    );
    match bare_window_mib() {
        Ok(bare) => println!(
            "gui: a bare libadwaita window (benches/bare-window.c, a header bar and a status page) on the same \
             display: {bare:.1} MiB: what GTK and libadwaita take by themselves"
        ),
        Err(why) => println!("gui: the bare window's baseline was not measured: {why}"),
    }
}

/// The peak resident memory of a bare libadwaita window in a process of its own (compiled
/// here with cc against the same libadwaita), once it has drawn three frames.
fn bare_window_mib() -> Result<f64, String> {
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/bare-window.c");
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let binary = dir.path().join("bare-window");
    let flags = std::process::Command::new("pkg-config")
        .args(["--cflags", "--libs", "libadwaita-1"])
        .output()
        .map_err(|e| format!("pkg-config: {e}"))?;
    if !flags.status.success() {
        return Err("pkg-config knows no libadwaita-1 (libadwaita-1-dev)".into());
    }
    let flags = String::from_utf8_lossy(&flags.stdout).into_owned();
    let compiled = std::process::Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&binary)
        .arg(source)
        .args(flags.split_whitespace())
        .output()
        .map_err(|e| format!("cc: {e}"))?;
    if !compiled.status.success() {
        return Err(format!("cc: {}", String::from_utf8_lossy(&compiled.stderr)));
    }
    let mut child = std::process::Command::new(&binary)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().map_err(|e| e.to_string())?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err("the bare window drew nothing within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let run = child.wait_with_output().map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&run.stdout);
    let kib: f64 = text
        .trim()
        .strip_prefix("VmHWM:")
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("the bare window printed {text:?}"))?;
    Ok(kib / 1024.0)
}
