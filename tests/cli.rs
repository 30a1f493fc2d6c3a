//! The CLI on real sled files, one new process per command, as a user runs it.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{store_state, TestEnv};
use tails_server_core::keys::{ClientSecretKey, OnionAddress};

#[test]
fn state_survives_every_command_in_a_new_process() {
    let env = TestEnv::new();
    assert_eq!(env.listing(), serde_json::json!([]));

    let added =
        env.run(&["--format", "json", "add", "custom", "--local-port", "8080", "--remote-port", "80"]).ok().json();
    let address = added["address"].as_str().unwrap().to_owned();
    assert!(address.ends_with(".onion") && address.len() == 62);
    address.parse::<OnionAddress>().unwrap();
    let key = added["first-client"]["key"].as_str().unwrap().to_owned();
    assert_eq!(key.len(), 52);

    let s = env.service("custom");
    assert_eq!(s["address"], address.as_str());
    assert_eq!(s["local-port"], 8080);
    assert_eq!(s["remote-port"], 80);
    assert_eq!(s["enabled"], false);
    assert_eq!(s["client-authorization"], true);
    assert_eq!(s["clients"][0]["name"], "client-1");

    // No tor here: the state is recorded and the failure to publish is reported.
    let out = env.run(&["--control-port", "127.0.0.1:9", "enable", "custom"]);
    assert!(out.code == 3 && out.stderr.contains("not published yet"), "{}", out.stderr);
    assert_eq!(env.service("custom")["enabled"], true);

    let out = env.run(&["--control-port", "127.0.0.1:9", "client", "add", "custom", "alice"]);
    assert!(out.code == 3 && out.stderr.contains("saved, but tor could not be updated"), "{}", out.stderr);
    let s = env.service("custom");
    assert_eq!(s["clients"].as_array().unwrap().len(), 2);
    assert_eq!(s["address"], address.as_str(), "the address never changes");

    env.run(&["set-option", "custom", "autostart", "false"]).ok();
    assert_eq!(env.service("custom")["options"]["autostart"], false);
    assert_eq!(env.run(&["get-option", "custom", "autostart"]).ok().stdout, "false\n");

    // Enabled this session: kept published until shutdown, so still to be published.
    let out = env.run(&["--control-port", "127.0.0.1:9", "client", "remove", "custom", "alice"]);
    assert!(out.code == 3 && out.stderr.contains("custom is not published yet"), "{}", out.stderr);
    assert_eq!(env.service("custom")["clients"].as_array().unwrap().len(), 1);

    // The key shown at creation is still the one stored.
    let shown = env.run(&["client", "show", "custom", "client-1", "--as", "key"]).ok();
    assert_eq!(shown.stdout.trim(), key);

    // It was never published: nothing is pending in tor.
    env.run(&["--control-port", "127.0.0.1:9", "disable", "custom"]).ok();
    assert_eq!(env.service("custom")["enabled"], false);
    env.run(&["remove", "custom", "--yes"]).ok();
    assert_eq!(env.listing(), serde_json::json!([]));
}

#[test]
fn credential_forms_are_what_tor_and_tor_browser_take() {
    let env = TestEnv::new();
    let added = env.run(&["--format", "json", "add", "web", "--client", "bob"]).ok().json();
    let address: OnionAddress = added["address"].as_str().unwrap().parse().unwrap();

    let line = env.run(&["client", "show", "web", "bob", "--as", "auth-private"]).ok();
    assert!(line.stderr.contains("SECRET"));
    let (parsed_address, secret) = ClientSecretKey::parse_auth_private_line(line.stdout.trim()).unwrap();
    assert_eq!(parsed_address, address);
    assert_eq!(
        line.stdout.trim(),
        format!("{}:descriptor:x25519:{}", address.service_id(), secret.to_base32().as_str())
    );

    let key = env.run(&["client", "show", "web", "bob", "--as", "key"]).ok().stdout;
    assert_eq!(key.trim(), secret.to_base32().as_str());

    let auth = env.run(&["client", "show", "web", "bob", "--as", "auth"]).ok();
    assert_eq!(auth.stdout.trim(), secret.public_key().auth_line());
    assert!(auth.stderr.contains("not secret"));
}

#[test]
fn a_client_added_by_public_key_has_no_private_forms() {
    let env = TestEnv::new();
    env.run(&["add", "gobby"]).ok();
    let theirs = ClientSecretKey::generate().unwrap().public_key();
    env.run(&["client", "add", "gobby", "carol", "--public-key", &theirs.auth_line()]).ok();
    let out = env.run(&["client", "show", "gobby", "carol", "--as", "auth"]).ok();
    assert_eq!(out.stdout.trim(), theirs.auth_line());
    env.run(&["client", "show", "gobby", "carol", "--as", "key"]).fails_with("public key only");
    env.run(&["client", "show", "gobby", "carol"]).fails_with("public key only");
    // The same key twice is refused.
    env.run(&["client", "add", "gobby", "dave", "--public-key", &theirs.to_base32()])
        .fails_with("already has a client with this public key");
    env.run(&["client", "add", "gobby", "eve", "--public-key", "NOTAKEY"]).fails_with("52 base32 characters");
}

#[test]
fn tor_client_limit_is_enforced_and_nothing_changes() {
    let env = TestEnv::new();
    env.run(&["add", "custom", "--local-port", "9000"]).ok();
    for i in 2..=32 {
        env.run(&["client", "add", "custom", &format!("c{i}")]).ok();
    }
    let before = store_state(&env.state_dir());
    env.run(&["client", "add", "custom", "c33"]).fails_with("already has 32 clients");
    assert!(store_state(&env.state_dir()) == before, "a refused command must not touch the store");
    assert_eq!(env.service("custom")["clients"].as_array().unwrap().len(), 32);
}

#[test]
fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let env = TestEnv::new();
    env.run(&["add", "mumble"]).ok();
    let before = store_state(&env.state_dir());
    let cases: &[(&[&str], &str)] = &[
        (&["add", "irc"], "unknown service kind \"irc\"; known kinds: custom, gobby, mumble, sftp, web"),
        (&["add", "mumble"], "already exists"),
        (&["add", "custom"], "--local-port"),
        (&["add", "custom", "--local-port", "0"], "1 to 65535"),
        (&["add", "custom", "--local-port", "99999"], "1 to 65535"),
        (&["add", "custom", "--name", "My Service", "--local-port", "1"], "'M'"),
        (&["add", "custom", "--name", "../etc", "--local-port", "1"], "'.'"),
        (&["add", "custom", "--name", &"x".repeat(33), "--local-port", "1"], "longer than 32"),
        (&["add", "mumble", "--name", "m2", "--set", "colour=red"], "no option \"colour\"; its options are: allow-lan-connections, autostart, max-users, persistence, server-password, welcome-message"),
        (&["add", "mumble", "--name", "m2", "--set", "max-users=many"], "expected a whole number"),
        (&["add", "mumble", "--name", "m2", "--set", "novalue"], "OPTION=VALUE"),
        (&["set-option", "mumble", "autostart", "maybe"], "expected true or false"),
        (&["set-option", "mumble", "welcome-message", "two\nlines"], "without control characters"),
        (&["set-option", "mumble", "bogus", "1"], "its options are"),
        (&["set-option", "nothere", "autostart", "true"], "there is no service named \"nothere\""),
        (&["get-option", "mumble", "bogus"], "its options are"),
        (&["info", "Mumble"], "'M'"),
        (&["client", "add", "mumble", "client-1"], "already has a client named"),
        (&["client", "add", "mumble", "a/b"], "'/'"),
        (&["client", "remove", "mumble", "client-1"], "last client"),
        (&["client", "remove", "mumble", "nobody"], "no client named"),
        (&["client", "show", "mumble", "nobody"], "no client named"),
        (&["remove", "mumble"], "--yes"),
        (&["remove", "nothere", "--yes"], "no service named"),
    ];
    for (args, needle) in cases {
        env.run(args).fails_with(needle);
    }
    assert!(store_state(&env.state_dir()) == before, "refused commands must not touch the store");
}

