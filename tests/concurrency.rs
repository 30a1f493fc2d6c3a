//! Four CLI processes changing services at the same time as the daemon republishes them,
//! against a real tor: no change acknowledged (exit 0, or 3 = saved, tor told later) is
//! lost, none is half made, no command fails for another reason than a clear wait for the
//! store, and afterwards tor runs exactly what is stored. CI runs it for 8 s;
//! `TAILS_SERVER_CONCURRENCY_SECS=60 cargo test --release --test concurrency -- --nocapture`
//! for the full minute.

mod common;

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{service_id, KillOnDrop, LocalTor, TestEnv};

const WORKERS: usize = 4;

/// A command line, and what it changes once acknowledged.
type Op = (Vec<String>, Box<dyn Fn(&mut Tally)>);

#[derive(Default)]
struct Tally {
    acknowledged: usize,
    busy: usize,
    clients: BTreeSet<String>,
    autostart: bool,
}

#[test]
fn four_writers_and_the_daemon_lose_nothing_and_tor_ends_as_stored() {
    let seconds: u64 = std::env::var("TAILS_SERVER_CONCURRENCY_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(8);
    let tor = LocalTor::start();
    let env = TestEnv::new();
    let control = tor.control();
    let at = |args: &[&str]| {
        let mut all = vec!["--control-port", control.as_str()];
        all.extend_from_slice(args);
        env.run(&all)
    };
    for i in 0..WORKERS {
        let name = format!("s{i}");
        env.run(&["add", "custom", "--name", &name, "--local-port", &(8000 + i).to_string()]).ok();
        at(&["enable", &name]).ok();
    }
    let log_path = env.root.path().join("daemon.log");
    let _daemon = KillOnDrop(
        env.command()
            .args(["--control-port", &control, "daemon"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let tallies: Vec<Tally> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..WORKERS)
            .map(|i| {
                let at = &at;
                scope.spawn(move || {
                    let name = format!("s{i}");
                    let mut tally =
                        Tally { clients: ["client-1".to_owned()].into(), autostart: true, ..Tally::default() };
                    let mut n = 0;
                    while Instant::now() < deadline {
                        n += 1;
                        let (args, on_success): Op = match n % 3 {
                            0 if tally.clients.len() > 1 => {
                                let victim = tally.clients.iter().find(|c| *c != "client-1").unwrap().clone();
                                let args = ["client", "remove", &name, &victim].map(String::from).to_vec();
                                (
                                    args,
                                    Box::new(move |t: &mut Tally| {
                                        t.clients.remove(&victim);
                                    }),
                                )
                            }
                            1 => {
                                let value = (!tally.autostart).to_string();
                                let args = ["set-option", &name, "autostart", &value].map(String::from).to_vec();
                                (args, Box::new(|t: &mut Tally| t.autostart = !t.autostart))
                            }
                            _ => {
                                let client = format!("c{n}");
                                let args = ["client", "add", &name, &client].map(String::from).to_vec();
                                (
                                    args,
                                    Box::new(move |t: &mut Tally| {
                                        t.clients.insert(client.clone());
                                    }),
                                )
                            }
                        };
                        let args: Vec<&str> = args.iter().map(String::as_str).collect();
                        let out = at(&args);
                        match out.code {
                            0 | 3 => {
                                on_success(&mut tally);
                                tally.acknowledged += 1;
                            }
                            _ if out.stderr.contains("in use by another tails-server process") => tally.busy += 1,
                            _ => panic!("{args:?} failed for another reason than a busy store:\n{}", out.stderr),
                        }
                    }
                    tally
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });

    // Everything acknowledged is stored, and nothing else.
    for (i, tally) in tallies.iter().enumerate() {
        let info = env.service(&format!("s{i}"));
        let stored: BTreeSet<String> =
            info["clients"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_owned()).collect();
        assert_eq!(stored, tally.clients, "s{i}: the stored clients are the acknowledged ones");
        assert_eq!(info["options"]["autostart"], tally.autostart, "s{i}: the last acknowledged autostart");
    }
    // tor converges to the store: every service published with its current clients.
    at(&["restore"]).ok();
    for i in 0..WORKERS {
        let name = format!("s{i}");
        let status = at(&["--format", "json", "status", &name]).ok().json();
        assert_eq!(status["registered"], true, "{name}: {status}");
        assert_eq!(status["published-as-stored"], true, "{name}: {status}");
        assert!(tor.detached().contains(&service_id(&env.service(&name))));
    }
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(!log.contains("error:"), "the daemon met no error:\n{log}");
    let acknowledged: usize = tallies.iter().map(|t| t.acknowledged).sum();
    let busy: usize = tallies.iter().map(|t| t.busy).sum();
    let reconciles = log.matches("published").count();
    eprintln!(
        "{seconds} s, {WORKERS} writers + the daemon: {acknowledged} changes acknowledged, {busy} refused as busy, \
         daemon log lines mentioning a publish: {reconciles}"
    );
    assert!(acknowledged >= WORKERS, "every writer got changes through");
}
