//! What the commands cost a USB stick: bytes written and fsync-class calls (fsync,
//! fdatasync, sync_file_range, counted with strace on the state directory's files only)
//! per command, the medians of `list`, `set-option` and `client add`, and the size of the
//! store on disk (20 services × 32 clients, then after 10,000 alternating changes).
//!
//!   cargo bench --bench stick                       in a temporary directory
//!   sudo ./scripts/stick-bench                      on a USB-2-like device (a throttled
//!                                                   loop device; the script sets it up)
//!
//! TAILS_SERVER_BENCH_CHURN sets the number of changes of the churn (default 10,000).
//!
//! TAILS_SERVER_BENCH_DIR puts the stores there (the script's mount point). Goals (issue 10):
//! a read writes 0 bytes with 0 fsyncs; a change at most 64 KiB with at most 3 fsync-class
//! calls; on the throttled device `list` <= 15 ms and a change <= 100 ms.
//!
//! As root, the same changes are also made through the system service (on a private
//! dbus-daemon, by user nobody as amnesia on Tails), the service traced: it keeps sled open
//! between changes, which is how Tails runs them.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tails_server_core::names::{ClientName, ServiceName};
use tails_server_core::{AddRequest, Config, Manager};

use support::{command, kib, median, size_on_disk, tally, TRACED};

const BIN: &str = env!("CARGO_BIN_EXE_tails-server");

fn run(state: &Path, args: &[&str]) -> Duration {
    let start = Instant::now();
    let out = command(state, BIN).args(args).stderr(Stdio::piped()).output().expect("run tails-server");
    let took = start.elapsed();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    took
}

/// Bytes written and fsync-class calls on files under `state`, from strace's `-y` paths.
fn count(state: &Path, args: &[&str]) -> Option<(u64, u32)> {
    let trace = state.with_extension("trace");
    let status = command(state, "strace")
        .args(["-f", "-qq", "-y", "-o"])
        .arg(&trace)
        .args(["-e", TRACED])
        .arg(BIN)
        .args(args)
        .status()
        .ok()?;
    assert!(status.success(), "{args:?} under strace failed");
    let text = std::fs::read_to_string(&trace).ok()?;
    let _ = std::fs::remove_file(&trace);
    Some(tally(&text, state))
}

