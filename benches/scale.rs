//! What a command costs as the store grows to its bound (20 services × 32 clients): for
//! stores of 1 × 1, 20 × 1 and 20 × 32, the median wall time of `list`, the CPU time of a
//! change (`set-option`) and the bytes it writes, for a command on its own (a cold process)
//! and through the system service (a caller as user nobody on a private dbus-daemon; the
//! service's own CPU read from /proc), and the store's size on disk. Run with
//! `cargo bench --bench scale` (through the service needs root; bytes need strace).
//!
//! Goals (issue 21): on 20 × 32, `list` within 1.2× its 20 × 1 time and a change at most
//! 30 ms of CPU. Bytes written per change and the store's size are printed against their goal
//! (64 KiB, 1 MiB after 10,000 changes: `cargo bench --bench stick`), not yet met.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tails_server_core::names::{ClientName, ServiceName};
use tails_server_core::{AddRequest, Config, Manager};

const BIN: &str = env!("CARGO_BIN_EXE_tails-server");

fn command(state: &Path, program: &str) -> Command {
    let mut command = Command::new(program);
    command
        .env("TAILS_SERVER_STATE_DIR", state)
        .env("TAILS_SERVER_RUNTIME_DIR", state.with_extension("run"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// Wall and CPU (user + system) time of one cold command.
#[allow(clippy::zombie_processes)] // reaped by wait4, which also gives its rusage
fn run(state: &Path, args: &[&str]) -> (Duration, Duration) {
    let start = Instant::now();
    let child = command(state, BIN).args(args).spawn().expect("spawn tails-server");
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 fills it in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child with valid pointers.
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    assert!(pid > 0 && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "{args:?} failed");
    (wall, cpu(&usage))
}

fn cpu(usage: &libc::rusage) -> Duration {
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// A process's CPU time so far: the sum of its threads' time on a CPU, in nanoseconds
/// (/proc/PID/task/*/schedstat; clock ticks would be too coarse for one change).
fn process_cpu(pid: u32) -> Duration {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.flatten().collect()).unwrap_or(Vec::new());
    let nanos: u64 = tasks
        .iter()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}

/// Bytes written under `state` by one command, counted with strace (None without it).
fn bytes_written(state: &Path, args: &[&str]) -> Option<u64> {
    let trace = state.with_extension("trace");
    let status = command(state, "strace")
        .args(["-f", "-qq", "-y", "-o"])
        .arg(&trace)
        .args(["-e", "trace=write,pwrite64,writev,pwritev,pwritev2", BIN])
        .args(args)
        .status()
        .ok()?;
    assert!(status.success(), "{args:?} under strace failed");
    let text = std::fs::read_to_string(&trace).ok()?;
    let _ = std::fs::remove_file(&trace);
    let prefix = format!("<{}/", state.display());
    Some(
        text.lines()
            .filter(|line| line.split_whitespace().nth(1).is_some_and(|call| call.contains(&prefix)))
            .filter_map(|line| line.rsplit_once(" = ").and_then(|(_, r)| r.trim().parse::<u64>().ok()))
            .sum(),
    )
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn size_on_disk(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else { return 0 };
    let own = meta.blocks() * 512;
    if meta.is_dir() {
        own + std::fs::read_dir(path).unwrap().map(|e| size_on_disk(&e.unwrap().path())).sum::<u64>()
    } else {
        own
    }
}

/// A store of `services` services with `clients` clients each, made through the library.
fn make_store(dir: &Path, services: u16, clients: usize) {
    let _ = std::fs::remove_dir_all(dir);
    let mut manager = Manager::open(Config::new(dir.to_owned())).unwrap();
    for i in 0..services {
        let mut request = AddRequest::new("custom");
        request.name = Some(ServiceName::new(&format!("svc{i}")).unwrap());
        request.local_port = Some(9000 + i);
        let record = manager.add(request).unwrap();
        for c in 1..clients {
            manager.add_client(&record.name, ClientName::new(&format!("friend-{c}")).unwrap(), None).unwrap();
        }
    }
}

struct Figures {
    list: Duration,
    change_cpu: Duration,
    change_bytes: Option<u64>,
    service: Option<(Duration, Duration, Duration)>,
    size: u64,
}

fn on_its_own(state: &Path, services: u16, runs: usize) -> (Duration, Duration) {
    let lists: Vec<Duration> = (0..runs).map(|_| run(state, &["list"]).0).collect();
    let changes: Vec<Duration> = (0..runs)
        .map(|i| {
            let value = if i % 2 == 0 { "false" } else { "true" };
            run(state, &["set-option", &format!("svc{}", i as u16 % services), "autostart", value]).1
        })
        .collect();
    (median(lists), median(changes))
}

/// `list` and a change through the system service: the caller's wall time for each, and
/// the service's CPU per change.
fn through_the_service(state: &Path, services: u16, runs: usize) -> Option<(Duration, Duration, Duration)> {
    if tails_server_core::unix::euid() != 0 {
        return None;
    }
    let bus = common::Bus::start();
    let service = common::KillOnDrop(
        command(state, BIN)
            .args(["service", "--bus", &bus.address, "--authorization", "uids:0,65534"])
            .args(["--persistent-storage", "none"])
            .env("TAILS_SERVER_CONTROL_SOCKET", state.with_extension("no-tor"))
            .spawn()
            .expect("the service starts"),
    );
    let as_nobody = |args: &[&str]| bus.run_as_nobody(Path::new(BIN), args);
    let deadline = Instant::now() + Duration::from_secs(60);
    while as_nobody(&["list"]).code != 0 {
        assert!(Instant::now() < deadline, "the service never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (mut lists, mut changes, mut cpus) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        let start = Instant::now();
        assert_eq!(as_nobody(&["list"]).code, 0);
        lists.push(start.elapsed());
        let value = if i % 2 == 0 { "false" } else { "true" };
        let before = process_cpu(service.0.id());
        let start = Instant::now();
        let out = as_nobody(&["set-option", &format!("svc{}", i as u16 % services), "autostart", value]);
        changes.push(start.elapsed());
        cpus.push(process_cpu(service.0.id()).saturating_sub(before));
        assert!(out.code == 0 || out.code == 3, "through the service: {}", out.stderr);
    }
    Some((median(lists), median(changes), median(cpus)))
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: a quick smoke run.
    let quick = !std::env::args().any(|a| a == "--bench");
    let runs = if quick { 2 } else { 21 };
    let root = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();
    for (services, clients) in [(1u16, 1usize), (20, 1), (20, 32)] {
        let state: PathBuf = root.path().join(format!("s{services}x{clients}"));
        make_store(&state, services, clients);
        let (list, change_cpu) = on_its_own(&state, services, runs);
        let change_bytes = bytes_written(&state, &["set-option", "svc0", "autostart", "false"])
            .and_then(|_| bytes_written(&state, &["set-option", "svc0", "autostart", "true"]));
        let service = through_the_service(&state, services, runs);
        rows.push((
            (services, clients),
            Figures { list, change_cpu, change_bytes, service, size: size_on_disk(&state) },
        ));
    }
    if quick {
        println!("scale bench harness smoke run (run `cargo bench --bench scale` for figures)");
        return;
    }
    println!("store        list      change CPU  change writes | service: list  change  service CPU | on disk");
    for ((services, clients), f) in &rows {
        let bytes = f.change_bytes.map_or("(no strace)".to_owned(), |b| format!("{:.1} KiB", b as f64 / 1024.0));
        let service = f.service.map_or("(needs root)".to_owned(), |(list, change, cpu)| {
            format!("{:>7.1} ms {:>6.1} ms {:>7.1} ms", ms(list), ms(change), ms(cpu))
        });
        println!(
            "{services:>2} x {clients:<2}  {:>6.2} ms  {:>7.2} ms  {bytes:>12} | {service} | {:.0} KiB",
            ms(f.list),
            ms(f.change_cpu),
            f.size as f64 / 1024.0
        );
    }
    let (small, big) = (&rows[1].1, &rows[2].1);
    println!(
        "20 x 32 against 20 x 1: list {:.2}x (goal <= 1.2x); a change's CPU {:.1} ms (goal <= 30 ms)",
        small.list.as_secs_f64().recip() * big.list.as_secs_f64(),
        ms(big.change_cpu)
    );
}
