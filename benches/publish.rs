//! Publishing figures against a real tor on loopback (DisableNetwork 1, so only the
//! control port is measured, not the Tor network). Run with `cargo bench --bench publish`.
//!
//! - restore of 20 services: time until every ADD_ONION is acknowledged (goal <= 50 ms),
//!   in-process and as a cold `tails-server restore` process;
//! - republish latency: from tor's control port answering again after a restart to all 20
//!   services being back in `onions/detached`, with `tails-server daemon` running (goal <= 1 s).

#[path = "../tests/common/tor.rs"]
mod local_tor;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tails_server_core::names::ServiceName;
use tails_server_core::reconcile::{Action, Publisher};
use tails_server_core::tor::{CommandLine, TorControl};

use local_tor::LocalTor;
use tails_server_core::{AddRequest, Config, Manager};

const BIN: &str = env!("CARGO_BIN_EXE_tails-server");
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
    let runs = if quick { 2 } else { 15 };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut tor = LocalTor::start();

    let state = tempfile::tempdir().unwrap();
    let mut config = Config::new(state.path().join("state"));
    config.runtime_dir = Some(state.path().join("run"));
    {
        let mut manager = Manager::open(config.clone()).unwrap();
        for i in 0..SERVICES {
            let mut request = AddRequest::new("custom");
            request.name = Some(ServiceName::new(&format!("s{i}")).unwrap());
            request.local_port = Some(8000 + i as u16);
            let record = manager.add(request).unwrap();
            manager.set_enabled(&record.name, true).unwrap();
        }
    }
    let publisher = Publisher::new(config.clone(), tor.config());

    let clear = |rt: &tokio::runtime::Runtime, tor: &LocalTor| {
        rt.block_on(async {
            let mut c = TorControl::connect(&tor.config()).await.unwrap();
            for id in c.detached_onions().await.unwrap() {
                c.execute(&CommandLine::new("DEL_ONION").arg("id", &id).unwrap()).await.unwrap();
            }
        })
    };

    // 1. restore, in-process: a reconcile (tor's identity and list, a store read, the
    // ledger) and 20 ADD_ONION round trips.
    let mut in_process = Vec::new();
    for _ in 0..runs {
        clear(&rt, &tor);
        let report = rt.block_on(async {
            let mut c = TorControl::connect(&tor.config()).await.unwrap();
            publisher.sync(&mut c).await.unwrap()
        });
        assert_eq!(report.names(Action::Published).len(), SERVICES);
        in_process.push(report.elapsed);
    }
    // 1b. the same as a cold process, the way the login hook runs it.
    let mut cold = Vec::new();
    for _ in 0..runs {
        clear(&rt, &tor);
        let start = Instant::now();
        let status = Command::new(BIN)
            .args(["--control-port", &tor.control(), "restore"])
            .env("TAILS_SERVER_STATE_DIR", &config.state_dir)
            .env("TAILS_SERVER_RUNTIME_DIR", config.runtime_dir.as_ref().unwrap())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        cold.push(start.elapsed());
    }

    // 2. republish latency with the daemon running.
    let mut daemon = Command::new(BIN)
        .args(["--control-port", &tor.control(), "daemon"])
        .env("TAILS_SERVER_STATE_DIR", &config.state_dir)
        .env("TAILS_SERVER_RUNTIME_DIR", config.runtime_dir.as_ref().unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The same addresses every time, not just as many.
    let expected = tor.try_detached().unwrap_or_default();
    let all_back = |tor: &LocalTor| {
        tor.try_detached().is_some_and(|d| d.len() == SERVICES && (expected.is_empty() || d == expected))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !all_back(&tor) {
        assert!(Instant::now() < deadline, "the daemon did not publish");
        std::thread::sleep(Duration::from_millis(10));
    }
    let restarts: usize = std::env::var("TAILS_SERVER_BENCH_RESTARTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if quick { 2 } else { 50 });
    let mut republish = Vec::new();
    for _ in 0..restarts {
        let answering = tor.restart();
        let deadline = answering + Duration::from_secs(30);
        while !all_back(&tor) {
            assert!(Instant::now() < deadline, "the daemon did not republish");
            std::thread::sleep(Duration::from_millis(5));
        }
        republish.push(answering.elapsed());
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let _ = daemon.wait();

    if quick {
        println!("publish bench harness smoke run (debug build: run `cargo bench --bench publish` for figures)");
        return;
    }
    println!("tails-server publishing benchmark ({SERVICES} services, tor {}, loopback)", tor_version());
    println!(
        "restore, in-process (ADD_ONION all acknowledged)  median {:>7.2} ms  min {:>7.2} ms  ({} runs)  goal <= 50 ms: {}",
        ms(median(in_process.clone())),
        ms(*in_process.iter().min().unwrap()),
        in_process.len(),
        if median(in_process.clone()) <= Duration::from_millis(50) { "met" } else { "MISSED" }
    );
    println!(
        "restore, cold `tails-server restore` process      median {:>7.2} ms  min {:>7.2} ms  ({} runs)",
        ms(median(cold.clone())),
        ms(*cold.iter().min().unwrap()),
        cold.len()
    );
    let mut sorted = republish.clone();
    sorted.sort();
    let p95 = sorted[(sorted.len() * 95).div_ceil(100).saturating_sub(1)];
    println!(
        "republish after a tor restart (daemon)             median {:>7.2} ms  p95 {:>7.2} ms  max {:>7.2} ms  ({} restarts, \
         every service back at the same address each time)  goal <= 1 s: {}",
        ms(median(republish.clone())),
        ms(p95),
        ms(*republish.iter().max().unwrap()),
        republish.len(),
        if median(republish.clone()) <= Duration::from_secs(1) { "met" } else { "MISSED" }
    );
}

fn tor_version() -> String {
    let out = Command::new("tor").arg("--version").output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("Tor version ")
        .trim_end_matches('.')
        .to_owned()
}