/// Changes through the system service, traced: what each costs the stick, and how long
/// the caller waits. Needs root (only root may own the bus name) and strace.
fn through_the_service(state: &Path, runs: usize) {
    if tails_server_core::unix::euid() != 0 {
        println!("through the service: skipped (needs root)");
        return;
    }
    let bus = common::Bus::start();
    let trace = state.with_extension("service-trace");
    let mut service = common::KillOnDrop(
        command(state, "strace")
            .args(["-f", "-qq", "-y", "-o"])
            .arg(&trace)
            .args(["-e", TRACED, BIN, "service", "--bus", &bus.address, "--authorization", "uids:0,65534"])
            .args(["--persistent-storage", "none"])
            .env("TAILS_SERVER_CONTROL_SOCKET", state.with_extension("no-tor"))
            .stderr(Stdio::null())
            .spawn()
            .expect("strace runs"),
    );
    let as_nobody = |args: &[&str]| bus.run_as_nobody(Path::new(BIN), args);
    let deadline = Instant::now() + Duration::from_secs(60);
    while as_nobody(&["list"]).code != 0 {
        assert!(Instant::now() < deadline, "the service never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
    let traced = || tally(&std::fs::read_to_string(&trace).unwrap_or_default(), state);
    let (mut costs, mut times) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let before = traced();
        let start = Instant::now();
        let service = format!("svc{}", i % 20);
        let out = if i % 2 == 0 {
            as_nobody(&["set-option", &service, "autostart", if i % 4 == 0 { "false" } else { "true" }])
        } else {
            as_nobody(&["client", "add", &service, &format!("via-service{i}")])
        };
        times.push(start.elapsed());
        assert!(out.code == 0 || out.code == 3, "through the service: {}", out.stderr);
        let after = traced();
        costs.push((after.0 - before.0, after.1 - before.1));
    }
    let before = traced();
    let closed = Command::new("dbus-send")
        .args(["--print-reply", &format!("--bus={}", bus.address), "--dest=org.boum.tails.Server"])
        .args(["/org/boum/tails/Server", "org.boum.tails.Server1.CloseStore"])
        .output()
        .expect("dbus-send runs");
    assert!(closed.status.success(), "CloseStore: {}", String::from_utf8_lossy(&closed.stderr));
    let after = traced();
    common::terminate_traced(&mut service);
    let _ = std::fs::remove_file(&trace);

    let (first, rest) = costs.split_first().expect("at least one change");
    let mut syncs: Vec<u32> = rest.iter().map(|c| c.1).collect();
    syncs.sort();
    let mut bytes: Vec<u64> = rest.iter().map(|c| c.0).collect();
    bytes.sort();
    println!(
        "through the service: first change {} and {} fsync-class calls (sled opened); the next {}: \
         median {} and {} fsync-class calls, max {} and {}; letting go of sled (CloseStore): {} and {}",
        kib(first.0),
        first.1,
        rest.len(),
        kib(bytes[bytes.len() / 2]),
        syncs[syncs.len() / 2],
        kib(*bytes.last().unwrap_or(&0)),
        syncs.last().unwrap_or(&0),
        kib(after.0 - before.0),
        after.1 - before.1
    );
    println!(
        "through the service: set-option / client add median {:.2} ms ({runs} changes, the caller's time)",
        median(times).as_secs_f64() * 1e3
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: a quick smoke run.
    let quick = !std::env::args().any(|a| a == "--bench");
    let runs = if quick { 3 } else { 31 };
    let temp;
    let root: PathBuf = match std::env::var_os("TAILS_SERVER_BENCH_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            temp = tempfile::tempdir().unwrap();
            temp.path().to_owned()
        }
    };
    let state = root.join("state");
    let _ = std::fs::remove_dir_all(&state);
    let _ = std::fs::remove_dir_all(state.with_extension("run"));
    for i in 0..20 {
        run(&state, &["add", "custom", "--name", &format!("svc{i}"), "--local-port", &(9000 + i).to_string()]);
    }

    let mut lists = Vec::new();
    let mut changes = Vec::new();
    let mut client_adds = Vec::new();
    for i in 0..runs {
        lists.push(run(&state, &["list"]));
        let value = if i % 2 == 0 { "false" } else { "true" };
        changes.push(run(&state, &["set-option", &format!("svc{}", i % 20), "autostart", value]));
        client_adds.push(run(&state, &["client", "add", &format!("svc{}", i % 20), &format!("extra{i}")]));
    }
    let counted = [
        ("list", vec!["list"]),
        ("info --details", vec!["info", "svc1", "--details"]),
        ("set-option", vec!["set-option", "svc2", "autostart", "false"]),
        ("client add", vec!["client", "add", "svc3", "counted"]),
        ("client remove", vec!["client", "remove", "svc3", "counted"]),
    ];
    let mut counts = Vec::new();
    for (name, args) in &counted {
        counts.push((name, count(&state, args)));
    }
    if quick {
        println!("stick bench harness smoke run (run `cargo bench --bench stick` for figures)");
        return;
    }
    through_the_service(&state, runs);

    println!("tails-server on {} (store with 20 services)", root.display());
    for (name, samples) in [("list", lists), ("set-option", changes), ("client add", client_adds)] {
        println!("{name:<16} median {:>7.2} ms  ({runs} runs)", median(samples).as_secs_f64() * 1e3);
    }
    for (name, counted) in counts {
        match counted {
            Some((bytes, syncs)) => println!("{name:<16} writes {:>10}  fsync-class calls {syncs}", kib(bytes)),
            None => println!("{name:<16} (install strace to count writes)"),
        }
    }

    // 20 services × 32 clients, in-process (the library, as the service runs it).
    let big = root.join("big");
    let _ = std::fs::remove_dir_all(&big);
    let mut manager = Manager::open(Config::new(big.clone())).unwrap();
    let mut names = Vec::new();
    for i in 0..20u16 {
        let mut request = AddRequest::new("custom");
        request.name = Some(ServiceName::new(&format!("svc{i}")).unwrap());
        request.local_port = Some(9000 + i);
        let record = manager.add(request).unwrap();
        for c in 1..32 {
            manager.add_client(&record.name, ClientName::new(&format!("friend-{c}")).unwrap(), None).unwrap();
        }
        names.push(record.name);
    }
    drop(manager);
    let big_change = count(&big, &["set-option", "svc1", "autostart", "false"]);
    let before = size_on_disk(&big);
    let churn: usize = std::env::var("TAILS_SERVER_BENCH_CHURN").ok().and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let started = Instant::now();
    let mut manager = Manager::open(Config::new(big.clone())).unwrap();
    for i in 0..churn {
        let value = if i % 2 == 0 { "false" } else { "true" };
        manager.set_option(&names[i % names.len()], "autostart", value).unwrap();
    }
    drop(manager);
    println!(
        "20 services x 32 clients: {} on disk; after {churn} alternating set-option changes {} ({:.1} s)",
        kib(before),
        kib(size_on_disk(&big)),
        started.elapsed().as_secs_f64()
    );
    if let Some((bytes, syncs)) = big_change {
        println!("set-option on that store writes {}, fsync-class calls {syncs}", kib(bytes));
    }
}
