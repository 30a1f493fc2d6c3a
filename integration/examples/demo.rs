//! The main job end to end, on a private Tor network in Docker containers (the integration
//! suite's): a service added and published, a client with its key fetching the page, one
//! without refused, tor restarted and the daemon bringing the same address back. One line
//! per step with its time; everything is torn down at the end, also after a failure.
//!
//! Run: `./scripts/demo` (builds tails-server, then this).

#[path = "../../tests/common/run.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::time::{Duration, Instant};

use common::KillOnDrop;
use support::network::Network;
use support::{wait_uploaded, Client, User};

const REACH: Duration = Duration::from_secs(150);

fn main() {
    let start = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let step = |what: &str, since: Instant| println!("{:>6.1} s  {what}", since.elapsed().as_secs_f64());
    let t = Instant::now();
    let net = rt.block_on(Network::start());
    step("a private Tor network is up: 4 authorities/relays, the onion-service tor, 2 client tors, a web server", t);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| demo(&rt, &net, &step)));
    let t = Instant::now();
    rt.block_on(net.shutdown());
    step("containers removed", t);
    match outcome {
        Ok(()) => println!("{:>6.1} s  in all", start.elapsed().as_secs_f64()),
        Err(_) => {
            eprintln!("the demo failed (see above); everything it started is removed");
            std::process::exit(1);
        }
    }
}

fn demo(rt: &tokio::runtime::Runtime, net: &Network, step: &dyn Fn(&str, Instant)) {
    let owner = User::new(net);
    let backend = net.ports.backend(0).to_string();
    let t = Instant::now();
    owner.run(&["add", "custom", "--name", "demo", "--local-port", &backend, "--remote-port", "80"]).ok();
    let address = owner.address("demo");
    step(&format!("tails-server add: service demo at {address}, with a key for client-1"), t);

    let t = Instant::now();
    owner.run(&["enable", "demo", "--wait", "--timeout", "120"]).ok();
    step("tails-server enable --wait: published with client authorization, descriptor uploaded", t);

    let (with_key, without_key) = (Client { net, index: 0 }, Client { net, index: 1 });
    let line = owner.auth_private("demo", "client-1");
    let t = Instant::now();
    let (code, body) = rt.block_on(async {
        with_key.set_keys(&[("demo", &line)]).await;
        with_key.fetch_until(&address, 80, 0x00, REACH).await
    });
    assert_eq!(code, 0x00, "the client with the key could not fetch the page");
    step(&format!("a client holding the key fetched the page: {:?}", body.unwrap_or_default().trim()), t);

    let t = Instant::now();
    let code = rt.block_on(async {
        without_key.set_keys(&[]).await;
        without_key.fetch_until(&address, 80, 0xF4, REACH).await.0
    });
    assert_eq!(code, 0xF4, "a client without the key was not refused");
    step("a client without the key is refused: its tor cannot even read the descriptor (SOCKS 0xF4)", t);

    let _daemon = KillOnDrop(owner.command().arg("daemon").stderr(std::process::Stdio::null()).spawn().unwrap());
    let t = Instant::now();
    rt.block_on(net.restart_hs());
    step("the onion-service tor restarted, as Tails restarts it when a network comes up", t);
    let t = Instant::now();
    wait_uploaded(&owner, "demo", Duration::from_secs(120));
    assert_eq!(owner.address("demo"), address);
    step("tails-server daemon republished it at the same address; descriptor uploaded", t);

    let t = Instant::now();
    let code = rt.block_on(async {
        with_key.newnym().await;
        with_key.fetch_until(&address, 80, 0x00, REACH).await.0
    });
    assert_eq!(code, 0x00, "not reachable again after the restart");
    step("the client with the key fetched the page again", t);
}
