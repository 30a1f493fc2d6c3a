//! tails-server against real tor on a private Tor network in Docker containers. One
//! network serves every trial (it takes ~10-20 s to come up); trials run one at a time
//! because one of them restarts the onion-service tor.
//!
//! Run: `cargo test -p tails-server-integration` (needs Docker and the Debian packages
//! `tor` and `busybox-static`, which scripts/deps installs).

#[path = "../../tests/common/bus.rs"]
mod bus;
/// Shared with the main package's tests: command outcomes, and a tor on loopback.
#[path = "../../tests/common/run.rs"]
mod common;
#[path = "../../tests/common/fake_tor.rs"]
mod fake_tor;
#[path = "../../tests/common/tor.rs"]
mod local_tor;
/// bus.rs names the command helpers `run`, as in the main package's tests.
use common as run;
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use tokio::runtime::Runtime;

use common::KillOnDrop;
use support::network::Network;
use support::{snapshot_files, wait_uploaded, wrong_key_line, Client, User};
use tails_server_core::tor::{CommandLine, TorControl, TorEvent};

/// How long a client may take to get the expected answer. A fetch takes 1-3 s; under load,
/// stale descriptors and NEWNYM's rate limit (once per 10 s) can stretch it to a minute.
const REACH: Duration = Duration::from_secs(150);

struct Ctx {
    rt: Runtime,
    net: Network,
}

fn main() {
    let mut args = Arguments::from_args();
    args.test_threads = Some(1);
    type Test = fn(&Ctx);
    let tests: &[(&str, Test)] = &[
        ("a_client_with_the_key_fetches_the_backend", a_client_with_the_key_fetches_the_backend),
        ("b_clients_without_or_with_a_wrong_key_are_refused", b_clients_without_or_with_a_wrong_key_are_refused),
        (
            "c_disable_makes_it_unreachable_and_enable_brings_it_back",
            c_disable_makes_it_unreachable_and_enable_brings_it_back,
        ),
        ("d_the_daemon_republishes_after_tor_restarts", d_the_daemon_republishes_after_tor_restarts),
        ("e_a_removed_client_is_locked_out_and_others_stay_in", e_a_removed_client_is_locked_out_and_others_stay_in),
        ("f_two_services_at_once", f_two_services_at_once),
        ("g_bad_input_reaching_tor_changes_nothing", g_bad_input_reaching_tor_changes_nothing),
        ("h_a_removed_service_is_unreachable_at_once", h_a_removed_service_is_unreachable_at_once),
        (
            "i_a_client_removed_while_tor_was_unreachable_is_refused_once_it_answers",
            i_a_client_removed_while_tor_was_unreachable_is_refused_once_it_answers,
        ),
        (
            "j_a_client_removed_during_a_republish_storm_is_refused",
            j_a_client_removed_during_a_republish_storm_is_refused,
        ),
        ("k_a_stand_in_on_the_control_port_gets_no_secret", k_a_stand_in_on_the_control_port_gets_no_secret),
        (
            "l_through_the_system_service_enable_waits_for_the_upload_and_status_probes",
            l_through_the_system_service_enable_waits_for_the_upload_and_status_probes,
        ),
        (
            "m_a_friends_kept_key_survives_tor_restarts_newnym_and_setconf_and_a_removed_one_stops",
            m_a_friends_kept_key_survives_tor_restarts_newnym_and_setconf_and_a_removed_one_stops,
        ),
    ];
    if args.list {
        let trials = tests.iter().map(|(name, _)| Trial::test(*name, || Ok(()))).collect();
        libtest_mimic::run(&args, trials).exit();
    }
    let start = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let net = rt.block_on(Network::start());
    let ctx = Arc::new(Ctx { rt, net });
    let trials = tests
        .iter()
        .map(|(name, test)| {
            let ctx = ctx.clone();
            let test = *test;
            Trial::test(*name, move || {
                let t = Instant::now();
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| test(&ctx)));
                eprintln!("    ({name}: {:.1} s)", t.elapsed().as_secs_f64());
                if result.is_err() {
                    eprintln!("{}", ctx.net.log_tails(40));
                }
                result.map_err(|e| {
                    let msg = e
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    Failed::from(msg)
                })
            })
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    let Ok(Ctx { rt, net }) = Arc::try_unwrap(ctx) else { panic!("trials still hold the network") };
    eprintln!("suite wall time, network start to last trial: {:.1} s", start.elapsed().as_secs_f64());
    rt.block_on(net.shutdown());
    conclusion.exit();
}