#[test]
fn client_authorization_opt_out_is_hidden_and_loud() {
    let env = TestEnv::new();
    let help = env.run(&["add", "--help"]).ok().stdout;
    assert!(!help.contains("allow-anyone"), "{help}");
    let man = env.run(&["man"]).ok().stdout;
    assert!(man.contains("client-show") || man.contains("client"), "a man page was rendered");
    assert!(!man.contains("allow-anyone"));

    let out = env.run(&["add", "web", "--allow-anyone-with-the-address"]).ok();
    assert!(out.stderr.contains("WARNING: client authorization is OFF"), "{}", out.stderr);
    assert!(out.stderr.contains("entry guards"));
    let s = env.service("web");
    assert_eq!(s["client-authorization"], false);
    assert_eq!(s["clients"], serde_json::json!([]));
    env.run(&["client", "add", "web", "x"]).fails_with("without client authorization");
    assert!(env.run(&["list"]).ok().stdout.contains("anyone!"));
}

#[test]
fn non_persistent_services_live_in_the_runtime_dir() {
    let env = TestEnv::new();
    env.run(&["add", "custom", "--name", "keep", "--local-port", "1000"]).ok();
    env.run(&["add", "custom", "--name", "forget", "--local-port", "1001", "--set", "persistence=false"]).ok();
    let names = |v: serde_json::Value| {
        v.as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
    };
    assert_eq!(names(env.listing()), ["forget", "keep"]);
    let address = env.service("keep")["address"].clone();

    // Moving a service between the stores keeps its key.
    env.run(&["set-option", "keep", "persistence", "false"]).ok();
    assert_eq!(env.service("keep")["address"], address);
    env.run(&["set-option", "keep", "persistence", "true"]).ok();
    assert_eq!(env.service("keep")["address"], address);

    // A reboot empties the runtime directory.
    std::fs::remove_dir_all(env.runtime_dir()).unwrap();
    assert_eq!(names(env.listing()), ["keep"]);
    assert_eq!(env.service("keep")["address"], address);
}

#[test]
fn a_store_others_can_read_is_refused() {
    let env = TestEnv::new();
    env.run(&["add", "gobby"]).ok();
    std::fs::set_permissions(env.state_dir(), std::fs::Permissions::from_mode(0o750)).unwrap();
    let before = store_state(&env.state_dir());
    env.run(&["list"]).fails_with("accessible to other users (mode 750)");
    env.run(&["add", "web"]).fails_with("chmod 700");
    assert!(store_state(&env.state_dir()) == before);
    std::fs::set_permissions(env.state_dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(env.state_dir().join("snapshots"), std::fs::Permissions::from_mode(0o755)).unwrap();
    env.run(&["list"]).fails_with("snapshots");
}

#[test]
fn files_are_private() {
    let env = TestEnv::new();
    env.run(&["add", "gobby"]).ok();
    fn walk(path: &std::path::Path) {
        let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} has mode {mode:o}", path.display());
        if path.is_dir() {
            for e in std::fs::read_dir(path).unwrap() {
                walk(&e.unwrap().path());
            }
        }
    }
    walk(&env.state_dir());
}

#[test]
fn shell_completions_are_generated() {
    let env = TestEnv::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = env.run(&["completions", shell]).ok().stdout;
        assert!(out.contains("set-option") && out.contains("client"), "{shell}");
        assert!(!out.contains("allow-anyone"), "{shell} completions reveal the hidden flag");
    }
}

#[test]
fn catalog_lists_kinds_and_reports_bad_drop_ins() {
    let env = TestEnv::new();
    let kinds = env.run(&["--format", "json", "catalog"]).ok().json();
    let names: Vec<_> = kinds.as_array().unwrap().iter().map(|k| k["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["custom", "gobby", "mumble", "sftp", "web"]);
    assert_eq!(kinds[2]["local-port"], 64738);
    assert_eq!(kinds[2]["packages"][0], "mumble-server");

    let catalog_dir = env.state_dir().join("catalog.d");
    std::fs::create_dir_all(&catalog_dir).unwrap();
    std::fs::write(
        catalog_dir.join("irc.toml"),
        "name = \"irc\"\nname-in-gui = \"IRC\"\ndescription = \"chat\"\nlocal-port = 6667\n",
    )
    .unwrap();
    env.run(&["add", "irc"]).ok();
    std::fs::write(
        catalog_dir.join("bad.toml"),
        "name = \"bad\"\nname-in-gui = \"B\"\ndescription = \"d\"\nlocal-port = \"x\"\n",
    )
    .unwrap();
    env.run(&["catalog"]).fails_with("bad.toml");
    let out = env.run(&["list"]).ok();
    assert!(out.stderr.contains("bad.toml") && out.stderr.contains("local-port"), "{}", out.stderr);
}

/// Runs a command with `input` on its standard input.
fn run_with_stdin(env: &TestEnv, args: &[&str], input: &[u8]) -> common::Run {
    use std::io::Write;
    let mut child = env
        .command()
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap().into()
}

#[track_caller]
fn assert_not_shown(run: &common::Run, secret: &str) {
    assert!(
        !run.stdout.contains(secret) && !run.stderr.contains(secret),
        "{secret:?} shown\nstdout: {}\nstderr: {}",
        run.stdout,
        run.stderr
    );
}

#[test]
fn a_secret_option_on_the_command_line_is_refused_unechoed_and_changes_nothing() {
    let env = TestEnv::new();
    env.run(&["add", "mumble"]).ok();
    let before = store_state(&env.state_dir());

    let refused = env.run(&["set-option", "mumble", "server-password", "hunter2-argv"]);
    assert_not_shown(&refused, "hunter2");
    let refused = refused.fails_with("refusing a value for server-password on the command line");
    assert!(refused.stderr.contains("`tails-server set-option mumble server-password` asks"), "{}", refused.stderr);
    assert!(refused.stderr.contains("`tails-server set-option mumble server-password -` reads"), "{}", refused.stderr);

    for args in [
        &["add", "gobby", "--set", "server-password=hunter2-add"][..],
        &["add", "mumble", "--name", "m2", "--set", "max-users=3", "--set", "server-password=hunter2-add"],
    ] {
        let refused = env.run(args);
        assert_not_shown(&refused, "hunter2");
        let service = if args[1] == "gobby" { "gobby" } else { "m2" };
        refused
            .fails_with("refusing --set server-password=...")
            .fails_with("Nothing was added")
            .fails_with(&format!("`tails-server set-option {service} server-password -`"));
    }

    // No value and no terminal to ask on; `-` with nothing on standard input.
    env.run(&["set-option", "mumble", "server-password"]).fails_with("give `-` to read it from standard input");
    env.run(&["set-option", "mumble", "server-password", "-"]).fails_with("standard input is empty");
    // A refused value is described, not quoted.
    let long = format!("hunter2{}\n", "x".repeat(1100));
    let refused = run_with_stdin(&env, &["set-option", "mumble", "server-password", "-"], long.as_bytes());
    assert_not_shown(&refused, "hunter2");
    refused.fails_with("(hidden: 1107 characters)").fails_with("at most 1024 characters");
    // Ordinary options still want their value on the command line.
    env.run(&["set-option", "mumble", "max-users"]).fails_with("give the new value of max-users");

    assert!(store_state(&env.state_dir()) == before, "refused commands must not touch the store");
    assert_eq!(env.listing().as_array().unwrap().len(), 1);
}

#[test]
fn a_secret_option_from_standard_input_is_stored_and_never_echoed() {
    let env = TestEnv::new();
    env.run(&["add", "mumble"]).ok();
    let set = run_with_stdin(&env, &["set-option", "mumble", "server-password", "-"], b"correct horse\n").ok();
    assert_eq!(set.stdout, "mumble: server-password changed\n");
    assert_not_shown(&set, "correct horse");

    assert_eq!(env.service("mumble")["options"]["server-password"], "(hidden)");
    for args in
        [&["info", "mumble", "--details"][..], &["--format", "yaml", "list"], &["--format", "json", "info", "mumble"]]
    {
        assert_not_shown(&env.run(args).ok(), "correct horse");
    }
    // Asked for by name, the value is given to the person who asked (the one way to read
    // it back to share it with the people joining); exactly the line, without its end.
    assert_eq!(env.run(&["get-option", "mumble", "server-password"]).ok().stdout, "correct horse\n");

    let again = run_with_stdin(
        &env,
        &["--format", "json", "set-option", "mumble", "server-password", "-"],
        b"correct horse\r\n",
    );
    assert_eq!(again.ok().json()["message"], "mumble: server-password unchanged");
    let cleared = run_with_stdin(&env, &["set-option", "mumble", "server-password", "-"], b"\n").ok();
    assert_eq!(cleared.stdout, "mumble: server-password changed (now empty)\n");
    assert_eq!(env.service("mumble")["options"]["server-password"], "");

    // Ordinary options report as before.
    let set = env.run(&["set-option", "mumble", "max-users", "20"]).ok();
    assert_eq!(set.stdout, "mumble: max-users = 20 (was 10)\n");
}

/// A new pseudo-terminal: (master, slave), both close-on-exec.
fn open_pty() -> (std::fs::File, std::fs::File) {
    use std::os::fd::{AsRawFd, FromRawFd};
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(master >= 0, "posix_openpt: {}", std::io::Error::last_os_error());
        let master = std::fs::File::from_raw_fd(master);
        assert_eq!(libc::grantpt(master.as_raw_fd()), 0);
        assert_eq!(libc::unlockpt(master.as_raw_fd()), 0);
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()), 0);
        let slave = libc::open(name.as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(slave >= 0, "open slave: {}", std::io::Error::last_os_error());
        (master, std::fs::File::from_raw_fd(slave))
    }
}

