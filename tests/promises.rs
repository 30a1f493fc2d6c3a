//! The promises against a real tor on loopback: what tor runs always converges to what is
//! stored (removals included, also when tor was unreachable at the time), secrets go only
//! to a control port that belongs to tor, and no command holds the store while a person
//! types. Reachability over a Tor network is proven by the container suite.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{onion_key_blob, service_id, FakeControlPort, KillOnDrop, LocalTor, TestEnv};

/// Runs the CLI against `control` (HOST:PORT).
fn at(env: &TestEnv, control: &str, args: &[&str]) -> common::Run {
    let mut all = vec!["--control-port", control];
    all.extend_from_slice(args);
    env.run(&all)
}

/// tor "unreachable": a control socket that does not exist (no port that something else
/// could take meanwhile).
fn unreachable(env: &TestEnv, args: &[&str]) -> common::Run {
    let socket = env.root.path().join("no-tor/control");
    let mut all = vec!["--control-socket", socket.to_str().unwrap()];
    all.extend_from_slice(args);
    env.run(&all)
}

#[track_caller]
fn pending(run: common::Run, needle: &str) -> common::Run {
    assert_eq!(run.code, 3, "exit 3 = saved, tor not updated yet\nstdout: {}\nstderr: {}", run.stdout, run.stderr);
    assert!(run.stderr.contains(needle), "stderr lacks {needle:?}:\n{}", run.stderr);
    run
}

fn add_enabled(env: &TestEnv, tor: &LocalTor, name: &str, port: &str) -> String {
    env.run(&["add", "custom", "--name", name, "--local-port", port, "--remote-port", "80"]).ok();
    at(env, &tor.control(), &["enable", name]).ok();
    let id = service_id(&env.service(name));
    assert!(tor.detached().contains(&id));
    id
}

#[test]
fn remove_takes_the_service_off_tor_at_once() {
    let tor = LocalTor::start();
    let env = TestEnv::new();
    let id = add_enabled(&env, &tor, "web", "8080");
    let out = at(&env, &tor.control(), &["remove", "web", "--yes"]).ok();
    assert!(out.stderr.contains("web: removed from tor"), "{}", out.stderr);
    assert!(!tor.detached().contains(&id), "a removed service must not stay reachable in tor");
}

#[test]
fn a_removal_while_tor_is_unreachable_is_finished_when_tor_answers() {
    let tor = LocalTor::start();
    let env = TestEnv::new();
    let id = add_enabled(&env, &tor, "web", "8080");
    let keep = add_enabled(&env, &tor, "other", "8081");

    let out = pending(unreachable(&env, &["remove", "web", "--yes"]), "tor may still run web until");
    assert!(out.stdout.contains("Removed service web"), "{}", out.stdout);
    assert!(tor.detached().contains(&id), "tor was not reachable: it still runs it (and we say so)");

    // The next reconcile, whoever runs it, finishes the job: the ledger remembers web.
    let report = at(&env, &tor.control(), &["--format", "json", "restore"]).ok().json();
    assert_eq!(report["removed"], serde_json::json!(["web"]));
    assert_eq!(report["already-published"], serde_json::json!(["other"]));
    let live = tor.detached();
    assert!(!live.contains(&id) && live.contains(&keep), "{live:?}");
}

#[test]
fn a_client_removed_while_tor_is_unreachable_loses_access_when_tor_answers() {
    let tor = LocalTor::start();
    let env = TestEnv::new();
    env.run(&["add", "custom", "--name", "web", "--local-port", "8080"]).ok();
    env.run(&["client", "add", "web", "bob"]).ok();
    at(&env, &tor.control(), &["enable", "web"]).ok();

    let out = pending(
        unreachable(&env, &["client", "remove", "web", "bob"]),
        "tor may still run web with its previous clients",
    );
    assert!(!out.stdout.contains("no longer opens"), "that would not be true yet: {}", out.stdout);
    let status = at(&env, &tor.control(), &["--format", "json", "status", "web"]).exits(3).json();
    assert_eq!(status["registered"], true);
    assert_eq!(status["published-as-stored"], false, "tor still admits bob: {status}");

    let report = at(&env, &tor.control(), &["--format", "json", "restore"]).ok().json();
    assert_eq!(report["republished"], serde_json::json!(["web"]));
    let status = at(&env, &tor.control(), &["--format", "json", "status", "web"]).ok().json();
    assert_eq!(status["published-as-stored"], true, "{status}");
    // Nothing left to do: a client change with tor reachable exits 0.
    at(&env, &tor.control(), &["client", "add", "web", "carol"]).ok();
    let status = at(&env, &tor.control(), &["--format", "json", "status", "web"]).ok().json();
    assert_eq!(status["published-as-stored"], true, "{status}");
}