fn client(ctx: &Ctx, index: u16) -> Client<'_> {
    Client { net: &ctx.net, index }
}

/// Adds a `custom` service in front of backend `backend` and enables it, waiting until
/// tor reports its descriptor uploaded.
fn published(user: &User, name: &str, backend: u16) -> String {
    let port = user.net.ports.backend(backend).to_string();
    user.run(&["add", "custom", "--name", name, "--local-port", &port, "--remote-port", "80"]).ok();
    user.run(&["enable", name, "--wait", "--timeout", "120"]).ok();
    user.address(name)
}

fn a_client_with_the_key_fetches_the_backend(ctx: &Ctx) {
    let user = User::new(&ctx.net);
    let address = published(&user, "site-a", 0);
    let line = user.auth_private("site-a", "client-1");
    let alice = client(ctx, 0);
    let (code, body) = ctx.rt.block_on(async {
        alice.set_keys(&[("site-a", &line)]).await;
        alice.fetch_until(&address, 80, 0x00, REACH).await
    });
    assert_eq!(code, 0x00, "SOCKS reply");
    assert_eq!(body.as_deref(), Some(ctx.net.backend_body(0).as_str()));
    // A credential the user keeps in the same tor for this address (as a client of their
    // own service) is used by the probe, never replaced or removed by it.
    let id = address.trim_end_matches(".onion").to_owned();
    let base32 = line.rsplit(':').next().unwrap();
    let key = data_encoding::BASE64.encode(&data_encoding::BASE32_NOPAD.decode(base32.as_bytes()).unwrap());
    let view = |ctx: &Ctx| {
        ctx.rt.block_on(async {
            let mut hs = TorControl::connect(&ctx.net.hs_control_config()).await.unwrap();
            let reply = hs.execute(&CommandLine::new("ONION_CLIENT_AUTH_VIEW").arg("id", &id).unwrap()).await.unwrap();
            reply.lines.iter().filter(|l| l.starts_with("CLIENT ")).count()
        })
    };
    ctx.rt.block_on(async {
        let mut hs = TorControl::connect(&ctx.net.hs_control_config()).await.unwrap();
        let add = CommandLine::new("ONION_CLIENT_AUTH_ADD")
            .arg("id", &id)
            .unwrap()
            .secret_arg("key", &format!("x25519:{key}"))
            .unwrap()
            .arg("name", "ClientName=mine")
            .unwrap();
        hs.execute(&add).await.unwrap();
    });
    assert_eq!(view(ctx), 1);
    // status sees all three levels.
    let status = user.run(&["--format", "json", "status", "site-a", "--probe"]).ok().json();
    assert_eq!(status["registered"], true, "{status}");
    assert_eq!(status["uploaded"], true, "{status}");
    assert_eq!(status["reachable"], true, "{status}");
    assert_eq!(view(ctx), 1, "the probe must leave the user's own credential in place");
}

fn b_clients_without_or_with_a_wrong_key_are_refused(ctx: &Ctx) {
    let user = User::new(&ctx.net);
    let address = published(&user, "site-b", 0);
    let (with_key, without, wrong) = ctx.rt.block_on(async {
        // The service is up: a key holder gets in...
        let holder = client(ctx, 0);
        holder.set_keys(&[("site-b", &user.auth_private("site-b", "client-1"))]).await;
        let with_key = holder.fetch_until(&address, 80, 0x00, REACH).await.0;
        // ...a client without any key is told that one is needed (0xF4)...
        let other = client(ctx, 1);
        other.set_keys(&[]).await;
        let without = other.fetch_until(&address, 80, 0xF4, REACH).await.0;
        // ...and one with a key that was never authorized is refused (0xF5).
        other.set_keys(&[("site-b", &wrong_key_line(&address))]).await;
        let wrong = other.fetch_until(&address, 80, 0xF5, REACH).await.0;
        (with_key, without, wrong)
    });
    assert_eq!(with_key, 0x00);
    assert_eq!(without, 0xF4, "no key: extended SOCKS error 0xF4");
    assert_eq!(wrong, 0xF5, "wrong key: extended SOCKS error 0xF5");
}

