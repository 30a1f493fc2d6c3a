//! kill -9 at every point where a change touches the disk. Each changing command (add,
//! client add, set-option, enable, remove, import into both stores, a move between the
//! stores) is run again and again under strace, killed
//! (SIGKILL, injected by strace) at its 1st, 2nd, 3rd… write, fsync, rename or unlink until
//! a run gets through; after every kill a new process must open the store and find the
//! change fully present or fully absent, every acknowledged change present, and every
//! onion address unchanged. Not random moments: every moment, in order.
//!
//! One pass over the commands is the CI's short version; `./scripts/torture ROUNDS` runs
//! more passes (TAILS_SERVER_TORTURE_PASSES) and prints the counts.

mod common;

use std::collections::BTreeMap;

use common::TestEnv;

/// The syscalls at which a run is killed: everything by which the store reaches the disk.
const KILL_POINTS: &str =
    "write,pwrite64,writev,pwritev,fsync,fdatasync,sync_file_range,rename,renameat,renameat2,unlink,unlinkat";

/// What the torture checks of a service: what must never be half-changed.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    address: String,
    enabled: bool,
    autostart: bool,
    persistent: bool,
    clients: Vec<String>,
}

type State = BTreeMap<String, Seen>;

fn state(env: &TestEnv) -> State {
    let out = env.run(&["--format", "json", "list"]);
    assert_eq!(out.code, 0, "the store does not open after a kill: {}", out.stderr);
    let mut state = State::new();
    for service in out.json().as_array().unwrap() {
        let mut clients: Vec<String> =
            service["clients"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_owned()).collect();
        clients.sort();
        state.insert(
            service["name"].as_str().unwrap().to_owned(),
            Seen {
                address: service["address"].as_str().unwrap().to_owned(),
                enabled: service["enabled"].as_bool().unwrap(),
                autostart: service["options"]["autostart"].as_bool().unwrap(),
                persistent: service["options"]["persistence"].as_bool().unwrap(),
                clients,
            },
        );
    }
    state
}

#[derive(Default, Debug)]
struct Counts {
    kills: usize,
    present: usize,
    absent: usize,
    completed: usize,
    recoveries: usize,
}

/// Runs a command killed at each point in turn until a run completes. For each point,
/// `prepare` sets up what the command needs (unkilled) and returns its arguments, fresh
/// ones, so that a change a killed run left present does not change the next run;
/// `changed(point, before, after)` says whether `after` is `before` with the change made.
fn torture(
    env: &TestEnv,
    counts: &mut Counts,
    prepare: impl Fn(usize) -> Vec<String>,
    changed: impl Fn(usize, &State, &State) -> bool,
) {
    for point in 1.. {
        let args = prepare(point);
        let before = state(env);
        let out = std::process::Command::new("strace")
            .args(["-f", "-qq", "-o", "/dev/null", "-e", &format!("trace={KILL_POINTS}")])
            .args(["-e", &format!("inject={KILL_POINTS}:signal=KILL:when={point}")])
            .arg(env!("CARGO_BIN_EXE_tails-server"))
            .args(&args)
            .envs(env.command().get_envs().filter_map(|(k, v)| Some((k, v?))))
            .stdin(std::process::Stdio::null())
            .output()
            .expect("strace runs (scripts/deps installs it)");
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("WARNING") && stderr.contains("was damaged") {
            counts.recoveries += 1;
        }
        let after = state(env);
        if out.status.code().is_some() && out.status.code() != Some(128 + 9) {
            // Exit 3: stored, tor not updated (there is no tor here).
            let code = out.status.code().unwrap();
            assert!(code == 0 || code == 3, "{args:?} failed ({code}) at kill point {point}: {stderr}");
            assert!(changed(point, &before, &after), "{args:?} acknowledged but not stored:\n{before:?}\n{after:?}");
            counts.completed += 1;
            return;
        }
        counts.kills += 1;
        for (name, seen) in &before {
            if let Some(now) = after.get(name) {
                assert_eq!(now.address, seen.address, "{name}'s address changed after a kill at point {point}");
            }
        }
        if after == before {
            counts.absent += 1;
        } else if changed(point, &before, &after) {
            counts.present += 1;
        } else {
            panic!("{args:?} killed at point {point} left a half change:\nbefore {before:?}\nafter  {after:?}");
        }
    }
}

