//! The system service's figures: `List` of 20 services over D-Bus (a client on a private
//! dbus-daemon, as the CLI and a GUI will call it) against the CLI in direct mode (a cold
//! process reading the store itself), and the service's resident memory when idle. Run with
//! `cargo bench --bench dbus` (as root: the bus policy lets only root own the name).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Bus, KillOnDrop, TestEnv};

const SERVICES: usize = 20;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    if tails_server_core::unix::euid() != 0 {
        println!("dbus bench: skipped (needs root: only root may own org.boum.tails.Server)");
        return;
    }
    let runs = if quick { 3 } else { 31 };
    let env = TestEnv::new();
    for i in 0..SERVICES {
        env.run(&["add", "custom", "--name", &format!("s{i}"), "--local-port", &(8000 + i).to_string()]).ok();
    }
    let bus = Bus::start();
    let no_tor = bus.dir.path().join("no-tor");
    let service = KillOnDrop(
        env.command()
            .env("TAILS_SERVER_CONTROL_SOCKET", &no_tor)
            .args(["service", "--bus", &bus.address, "--authorization", "uids:0", "--persistent-storage", "none"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let over_dbus = rt.block_on(async {
        let connection = bus.connect().await;
        let dbus = zbus::fdo::DBusProxy::new(&connection).await.unwrap();
        let name = zbus::names::BusName::try_from(tails_server_dbus::BUS_NAME).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !dbus.name_has_owner(name.clone()).await.unwrap() {
            assert!(Instant::now() < deadline, "the service did not start");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let server = tails_server_dbus::ServerProxy::new(&connection).await.unwrap();
        let mut samples = Vec::new();
        for _ in 0..runs {
            let start = Instant::now();
            let list = server.list().await.unwrap();
            samples.push(start.elapsed());
            assert!(list.contains("\"s19\""));
        }
        samples
    });
    let mut direct = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        env.run(&["--format", "json", "list"]).ok();
        direct.push(start.elapsed());
    }
    let rss = std::fs::read_to_string(format!("/proc/{}/status", service.0.id()))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .map(|l| l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap())
        .unwrap();
    if quick {
        println!("dbus bench harness smoke run (run `cargo bench --bench dbus` for figures)");
        return;
    }
    println!("tails-server D-Bus service ({SERVICES} services)");
    println!("List over D-Bus (warm service, in-process client)  median {:>7.2} ms", ms(median(over_dbus)));
    println!("`tails-server list` direct (cold process)           median {:>7.2} ms", ms(median(direct)));
    println!("service resident memory after {} calls             {:>7.1} MB", runs, rss as f64 / 1024.0);
}
