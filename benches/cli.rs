//! Cold-process figures for the commands people run: `list` with 20 services, `add`,
//! `client add`, and the peak resident memory of each. Run with `cargo bench --bench cli`.
//! Prints medians; targets (issue 2): cold `list` <= 10 ms, peak RSS <= 20 MB.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tails-server");

struct Sample {
    wall: Duration,
    max_rss_kb: i64,
}

#[allow(clippy::zombie_processes)] // reaped by wait4 below, which also gives its rusage
fn run(state: &std::path::Path, args: &[&str]) -> Sample {
    let start = Instant::now();
    let child = Command::new(BIN)
        .args(args)
        .env("TAILS_SERVER_STATE_DIR", state)
        .env("TAILS_SERVER_RUNTIME_DIR", state.with_extension("run"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tails-server");
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 fills it in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child with valid pointers.
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    assert!(pid > 0 && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "{args:?} failed");
    Sample { wall, max_rss_kb: usage.ru_maxrss }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn report(name: &str, samples: &[Sample]) -> (Duration, i64) {
    let med = median(samples.iter().map(|s| s.wall).collect());
    let min = samples.iter().map(|s| s.wall).min().unwrap();
    let rss = samples.iter().map(|s| s.max_rss_kb).max().unwrap();
    println!(
        "{name:<28} median {:>7.2} ms  min {:>7.2} ms  peak RSS {:>6.1} MB  ({} runs)",
        med.as_secs_f64() * 1e3,
        min.as_secs_f64() * 1e3,
        rss as f64 / 1024.0,
        samples.len()
    );
    (med, rss)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: run once quickly then.
    let quick = !std::env::args().any(|a| a == "--bench");
    let runs = if quick { 3 } else { 31 };
    let root = tempfile::tempdir().unwrap();
    let state = root.path().join("state");

    let mut adds = Vec::new();
    for i in 0..20 {
        let port = (9000 + i).to_string();
        adds.push(run(&state, &["add", "custom", "--name", &format!("svc{i}"), "--local-port", &port]));
    }
    for _ in 0..runs.min(20) {
        let _ = run(&state, &["list"]); // warm the page cache, as a real second run would find it
    }
    let lists: Vec<_> = (0..runs).map(|_| run(&state, &["list"])).collect();
    let json_lists: Vec<_> = (0..runs).map(|_| run(&state, &["--format", "json", "list"])).collect();
    let client_adds: Vec<_> = (0..runs.min(30))
        .map(|i| run(&state, &["client", "add", &format!("svc{}", i % 20), &format!("extra{i}")]))
        .collect();

    if quick {
        println!("cli bench harness smoke run (debug build: run `cargo bench --bench cli` for figures)");
        return;
    }
    println!("tails-server cold-process benchmark (store with 20 services)");
    let (list_median, list_rss) = report("list (human)", &lists);
    report("list --format json", &json_lists);
    let (_, add_rss) = report("add", &adds);
    let (_, client_rss) = report("client add", &client_adds);
    let peak = list_rss.max(add_rss).max(client_rss);
    println!(
        "targets: cold list <= 10 ms: {} ({:.2} ms); peak RSS <= 20 MB: {} ({:.1} MB)",
        if list_median <= Duration::from_millis(10) { "met" } else { "MISSED" },
        list_median.as_secs_f64() * 1e3,
        if peak <= 20 * 1024 { "met" } else { "MISSED" },
        peak as f64 / 1024.0
    );
}