fn c_disable_makes_it_unreachable_and_enable_brings_it_back(ctx: &Ctx) {
    let user = User::new(&ctx.net);
    let address = published(&user, "site-c", 1);
    let alice = client(ctx, 0);
    let line = user.auth_private("site-c", "client-1");
    assert_eq!(
        ctx.rt.block_on(async {
            alice.set_keys(&[("site-c", &line)]).await;
            alice.fetch_until(&address, 80, 0x00, REACH).await.0
        }),
        0x00
    );

    user.run(&["disable", "site-c"]).ok();
    assert_eq!(user.run(&["--format", "json", "status", "site-c"]).ok().json()["registered"], false);
    let after_disable = ctx.rt.block_on(async {
        // Open rendezvous circuits outlive DEL_ONION: start afresh, as a new visitor would.
        alice.newnym().await;
        tokio::time::timeout(Duration::from_secs(60), alice.fetch(&address, 80)).await.map(|r| r.0).unwrap_or(0xFF)
    });
    assert_ne!(after_disable, 0x00, "a disabled service must not be reachable");

    user.run(&["enable", "site-c", "--wait", "--timeout", "120"]).ok();
    assert_eq!(user.address("site-c"), address, "the same address comes back");
    let (code, body) = ctx.rt.block_on(async {
        alice.newnym().await;
        alice.fetch_until(&address, 80, 0x00, REACH).await
    });
    assert_eq!(code, 0x00);
    assert_eq!(body.as_deref(), Some(ctx.net.backend_body(1).as_str()));
}

fn d_the_daemon_republishes_after_tor_restarts(ctx: &Ctx) {
    let user = User::new(&ctx.net);
    let port = ctx.net.ports.backend(0).to_string();
    user.run(&["add", "custom", "--name", "site-d", "--local-port", &port, "--remote-port", "80"]).ok();
    let address = user.address("site-d");
    let log_path = user.home.path().join("daemon.log");
    let mut daemon = user.command().arg("daemon").stderr(std::fs::File::create(&log_path).unwrap()).spawn().unwrap();
    // Enabled while the daemon runs: the CLI publishes, the daemon sees the upload.
    let t = Instant::now();
    user.run(&["enable", "site-d"]).ok();
    wait_uploaded(&user, "site-d", Duration::from_secs(120));
    eprintln!("    uploaded {:.1} s after enable", t.elapsed().as_secs_f64());
    let alice = client(ctx, 0);
    let line = user.auth_private("site-d", "client-1");
    let t = Instant::now();
    assert_eq!(
        ctx.rt.block_on(async {
            alice.set_keys(&[("site-d", &line)]).await;
            alice.fetch_until(&address, 80, 0x00, REACH).await.0
        }),
        0x00
    );
    eprintln!("    first fetch {:.1} s", t.elapsed().as_secs_f64());

    // Tails restarts tor whenever a network comes up: every ADD_ONION service dies.
    let restarted = Instant::now();
    ctx.rt.block_on(ctx.net.restart_hs());
    wait_uploaded(&user, "site-d", Duration::from_secs(120));
    eprintln!("    republished and uploaded {:.1} s after the restart began", restarted.elapsed().as_secs_f64());
    let t = Instant::now();
    let (code, body) = ctx.rt.block_on(async {
        // The client may still hold the dead instance's descriptor: drop it.
        tokio::time::sleep(Duration::from_secs(1)).await;
        alice.newnym().await;
        alice.fetch_until(&address, 80, 0x00, REACH).await
    });
    eprintln!("    fetch after the restart {:.1} s", t.elapsed().as_secs_f64());
    assert_eq!(code, 0x00, "same address reachable again after the restart");
    assert_eq!(body.as_deref(), Some(ctx.net.backend_body(0).as_str()));
    assert_eq!(user.address("site-d"), address);

    // SIGTERM: a clean exit.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    assert!(daemon.wait().unwrap().success());
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.matches("connected to tor").count() >= 2, "reconnected after the restart:\n{log}");
    assert!(log.contains("stopping"), "{log}");
    for line in log.lines().filter(|l| l.contains("published") && l.contains("ms after tor answered")) {
        eprintln!("    daemon: {line}");
    }
}