#[test]
fn a_change_that_tor_need_not_know_about_exits_zero_without_tor() {
    let env = TestEnv::new();
    env.run(&["add", "custom", "--name", "web", "--local-port", "8080"]).ok();
    env.run(&["client", "add", "web", "bob"]).ok();
    // Never published: nothing is pending in tor, whatever tor's state.
    unreachable(&env, &["client", "remove", "web", "bob"]).ok();
    unreachable(&env, &["remove", "web", "--yes"]).ok();
}

#[test]
fn enable_without_tor_is_recorded_and_published_by_the_next_reconcile() {
    let tor = LocalTor::start();
    let env = TestEnv::new();
    env.run(&["add", "custom", "--name", "web", "--local-port", "8080"]).ok();
    pending(unreachable(&env, &["enable", "web"]), "web is not published yet");
    assert_eq!(env.service("web")["enabled"], true);
    let report = at(&env, &tor.control(), &["--format", "json", "restore"]).ok().json();
    assert_eq!(report["published"], serde_json::json!(["web"]));
    pending(unreachable(&env, &["disable", "web"]), "tor may still run web until");
    let report = at(&env, &tor.control(), &["--format", "json", "restore"]).ok().json();
    assert_eq!(report["removed"], serde_json::json!(["web"]));
}

#[test]
fn concurrent_changes_leave_tor_running_exactly_what_is_stored() {
    let tor = LocalTor::start();
    let env = TestEnv::new();
    add_enabled(&env, &tor, "web", "8080");
    let control = tor.control();
    // Client changes, restores and disable/enable from several processes at once: each
    // reconcile reads the store under the ledger's lock, so none acts on a stale copy.
    std::thread::scope(|scope| {
        for worker in 0..3 {
            let (env, control) = (&env, control.as_str());
            scope.spawn(move || {
                for round in 0..4 {
                    let client = format!("w{worker}r{round}");
                    at(env, control, &["client", "add", "web", &client]).ok();
                    at(env, control, &["restore"]).ok();
                    if round % 2 == 1 {
                        at(env, control, &["client", "remove", "web", &client]).ok();
                    }
                }
            });
        }
    });
    let status = at(&env, &control, &["--format", "json", "status", "web"]).ok().json();
    assert_eq!(status["registered"], true);
    assert_eq!(status["published-as-stored"], true, "{status}");
}

