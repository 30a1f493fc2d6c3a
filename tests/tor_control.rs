//! The tor layer and the publishing commands against a real tor on loopback (with
//! DisableNetwork 1: the control port behaves fully, no circuits are built). Reachability
//! over a Tor network is proven by the container suite in integration/.

mod common;

use std::time::{Duration, Instant};

use common::{service_id, store_state, LocalTor, TestEnv};
use tails_server_core::tor::{CommandLine, ControlConfig, ControlTarget, TorControl};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn ts(env: &TestEnv, tor: &LocalTor, args: &[&str]) -> common::Run {
    let control = tor.control();
    let mut all = vec!["--control-port", control.as_str()];
    all.extend_from_slice(args);
    env.run(&all)
}

#[test]
fn enable_registers_idempotently_and_disable_removes() {
    let tor = LocalTor::start();
    let env = TestEnv::new();
    env.run(&["add", "custom", "--local-port", "8080", "--remote-port", "80"]).ok();
    let id = service_id(&env.service("custom"));

    let out = ts(&env, &tor, &["enable", "custom"]).ok();
    assert!(out.stdout.contains("registered with tor"), "{}", out.stdout);
    assert!(tor.detached().contains(&id));
    // tor answers a second ADD_ONION with "550 Onion address collision": we check first.
    let again = ts(&env, &tor, &["enable", "custom"]).ok();
    assert!(again.stdout.contains("already runs it"), "{}", again.stdout);

    let status = ts(&env, &tor, &["--format", "json", "status", "custom"]).ok().json();
    assert_eq!(status["registered"], true);
    assert_eq!(status["enabled"], true);

    ts(&env, &tor, &["disable", "custom"]).ok();
    assert!(!tor.detached().contains(&id));
    let again = ts(&env, &tor, &["disable", "custom"]).ok();
    assert!(again.stdout.contains("custom is disabled") && !again.stderr.contains("removed"), "{}", again.stderr);
    assert_eq!(ts(&env, &tor, &["--format", "json", "status", "custom"]).ok().json()["registered"], false);
}

#[test]
fn every_authentication_method_works_and_bad_credentials_are_explained() {
    let tor = LocalTor::start();
    let env = TestEnv::new();
    env.run(&["add", "gobby"]).ok();
    let id = service_id(&env.service("gobby"));

    // The default: tor offers SAFECOOKIE, and we verify tor's proof before answering.
    rt().block_on(async {
        let config = ControlConfig::new(ControlTarget::Tcp(tor.control()));
        let control = TorControl::connect(&config).await.unwrap();
        assert_eq!(control.auth_method(), tails_server_core::tor::AuthMethod::SafeCookie);
        assert!(control.tor_version().starts_with("0."));
    });

    // A password from a file.
    let password_file = tor.password_file();
    let password_only = ["--password-file", password_file.to_str().unwrap(), "--cookie-file", "/nonexistent/cookie"];
    ts(&env, &tor, &[&password_only[..], &["enable", "gobby"]].concat()).ok();
    assert!(tor.detached().contains(&id));

    // A wrong password: a clear error, and the store exactly as it was.
    let wrong = env.root.path().join("wrong-password");
    std::fs::write(&wrong, "not it\n").unwrap();
    let before = store_state(&env.state_dir());
    for command in [&["disable", "gobby"][..], &["restore"], &["enable", "gobby"]] {
        // Without a readable cookie: SAFECOOKIE, offered too, would not need the password.
        let mut args = vec!["--password-file", wrong.to_str().unwrap(), "--cookie-file", "/nonexistent/cookie"];
        args.extend_from_slice(command);
        ts(&env, &tor, &args).fails_with("wrong password?");
    }
    assert!(store_state(&env.state_dir()) == before, "a refused password must not change the store");
    assert!(tor.detached().contains(&id));

    // A cookie that is not this tor's: SAFECOOKIE's server hash does not match.
    let fake_cookie = env.root.path().join("cookie");
    std::fs::write(&fake_cookie, [7u8; 32]).unwrap();
    ts(&env, &tor, &["--cookie-file", fake_cookie.to_str().unwrap(), "status", "gobby"])
        .exits(3)
        .stdout
        .contains("server hash mismatch")
        .then_some(())
        .expect("status reports the refused authentication");
    let short_cookie = env.root.path().join("short-cookie");
    std::fs::write(&short_cookie, [7u8; 5]).unwrap();
    assert!(ts(&env, &tor, &["--cookie-file", short_cookie.to_str().unwrap(), "status", "gobby"])
        .exits(3)
        .stdout
        .contains("not 32"));

    // No authentication at all (NULL), as behind onion-grater.
    let open_tor = LocalTor::start_without_authentication();
    rt().block_on(async {
        let config = ControlConfig::new(ControlTarget::Tcp(open_tor.control()));
        let control = TorControl::connect(&config).await.unwrap();
        assert_eq!(control.auth_method(), tails_server_core::tor::AuthMethod::Null);
    });
    ts(&env, &open_tor, &["enable", "gobby"]).ok();
    assert!(open_tor.detached().contains(&id));

    // The control socket absent (Tails before the person connects, tor bug #25173): the
    // ControlPort is used, and its owner is checked there (secrets go through it).
    rt().block_on(async {
        let mut config = ControlConfig::new(ControlTarget::Unix(env.root.path().join("no-socket/control")));
        config.fallback = Some(ControlTarget::Tcp(tor.control()));
        let control = TorControl::connect(&config).await.unwrap();
        assert_eq!(control.target(), &ControlTarget::Tcp(tor.control()));
        assert!(control.is_verified());
        config.fallback = Some(ControlTarget::Tcp("127.0.0.1:1".into()));
        let both = TorControl::connect(&config).await.err().unwrap().to_string();
        assert!(both.contains("no-socket/control (absent or not served) or 127.0.0.1:1"), "{both}");
    });

    // Nothing listening.
    let nobody = env.root.path().join("no-tor/control");
    env.run(&["--control-socket", nobody.to_str().unwrap(), "restore"]).fails_with("cannot reach tor's control port");
}