fn e_a_removed_client_is_locked_out_and_others_stay_in(ctx: &Ctx) {
    let user = User::new(&ctx.net);
    let address = published(&user, "site-e", 0);
    user.run(&["client", "add", "site-e", "bob"]).ok();
    let id = address.trim_end_matches(".onion").to_owned();
    let alice = client(ctx, 0);
    let bob = client(ctx, 1);
    let alice_line = user.auth_private("site-e", "client-1");
    let bob_line = user.auth_private("site-e", "bob");

    ctx.rt.block_on(async {
        // Watch the re-upload that follows the client change.
        let mut hs = TorControl::connect(&ctx.net.hs_control_config()).await.unwrap();
        hs.set_events(&["HS_DESC"]).await.unwrap();
        // `client add` republished (DEL+ADD) when bob was added: wait for that upload.
        wait_event_uploaded(&mut hs, &id).await;
        alice.set_keys(&[("site-e", &alice_line)]).await;
        bob.set_keys(&[("site-e", &bob_line)]).await;
        assert_eq!(alice.fetch_until(&address, 80, 0x00, REACH).await.0, 0x00);
        assert_eq!(bob.fetch_until(&address, 80, 0x00, REACH).await.0, 0x00);

        let removed = tokio::task::block_in_place(|| user.run(&["client", "remove", "site-e", "client-1"]).ok());
        assert!(removed.stderr.contains("reconnect"), "{}", removed.stderr);
        wait_event_uploaded(&mut hs, &id).await;
        alice.newnym().await;
        bob.newnym().await;
        assert_eq!(alice.fetch_until(&address, 80, 0xF5, REACH).await.0, 0xF5, "the removed client is refused");
        assert_eq!(bob.fetch_until(&address, 80, 0x00, REACH).await.0, 0x00, "the other client still gets in");
    });
}

/// Waits until the republished descriptor is uploaded as `enable --wait` defines it: every
/// upload answered with a success for each descriptor, or, when an upload is never answered
/// (its connection died: tor reports nothing), a success for each and no news for
/// `SETTLE_AFTER`.
async fn wait_event_uploaded(hs: &mut TorControl, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut round = tails_server_core::publish::UploadRound::default();
    loop {
        let now = Instant::now();
        if round.settle(now) {
            return;
        }
        assert!(
            now < deadline,
            "the descriptor of {id} was not uploaded: (succeeded, failed, unanswered) {:?}",
            round.counts()
        );
        let until = round.settles_at().map_or(deadline, |t| t.min(deadline));
        let wait = until.saturating_duration_since(now).max(Duration::from_millis(1));
        if let Some(TorEvent::HsDesc(event)) = hs.next_event(Some(wait)).await.unwrap() {
            if event.service_id == id && round.observe(&event, Instant::now()) {
                return;
            }
        }
    }
}

fn f_two_services_at_once(ctx: &Ctx) {
    let user = User::new(&ctx.net);
    let first = published(&user, "site-f1", 0);
    let second = published(&user, "site-f2", 1);
    assert_ne!(first, second);
    let lines = [user.auth_private("site-f1", "client-1"), user.auth_private("site-f2", "client-1")];
    let alice = client(ctx, 0);
    let (one, two) = ctx.rt.block_on(async {
        alice.set_keys(&[("site-f1", &lines[0]), ("site-f2", &lines[1])]).await;
        (alice.fetch_until(&first, 80, 0x00, REACH).await, alice.fetch_until(&second, 80, 0x00, REACH).await)
    });
    assert_eq!(one, (0x00, Some(ctx.net.backend_body(0))));
    assert_eq!(two, (0x00, Some(ctx.net.backend_body(1))));
}

