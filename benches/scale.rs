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
mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tails_server_core::names::{ClientName, ServiceName};
use tails_server_core::{AddRequest, Config, Manager};

use support::{command, median, ms, size_on_disk, tally, TRACED};

const BIN: &str = env!("CARGO_BIN_EXE_tails-server");

/// Wall and CPU (user + system) time of one cold command.
#[allow(clippy::zombie_processes)] // reaped by wait4, which also gives its rusage
fn run(state: &Path, args: &[impl AsRef<std::ffi::OsStr>]) -> (Duration, Duration) {
    let start = Instant::now();
    let child = command(state, BIN).args(args).spawn().expect("spawn tails-server");
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 fills it in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child with valid pointers.
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    assert!(pid > 0 && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "a command failed");
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
fn bytes_written(state: &Path, args: &[String]) -> Option<u64> {
    let trace = state.with_extension("trace");
    let status = command(state, "strace")
        .args(["-f", "-qq", "-y", "-o"])
        .arg(&trace)
        .args(["-e", TRACED, BIN])
        .args(args)
        .status()
        .ok()?;
    assert!(status.success(), "{args:?} under strace failed");
    let text = std::fs::read_to_string(&trace).ok()?;
    let _ = std::fs::remove_file(&trace);
    Some(tally(&text, state).0)
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
    change_bytes: Option<(u64, u64)>,
    service: Option<(Duration, Duration, Duration, u64)>,
    size: u64,
}

fn on_its_own(state: &Path, services: u16, runs: usize, toggle: &mut Toggle) -> (Duration, Duration) {
    let lists: Vec<Duration> = (0..runs).map(|_| run(state, &["list"]).0).collect();
    let changes: Vec<Duration> = (0..runs).map(|i| run(state, &toggle.next(i as u16 % services)).1).collect();
    (median(lists), median(changes))
}

/// Changes that change something: each flips a service's autostart.
struct Toggle(Vec<bool>);

impl Toggle {
    fn new(services: u16) -> Self {
        Toggle(vec![true; services as usize])
    }

    fn next(&mut self, service: u16) -> [String; 4] {
        let value = &mut self.0[service as usize];
        *value = !*value;
        ["set-option".into(), format!("svc{service}"), "autostart".into(), value.to_string()]
    }
}

/// `list` and a change through the system service: the caller's wall time for each, and
/// the service's CPU per change.
fn through_the_service(
    state: &Path,
    services: u16,
    runs: usize,
    toggle: &mut Toggle,
) -> Option<(Duration, Duration, Duration, u64)> {
    if tails_server_core::unix::euid() != 0 {
        return None;
    }
    let bus = common::Bus::start();
    // Traced: the bytes each change writes (the service keeps sled open between changes).
    let trace = state.with_extension("service-trace");
    let service = common::KillOnDrop(
        command(state, "strace")
            .args(["-f", "-qq", "-y", "-o"])
            .arg(&trace)
            .args(["-e", TRACED, BIN])
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
    let traced = || tally(&std::fs::read_to_string(&trace).unwrap_or_default(), state).0;
    let service_pid = service_pid(service.0.id());
    let (mut lists, mut changes, mut cpus, mut written) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        let start = Instant::now();
        assert_eq!(as_nobody(&["list"]).code, 0);
        lists.push(start.elapsed());
        let change = toggle.next(i as u16 % services);
        let (before, bytes_before) = (process_cpu(service_pid), traced());
        let start = Instant::now();
        let out = as_nobody(&change.each_ref().map(String::as_str));
        changes.push(start.elapsed());
        cpus.push(process_cpu(service_pid).saturating_sub(before));
        written.push(traced() - bytes_before);
        assert!(out.code == 0 || out.code == 3, "through the service: {}", out.stderr);
    }
    drop(service);
    let _ = std::fs::remove_file(&trace);
    written.sort();
    Some((median(lists), median(changes), median(cpus), written[written.len() / 2]))
}

/// The service's process: strace's child.
fn service_pid(strace: u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let children = std::fs::read_to_string(format!("/proc/{strace}/task/{strace}/children")).unwrap_or_default();
        if let Some(pid) = children.split_whitespace().next().and_then(|p| p.parse().ok()) {
            return pid;
        }
        assert!(Instant::now() < deadline, "strace started no service");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: a quick smoke run.
    let quick = !std::env::args().any(|a| a == "--bench");
    let runs = if quick { 2 } else { 21 };
    // TAILS_SERVER_BENCH_DIR keeps the stores there, to look at afterwards.
    let temp = tempfile::tempdir().unwrap();
    let root = std::env::var_os("TAILS_SERVER_BENCH_DIR").map_or_else(|| temp.path().to_owned(), PathBuf::from);
    let mut rows = Vec::new();
    for (services, clients) in [(1u16, 1usize), (20, 1), (20, 32)] {
        let state: PathBuf = root.join(format!("s{services}x{clients}"));
        make_store(&state, services, clients);
        let mut toggle = Toggle::new(services);
        let (list, change_cpu) = on_its_own(&state, services, runs, &mut toggle);
        // sled rewrites a page whole every tenth change to it: the median and the largest.
        let mut written: Vec<u64> =
            (0..if quick { 1 } else { 20 }).filter_map(|i| bytes_written(&state, &toggle.next(i % services))).collect();
        written.sort();
        let change_bytes = (!written.is_empty()).then(|| (written[written.len() / 2], written[written.len() - 1]));
        let service = through_the_service(&state, services, runs, &mut toggle);
        rows.push((
            (services, clients),
            Figures { list, change_cpu, change_bytes, service, size: size_on_disk(&state) },
        ));
    }
    if quick {
        println!("scale bench harness smoke run (run `cargo bench --bench scale` for figures)");
        return;
    }
    println!(
        "store        list      change CPU     change writes   | service: list  change  service CPU  writes | on disk"
    );
    for ((services, clients), f) in &rows {
        let bytes = f.change_bytes.map_or("(no strace)".to_owned(), |(median, max)| {
            format!("{:.1} (max {:.0}) KiB", median as f64 / 1024.0, max as f64 / 1024.0)
        });
        let service = f.service.map_or("(needs root)".to_owned(), |(list, change, cpu, bytes)| {
            format!(
                "{:>7.1} ms {:>6.1} ms {:>7.1} ms {:>7.1} KiB",
                ms(list),
                ms(change),
                ms(cpu),
                bytes as f64 / 1024.0
            )
        });
        println!(
            "{services:>2} x {clients:<2}  {:>6.2} ms  {:>7.2} ms  {bytes:>20} | {service} | {:.0} KiB",
            ms(f.list),
            ms(f.change_cpu),
            f.size as f64 / 1024.0
        );
    }
    // The ratio from runs taken in turns, so that the machine's moods fall on both alike.
    let (small, big) = (root.join("s20x1"), root.join("s20x32"));
    let (mut small_lists, mut big_lists) = (Vec::new(), Vec::new());
    for _ in 0..runs * 3 {
        small_lists.push(run(&small, &["list"]).1);
        big_lists.push(run(&big, &["list"]).1);
    }
    let (small_list, big_list) = (median(small_lists), median(big_lists));
    println!(
        "20 x 32 against 20 x 1, list taken in turns: CPU {:.2} vs {:.2} ms, {:.2}x (goal <= 1.2x); a change's \
         CPU {:.1} ms (goal <= 30 ms)",
        ms(big_list),
        ms(small_list),
        big_list.as_secs_f64() / small_list.as_secs_f64(),
        ms(rows[2].1.change_cpu)
    );
}
