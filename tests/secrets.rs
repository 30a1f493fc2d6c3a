//! Where secrets go during a whole scenario against a real tor — add, clients, a password,
//! enable, the daemon across a tor restart, export, import, a kept key, a credential file:
//! every process tails-server runs or starts is traced (strace, execve with its full argv
//! and environment), and no onion key, client key, password or passphrase appears there,
//! in anything printed on stderr or logged, or in any file outside the stores and the
//! outputs asked for. Every file of the stores is private (no group or other bits).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{onion_key_blob, LocalTor, TestEnv};

/// Runs the CLI under strace (execve of it and of every process it starts, argv and
/// environment in full), each run traced to a file of its own in `traces`.
fn traced(env: &TestEnv, traces: &Path, args: &[&str], stdin: Option<&str>) -> common::Run {
    let base = env.command();
    let n = std::fs::read_dir(traces).unwrap().count();
    let mut command = Command::new("strace");
    command
        .args(["-f", "-qq", "-v", "-s", "100000", "-e", "trace=execve", "-o"])
        .arg(traces.join(format!("{n}.trace")))
        .arg(base.get_program())
        .args(args)
        .env_clear();
    for (key, value) in base.get_envs() {
        if let Some(value) = value {
            command.env(key, value);
        }
    }
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().expect("strace is installed (scripts/deps)");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin.unwrap_or_default().as_bytes()).unwrap();
    child.wait_with_output().unwrap().into()
}

/// Every form a 32- or 64-byte secret may be written in.
fn forms(raw: &[u8]) -> Vec<Vec<u8>> {
    vec![
        raw.to_vec(),
        data_encoding::BASE64.encode(raw).into_bytes(),
        data_encoding::BASE64_NOPAD.encode(raw).into_bytes(),
        data_encoding::BASE32_NOPAD.encode(raw).into_bytes(),
        data_encoding::BASE32_NOPAD.encode(raw).to_lowercase().into_bytes(),
        data_encoding::HEXLOWER.encode(raw).into_bytes(),
    ]
}

fn holds(haystack: &[u8], needles: &[(String, Vec<u8>)]) -> Vec<String> {
    needles
        .iter()
        .filter(|(_, needle)| haystack.windows(needle.len()).any(|w| w == &needle[..]))
        .map(|(what, _)| what.clone())
        .collect()
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            found.push(path.clone());
            found.extend(files(&path));
        } else {
            found.push(path);
        }
    }
    found
}