fn g_bad_input_reaching_tor_changes_nothing(ctx: &Ctx) {
    let user = User::new(&ctx.net);
    let port = ctx.net.ports.backend(0).to_string();
    user.run(&["add", "custom", "--name", "site-g", "--local-port", &port]).ok();
    let address = user.address("site-g");
    let before = snapshot_files(&user.state_dir());

    // A wrong control password.
    let wrong = user.home.path().join("wrong-password");
    std::fs::write(&wrong, "not the password\n").unwrap();
    // (Without the cookie: SAFECOOKIE, offered too, is used whenever the cookie is readable.)
    let no_cookie = ["--cookie-file", "/nonexistent/control_auth_cookie"];
    user.run(&[&no_cookie[..], &["--password-file", wrong.to_str().unwrap(), "enable", "site-g"]].concat())
        .fails_with("wrong password?");
    assert!(snapshot_files(&user.state_dir()) == before, "a refused password must leave the store unchanged");

    // The right password works (tor offers HASHEDPASSWORD next to the cookie).
    let right = user.home.path().join("password");
    std::fs::write(&right, format!("{}\n", ctx.net.password)).unwrap();

    // tor refusing our key: another controller holds the address (not detached).
    let key = local_tor::onion_key_blob(&user.state_dir(), &user.home.path().join("run"), "site-g");
    ctx.rt.block_on(async {
        let mut other = TorControl::connect(&ctx.net.hs_control_config()).await.unwrap();
        other
            .execute(
                &CommandLine::new("ADD_ONION")
                    .secret_arg("key", &key)
                    .unwrap()
                    .arg("port", "Port=80,127.0.0.1:1")
                    .unwrap(),
            )
            .await
            .unwrap();
        let refused = tokio::task::block_in_place(|| {
            user.run(&[&no_cookie[..], &["--password-file", right.to_str().unwrap(), "enable", "site-g"]].concat())
                .fails_with("550")
        });
        assert!(refused.stderr.contains("another program"), "{}", refused.stderr);
        assert!(!refused.stderr.contains(&key[11..40]), "the key is never printed");
        drop(other);
    });
    assert!(snapshot_files(&user.state_dir()) == before, "a refusal by tor must leave the store unchanged");
    assert_eq!(user.run(&["--format", "json", "info", "site-g"]).ok().json()["enabled"], false);

    // With the other controller gone, the same command publishes it.
    user.run(&[&no_cookie[..], &["--password-file", right.to_str().unwrap(), "enable", "site-g"]].concat()).ok();
    assert_eq!(user.run(&["--format", "json", "status", "site-g"]).ok().json()["registered"], true);
    assert_eq!(user.address("site-g"), address);
}

fn fetch_code_within(ctx: &Ctx, who: &Client, address: &str, limit: Duration) -> u8 {
    ctx.rt.block_on(async {
        // Open rendezvous circuits outlive DEL_ONION: start afresh, as a new visitor would.
        who.newnym().await;
        tokio::time::timeout(limit, who.fetch(address, 80)).await.map(|r| r.0).unwrap_or(0xFF)
    })
}

fn h_a_removed_service_is_unreachable_at_once(ctx: &Ctx) {
    let user = User::new(&ctx.net);
    let address = published(&user, "site-h", 0);
    let id = address.trim_end_matches(".onion").to_owned();
    let alice = client(ctx, 0);
    let line = user.auth_private("site-h", "client-1");
    assert_eq!(
        ctx.rt.block_on(async {
            alice.set_keys(&[("site-h", &line)]).await;
            alice.fetch_until(&address, 80, 0x00, REACH).await.0
        }),
        0x00
    );
    let removed = user.run(&["remove", "site-h", "--yes"]).ok();
    assert!(removed.stderr.contains("site-h: removed from tor"), "{}", removed.stderr);
    let live = ctx.rt.block_on(async {
        let mut hs = TorControl::connect(&ctx.net.hs_control_config()).await.unwrap();
        hs.detached_onions().await.unwrap()
    });
    assert!(!live.contains(&id), "tor still runs a removed service");
    let after = fetch_code_within(ctx, &alice, &address, Duration::from_secs(60));
    assert_ne!(after, 0x00, "a removed service must not be reachable, even with its old key");
}