/// Runs a command on a new terminal (its controlling terminal and standard input; standard
/// output and error stay pipes) and types `answers`, one per prompt (`prompt` counts them),
/// each only once the prompt is shown and the terminal no longer echoes. Returns the outcome
/// and everything the terminal showed.
fn run_on_terminal(env: &TestEnv, args: &[&str], prompt: &str, answers: &[&str]) -> (common::Run, String) {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    use std::time::{Duration, Instant};

    let (mut master, slave) = open_pty();
    let mut command = env.command();
    command
        .args(args)
        .stdin(slave.try_clone().unwrap())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    unsafe {
        command.pre_exec(|| {
            // A session of its own, with this terminal as its controlling terminal (/dev/tty).
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    drop(command);
    let shown = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let reader = {
        let shown = shown.clone();
        let mut master = master.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0; 1024];
            // EIO once the child and we have closed the terminal.
            while let Ok(n @ 1..) = master.read(&mut buf) {
                shown.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    let text = |shown: &std::sync::Mutex<Vec<u8>>| String::from_utf8_lossy(&shown.lock().unwrap()).into_owned();
    let echoes = || {
        let mut term: libc::termios = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::tcgetattr(slave.as_raw_fd(), &mut term) }, 0);
        term.c_lflag & libc::ECHO != 0
    };
    'typing: for (i, answer) in answers.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(20);
        while text(&shown).matches(prompt).count() <= i || echoes() {
            if child.try_wait().unwrap().is_some() {
                break 'typing; // it stopped asking: the caller judges its outcome
            }
            assert!(
                Instant::now() < deadline,
                "no prompt {} without echo; the terminal shows:\n{}",
                i + 1,
                text(&shown)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        master.write_all(format!("{answer}\n").as_bytes()).unwrap();
    }
    let output = child.wait_with_output().unwrap();
    drop(slave);
    drop(master);
    reader.join().unwrap();
    let shown = text(&shown);
    (output.into(), shown)
}

#[test]
fn a_secret_option_is_asked_twice_on_the_terminal_without_echo() {
    let env = TestEnv::new();
    env.run(&["add", "gobby"]).ok();
    let args = ["set-option", "gobby", "server-password"];

    // The two entries differ: asked again, and again; the third time it gives up.
    let before = store_state(&env.state_dir());
    let (run, shown) =
        run_on_terminal(&env, &args, "server-password", &["one1", "two2", "one1", "two2", "one1", "two2"]);
    assert_eq!(shown.matches("New server-password for gobby (not shown): ").count(), 3, "{shown}");
    assert_eq!(shown.matches("The same server-password again: ").count(), 3, "{shown}");
    assert_eq!(run.stderr.matches("the two entries differ; once more").count(), 2, "{}", run.stderr);
    let run = run.fails_with("the two entries differed 3 times; nothing was changed");
    assert!(!shown.contains("one1") && !shown.contains("two2"), "echoed: {shown}");
    assert_not_shown(&run, "one1");
    assert!(store_state(&env.state_dir()) == before, "a failed prompt must not touch the store");

    // A mismatch, then the same twice: stored, and never shown.
    let (run, shown) = run_on_terminal(&env, &args, "server-password", &["typo", "tyop", "open sesame", "open sesame"]);
    let run = run.ok();
    assert_eq!(run.stdout, "gobby: server-password changed\n");
    assert!(!shown.contains("open sesame") && !shown.contains("typo"), "echoed: {shown}");
    assert_not_shown(&run, "open sesame");
    assert_eq!(env.service("gobby")["options"]["server-password"], "(hidden)");
    assert_eq!(env.run(&["get-option", "gobby", "server-password"]).ok().stdout, "open sesame\n");
}

/// Small-order x25519 keys: with them every shared secret is all zeros, so anyone who knows
/// the address could decrypt the descriptor layer "protected" by them.
#[test]
fn small_order_public_keys_are_refused_and_change_nothing() {
    let env = TestEnv::new();
    env.run(&["add", "custom", "--name", "svc", "--local-port", "8080"]).ok();
    let before = store_state(&env.state_dir());
    let base32 = |bytes: [u8; 32]| data_encoding::BASE32_NOPAD.encode(&bytes);
    let mut one = [0u8; 32];
    one[0] = 1;
    let mut order8 = [0u8; 32];
    data_encoding::HEXLOWER
        .decode_mut(b"e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800", &mut order8)
        .unwrap();
    for key in [
        base32([0; 32]),
        base32(one),
        format!("descriptor:x25519:{}", base32(one)),
        base32(one).to_lowercase(),
        base32(order8),
    ] {
        let run = env.run(&["client", "add", "svc", "bob", "--public-key", &key]);
        let run = run.fails_with("invalid client public key: it is a small-order point");
        assert!(run.stderr.contains("Ask the client for a new key"), "{key}: {}", run.stderr);
        assert!(store_state(&env.state_dir()) == before, "{key}: a refused key must not touch the store");
    }
    assert_eq!(env.service("svc")["clients"].as_array().unwrap().len(), 1);
}

#[test]
fn a_secret_option_of_any_type_is_hidden_in_listings() {
    let env = TestEnv::new();
    env.listing(); // creates the state directory, 0700
    let catalog_dir = env.state_dir().join("catalog.d");
    std::fs::create_dir_all(&catalog_dir).unwrap();
    std::fs::write(
        catalog_dir.join("vault.toml"),
        "name = \"vault\"\nname-in-gui = \"Vault\"\ndescription = \"d\"\nlocal-port = 7000\n\
         [options.pin]\ntype = \"integer\"\ndefault = 0\ndescription = \"PIN\"\nsecret = true\ndisplay-status = true\n",
    )
    .unwrap();
    env.run(&["add", "vault"]).ok();
    let set = run_with_stdin(&env, &["set-option", "vault", "pin", "-"], b"73519\n").ok();
    assert_eq!(set.stdout, "vault: pin changed\n");
    assert_eq!(env.service("vault")["options"]["pin"], "(hidden)");
    assert_not_shown(&env.run(&["info", "vault"]).ok(), "73519");
    let status = env.run(&["--control-port", "127.0.0.1:9", "--format", "json", "status", "vault"]);
    assert_not_shown(&status, "73519");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&status.stdout).unwrap()["options"]["pin"],
        "(hidden)",
        "{}",
        status.stdout
    );
    let refused = run_with_stdin(&env, &["set-option", "vault", "pin", "-"], b"73519x\n");
    assert_not_shown(&refused, "73519");
    refused.fails_with("expected a whole number");
}

/// Every form in which `secret` could be written down: raw, base64 (standard and URL-safe),
/// base32 (either case), hex (either case). Unpadded, so padded copies match too.
fn written_forms(secret: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    use data_encoding::{BASE32_NOPAD, BASE64URL_NOPAD, BASE64_NOPAD, HEXLOWER, HEXUPPER};
    let base32 = BASE32_NOPAD.encode(secret);
    vec![
        ("raw", secret.to_vec()),
        ("base64", BASE64_NOPAD.encode(secret).into_bytes()),
        ("base64url", BASE64URL_NOPAD.encode(secret).into_bytes()),
        ("base32", base32.clone().into_bytes()),
        ("base32 lowercase", base32.to_lowercase().into_bytes()),
        ("hex", HEXLOWER.encode(secret).into_bytes()),
        ("HEX", HEXUPPER.encode(secret).into_bytes()),
    ]
}

/// Where some form of `secret` is found in any byte of any file under `dirs`.
fn copies_of(secret: &[u8], dirs: &[std::path::PathBuf]) -> Vec<String> {
    let forms = written_forms(secret);
    let mut found = Vec::new();
    for dir in dirs {
        for (path, bytes) in common::dir_contents(dir) {
            for (form, needle) in &forms {
                if bytes.windows(needle.len()).any(|w| w == &needle[..]) {
                    found.push(format!("{form} in {}", dir.join(&path).display()));
                }
            }
        }
    }
    found
}

/// The 64-byte onion key of `service`, read from the newest snapshot of the store in `dir`.
fn stored_onion_key(dir: &std::path::Path, service: &str) -> Vec<u8> {
    let files = common::dir_contents(&dir.join("snapshots"));
    let newest = files.iter().rfind(|(path, _)| path.extension() == Some("snapshot".as_ref()));
    let newest = newest.expect("a snapshot").1;
    let body = &newest[newest.iter().position(|&b| b == b'\n').unwrap() + 1..];
    // The snapshot names each record's file: ["name", "sha256 of the file"].
    let manifest: serde_json::Value = serde_json::from_slice(body).unwrap();
    let entry = manifest["services"].as_array().unwrap().iter().find(|r| r[0] == service).expect("stored there");
    let file = std::path::PathBuf::from(format!("{}.record", entry[1].as_str().unwrap()));
    let record: serde_json::Value = serde_json::from_slice(&files[&file]).unwrap();
    let blob = record["key"].as_str().unwrap().strip_prefix("ED25519-V3:").unwrap();
    let key = data_encoding::BASE64.decode(blob.as_bytes()).unwrap();
    assert_eq!(key.len(), 64);
    key
}

/// The 32-byte private key of a client, as `client show` gives it.
fn stored_client_key(env: &TestEnv, service: &str, client: &str) -> Vec<u8> {
    let shown = env.run(&["client", "show", service, client, "--as", "key"]).ok().stdout;
    data_encoding::BASE32_NOPAD.decode(shown.trim().as_bytes()).unwrap()
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

#[test]
fn removal_leaves_no_copy_of_the_removed_keys_in_any_file() {
    let env = TestEnv::new();
    let dirs = [env.state_dir(), env.runtime_dir()];
    // Services with a history: older snapshots and sled's log hold every version.
    env.run(&["add", "mumble"]).ok();
    env.run(&["client", "add", "mumble", "alice"]).ok();
    env.run(&["add", "custom", "--name", "moved", "--local-port", "7001"]).ok();
    env.run(&["add", "custom", "--name", "amnesic", "--local-port", "7002", "--set", "persistence=false"]).ok();
    env.run(&["client", "add", "amnesic", "bob"]).ok();
    for i in 0..4 {
        env.run(&["set-option", "mumble", "max-users", &(i + 1).to_string()]).ok();
        env.run(&["set-option", "amnesic", "autostart", if i % 2 == 0 { "false" } else { "true" }]).ok();
    }
    let mumble = stored_onion_key(&env.state_dir(), "mumble");
    let moved = stored_onion_key(&env.state_dir(), "moved");
    let amnesic = stored_onion_key(&env.runtime_dir(), "amnesic");
    let alice = stored_client_key(&env, "mumble", "alice");
    let bob = stored_client_key(&env, "amnesic", "bob");
    // "moved" leaves the state directory for the runtime one; the state directory's
    // history still holds its key.
    env.run(&["set-option", "moved", "persistence", "false"]).ok();
    // A damaged copy kept by a recovery holds the keys too.
    copy_tree(&env.state_dir().join("db"), &env.state_dir().join("db.damaged-1000"));
    for (what, key) in [("mumble", &mumble), ("moved", &moved), ("amnesic", &amnesic), ("alice", &alice), ("bob", &bob)]
    {
        assert!(!copies_of(key, &dirs).is_empty(), "the scan finds {what}'s stored key");
    }

    // Removed from the runtime directory, the key goes from the state directory's history too.
    env.run(&["remove", "moved", "--yes"]).ok();
    assert_eq!(copies_of(&moved, &dirs), Vec::<String>::new(), "the key of removed service moved");
    env.run(&["client", "remove", "mumble", "alice"]).ok();
    assert_eq!(copies_of(&alice, &dirs), Vec::<String>::new(), "alice's removed key");
    assert!(!copies_of(&mumble, &dirs).is_empty(), "the service's own key is still stored");
    env.run(&["client", "remove", "amnesic", "bob"]).ok();
    assert_eq!(copies_of(&bob, &dirs), Vec::<String>::new(), "bob's removed key");

    for (name, key) in [("mumble", &mumble), ("amnesic", &amnesic)] {
        env.run(&["remove", name, "--yes"]).ok();
        assert_eq!(copies_of(key, &dirs), Vec::<String>::new(), "the key of removed service {name}");
    }
    assert_eq!(env.listing(), serde_json::json!([]));
    // Both stores still work.
    env.run(&["add", "web"]).ok();
    env.run(&["add", "gobby", "--set", "persistence=false"]).ok();
    assert_eq!(env.listing().as_array().unwrap().len(), 2);
}

/// A change that makes keys unreachable in one place destroys them there, as `remove` does:
/// a service moved between the stores leaves no copy in the one it left, and a service
/// replaced by an import leaves none of its onion key or its clients' private keys.
#[test]
fn moves_and_replacements_leave_no_copy_of_the_keys_behind() {
    let env = TestEnv::new();
    env.run(&["add", "custom", "--name", "moved", "--local-port", "7001"]).ok();
    env.run(&["client", "add", "moved", "alice"]).ok();
    for autostart in ["false", "true", "false"] {
        // A history: sled's log and the older snapshots hold every version.
        env.run(&["set-option", "moved", "autostart", autostart]).ok();
    }
    let key = stored_onion_key(&env.state_dir(), "moved");
    let alice = stored_client_key(&env, "moved", "alice");
    assert!(!copies_of(&key, &[env.state_dir()]).is_empty(), "the scan finds the stored key");

    env.run(&["set-option", "moved", "persistence", "false"]).ok();
    assert_eq!(copies_of(&key, &[env.state_dir()]), Vec::<String>::new(), "the onion key left on the stick");
    assert_eq!(copies_of(&alice, &[env.state_dir()]), Vec::<String>::new(), "alice's key left on the stick");
    env.run(&["set-option", "moved", "persistence", "true"]).ok();
    assert_eq!(copies_of(&key, &[env.runtime_dir()]), Vec::<String>::new(), "the onion key left in memory");
    assert!(!copies_of(&key, &[env.state_dir()]).is_empty(), "back on the stick");

    // Another service of the same name replaces it from a backup.
    let other = TestEnv::new();
    other.run(&["add", "custom", "--name", "moved", "--local-port", "7001"]).ok();
    let pass = other.root.path().join("passphrase");
    std::fs::write(&pass, "correct horse battery staple\n").unwrap();
    let backup = other.root.path().join("backup.age");
    other.run(&["export", "--output", backup.to_str().unwrap(), "--passphrase-file", pass.to_str().unwrap()]).ok();
    env.run(&[
        "import",
        backup.to_str().unwrap(),
        "--passphrase-file",
        pass.to_str().unwrap(),
        "--on-conflict",
        "replace",
    ])
    .ok();
    assert_eq!(env.service("moved")["address"], other.service("moved")["address"]);
    let dirs = [env.state_dir(), env.runtime_dir()];
    assert_eq!(copies_of(&key, &dirs), Vec::<String>::new(), "the replaced service's onion key");
    assert_eq!(copies_of(&alice, &dirs), Vec::<String>::new(), "the replaced service's client key");
}

#[test]
fn an_import_that_cannot_create_the_runtime_dir_changes_nothing_and_names_it() {
    let source = TestEnv::new();
    source.run(&["add", "web", "--set", "persistence=false"]).ok();
    let pass = source.root.path().join("passphrase");
    std::fs::write(&pass, "correct horse battery staple\n").unwrap();
    let backup = source.root.path().join("backup.age");
    source.run(&["export", "--output", backup.to_str().unwrap(), "--passphrase-file", pass.to_str().unwrap()]).ok();

    // Here, "web" is a persistent service, and the runtime directory cannot be created.
    let target = TestEnv::new();
    target.run(&["add", "web"]).ok();
    let before = target.listing();
    let blocker = target.root.path().join("a-file");
    std::fs::write(&blocker, b"").unwrap();
    let runtime = blocker.join("tails-server");
    let import = |on_conflict: &str| -> common::Run {
        target
            .command()
            .env("TAILS_SERVER_RUNTIME_DIR", &runtime)
            .args(["import", backup.to_str().unwrap(), "--passphrase-file", pass.to_str().unwrap()])
            .args(["--on-conflict", on_conflict])
            .output()
            .unwrap()
            .into()
    };
    import("replace").fails_with(&runtime.display().to_string());
    assert_eq!(target.listing(), before, "the old service is still there, unchanged");
}

/// Completions driven in a real bash, as a shell does on Tab: two words deep, a value
/// list, an option prefix.
#[test]
fn bash_completion_completes_past_the_first_word() {
    let env = TestEnv::new();
    let script = env.root.path().join("tails-server.bash");
    std::fs::write(&script, env.run(&["completions", "bash"]).ok().stdout).unwrap();
    let complete = |words: &[&str]| -> Vec<String> {
        let current = words.len() - 1;
        let program = format!(
            "source {script}\nCOMP_WORDS=({words})\nCOMP_CWORD={current}\n\
             _tails__server tails-server '{cur}' '{prev}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
            script = script.display(),
            words = words.iter().map(|w| format!("'{w}'")).collect::<Vec<_>>().join(" "),
            cur = words[current],
            prev = words[current - 1],
        );
        let out = std::process::Command::new("bash").arg("-c").arg(program).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
    };
    let client = complete(&["tails-server", "client", ""]);
    for verb in ["add", "list", "remove", "show"] {
        assert!(client.iter().any(|w| w == verb), "client <Tab>: {client:?}");
    }
    let forms = complete(&["tails-server", "client", "show", "mumble", "client-1", "--as", ""]);
    for form in ["auth-private", "key", "auth", "qr"] {
        assert!(forms.iter().any(|w| w == form), "--as <Tab>: {forms:?}");
    }
    assert_eq!(complete(&["tails-server", "status", "--pr"]), ["--probe"]);
    assert!(
        !complete(&["tails-server", "add", "--"]).iter().any(|w| w.contains("allow-anyone")),
        "the opt-out stays hidden"
    );
}

/// `tails-server man | head`: a reader that goes away is success, with nothing on stderr.
#[test]
fn a_closed_pipe_is_not_an_error() {
    let env = TestEnv::new();
    for args in [&["man"][..], &["completions", "bash"], &["--format", "json", "catalog"]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = env.command().args(args).stdout(writer).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{args:?}");
    }
}

/// Option bounds from the catalog hold on every way in, and the error says the range.
#[test]
fn integer_options_keep_to_their_bounds() {
    let env = TestEnv::new();
    env.run(&["add", "mumble"]).ok();
    let before = store_state(&env.state_dir());
    for value in ["0", "100000"] {
        env.run(&["set-option", "mumble", "max-users", value]).fails_with("a whole number from 1 to 1000");
    }
    env.run(&["add", "mumble", "--name", "big", "--set", "max-users=5000"]).fails_with("a whole number from 1 to 1000");
    assert_eq!(store_state(&env.state_dir()), before, "nothing stored");
    let set = env.run(&["set-option", "mumble", "max-users", "1000"]).ok();
    assert!(set.stdout.contains("max-users = 1000"), "{}", set.stdout);
    // A drop-in kind with bounds that cannot hold is refused, naming the option.
    let catalog = env.state_dir().join("catalog.d");
    std::fs::create_dir_all(&catalog).unwrap();
    std::fs::write(
        catalog.join("irc.toml"),
        "name = \"irc\"\nname-in-gui = \"IRC\"\ndescription = \"chat\"\nlocal-port = 6667\n\n\
         [options.users]\ntype = \"integer\"\ndefault = 5\ndescription = \"\"\nmin = 10\nmax = 1\n",
    )
    .unwrap();
    env.run(&["catalog"]).fails_with("option `users`: min 10 is above max 1");
}

/// Every command's help describes every argument and option, and keeps the tor connection
/// options under their own heading, after the command's own.
#[test]
fn help_describes_everything_and_puts_tor_options_last() {
    let env = TestEnv::new();
    let mut commands: Vec<Vec<String>> = vec![vec![]];
    let mut seen = 0;
    let mut undescribed = Vec::new();
    while let Some(command) = commands.pop() {
        seen += 1;
        let mut args: Vec<&str> = command.iter().map(String::as_str).collect();
        args.push("-h");
        let help = env.run(&args).ok().stdout;
        let mut section = String::new();
        for line in help.lines() {
            if !line.starts_with(' ') && line.ends_with(':') {
                section = line.to_owned();
                continue;
            }
            // Items start within 6 columns; deeper lines continue a wrapped description.
            let indent = line.len() - line.trim_start().len();
            if indent > 6 {
                continue;
            }
            let item = line.trim();
            let blank = item.starts_with('<') && item.ends_with('>') && !item.contains("  ")
                || item.starts_with('-') && !item.contains("  ") && !item.is_empty();
            if blank {
                undescribed.push(format!("{command:?}: {}", item));
            }
            if section == "Commands:" && indent == 2 && !item.is_empty() {
                let name = item.split_whitespace().next().unwrap();
                if name != "help" {
                    commands.push(command.iter().cloned().chain([name.to_owned()]).collect());
                }
            }
        }
        if help.contains("--control-port") {
            let tor = help.find("Connecting to tor:").unwrap_or_else(|| panic!("{command:?}: no tor heading\n{help}"));
            let options = help.find("Options:").expect("an Options section");
            assert!(options < tor, "{command:?}: the command's options come first\n{help}");
            assert!(!help[options..tor].contains("--control-port"), "{command:?}\n{help}");
        }
    }
    assert!(seen > 25, "every command visited ({seen})");
    assert_eq!(undescribed, Vec::<String>::new(), "arguments and options without a description");
}

/// Small wordings a newcomer met: the kind is not repeated when it is the name, an empty
/// default says "empty", an integer's range is shown where its options are described.
#[test]
fn newcomer_wordings() {
    let env = TestEnv::new();
    let added = env.run(&["add", "mumble"]).ok().stdout;
    assert!(added.starts_with("Added service mumble. It is not enabled yet."), "{added}");
    let other = env.run(&["add", "custom", "--name", "blog", "--local-port", "8080"]).ok().stdout;
    assert!(other.starts_with("Added service blog (custom). It is not enabled yet."), "{other}");
    let details = env.run(&["info", "mumble", "--details"]).ok().stdout;
    assert!(details.contains("integer from 1 to 1000 (default: 10)."), "{details}");
    assert!(details.contains("string (default: empty)."), "{details}");
    assert!(!details.contains("(default: )"), "{details}");
}

/// Each kind says how a friend connects (a Mumble client is not Tor Browser), and where
/// the files of a web site or an SFTP share go, where people look: `add`, `client add`,
/// `info --details`.
#[test]
fn each_kind_says_how_a_friend_connects_and_where_its_files_go() {
    // The steps are wrapped: phrases are looked for in the text with its line breaks undone.
    let flat = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
    let env = TestEnv::new();
    let mumble = env.run(&["add", "mumble"]).ok().stdout;
    assert!(flat(&mumble).contains("How client-1 connects: In a Mumble client, client-1 adds the server"), "{mumble}");
    assert!(flat(&mumble).contains("port 64738") && mumble.contains("client-1.auth_private"), "{mumble}");
    assert!(!mumble.contains("Tor Browser"), "{mumble}");
    let bob = env.run(&["client", "add", "mumble", "bob"]).ok().stdout;
    assert!(flat(&bob).contains("In a Mumble client, bob adds") && bob.contains("bob.auth_private"), "{bob}");
    let steps = bob.split("How bob connects:\n").nth(1).unwrap();
    assert!(steps.lines().all(|l| l.starts_with("    ") && l.len() <= 88), "wrapped and indented: {steps}");

    let web = env.run(&["add", "web", "--name", "site"]).ok().stdout;
    let address = env.service("site")["address"].as_str().unwrap().to_owned();
    assert!(flat(&web).contains(&format!("client-1 opens http://{address}/ in Tor Browser")), "{web}");
    let folder = env.state_dir().join("data/site/site");
    assert!(web.contains(&format!("Put the files it serves in {}\n", folder.display())), "{web}");
    let details = env.run(&["info", "site", "--details"]).ok().stdout;
    assert!(details.contains(&format!("Files:     {}\n", folder.display())), "{details}");
    assert!(flat(&details).contains("How a client (CLIENT) connects: CLIENT opens http://"), "{details}");

    let sftp = flat(&env.run(&["add", "sftp"]).ok().stdout);
    assert!(sftp.contains("torsocks sftp -P 22 tails-server-sftp@") && sftp.contains("authorized-keys"), "{sftp}");
    assert!(sftp.contains(&format!("{}", env.state_dir().join("data/sftp/files").display())), "{sftp}");

    // An amnesic service's files are in the runtime directory's `files/`, the folder the
    // system service's unit bounds (a tmpfs of its own on Tails), never beside its stores.
    let amnesic = env.run(&["add", "web", "--name", "ram", "--set", "persistence=false"]).ok().stdout;
    let folder = env.runtime_dir().join("files/data/ram/site");
    assert!(amnesic.contains(&format!("Put the files it serves in {}\n", folder.display())), "{amnesic}");
}

/// `status` when tor cannot be asked says so on every line it cannot fill, instead of
/// "not probed" after --probe or a bare "unknown" that reads like a claim.
#[test]
fn status_without_tor_says_why_each_answer_is_unknown() {
    let env = TestEnv::new();
    env.run(&["add", "custom", "--name", "web", "--local-port", "8080"]).ok();
    let out = env.run(&["--control-port", "127.0.0.1:1", "status", "web", "--probe"]).exits(3).stdout;
    for line in [
        "registered: unknown (tor cannot be asked",
        "uploaded:   unknown (tor cannot be asked",
        "reachable:  unknown (tor cannot be asked",
    ] {
        assert!(out.contains(line), "{line:?} in:\n{out}");
    }
    assert!(!out.contains("not probed"), "{out}");
    assert!(out.contains("  tor:        cannot reach tor's control port at 127.0.0.1:1"), "{out}");
}

/// A service's data goes with it: removing an SFTP service overwrites the host key its
/// program made, then deletes the rest with the files people shared. `--keep-data` sets it
/// all aside instead, where a later service of the same name never gets it.
#[test]
fn removing_a_service_deletes_its_data_unless_the_person_keeps_it() {
    let env = TestEnv::new();
    let data = env.state_dir().join("data/share");
    let plant = || {
        std::fs::create_dir_all(data.join("files")).unwrap();
        std::fs::write(data.join("files/notes.txt"), b"shared").unwrap();
        std::fs::write(data.join("ssh_host_ed25519_key"), b"-----BEGIN OPENSSH PRIVATE KEY----- made up").unwrap();
        std::fs::write(data.join("ssh_host_ed25519_key.pub"), b"ssh-ed25519 AAAA made up").unwrap();
    };
    env.run(&["add", "sftp", "--name", "share"]).ok();
    plant();
    // A second name for the key's blocks shows whether they were overwritten.
    let witness = env.root.path().join("witness");
    std::fs::hard_link(data.join("ssh_host_ed25519_key"), &witness).unwrap();
    let out = env.run(&["remove", "--yes", "share"]).ok();
    assert!(out.stdout.contains("and its data is deleted"), "{}", out.stdout);
    assert!(!data.exists(), "the data of a removed service stays under its name");
    assert!(std::fs::read(&witness).unwrap().iter().all(|&b| b == 0), "the key's bytes were overwritten");

    env.run(&["add", "sftp", "--name", "share"]).ok();
    plant();
    let out = env.run(&["--format", "json", "remove", "--yes", "--keep-data", "share"]).ok().json();
    let kept = std::path::PathBuf::from(out["removed"]["data-kept-at"].as_str().unwrap_or_else(|| panic!("{out}")));
    assert!(kept.starts_with(env.state_dir().join("kept-data")), "{}", kept.display());
    assert_eq!(std::fs::read(kept.join("files/notes.txt")).unwrap(), b"shared");
    assert!(std::fs::read(kept.join("ssh_host_ed25519_key")).unwrap().starts_with(b"-----BEGIN"));
    assert!(!data.exists(), "kept data stays under the removed service's name");

    // What is kept is listed, and deleted when the person says so: the key's bytes
    // overwritten first, as `remove` does.
    let id = kept.file_name().unwrap().to_str().unwrap().to_owned();
    let listed = env.run(&["--format", "json", "kept-data", "list"]).ok().json();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!((&listed[0]["id"], &listed[0]["service"]), (&id.clone().into(), &"share".into()), "{listed}");
    assert_eq!(listed[0]["persistent"], true);
    let bytes = "shared".len() + "-----BEGIN OPENSSH PRIVATE KEY----- made up".len() + "ssh-ed25519 AAAA made up".len();
    assert_eq!(listed[0]["bytes"], bytes, "{listed}");
    let text = env.run(&["kept-data", "list"]).ok().stdout;
    assert!(
        text.starts_with("KEPT") && text.contains(&id) && text.contains("  share  ") && text.contains("persistent"),
        "{text}"
    );
    std::fs::hard_link(kept.join("ssh_host_ed25519_key"), witness.with_extension("kept")).unwrap();
    // Refused without a terminal to confirm on, or with an id that is not there: nothing
    // is deleted, not even the ids that are.
    env.run(&["kept-data", "delete", &id]).fails_with("add --yes to confirm");
    env.run(&["kept-data", "delete", "--yes", &id, "share-1"]).fails_with("there is no kept data named \"share-1\"");
    assert!(kept.join("files/notes.txt").exists(), "nothing deleted");
    let deleted = env.run(&["kept-data", "delete", "--yes", &id]).ok().stdout;
    assert!(deleted.starts_with(&format!("Deleted {id} (")), "{deleted}");
    assert!(!kept.exists());
    assert!(std::fs::read(witness.with_extension("kept")).unwrap().iter().all(|&b| b == 0), "the key overwritten");
    assert_eq!(env.run(&["--format", "json", "kept-data", "list"]).ok().json(), serde_json::json!([]));
    let empty = env.run(&["kept-data", "list"]).ok();
    assert!(empty.stdout.is_empty() && empty.stderr.contains("Nothing is kept"), "{}", empty.stderr);
}

/// A service removed by mistake with its data kept, and added again at a new address: the
/// kept data is given to it, once it is off and has none of its own; its program then starts
/// with it, recorded as the new address's.
#[test]
fn kept_data_is_given_back_to_a_service_added_again() {
    let env = TestEnv::new();
    let data = env.state_dir().join("data/share");
    env.run(&["add", "sftp", "--name", "share"]).ok();
    std::fs::create_dir_all(data.join("files")).unwrap();
    std::fs::write(data.join("files/notes.txt"), b"shared").unwrap();
    env.run(&["remove", "--yes", "--keep-data", "share"]).ok();
    let id = env.run(&["--format", "json", "kept-data", "list"]).ok().json()[0]["id"].as_str().unwrap().to_owned();
    env.run(&["add", "sftp", "--name", "share"]).ok();
    let address = env.service("share")["address"].as_str().unwrap().to_owned();

    // Refused, naming why, with nothing moved: an enabled service, one with data of its own,
    // one in the other store, one that is not there, kept data that is not there.
    let no_tor = env.root.path().join("no-tor");
    let run = |args: &[&str]| -> common::Run {
        env.command().arg("--control-socket").arg(&no_tor).args(args).output().unwrap().into()
    };
    assert!([0, 3].contains(&run(&["enable", "share"]).code));
    env.run(&["kept-data", "give", &id, "share"]).fails_with("it is enabled: disable it first");
    assert!([0, 3].contains(&run(&["disable", "share"]).code));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("made-since"), b"new").unwrap();
    env.run(&["kept-data", "give", &id, "share"]).fails_with("it has data of its own");
    std::fs::remove_file(data.join("made-since")).unwrap();
    env.run(&["add", "custom", "--name", "ram", "--local-port", "9000", "--set", "persistence=false"]).ok();
    env.run(&["kept-data", "give", &id, "ram"]).fails_with("kept in the persistent store and ram is amnesic");
    env.run(&["kept-data", "give", &id, "nobody"]).fails_with("no service named \"nobody\"");
    env.run(&["kept-data", "give", "share-1", "share"]).fails_with("no kept data named \"share-1\"");
    assert_eq!(env.run(&["--format", "json", "kept-data", "list"]).ok().json()[0]["id"], id.as_str());

    let given = env.run(&["kept-data", "give", &id, "share"]).ok().stdout;
    assert!(given.starts_with(&format!("{id} (6 B, the data of share) is now share's")), "{given}");
    assert_eq!(std::fs::read(data.join("files/notes.txt")).unwrap(), b"shared");
    let owner = std::fs::read_to_string(env.state_dir().join("data/share.owner")).unwrap();
    assert_eq!(owner.trim(), address, "recorded as the new address's: its program's start keeps it");
    assert_eq!(env.run(&["--format", "json", "kept-data", "list"]).ok().json(), serde_json::json!([]));
}

/// The friend's side from the command line: every form of a received key is kept, bad ones
/// are refused with the reason and change nothing, and no command shows the key again.
#[test]
fn received_keys_are_kept_listed_and_forgotten_with_clear_errors() {
    let owner = TestEnv::new();
    for name in ["blog", "chat"] {
        owner.run(&["add", "custom", "--name", name, "--local-port", "8080"]).ok();
    }
    let line = owner.run(&["client", "show", "blog", "client-1"]).ok().stdout;
    let bare = owner.run(&["client", "show", "chat", "client-1", "--as", "key"]).ok().stdout;
    let public = owner.run(&["client", "show", "chat", "client-1", "--as", "auth"]).ok().stdout;
    let chat = owner.service("chat")["address"].as_str().unwrap().to_owned();
    let env = TestEnv::new();
    let no_tor = env.root.path().join("no-tor");
    let run = |args: &[&str], input: Option<&str>| -> common::Run {
        let mut command = env.command();
        command.arg("--control-socket").arg(&no_tor).args(args);
        let Some(input) = input else { return command.output().unwrap().into() };
        command.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
        command.stderr(std::process::Stdio::piped());
        let mut child = command.spawn().unwrap();
        // A command that refuses before reading its input may be gone already (EPIPE): what
        // it said is what is checked.
        let _ = std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes());
        child.wait_with_output().unwrap().into()
    };
    let file = |name: &str, text: &str| {
        let path = env.root.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };

    let added = run(&["key", "add", "blog-of-alice", &file("alice.txt", &line)], None);
    assert_eq!(added.code, 3, "kept, tor to be told later: {}", added.stderr);
    assert!(added.stdout.starts_with("Kept key blog-of-alice for "), "{}", added.stdout);
    assert!(added.stderr.contains("tor does not have key blog-of-alice yet"), "{}", added.stderr);

    let before = common::store_state(&env.state_dir());
    for (args, input, why) in [
        (vec!["key", "add", "x", line.trim()], None, "refusing a key on the command line"),
        (vec!["key", "add", "x", "-"], Some(public.as_str()), "public key"),
        (vec!["key", "add", "x", "-"], Some(bare.as_str()), "give the address too (--address"),
        (vec!["key", "add", "x", "-"], Some(""), "no key was given"),
        (vec!["key", "add", "x", "-"], Some(line.as_str()), "already kept as \"blog-of-alice\""),
        (vec!["key", "add", "blog-of-alice", "-"], Some(bare.as_str()), "a key named \"blog-of-alice\""),
        (vec!["key", "add", "x", "--address", chat.as_str(), "-"], Some(line.as_str()), "it is for"),
        (vec!["key", "add", "X", "-"], Some(line.as_str()), "invalid key name"),
        (vec!["key", "show", "nobody"], None, "no kept key named \"nobody\""),
        (vec!["key", "remove", "nobody"], None, "no kept key named \"nobody\""),
    ] {
        run(&args, input).fails_with(why);
    }
    assert_eq!(common::store_state(&env.state_dir()), before, "refusals change nothing");

    let added = run(&["key", "add", "chat", "--address", &chat, "--until-shutdown", "-"], Some(&bare));
    assert_eq!(added.code, 3, "{}", added.stderr);
    let listed = run(&["--format", "json", "key", "list"], None).ok().json();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    assert_eq!(listed[1]["name"], "chat");
    assert_eq!(listed[1]["address"], chat.as_str());
    assert_eq!(listed[1]["persistent"], false);
    let shown = run(&["key", "show", "chat"], None).ok().stdout;
    assert!(shown.contains(&format!("service: {chat}")) && shown.contains("kept: until shutdown"), "{shown}");
    for out in [listed.to_string(), shown, run(&["key", "list"], None).ok().stdout] {
        assert!(!out.contains(bare.trim()), "a kept key is never shown again: {out}");
    }
    // Exit 3 still: tor is yet to get the other key.
    let removed = run(&["key", "remove", "chat"], None);
    assert_eq!(removed.code, 3, "{}", removed.stderr);
    assert!(removed.stdout.starts_with("Forgot key chat for "), "{}", removed.stdout);
    let left = run(&["--format", "json", "key", "list"], None).ok().json();
    assert_eq!(left.as_array().unwrap().len(), 1, "{left}");
}