#[test]
fn the_daemon_republishes_as_soon_as_a_busy_store_is_released() {
    let mut tor = LocalTor::start();
    let env = TestEnv::new();
    let id = add_enabled(&env, &tor, "web", "8080");
    let log_path = env.root.path().join("daemon.log");
    let _daemon = KillOnDrop(
        env.command()
            .args(["--control-port", &tor.control(), "daemon"])
            .env("TAILS_SERVER_LOCK_TIMEOUT", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for_log(&log_path, "service(s) published", 1);

    // Another process holds the store while tor restarts (it might be a slow export).
    let lock = std::fs::OpenOptions::new().write(true).open(env.state_dir().join("lock")).unwrap();
    lock.lock().unwrap();
    tor.restart();
    wait_for_log(&log_path, "waiting for it before talking to tor", 1);
    drop(lock);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !tor.try_detached().is_some_and(|d| d.contains(&id)) {
        assert!(Instant::now() < deadline, "not republished after the store was released:\n{}", read(&log_path));
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn wait_for_log(path: &Path, needle: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while read(path).matches(needle).count() < count {
        assert!(Instant::now() < deadline, "the daemon never logged {needle:?}:\n{}", read(path));
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn export_lets_go_of_the_store_while_the_passphrase_is_typed() {
    let env = TestEnv::new();
    env.run(&["add", "custom", "--name", "web", "--local-port", "8080"]).ok();
    let output = env.root.path().join("backup.age");
    let bin = env!("CARGO_BIN_EXE_tails-server");
    // `script` gives the export a terminal, so it asks for the passphrase and waits.
    let mut prompt = KillOnDrop(
        Command::new("script")
            .args(["-qfec", &format!("{bin} export --output {}", output.display()), "/dev/null"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", env.root.path())
            .env("TAILS_SERVER_STATE_DIR", env.state_dir())
            .env("TAILS_SERVER_RUNTIME_DIR", env.runtime_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("script (util-linux) is installed"),
    );
    let mut stdout = prompt.0.stdout.take().unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).to_lowercase().contains("passphrase") {
        assert!(Instant::now() < deadline, "no passphrase prompt: {}", String::from_utf8_lossy(&seen));
        let n = stdout.read(&mut buf).unwrap();
        assert!(n > 0, "export ended: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    // The export now waits for a person: the store must be free for everyone else.
    let list = env.command().env("TAILS_SERVER_LOCK_TIMEOUT", "1").arg("list").output().unwrap();
    assert!(list.status.success(), "the store is held by a prompt: {}", String::from_utf8_lossy(&list.stderr));
    let _ = prompt.0.stdin.take().unwrap().write_all(b"\x03");
}

/// The CLI pointed at a stand-in. Running as root, the stand-in is `nobody`; otherwise it
/// runs as us, and we trust only root (a user named explicitly) for the test.
fn at_fake(env: &TestEnv, fake: &FakeControlPort, kind: &str, args: &[&str]) -> common::Run {
    let mut command = env.command();
    if tails_server_core::unix::euid() != 0 {
        command.env("TAILS_SERVER_TOR_USER", "root");
    }
    match kind {
        "tcp" => command.env("TAILS_SERVER_CONTROL_PORT", &fake.target),
        _ => command.env("TAILS_SERVER_CONTROL_SOCKET", &fake.target),
    };
    command.args(args).output().unwrap().into()
}

#[test]
fn a_control_port_that_is_not_tor_receives_no_onion_key() {
    let env = TestEnv::new();
    env.run(&["add", "custom", "--name", "web", "--local-port", "8080"]).ok();
    let blob = onion_key_blob(&env.state_dir(), &env.runtime_dir(), "web");
    let key = blob.trim_start_matches("ED25519-V3:");
    // Pinned too: the person's pin vouches for a listener whose owner cannot be told, never
    // for one this computer shows to be someone else's.
    for (kind, pin) in [("tcp", false), ("unix", false), ("tcp", true), ("unix", true)] {
        let fake = FakeControlPort::start(kind, "NULL", None);
        let args: &[&str] = if pin { &["--trust-control-port", "enable", "web"] } else { &["enable", "web"] };
        let out = at_fake(&env, &fake, kind, args);
        assert_ne!(out.code, 0, "{kind}: {}", out.stdout);
        assert!(out.stderr.contains("refusing to send"), "{kind}: {}", out.stderr);
        let received = fake.received();
        assert!(received.contains("PROTOCOLINFO"), "{kind}: the stand-in was reached: {received}");
        assert!(!received.contains(&key[..40]), "{kind}: the onion key reached a stand-in: {received}");
        assert!(!received.contains("ADD_ONION"), "{kind}: {received}");
        assert_eq!(env.service("web")["enabled"], false, "{kind}: a refusal records nothing");
    }
}

#[test]
fn a_control_port_that_is_not_tor_receives_no_cookie() {
    // A cookie file such as tor's, announced by a stand-in that offers only COOKIE (no
    // SAFECOOKIE): reading and sending it would hand tor's access to the stand-in.
    let env = TestEnv::new();
    let cookie = env.root.path().join("control_auth_cookie");
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).unwrap();
    std::fs::write(&cookie, bytes).unwrap();
    let hex = data_encoding::HEXUPPER.encode(&bytes);
    env.run(&["add", "custom", "--name", "web", "--local-port", "8080"]).ok();
    for kind in ["tcp", "unix"] {
        let fake = FakeControlPort::start(kind, "COOKIE", Some(&cookie));
        let out = at_fake(&env, &fake, kind, &["--format", "json", "status", "web"]).exits(3);
        assert!(out.json()["tor-error"].as_str().unwrap().contains("refusing to send"), "{kind}: {}", out.stdout);
        let received = fake.received().to_uppercase();
        assert!(received.contains("PROTOCOLINFO"), "{kind}: the stand-in was reached");
        assert!(!received.contains(&hex[..16]), "{kind}: tor's cookie reached a stand-in: {received}");
        assert!(!received.contains("AUTHENTICATE"), "{kind}: {received}");
    }
}

#[test]
fn turning_autostart_off_keeps_a_running_service_up_until_shutdown() {
    let tor = LocalTor::start();
    let env = TestEnv::new();
    let id = add_enabled(&env, &tor, "web", "8080");
    env.run(&["set-option", "web", "autostart", "false"]).ok();
    let report = at(&env, &tor.control(), &["--format", "json", "restore"]).ok().json();
    assert_eq!(report["already-published"], serde_json::json!(["web"]), "autostart concerns the next login");
    assert!(tor.detached().contains(&id));
    // After a reboot (the runtime directory is a tmpfs) it is not published.
    std::fs::remove_file(env.runtime_dir().join("tor-ledger.json")).unwrap();
    let report = at(&env, &tor.control(), &["--format", "json", "restore"]).ok().json();
    assert_eq!(report["published"], serde_json::json!([]), "{report}");
}

#[test]
fn a_control_port_that_proves_a_cookie_it_wrote_itself_receives_no_onion_key() {
    // SAFECOOKIE proves knowledge of the cookie in the file named by whoever answers: a
    // stand-in that writes its own cookie file passes it. Only tor's cookie file proves tor.
    let env = TestEnv::new();
    env.run(&["add", "custom", "--name", "web", "--local-port", "8080"]).ok();
    let blob = onion_key_blob(&env.state_dir(), &env.runtime_dir(), "web");
    let key = blob.trim_start_matches("ED25519-V3:");
    for kind in ["tcp", "unix"] {
        let fake = FakeControlPort::start_with_own_cookie(kind);
        let out = at_fake(&env, &fake, kind, &["enable", "web"]);
        assert_ne!(out.code, 0, "{kind}: {}", out.stdout);
        assert!(out.stderr.contains("refusing to send"), "{kind}: {}", out.stderr);
        assert!(out.stderr.contains("--tor-user"), "{kind}: the refusal says what to configure: {}", out.stderr);
        let received = fake.received();
        assert!(received.contains("AUTHCHALLENGE"), "{kind}: SAFECOOKIE was used: {received}");
        assert!(!received.contains(&key[..40]) && !received.contains("ADD_ONION"), "{kind}: {received}");
    }
}

#[test]
fn a_cookie_file_that_is_not_a_file_is_refused_at_once() {
    // A peer may name /dev/zero (endless) or a FIFO (blocks forever) as its cookie file.
    let env = TestEnv::new();
    env.run(&["add", "custom", "--name", "web", "--local-port", "8080"]).ok();
    let fifo = env.root.path().join("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    for cookie in [Path::new("/dev/zero"), fifo.as_path()] {
        let fake = FakeControlPort::start("tcp", "COOKIE,SAFECOOKIE", Some(cookie));
        let out = at_fake(&env, &fake, "tcp", &["--format", "json", "status", "web"]).exits(3);
        let error = out.json()["tor-error"].as_str().unwrap().to_owned();
        assert!(error.contains("not a tor cookie"), "{}: {error}", cookie.display());
    }
}

/// A friend who kept (`key add`, as `owner`) the key of another person's service: the
/// friend, the service's id, the key as tor lists it, and what `key add` said.
fn a_friend_keeping_a_key(tor: &LocalTor) -> (TestEnv, String, String, common::Run) {
    let owner = TestEnv::new();
    owner.run(&["add", "custom", "--name", "blog", "--local-port", "8080"]).ok();
    let line = owner.run(&["client", "show", "blog", "client-1"]).ok().stdout;
    let id = service_id(&owner.service("blog"));
    let (_, secret) = tails_server_core::keys::ClientSecretKey::parse_auth_private_line(line.trim()).unwrap();
    let from_owner = owner.root.path().join("from-owner.txt");
    std::fs::write(&from_owner, &line).unwrap();
    let friend = TestEnv::new();
    let added = at(&friend, &tor.control(), &["key", "add", "owner", from_owner.to_str().unwrap()]).ok();
    (friend, id, secret.to_base64().to_string(), added)
}

/// `env`'s daemon on `tor`, logging to a file, once it has reconciled.
fn daemon_at(env: &TestEnv, tor: &LocalTor) -> (KillOnDrop, PathBuf) {
    let log_path = env.root.path().join("daemon.log");
    let daemon = KillOnDrop(
        env.command()
            .args(["--control-port", &tor.control(), "daemon"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for_log(&log_path, "service(s) published", 1);
    (daemon, log_path)
}

/// The friend's side: a key kept with `key add` is in tor at once, given again by the daemon
/// after tor restarts (tor forgets client keys), and taken back when removed, also when
/// tor was unreachable at the time. A key someone else gave tor is left alone.
#[test]
fn a_kept_key_is_given_to_tor_after_every_restart_and_taken_back_when_removed() {
    let mut tor = LocalTor::start();
    let someone_elses = tails_server_core::keys::OnionSecretKey::generate().unwrap().address().service_id();
    let their_key =
        format!("x25519:{}", tails_server_core::keys::ClientSecretKey::generate().unwrap().to_base64().as_str());
    let (friend, id, expected, added) = a_friend_keeping_a_key(&tor);
    assert!(added.stderr.contains("key owner: given to tor"), "{}", added.stderr);
    assert_eq!(tor.client_keys().get(&id), Some(&expected));

    let (_daemon, log_path) = daemon_at(&friend, &tor);
    tor.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    while tor.try_client_keys().and_then(|keys| keys.get(&id).cloned()) != Some(expected.clone()) {
        assert!(Instant::now() < deadline, "the key was not given to the new tor:\n{}", read(&log_path));
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_for_log(&log_path, "key owner: given to tor", 1);
    tor.control_command("ONION_CLIENT_AUTH_ADD", &[&someone_elses, &their_key]).expect("tor takes a key");
    // Taken from tor behind our back (Tor Browser's "remove saved key"): what tor holds
    // counts, not what we remember giving it.
    tor.control_command("ONION_CLIENT_AUTH_REMOVE", &[&id]).expect("tor drops the key");
    at(&friend, &tor.control(), &["restore"]).ok();
    assert_eq!(tor.client_keys().get(&id), Some(&expected), "given again by the next reconcile");

    // Removed while this command cannot reach tor: the daemon takes it back.
    let removed = pending(unreachable(&friend, &["key", "remove", "owner"]), "tor may still hold key owner");
    assert!(removed.stdout.contains("Forgot key owner"), "{}", removed.stdout);
    let deadline = Instant::now() + Duration::from_secs(20);
    while tor.client_keys().contains_key(&id) {
        assert!(Instant::now() < deadline, "the removed key stayed in tor:\n{}", read(&log_path));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(tor.client_keys().contains_key(&someone_elses), "a key tails-server did not give stays");
}

/// tor drops every key given with ONION_CLIENT_AUTH_ADD on a reload and on every SETCONF,
/// also one that changes nothing (it then sends no CONF_CHANGED): the daemon gives the kept
/// key back at once, through tor's event or its check of what tor holds, not at its periodic
/// reconcile.
#[test]
fn a_kept_key_tor_drops_on_a_reload_or_a_setconf_is_given_back_at_once() {
    let tor = LocalTor::start();
    let (friend, id, expected, _) = a_friend_keeping_a_key(&tor);
    let (_daemon, log_path) = daemon_at(&friend, &tor);
    // tor's event is heard first, unless the periodic check happens to ask in between.
    let found = "no longer holds a key it was given: giving it back";
    let changes: [(&str, &str, &[&str]); 3] = [
        // A reload (tor's SIGHUP) that changes nothing: tor says SIGNAL RELOAD, no CONF_CHANGED.
        ("SIGNAL", "RELOAD", &["after RELOAD: giving it back", found]),
        ("SETCONF", "MaxCircuitDirtiness=700", &["after a configuration change: giving it back", found]),
        ("SETCONF", "MaxCircuitDirtiness=700", &[found]),
    ];
    for (command, option, why) in changes {
        let from = read(&log_path).len();
        tor.control_command(command, &[option]).expect("tor takes the command");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = read(&log_path);
            let new = &log[from..];
            let given_back =
                why.iter().any(|why| new.find(why).is_some_and(|at| new[at..].contains("key owner: given to tor")));
            if given_back {
                break;
            }
            assert!(Instant::now() < deadline, "{command} {option}: the key was not given back at once:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(tor.client_keys().get(&id), Some(&expected), "{command} {option}: in tor again");
    }
}

/// A byte relay on a local port, run by another user, in front of the real tor whose cookie we
/// can read: SAFECOOKIE succeeds through it unchanged (tor itself answers the challenge), and
/// who serves the port — not the proof — decides: no onion key, and not even our proof of the
/// cookie (which would give the relay's owner an authenticated session), goes through it. The
/// relay accepts late, so who serves the connection is read only once it has answered.
#[test]
fn a_control_port_relayed_by_another_user_receives_nothing_secret_even_though_safecookie_succeeds() {
    if tails_server_core::unix::euid() != 0 {
        return; // the relay must run as another user
    }
    const RELAY_PY: &str = r#"
import select, socket, sys, time
target = sys.argv[1].rsplit(":", 1)
listener = socket.socket(); listener.bind(("127.0.0.1", 0)); listener.listen(1)
print(listener.getsockname()[1], flush=True)
# Accepted late: until then the kernel's table shows the connection's end with no socket.
time.sleep(1)
client, _ = listener.accept()
tor = socket.create_connection((target[0], int(target[1])))
while True:
    ready, _, _ = select.select([client, tor], [], [])
    for s in ready:
        data = s.recv(65536)
        if not data:
            sys.exit(0)
        if s is client:
            sys.stdout.write(data.decode(errors="replace")); sys.stdout.flush()
            tor.sendall(data)
        else:
            client.sendall(data)
"#;
    let tor = LocalTor::start();
    let env = TestEnv::new();
    env.run(&["add", "custom", "--name", "web", "--local-port", "8080"]).ok();
    let blob = onion_key_blob(&env.state_dir(), &env.runtime_dir(), "web");
    let mut relay = KillOnDrop(
        Command::new("runuser")
            .args(["-u", "nobody", "--", "python3", "-c", RELAY_PY, &tor.control()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stdout = relay.0.stdout.take().unwrap();
    let mut port = String::new();
    let mut byte = [0u8; 1];
    while stdout.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
        port.push(byte[0] as char);
    }
    let out = at(&env, &format!("127.0.0.1:{}", port.trim()), &["enable", "web"]);
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(out.stderr.contains("refusing to send") && out.stderr.contains("nobody"), "{}", out.stderr);
    let _ = relay.0.kill();
    let mut received = String::new();
    let _ = stdout.read_to_string(&mut received);
    assert!(received.contains("AUTHCHALLENGE SAFECOOKIE"), "SAFECOOKIE was tried through the relay: {received}");
    assert!(!received.contains("AUTHENTICATE "), "our proof of the cookie went through: {received}");
    assert!(!received.contains(&blob[12..52]) && !received.contains("ADD_ONION"), "{received}");
    assert_eq!(env.service("web")["enabled"], false, "a refusal records nothing");
}