#[test]
fn a_refusal_by_tor_leaves_the_store_as_it_was_and_says_why() {
    let tor = LocalTor::start();
    let env = TestEnv::new();
    env.run(&["add", "web"]).ok();
    let record = env.service("web");
    let id = service_id(&record);

    // Another controller runs the same address without Flags=Detach (as OnionShare does):
    // tor refuses ours with a collision, and we say who is in the way.
    let key = common::onion_key_blob(&env.state_dir(), &env.runtime_dir(), "web");
    rt().block_on(async {
        let config = ControlConfig::new(ControlTarget::Tcp(tor.control()));
        let mut other = TorControl::connect(&config).await.unwrap();
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
        let before = store_state(&env.state_dir());
        let refused = ts(&env, &tor, &["enable", "web"]).fails_with("550");
        assert!(refused.stderr.contains("another program added"), "{}", refused.stderr);
        assert!(!refused.stderr.contains(&key[11..30]), "the key must never be printed");
        assert!(store_state(&env.state_dir()) == before, "a refusal must not change the store");
        assert_eq!(env.service("web")["enabled"], false);
        drop(other);
    });
    // Once the other controller is gone, the same command works.
    ts(&env, &tor, &["enable", "web"]).ok();
    assert!(tor.detached().contains(&id));

    // tor's own refusals are mapped to words: a key tor cannot decode.
    rt().block_on(async {
        let config = ControlConfig::new(ControlTarget::Tcp(tor.control()));
        let mut control = TorControl::connect(&config).await.unwrap();
        let err = control
            .execute(
                &CommandLine::new("ADD_ONION")
                    .secret_arg("key", "ED25519-V3:AAAA")
                    .unwrap()
                    .arg("port", "Port=80")
                    .unwrap(),
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("512") && err.contains("could not read the service's onion key"), "{err}");
        let err = control
            .execute(
                &CommandLine::new("ADD_ONION")
                    .arg("key", "NEW:ED25519-V3")
                    .unwrap()
                    .arg("flags", "Flags=V3Auth")
                    .unwrap()
                    .arg("port", "Port=80")
                    .unwrap()
                    .arg("client", "ClientAuthV3=notbase32")
                    .unwrap(),
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("client's public key"), "{err}");
        // A CR/LF smuggling attempt never reaches tor; the connection stays usable.
        assert!(CommandLine::new("DEL_ONION").arg("id", "x\r\nSIGNAL HALT").is_err());
        control.detached_onions().await.unwrap();
    });
}