/// An export passphrase typed differently the second time is asked again (three tries in
/// all), and a short one is warned about before it is confirmed; nothing is written until
/// the two entries agree.
#[test]
fn a_mismatched_export_passphrase_is_asked_again() {
    let env = TestEnv::new();
    env.run(&["add", "gobby"]).ok();
    let backup = env.root.path().join("backup.age");
    let args = ["export", "--output", backup.to_str().unwrap()];
    let (run, shown) = run_on_terminal(&env, &args, "Passphrase", &["short", "shrot", "short", "short"]);
    let run = run.ok();
    assert_eq!(shown.matches("Passphrase: ").count(), 2, "{shown}");
    assert!(run.stderr.contains("the two passphrases differ; once more"), "{}", run.stderr);
    assert_eq!(run.stderr.matches("this passphrase is short (5 characters)").count(), 2, "{}", run.stderr);
    assert!(backup.exists());
    assert!(!shown.contains("short") && !shown.contains("shrot"), "echoed: {shown}");

    std::fs::remove_file(&backup).unwrap();
    let (run, _) = run_on_terminal(&env, &args, "Passphrase", &["a long passphrase", "b", "c", "d", "e", "f"]);
    run.fails_with("the two passphrases differed 3 times; nothing was written");
    assert!(!backup.exists(), "nothing written");
}