/// Runs a preparing command, not killed: stored is enough (exit 3 says tor, absent here,
/// was not updated).
fn stored(env: &TestEnv, args: &[&str]) {
    let out = env.run(args);
    assert!(out.code == 0 || out.code == 3, "{args:?}: {}", out.stderr);
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// A backup of two services, one persistent and one not: importing it writes to both
/// stores. Encrypted with a low scrypt work factor, so that the many imports stay quick.
struct TwoStoreBackup {
    file: std::path::PathBuf,
    passphrase: std::path::PathBuf,
    services: State,
}

fn two_store_backup(env: &TestEnv) -> TwoStoreBackup {
    let source = TestEnv::new();
    source.run(&["add", "custom", "--name", "imported", "--local-port", "7001"]).ok();
    let ram = ["add", "custom", "--name", "imported-ram", "--local-port", "7002", "--set", "persistence=false"];
    source.run(&ram).ok();
    let passphrase = env.root.path().join("backup-passphrase");
    std::fs::write(&passphrase, "torture passphrase\n").unwrap();
    let exported = source.root.path().join("exported");
    let (exported_arg, passphrase_arg) = (exported.to_str().unwrap(), passphrase.to_str().unwrap());
    source.run(&["export", "--output", exported_arg, "--passphrase-file", passphrase_arg]).ok();
    let document =
        tails_server_core::backup::decrypt(&std::fs::read(&exported).unwrap(), "torture passphrase").unwrap();
    let file = env.root.path().join("two-stores.age");
    std::fs::write(&file, common::age_encrypt(&document.to_json(), "torture passphrase")).unwrap();
    TwoStoreBackup { file, passphrase, services: state(&source) }
}

/// One pass: every changing command, each at every kill point. `tag` keeps names apart.
fn pass(env: &TestEnv, counts: &mut Counts, tag: usize, backup: &TwoStoreBackup) {
    let service = format!("t{tag}");
    env.run(&["add", "custom", "--name", &service, "--local-port", "9000"]).ok();
    let added = |point: usize| format!("t{tag}-add{point}");
    torture(
        env,
        counts,
        |point| strings(&["add", "custom", "--name", &added(point), "--local-port", &(10000 + point).to_string()]),
        |point, before, after| {
            let Some(new) = after.get(&added(point)) else { return false };
            let mut expected = before.clone();
            expected.insert(added(point), Seen { clients: vec!["client-1".into()], ..new.clone() });
            *after == expected && !new.enabled && new.autostart
        },
    );
    let client = |point: usize| format!("friend{point}");
    torture(
        env,
        counts,
        |point| strings(&["client", "add", &service, &client(point)]),
        |point, before, after| {
            let mut expected = before.clone();
            let seen = expected.get_mut(&service).unwrap();
            seen.clients.push(client(point));
            seen.clients.sort();
            *after == expected
        },
    );
    let toggled = |before: &State| !before[&service].autostart;
    torture(
        env,
        counts,
        |_| {
            let value = toggled(&state(env));
            strings(&["set-option", &service, "autostart", &value.to_string()])
        },
        |_, before, after| {
            let mut expected = before.clone();
            expected.get_mut(&service).unwrap().autostart = toggled(before);
            *after == expected
        },
    );
    let verb = |before: &State| if before[&service].enabled { "disable" } else { "enable" };
    torture(
        env,
        counts,
        |_| strings(&[verb(&state(env)), &service]),
        |_, before, after| {
            let mut expected = before.clone();
            expected.get_mut(&service).unwrap().enabled = !before[&service].enabled;
            *after == expected
        },
    );
    let victim = |point: usize| format!("victim{point}");
    torture(
        env,
        counts,
        |point| {
            stored(env, &["client", "add", &service, &victim(point)]);
            strings(&["client", "remove", &service, &victim(point)])
        },
        |point, before, after| {
            let mut expected = before.clone();
            expected.get_mut(&service).unwrap().clients.retain(|c| *c != victim(point));
            *after == expected
        },
    );
    let removed = |point: usize| format!("t{tag}-rm{point}");
    torture(
        env,
        counts,
        |point| {
            stored(env, &["add", "custom", "--name", &removed(point), "--local-port", "9001"]);
            strings(&["remove", "--yes", &removed(point)])
        },
        |point, before, after| {
            let mut expected = before.clone();
            expected.remove(&removed(point));
            *after == expected
        },
    );
    torture(
        env,
        counts,
        |_| {
            for name in backup.services.keys() {
                if state(env).contains_key(name) {
                    stored(env, &["remove", "--yes", name]);
                }
            }
            let (file, passphrase) = (backup.file.to_str().unwrap(), backup.passphrase.to_str().unwrap());
            strings(&["import", file, "--passphrase-file", passphrase])
        },
        |_, before, after| {
            let mut expected = before.clone();
            expected.extend(backup.services.clone());
            *after == expected
        },
    );
    let moved = format!("t{tag}-mv");
    stored(env, &["add", "custom", "--name", &moved, "--local-port", "9002"]);
    let persistent = |state: &State| state[&moved].persistent;
    torture(
        env,
        counts,
        |_| strings(&["set-option", &moved, "persistence", &(!persistent(&state(env))).to_string()]),
        |_, before, after| {
            let mut expected = before.clone();
            expected.get_mut(&moved).unwrap().persistent = !persistent(before);
            *after == expected
        },
    );
}

#[test]
fn kill_9_at_every_write_loses_no_acknowledged_change_and_leaves_no_half_change() {
    let env = TestEnv::new();
    // The store at its bound around the services being changed: 20 services (these and the
    // pass's) of 32 clients each, so that every kill also lands in a store of that size.
    for i in 0..16 {
        let name = if i == 0 { "keep".to_owned() } else { format!("bg{i}") };
        env.run(&["add", "custom", "--name", &name, "--local-port", &(8000 + i).to_string()]).ok();
        for c in 2..=32 {
            env.run(&["client", "add", &name, &format!("friend{c}")]).ok();
        }
    }
    let keep = state(&env)["keep"].clone();
    assert_eq!(keep.clients.len(), 32);
    let passes: usize = std::env::var("TAILS_SERVER_TORTURE_PASSES").ok().and_then(|n| n.parse().ok()).unwrap_or(1);
    let mut counts = Counts::default();
    let backup = two_store_backup(&env);
    for tag in 0..passes {
        pass(&env, &mut counts, tag, &backup);
    }
    assert_eq!(state(&env)["keep"], keep, "an untouched service came through unchanged");
    println!(
        "torture: {} kills ({} left the change present, {} absent), {} completed runs, {} recoveries",
        counts.kills, counts.present, counts.absent, counts.completed, counts.recoveries
    );
    assert!(counts.kills > 50, "the kill points were reached: {counts:?}");
}
