//! Publish → a friend's first page, side by side with onionshare-cli, on the private Tor
//! network (the same onion-service tor, the same client tor, alternating pairs):
//!
//! - tails-server: `enable --wait`, which returns once every upload of the descriptor tor
//!   launched is answered (one success at least): the friend, who already holds the key,
//!   starts fetching then;
//! - onionshare-cli (website mode, client authorization, connected to the same tor through its
//!   control port): the friend starts once it prints the address and key.
//!
//! For each: "up" (the command says the service is published) and "first page" (the friend's
//! first successful fetch, retrying at once on failure), both from the start of the command.
//! The friend holds tails-server's key before the command starts; onionshare-cli's key exists
//! only once it prints it, and is given to the friend's tor then (one control command).
//! The goal: tails-server's first page ahead of onionshare-cli's.
//!
//! Run: `cargo bench -p tails-server-integration --bench first_fetch` (12 pairs; 2 without
//! `--bench`). Needs Docker, and onionshare-cli, which is installed from PyPI into
//! `target/onionshare-venv` on first use.

#[path = "../../tests/common/run.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::network::Network;
use support::{socks_fetch, User};
use tails_server_core::tor::{CommandLine, TorControl};

/// How long a friend keeps trying before the pair counts as failed.
const LIMIT: Duration = Duration::from_secs(120);

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn main() {
    let pairs = if std::env::args().any(|a| a == "--bench") { 12 } else { 2 };
    let onionshare = onionshare_cli();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let net = rt.block_on(Network::start());
    let owner = User::new(&net);
    let site = tempfile::tempdir().unwrap();
    std::fs::write(site.path().join("index.html"), net.backend_body(0)).unwrap();
    let mut rows: Vec<(&str, Duration, Duration)> = Vec::new();
    for i in 0..pairs {
        // Alternate who goes first: neither always finds the network warmer.
        let order: [bool; 2] = if i % 2 == 0 { [true, false] } else { [false, true] };
        for ours in order {
            let (up, first) = if ours {
                tails_server_pair(&rt, &net, &owner, i)
            } else {
                onionshare_pair(&rt, &net, &onionshare, site.path(), i)
            };
            let who = if ours { "tails-server" } else { "onionshare-cli" };
            eprintln!("pair {i}: {who}: up {}, first page {}", secs(up), secs(first));
            rows.push((who, up, first));
        }
    }
    rt.block_on(net.shutdown());
    println!("publish → a friend's first page, private Tor network, {pairs} alternating pairs (medians)");
    for who in ["tails-server", "onionshare-cli"] {
        let ups = rows.iter().filter(|r| r.0 == who).map(|r| r.1).collect();
        let firsts: Vec<Duration> = rows.iter().filter(|r| r.0 == who).map(|r| r.2).collect();
        let (min, max) = (firsts.iter().min().unwrap(), firsts.iter().max().unwrap());
        println!(
            "  {who:<15} up {:>8}   first page {:>8}   (first page range {} – {})",
            secs(median(ups)),
            secs(median(firsts.clone())),
            secs(*min),
            secs(*max)
        );
    }
}

/// Gives the friend's tor (client 0) the key for `address` (base32 private key).
fn give_key(rt: &tokio::runtime::Runtime, net: &Network, address: &str, base32: &str) {
    let secret = data_encoding::BASE32_NOPAD.decode(base32.trim().to_uppercase().as_bytes()).expect("a base32 key");
    let blob = format!("x25519:{}", data_encoding::BASE64.encode(&secret));
    let id = address.trim_end_matches(".onion").to_owned();
    rt.block_on(async {
        let mut tor = TorControl::connect(&net.client_control_config(0)).await.unwrap();
        let command =
            CommandLine::new("ONION_CLIENT_AUTH_ADD").arg("id", &id).unwrap().secret_arg("key", &blob).unwrap();
        tor.execute(&command).await.unwrap();
    });
}

/// The friend fetches `address` until a page comes, retrying at once; the time it came.
fn first_page(rt: &tokio::runtime::Runtime, net: &Network, address: &str, start: Instant) -> Duration {
    let socks = (net.ports.address, net.ports.client_socks(0)).into();
    loop {
        let (code, body) = rt.block_on(socks_fetch(socks, address, 80));
        if code == 0 && body.is_some_and(|b| b.contains("hello from backend")) {
            return start.elapsed();
        }
        assert!(start.elapsed() < LIMIT, "no page from {address} within {LIMIT:?} (last SOCKS reply {code:#04x})");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn tails_server_pair(rt: &tokio::runtime::Runtime, net: &Network, owner: &User, i: usize) -> (Duration, Duration) {
    let name = format!("race{i}");
    let port = net.ports.backend(0).to_string();
    owner.run(&["add", "custom", "--name", &name, "--local-port", &port, "--remote-port", "80"]).ok();
    let address = owner.address(&name);
    let line = owner.auth_private(&name, "client-1");
    give_key(rt, net, &address, line.rsplit(':').next().unwrap());
    let start = Instant::now();
    owner.run(&["enable", &name, "--wait"]).ok();
    let up = start.elapsed();
    let first = first_page(rt, net, &address, start);
    owner.run(&["remove", &name, "--yes"]).ok();
    (up, first)
}

fn onionshare_pair(
    rt: &tokio::runtime::Runtime,
    net: &Network,
    onionshare: &Path,
    site: &Path,
    i: usize,
) -> (Duration, Duration) {
    let config = site.parent().unwrap().join(format!("onionshare-{i}.json"));
    let settings = serde_json::json!({
        "connection_type": "control_port",
        "control_port_address": net.ports.address.to_string(),
        "control_port_port": net.ports.hs_control(),
        "auth_type": "password",
        "auth_password": net.password,
    });
    std::fs::write(&config, settings.to_string()).unwrap();
    let data = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let mut child = Command::new(onionshare)
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(data.path())
        .arg("--website")
        .arg(site)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("onionshare-cli starts");
    // Its output read in a thread: a wait with a deadline, should it never print the address.
    let stdout = child.stdout.take().unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let (mut address, mut key) = (None, None);
    while address.is_none() || key.is_none() {
        let line =
            received.recv_timeout(LIMIT.saturating_sub(start.elapsed())).expect("onionshare-cli printed its address");
        if let Some(url) = line.split_whitespace().find(|w| w.contains(".onion")) {
            address = Some(url.trim_start_matches("http://").trim_end_matches('/').to_owned());
        }
        if let Some(k) = line.split("Private key:").nth(1) {
            key = Some(k.trim().to_owned());
        }
    }
    let up = start.elapsed();
    let (address, key) = (address.expect("onionshare printed its address"), key.expect("and its key"));
    give_key(rt, net, &address, &key);
    let first = first_page(rt, net, &address, start);
    let _ = child.kill();
    let _ = child.wait();
    (up, first)
}

/// onionshare-cli from PyPI, in a virtual environment under target/ (installed once).
fn onionshare_cli() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/onionshare-venv");
    let program = venv.join("bin/onionshare-cli");
    if !program.exists() {
        let made = Command::new("python3").arg("-m").arg("venv").arg(&venv).status().expect("python3 -m venv");
        assert!(made.success(), "cannot make a Python virtual environment in {}", venv.display());
        let pip = Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "onionshare-cli==2.7"])
            .status()
            .expect("pip install onionshare-cli");
        assert!(pip.success(), "cannot install onionshare-cli from PyPI");
    }
    program
}