/// The same in real fish and zsh (zsh's completion system only runs on a terminal: a zpty
/// one, driven by tests/completions/capture.zsh).
#[test]
fn fish_and_zsh_completion_complete_past_the_first_word() {
    let env = TestEnv::new();
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_tails-server")).parent().unwrap().to_owned();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let fish_script = env.root.path().join("tails-server.fish");
    std::fs::write(&fish_script, env.run(&["completions", "fish"]).ok().stdout).unwrap();
    let zsh_dir = env.root.path().join("zsh");
    std::fs::create_dir(&zsh_dir).unwrap();
    std::fs::write(zsh_dir.join("_tails-server"), env.run(&["completions", "zsh"]).ok().stdout).unwrap();
    let capture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/completions/capture.zsh");

    let fish = |line: &str| -> Vec<String> {
        let program = format!("source {}; complete -C '{line}'", fish_script.display());
        let out = std::process::Command::new("fish")
            .args(["--no-config", "-c", &program])
            .env("PATH", &path)
            .output()
            .expect("fish is installed (scripts/deps)");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().map(|l| l.split('\t').next().unwrap().to_owned()).collect()
    };
    let zsh = |line: &str| -> Vec<String> {
        let out = std::process::Command::new("timeout")
            .arg("20")
            .arg("zsh")
            .arg("-f")
            .arg(&capture)
            .arg(&zsh_dir)
            .arg(line)
            .env("PATH", &path)
            .output()
            .expect("zsh is installed (scripts/deps)");
        assert!(out.status.success(), "zsh: {}", String::from_utf8_lossy(&out.stderr));
        let mut words: Vec<String> =
            String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_owned).collect();
        words.sort();
        words.dedup();
        words
    };
    for (shell, complete) in [("fish", &fish as &dyn Fn(&str) -> Vec<String>), ("zsh", &zsh)] {
        let client = complete("tails-server client ");
        for verb in ["add", "list", "remove", "show"] {
            assert!(client.iter().any(|w| w == verb), "{shell}: client <Tab>: {client:?}");
        }
        let keys = complete("tails-server key ");
        for verb in ["add", "list", "remove", "show"] {
            assert!(keys.iter().any(|w| w == verb), "{shell}: key <Tab>: {keys:?}");
        }
        let forms = complete("tails-server client show mumble client-1 --as ");
        for form in ["auth-private", "key", "auth", "qr"] {
            assert!(forms.iter().any(|w| w == form), "{shell}: --as <Tab>: {forms:?}");
        }
        assert_eq!(complete("tails-server status --pr"), ["--probe"], "{shell}");
        let options = complete("tails-server add --");
        assert!(options.iter().any(|w| w == "--local-port"), "{shell}: {options:?}");
        assert!(!options.iter().any(|w| w.contains("allow-anyone")), "{shell}: the opt-out stays hidden");
    }
}