fn i_a_client_removed_while_tor_was_unreachable_is_refused_once_it_answers(ctx: &Ctx) {
    let user = User::new(&ctx.net);
    let address = published(&user, "site-i", 1);
    user.run(&["client", "add", "site-i", "bob"]).ok();
    let log_path = user.home.path().join("daemon.log");
    let _daemon = KillOnDrop(
        user.command()
            .arg("daemon")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let alice = client(ctx, 0);
    let bob = client(ctx, 1);
    let (alice_line, bob_line) = (user.auth_private("site-i", "client-1"), user.auth_private("site-i", "bob"));
    ctx.rt.block_on(async {
        alice.set_keys(&[("site-i", &alice_line)]).await;
        bob.set_keys(&[("site-i", &bob_line)]).await;
        assert_eq!(bob.fetch_until(&address, 80, 0x00, REACH).await.0, 0x00);
    });

    // tor keeps running the service but does not answer us.
    ctx.rt.block_on(ctx.net.pause_hs());
    let removed = user.run(&["client", "remove", "site-i", "bob"]);
    ctx.rt.block_on(ctx.net.unpause_hs());
    assert_eq!(removed.code, 3, "saved, tor not updated yet: {}", removed.stderr);
    assert!(removed.stderr.contains("previous clients"), "it says what is true: {}", removed.stderr);

    // tor answers again: the daemon republishes without bob, unprompted.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !std::fs::read_to_string(&log_path).unwrap_or_default().contains("site-i: republished") {
        assert!(
            Instant::now() < deadline,
            "the daemon did not republish:\n{}",
            std::fs::read_to_string(&log_path).unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    ctx.rt.block_on(async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        alice.newnym().await;
        bob.newnym().await;
        assert_eq!(bob.fetch_until(&address, 80, 0xF5, REACH).await.0, 0xF5, "the removed client is refused");
        assert_eq!(alice.fetch_until(&address, 80, 0x00, REACH).await.0, 0x00, "the other client still gets in");
    });
}

fn j_a_client_removed_during_a_republish_storm_is_refused(ctx: &Ctx) {
    let user = User::new(&ctx.net);
    let address = published(&user, "site-j", 0);
    user.run(&["client", "add", "site-j", "bob"]).ok();
    let (alice_line, bob_line) = (user.auth_private("site-j", "client-1"), user.auth_private("site-j", "bob"));
    let _daemon = KillOnDrop(
        user.command()
            .arg("daemon")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    // tor restarts three times in a row (networks coming up) while the client is removed:
    // the daemon republishes at each restart, and never with a copy read before the removal.
    std::thread::scope(|scope| {
        let storm = scope.spawn(|| {
            for _ in 0..3 {
                ctx.rt.block_on(ctx.net.restart_hs());
            }
        });
        let removed = user.run(&["client", "remove", "site-j", "bob"]);
        assert!(removed.code == 0 || removed.code == 3, "{}", removed.stderr);
        storm.join().unwrap();
    });
    // Converged: tor runs it, with the stored clients.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = user.run(&["--format", "json", "status", "site-j"]).json();
        if status["registered"] == true && status["published-as-stored"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "not converged: {status}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let alice = client(ctx, 0);
    let bob = client(ctx, 1);
    ctx.rt.block_on(async {
        alice.set_keys(&[("site-j", &alice_line)]).await;
        bob.set_keys(&[("site-j", &bob_line)]).await;
        assert_eq!(bob.fetch_until(&address, 80, 0xF5, REACH).await.0, 0xF5, "the removed client is refused");
        assert_eq!(alice.fetch_until(&address, 80, 0x00, REACH).await.0, 0x00, "the remaining client gets in");
    });
}

fn k_a_stand_in_on_the_control_port_gets_no_secret(ctx: &Ctx) {
    let user = User::new(&ctx.net);
    published(&user, "site-k", 0);
    let key = local_tor::onion_key_blob(&user.state_dir(), &user.home.path().join("run"), "site-k");
    let key = key.trim_start_matches("ED25519-V3:")[..40].to_owned();
    // The onion-service tor's real cookie, which a stand-in can name in COOKIEFILE.
    let cookie_file = ctx.net.dir("hs/control_auth_cookie");
    let cookie = data_encoding::HEXUPPER.encode(&std::fs::read(&cookie_file).unwrap());
    for methods in ["NULL", "COOKIE"] {
        let fake = fake_tor::FakeControlPort::start("tcp", methods, Some(&cookie_file));
        let run: common::Run = user
            .command()
            .env("TAILS_SERVER_CONTROL_PORT", &fake.target)
            .args(["client", "add", "site-k", &format!("c-{methods}").to_lowercase()])
            .output()
            .unwrap()
            .into();
        assert_eq!(run.code, 3, "saved, tor not told: {}", run.stderr);
        assert!(run.stderr.contains("refusing to send"), "{methods}: {}", run.stderr);
        let received = fake.received();
        assert!(received.contains("PROTOCOLINFO"), "{methods}: the stand-in was reached");
        assert!(!received.contains(&key) && !received.to_uppercase().contains(&cookie[..16]), "{methods}: {received}");
    }
    // The daemon redials briskly while tor restarts: exactly when a stand-in can take the port.
    let fake = fake_tor::FakeControlPort::start("tcp", "NULL", None);
    let log_path = user.home.path().join("daemon.log");
    let _daemon = KillOnDrop(
        user.command()
            .env("TAILS_SERVER_CONTROL_PORT", &fake.target)
            .arg("daemon")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while fake.received().matches("PROTOCOLINFO").count() < 3 {
        assert!(
            Instant::now() < deadline,
            "the daemon did not redial:\n{}",
            std::fs::read_to_string(&log_path).unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let received = fake.received();
    assert!(!received.contains(&key) && !received.contains("ADD_ONION"), "{received}");
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("refusing to send") && !log.contains(&key), "{log}");
}

/// The system service (root) on a private system bus, and the CLI of a user without rights
/// going through it, as amnesia's does on Tails: `enable --wait` returns once the service's
/// loop has seen tor upload the descriptor, `status --probe` reaches the service through
/// the onion-service tor with a stored key, and a client fetches the page.
fn l_through_the_system_service_enable_waits_for_the_upload_and_status_probes(ctx: &Ctx) {
    let user = User::new(&ctx.net);
    let bus = bus::Bus::start();
    let log = user.home.path().join("service.log");
    let _service = KillOnDrop(
        user.command()
            .args(["service", "--bus", &bus.address, "--authorization", "uids:0,65534"])
            .args(["--persistent-storage", "none"])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let binary = support::binary();
    let as_nobody = |args: &[&str]| bus.run_as_nobody(&binary, args);
    // The service owns its name once it answers.
    let deadline = Instant::now() + Duration::from_secs(30);
    while as_nobody(&["list"]).code != 0 {
        assert!(Instant::now() < deadline, "the service did not answer: {}", std::fs::read_to_string(&log).unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    let port = ctx.net.ports.backend(0).to_string();
    as_nobody(&["add", "custom", "--name", "site-l", "--local-port", &port, "--remote-port", "80"]).ok();
    let enabled = as_nobody(&["enable", "site-l", "--wait", "--timeout", "120"]);
    let service_log = || std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(enabled.code, 0, "{}\nthe service's log:\n{}", enabled.stderr, service_log());
    assert!(enabled.stderr.contains("The descriptor is uploaded"), "{}", enabled.stderr);
    let status = as_nobody(&["--format", "json", "status", "site-l", "--probe"]).ok().json();
    assert_eq!(
        (&status["registered"], &status["uploaded"]),
        (&serde_json::json!(true), &serde_json::json!(true)),
        "{status}"
    );
    assert_eq!(status["reachable"], true, "{status}");
    let address = user.address("site-l");
    let line = user.auth_private("site-l", "client-1");
    let (code, body) = ctx.rt.block_on(async {
        let alice = client(ctx, 0);
        alice.set_keys(&[("site-l", &line)]).await;
        alice.fetch_until(&address, 80, 0x00, REACH).await
    });
    assert_eq!((code, body.as_deref()), (0x00, Some(ctx.net.backend_body(0).as_str())));
}

/// The friend's side: the friend keeps the key with `key add` (their tor's
/// ClientOnionAuthDir stays empty); their tor restarts, forgets the key on NEWNYM (Tor
/// Browser's New Identity) and on SETCONF (Tor Connection), also one that changes nothing,
/// and each time the service is
/// reachable again without anyone touching anything; `key remove` locks them out.
fn m_a_friends_kept_key_survives_tor_restarts_newnym_and_setconf_and_a_removed_one_stops(ctx: &Ctx) {
    let owner = User::new(&ctx.net);
    let address = published(&owner, "site-m", 0);
    let from_owner = owner.home.path().join("from-owner.txt");
    std::fs::write(&from_owner, owner.auth_private("site-m", "client-1")).unwrap();
    let index = 1;
    let friend = User::friend(&ctx.net, index);
    let tor = client(ctx, index);
    // Nothing in the friend's tor but what tails-server gives it.
    ctx.rt.block_on(tor.set_keys(&[]));
    let added = friend.run(&["key", "add", "owner", from_owner.to_str().unwrap()]).ok();
    assert!(added.stderr.contains("key owner: given to tor"), "{}", added.stderr);
    // Running from here on, as the system service always is on Tails: a NEWNYM of
    // fetch_until's retries would purge the key, and only the daemon gives it back.
    let log_path = friend.home.path().join("daemon.log");
    let _daemon =
        KillOnDrop(friend.command().arg("daemon").stderr(std::fs::File::create(&log_path).unwrap()).spawn().unwrap());
    assert_eq!(ctx.rt.block_on(tor.fetch_until(&address, 80, 0x00, REACH)).0, 0x00, "reachable with the kept key");

    let restarted = Instant::now();
    ctx.rt.block_on(ctx.net.restart_client(index));
    let (code, body) = ctx.rt.block_on(tor.fetch_until(&address, 80, 0x00, REACH));
    eprintln!("    fetched {:.1} s after the friend's tor began restarting", restarted.elapsed().as_secs_f64());
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(code, 0x00, "the restarted tor got the key back from the daemon:\n{log}");
    assert_eq!(body.as_deref(), Some(ctx.net.backend_body(0).as_str()));
    assert!(std::fs::read_dir(tor.auth_dir()).unwrap().next().is_none(), "no key file was involved");

    // tor drops every key given with ONION_CLIENT_AUTH_ADD on NEWNYM (Tor Browser's New
    // Identity) and on every SETCONF (Tor Connection's): the daemon hears tor's event, or for
    // a SETCONF that changes nothing (no event) finds the key missing, and gives it back
    // without waiting for its periodic reconcile.
    let setconf = |option: &str| {
        ctx.rt.block_on(async {
            let command = CommandLine::new("SETCONF").arg("option", option).unwrap();
            let reply = tor.control().await.send(&command).await.unwrap();
            assert!(reply.is_ok(), "SETCONF: {reply:?}");
        })
    };
    // tor's event is heard first, unless the periodic check happens to ask in between.
    let found = "no longer holds a key it was given: giving it back";
    let dropped_by: [DroppedBy; 3] = [
        ("NEWNYM", &|| ctx.rt.block_on(tor.newnym()), &["given after NEWNYM: giving it back", found]),
        ("a SETCONF", &|| setconf("MaxCircuitDirtiness=700"), &["after a configuration change: giving it back", found]),
        ("the same SETCONF again", &|| setconf("MaxCircuitDirtiness=700"), &[found]),
    ];
    for (what, drop_keys, why) in dropped_by {
        let from = std::fs::read_to_string(&log_path).unwrap().len();
        drop_keys();
        let log = wait_for_log(&log_path, |log| gave_back(log, from, why));
        let code = ctx.rt.block_on(tor.fetch_until(&address, 80, 0x00, REACH)).0;
        assert_eq!(code, 0x00, "reachable after {what}:\n{log}");
    }

    friend.run(&["key", "remove", "owner"]).ok();
    let code = ctx.rt.block_on(async {
        tor.newnym().await;
        tor.fetch_until(&address, 80, 0xF4, REACH).await.0
    });
    assert_eq!(code, 0xF4, "once the key is removed, tor says one is needed (0xF4)");
}

/// What makes tor drop the keys it was given, how, and the reasons the daemon may log.
type DroppedBy<'a> = (&'a str, &'a dyn Fn(), &'a [&'a str]);

/// Whether the daemon's log, from byte `from` on, gives one of `why` and then gives the key
/// back.
fn gave_back(log: &str, from: usize, why: &[&str]) -> bool {
    let Some(new) = log.get(from..) else { return false };
    why.iter().any(|why| new.find(why).is_some_and(|at| new[at..].contains("key owner: given to tor")))
}

/// Waits until the daemon's log satisfies `done`, for at most [`REACH`]; returns the log.
fn wait_for_log(path: &std::path::Path, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + REACH;
    loop {
        let log = std::fs::read_to_string(path).unwrap_or_default();
        if done(&log) {
            return log;
        }
        assert!(Instant::now() < deadline, "the daemon's log never showed it:\n{log}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