#[test]
fn restore_publishes_enabled_autostart_services_and_reports_failures() {
    let tor = LocalTor::start();
    let env = TestEnv::new();
    for i in 0..20 {
        env.run(&["add", "custom", "--name", &format!("s{i}"), "--local-port", &(7000 + i).to_string()]).ok();
    }
    // Enabled while tor is unreachable: recorded, published by restore.
    for i in 0..18 {
        let out = env.run(&["--control-port", "127.0.0.1:9", "enable", &format!("s{i}")]);
        assert!(out.code == 3 && out.stderr.contains("not published yet"), "{}", out.stderr);
    }
    env.run(&["set-option", "s17", "autostart", "false"]).ok();
    // A reboot: the runtime directory (a tmpfs) is gone, and with it the services enabled by
    // hand this session; autostart=false is then not published.
    std::fs::remove_file(env.runtime_dir().join("tor-ledger.json")).unwrap();
    let report = ts(&env, &tor, &["--format", "json", "restore"]).ok().json();
    assert_eq!(report["published"].as_array().unwrap().len(), 17);
    assert_eq!(report["failed"], serde_json::json!([]));
    let detached = tor.detached();
    for i in 0..20 {
        let id = service_id(&env.service(&format!("s{i}")));
        assert_eq!(detached.contains(&id), i < 17, "s{i}");
    }
    let again = ts(&env, &tor, &["--format", "json", "restore"]).ok().json();
    assert_eq!(again["already-published"].as_array().unwrap().len(), 17);
    assert_eq!(again["published"], serde_json::json!([]));
}

#[test]
fn client_changes_republish_a_running_service() {
    let tor = LocalTor::start();
    let env = TestEnv::new();
    env.run(&["add", "mumble"]).ok();
    let id = service_id(&env.service("mumble"));
    ts(&env, &tor, &["enable", "mumble"]).ok();
    let out = ts(&env, &tor, &["client", "add", "mumble", "alice"]).ok();
    assert!(out.stderr.contains("connected clients will reconnect"), "{}", out.stderr);
    assert!(tor.detached().contains(&id));
    let out = ts(&env, &tor, &["client", "remove", "mumble", "client-1"]).ok();
    assert!(out.stderr.contains("republished"), "{}", out.stderr);
    assert!(tor.detached().contains(&id));
    // tor runs it with exactly the stored clients (that a removed client is refused over a
    // Tor network is trial e/i of the container suite).
    let status = ts(&env, &tor, &["--format", "json", "status", "mumble"]).ok().json();
    assert_eq!(status["published-as-stored"], true, "{status}");
}

#[test]
fn the_daemon_republishes_after_every_tor_restart_and_stops_cleanly() {
    let mut tor = LocalTor::start();
    let env = TestEnv::new();
    let mut ids = Vec::new();
    for name in ["alpha", "beta", "gamma"] {
        env.run(&["add", "custom", "--name", name, "--local-port", "9999"]).ok();
        let out = env.run(&["--control-port", "127.0.0.1:9", "enable", name]);
        assert_eq!(out.code, 3, "enabled, to be published when tor answers: {}", out.stderr);
        ids.push(service_id(&env.service(name)));
    }
    env.run(&["set-option", "gamma", "autostart", "false"]).ok();
    // A reboot: the runtime directory (a tmpfs) is gone, and with it the services enabled by
    // hand this session; autostart=false is then not published.
    std::fs::remove_file(env.runtime_dir().join("tor-ledger.json")).unwrap();
    let mut daemon = env
        .command()
        .args(["--control-port", &tor.control(), "daemon"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    let wait_for = |tor: &LocalTor, want: &[&String]| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let live = tor.detached();
            if want.iter().all(|id| live.contains(*id)) {
                return live;
            }
            assert!(Instant::now() < deadline, "not republished: {live:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let live = wait_for(&tor, &[&ids[0], &ids[1]]);
    assert!(!live.contains(&ids[2]), "autostart=false is not published by the daemon");

    // CLI commands keep working beside the daemon: the store is not held.
    env.run(&["client", "add", "alpha", "late", "--control-port", &tor.control()]).ok();

    for _ in 0..2 {
        let before = tor.pid();
        tor.restart();
        assert_ne!(tor.pid(), before, "a new tor process, which starts with no onion services");
        wait_for(&tor, &[&ids[0], &ids[1]]);
    }

    // Disabled meanwhile: the daemon's periodic check would remove it; `disable` does at once.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let status = daemon.wait().unwrap();
    assert!(status.success(), "the daemon exits 0 on SIGTERM");
    let mut log = String::new();
    std::io::Read::read_to_string(daemon.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(log.contains("connected to tor") && log.contains("stopping"), "{log}");
    // One reconcile per tor instance (the first and two restarts), each publishing both.
    let counts: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("service(s) published"))
        .map(|l| l.split(": ").last().unwrap().split(' ').next().unwrap())
        .collect();
    assert_eq!(counts, ["2", "2", "2"], "{log}");
    assert!(!log.contains("ED25519-V3"), "no key in the logs");
}