#[test]
fn no_secret_leaves_the_stores_and_the_outputs_asked_for() {
    let mut tor = LocalTor::start();
    let env = TestEnv::new();
    let root = env.root.path();
    let traces = root.join("traces");
    let out = root.join("out");
    std::fs::create_dir_all(&traces).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    let control = tor.control();
    let mut stderr = String::new();
    let mut run = |args: &[&str], stdin: Option<&str>| {
        let mut all = vec!["--control-port", control.as_str()];
        all.extend_from_slice(args);
        let result = traced(&env, &traces, &all, stdin);
        assert!(result.code == 0 || result.code == 3, "{args:?}: {}", result.stderr);
        stderr.push_str(&result.stderr);
        result
    };

    let password = "hunter2-is-the-mumble-password";
    let passphrase = "correct horse battery staple, a long one";
    run(&["add", "mumble"], None);
    run(&["add", "custom", "--name", "blog", "--local-port", "8080"], None);
    run(&["client", "add", "mumble", "alice"], None);
    run(&["set-option", "mumble", "server-password", "-"], Some(&format!("{password}\n")));
    run(&["enable", "mumble"], None);
    run(&["enable", "blog"], None);
    let alice = run(&["client", "show", "mumble", "alice", "--as", "key"], None).stdout.trim().to_owned();
    let first = run(&["client", "show", "blog", "client-1", "--as", "key"], None).stdout.trim().to_owned();
    let credential = out.join("alice.auth_private");
    run(&["client", "show", "mumble", "alice", "--output", credential.to_str().unwrap()], None);
    let pass = out.join("passphrase");
    std::fs::write(&pass, format!("{passphrase}\n")).unwrap();
    let backup = out.join("backup.age");
    run(&["export", "--output", backup.to_str().unwrap(), "--passphrase-file", pass.to_str().unwrap()], None);

    // The daemon, traced too, across a tor restart.
    let base = env.command();
    let daemon_log = root.join("daemon.log");
    let mut daemon = Command::new("strace");
    daemon
        .args(["-f", "-qq", "-v", "-s", "100000", "-e", "trace=execve", "-o"])
        .arg(traces.join("daemon.trace"))
        .arg(base.get_program())
        .args(["--control-port", &control, "daemon"])
        .env_clear()
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&daemon_log).unwrap());
    for (key, value) in base.get_envs() {
        if let Some(value) = value {
            daemon.env(key, value);
        }
    }
    let mut daemon = common::KillOnDrop(daemon.spawn().unwrap());
    let ids = tor.detached();
    tor.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    while tor.try_detached().is_none_or(|d| !ids.is_subset(&d)) {
        assert!(Instant::now() < deadline, "not republished");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(common::terminate_traced(&mut daemon).success(), "the daemon exits 0 on SIGTERM");

    // Import into a second store, and keep a key on the friend's side in a third.
    let elsewhere = TestEnv::new();
    let imported = traced(
        &elsewhere,
        &traces,
        // As the backup has it (enabled services published at once: their keys cross to tor).
        &[
            "--control-port",
            &control,
            "import",
            backup.to_str().unwrap(),
            "--passphrase-file",
            pass.to_str().unwrap(),
            "--accept-lower-protection",
        ],
        None,
    );
    assert!(imported.code == 0 || imported.code == 3, "{}", imported.stderr);
    stderr.push_str(&imported.stderr);
    let friend = TestEnv::new();
    let kept = traced(
        &friend,
        &traces,
        &["--control-port", &control, "key", "add", "alice", "-"],
        Some(&std::fs::read_to_string(&credential).unwrap()),
    );
    assert_eq!(kept.code, 0, "{}", kept.stderr);
    stderr.push_str(&kept.stderr);

    // What must not leak, in every form.
    let mut secrets: Vec<(String, Vec<u8>)> = Vec::new();
    for service in ["mumble", "blog"] {
        let blob = onion_key_blob(&env.state_dir(), &env.runtime_dir(), service);
        let raw = data_encoding::BASE64.decode(blob.trim_start_matches("ED25519-V3:").as_bytes()).unwrap();
        secrets.extend(forms(&raw).into_iter().map(|f| (format!("{service}'s onion key"), f)));
    }
    for (who, key) in [("alice", &alice), ("client-1 of blog", &first)] {
        let raw = data_encoding::BASE32_NOPAD.decode(key.as_bytes()).unwrap();
        secrets.extend(forms(&raw).into_iter().map(|f| (format!("{who}'s key"), f)));
    }
    secrets.push(("the Mumble password".into(), password.as_bytes().to_vec()));
    secrets.push(("the passphrase".into(), passphrase.as_bytes().to_vec()));

    // 1. No argv or environment of any process run.
    let mut execs = 0;
    for trace in files(&traces) {
        let text = std::fs::read(&trace).unwrap();
        execs += text.windows(6).filter(|w| w == b"execve").count();
        let found = holds(&text, &secrets);
        assert!(found.is_empty(), "{} in the argv or environment traced in {}", found.join(", "), trace.display());
    }
    assert!(execs >= 13, "every command was traced ({execs} execve)");
    // 2. Nothing printed on stderr or logged.
    stderr.push_str(&std::fs::read_to_string(&daemon_log).unwrap());
    let found = holds(stderr.as_bytes(), &secrets);
    assert!(found.is_empty(), "{} on stderr or in the daemon's log:\n{stderr}", found.join(", "));
    // 3. No file outside the stores and the outputs asked for.
    for test_env in [&env, &elsewhere, &friend] {
        for path in files(test_env.root.path()) {
            let inside_store = path.starts_with(test_env.state_dir()) || path.starts_with(test_env.runtime_dir());
            let asked_for = path.starts_with(&out) || path.starts_with(&traces) || path == daemon_log;
            if path.is_dir() || inside_store || asked_for {
                continue;
            }
            let found = holds(&std::fs::read(&path).unwrap(), &secrets);
            assert!(found.is_empty(), "{} in {}", found.join(", "), path.display());
        }
        // 4. The stores are private.
        for dir in [test_env.state_dir(), test_env.runtime_dir()] {
            for path in files(&dir) {
                let mode = std::fs::symlink_metadata(&path).unwrap().permissions().mode();
                assert_eq!(mode & 0o077, 0, "{} is mode {:o}", path.display(), mode & 0o777);
            }
        }
    }
    for output in [&credential, &backup] {
        assert_eq!(std::fs::metadata(output).unwrap().permissions().mode() & 0o777, 0o600, "{}", output.display());
    }
    eprintln!("{execs} execve traced, {} secret forms looked for", secrets.len());
}