/// `socks-probe` (what the system service runs as nobody for `status --probe`): one request
/// on stdin, tor's SOCKS answer on stdout. Here against a stand-in for tor's SocksPort that
/// refuses as tor does without a client key (0xF4); the same code meets real tor in the
/// container suite's `status --probe`.
#[test]
fn the_probe_helper_reports_the_socks_answer_to_the_request_on_its_standard_input() {
    use std::io::{Read, Write};
    let socks = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = socks.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = socks.accept().unwrap();
        let mut greeting = [0u8; 3];
        s.read_exact(&mut greeting).unwrap();
        s.write_all(&[5, 0]).unwrap();
        let mut head = [0u8; 5];
        s.read_exact(&mut head).unwrap();
        let mut rest = vec![0u8; head[4] as usize + 2];
        s.read_exact(&mut rest).unwrap();
        s.write_all(&[5, 0xF4, 0, 1, 0, 0, 0, 0, 0, 0]).unwrap();
        String::from_utf8(rest[..head[4] as usize].to_vec()).unwrap()
    });
    let env = TestEnv::new();
    let ask = |request: &str| {
        let mut child = env
            .command()
            .arg("socks-probe")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(request.as_bytes()).unwrap();
        String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap()
    };
    assert_eq!(ask(&format!("127.0.0.1:{port} example.onion 80\n")), "244\n");
    assert_eq!(server.join().unwrap(), "example.onion", "the host came from stdin");
    assert_eq!(ask("127.0.0.1:1 example.onion 80\n").lines().next().map(|l| l.starts_with("error: ")), Some(true));
    assert_eq!(ask("nonsense\n"), "error: expected PROXY HOST PORT\n");
}
