//! The store's promises on real sled files: reads are answered from the newest snapshot
//! without opening sled; damage is detected at the next change and recovered from the
//! snapshots with a message, never silently; a change interrupted between its snapshot and
//! its transaction is finished; a busy store is waited for, then refused clearly; a store
//! from the future is left alone.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::TestEnv;
use tails_server_core::{AddRequest, Config, Manager};

fn flip_bytes_in_sled_log(env: &TestEnv) {
    let path = env.state_dir().join("db/db");
    let mut bytes = fs::read(&path).unwrap();
    let used: Vec<usize> = (0..bytes.len()).filter(|&i| bytes[i] != 0).collect();
    for &i in &used[used.len() / 2..used.len() / 2 + 40] {
        bytes[i] ^= 0xff;
    }
    fs::write(&path, bytes).unwrap();
}

fn populated() -> TestEnv {
    let env = TestEnv::new();
    env.run(&["add", "mumble"]).ok();
    env.run(&["add", "custom", "--local-port", "8000"]).ok();
    env.run(&["client", "add", "mumble", "alice"]).ok();
    env
}

/// A change, the command that makes it, and the listing it leads to: the first command
/// after damage that opens sled.
fn change_and_list(env: &TestEnv, args: &[&str]) -> (common::Run, serde_json::Value) {
    let out = env.run(args).ok();
    (out, env.listing())
}

#[test]
fn a_damaged_database_is_recovered_from_the_snapshot_with_a_message() {
    let env = populated();
    let before = env.listing();
    flip_bytes_in_sled_log(&env);
    // A read is answered from the snapshot, sled untouched.
    let db = fs::read(env.state_dir().join("db/db")).unwrap();
    let read = env.run(&["--format", "json", "list"]).ok();
    assert_eq!((read.json(), read.stderr.as_str()), (before, ""));
    assert!(fs::read(env.state_dir().join("db/db")).unwrap() == db, "a read wrote to sled's log");
    let (out, after) = change_and_list(&env, &["client", "add", "mumble", "carol"]);
    assert!(out.stderr.contains("WARNING") && out.stderr.contains("was damaged"), "{}", out.stderr);
    assert!(out.stderr.contains("restored from the snapshot"), "{}", out.stderr);
    assert_eq!(after.as_array().unwrap().len(), 2, "{after}");
    // The damaged copy is kept for inspection, and later runs are quiet.
    assert!(fs::read_dir(env.state_dir()).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("db.damaged-")));
    let again = env.run(&["client", "add", "mumble", "bob"]).ok();
    assert!(!again.stderr.contains("damaged"), "{}", again.stderr);
    assert_eq!(env.service("mumble")["clients"].as_array().unwrap().len(), 4);
}

/// Makes `changes`, then puts sled's database back as it was before them (the snapshots
/// keep the changes). Returns the listing after the changes.
fn changes_then_database_from_before(env: &TestEnv, changes: &[&[&str]]) -> serde_json::Value {
    let old_db = env.root.path().join("old-db");
    copy_dir(&env.state_dir().join("db"), &old_db);
    for change in changes {
        env.run(change).ok();
    }
    let latest = env.listing();
    fs::remove_dir_all(env.state_dir().join("db")).unwrap();
    copy_dir(&old_db, &env.state_dir().join("db"));
    latest
}

#[test]
fn changes_sled_lost_silently_are_detected_through_the_snapshots() {
    let env = populated();
    // The database as it was two changes ago, as sled may leave it after a crash.
    let latest = changes_then_database_from_before(
        &env,
        &[&["client", "add", "mumble", "bob"], &["client", "add", "mumble", "carol"]],
    );
    assert_eq!(env.listing(), latest, "reads come from the newest snapshot");
    let out = env.run(&["set-option", "mumble", "max-users", "9"]).ok();
    assert!(out.stderr.contains("recent changes were lost"), "{}", out.stderr);
    let mumble = env.service("mumble");
    assert_eq!(mumble["clients"].as_array().unwrap().len(), 4, "{mumble}");
    assert_eq!(mumble["options"]["max-users"], 9, "{mumble}");
}

#[test]
fn a_change_interrupted_after_its_snapshot_is_finished_quietly() {
    let env = populated();
    // As if killed after the snapshot was written and before sled committed.
    changes_then_database_from_before(&env, &[&["client", "add", "mumble", "bob"]]);
    let out = env.run(&["set-option", "mumble", "max-users", "9"]).ok();
    assert_eq!(out.stderr, "", "finishing the interrupted change is not damage");
    let mumble = env.service("mumble");
    assert_eq!(mumble["clients"].as_array().unwrap().len(), 3, "{mumble}");
    assert!(damaged_copies(&env).is_empty());
}

#[test]
fn a_saved_change_lost_with_its_unreadable_snapshot_is_reported() {
    let env = populated();
    // Change N+1 was saved (its snapshot renamed in), sled kept only change N, and then
    // the snapshot was damaged: the change is gone, and the person must hear it.
    changes_then_database_from_before(&env, &[&["client", "add", "mumble", "bob"]]);
    let newest = snapshots(&env).pop().unwrap();
    let mut bytes = fs::read(&newest).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x20;
    fs::write(&newest, bytes).unwrap();
    let out = env.run(&["set-option", "mumble", "max-users", "9"]).ok();
    let generation = newest.file_stem().unwrap().to_str().unwrap().parse::<u64>().unwrap();
    assert!(
        out.stderr.contains(&format!("the snapshot of change {generation} (")) && out.stderr.contains("is lost"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains(&format!("goes on from change {}", generation - 1)), "{}", out.stderr);
    assert_eq!(env.service("mumble")["options"]["max-users"], 9);
}

#[test]
fn a_missing_database_is_rebuilt_from_the_snapshot() {
    let env = populated();
    let before = env.listing();
    fs::remove_dir_all(env.state_dir().join("db")).unwrap();
    let out = env.run(&["--format", "json", "list"]).ok();
    assert!(out.stderr.contains("database is missing"), "{}", out.stderr);
    assert_eq!(out.json(), before);
}

#[test]
fn damage_without_any_snapshot_is_reported_and_nothing_is_deleted() {
    let env = populated();
    flip_bytes_in_sled_log(&env);
    for entry in fs::read_dir(env.state_dir().join("snapshots")).unwrap() {
        fs::remove_file(entry.unwrap().path()).unwrap();
    }
    let size = fs::metadata(env.state_dir().join("db/db")).unwrap().len();
    env.run(&["list"]).fails_with("is damaged");
    env.run(&["add", "web"]).fails_with("no intact snapshot");
    // We delete nothing and start nothing afresh. (sled itself rewrites a damaged log's
    // tail while it opens it, so the bytes are not ours to promise.)
    assert_eq!(fs::metadata(env.state_dir().join("db/db")).unwrap().len(), size);
    assert!(!env.state_dir().join("db.damaged").exists());
    assert_eq!(fs::read_dir(env.state_dir().join("snapshots")).unwrap().count(), 0, "no empty store was made");
}

/// The record file that the newest snapshot names for `service`.
fn newest_record_file(env: &TestEnv, service: &str) -> PathBuf {
    let newest = snapshots(env).pop().expect("a snapshot");
    let text = fs::read_to_string(&newest).unwrap();
    let manifest: serde_json::Value = serde_json::from_str(text.split_once('\n').unwrap().1).unwrap();
    let entry = manifest["services"].as_array().unwrap().iter().find(|e| e[0] == service).unwrap().clone();
    env.state_dir().join("snapshots").join(format!("{}.record", entry[1].as_str().unwrap()))
}

#[test]
fn a_damaged_record_file_is_not_believed_and_is_written_again() {
    let env = populated();
    let before = env.listing();
    let record = newest_record_file(&env, "custom");
    fs::write(&record, b"{\"name\":\"custom\",\"damaged\":true}").unwrap();
    // Reads do not take the damaged record: the database answers, and says nothing is wrong.
    assert_eq!(env.listing(), before);
    // A change to another service keeps custom's record as it was, in a file made whole again.
    env.run(&["set-option", "mumble", "autostart", "false"]).ok();
    assert_eq!(newest_record_file(&env, "custom"), record);
    let out = env.run(&["--format", "json", "list"]).ok();
    assert_eq!(
        out.json().as_array().unwrap().iter().find(|s| s["name"] == "custom"),
        before.as_array().unwrap().iter().find(|s| s["name"] == "custom")
    );
    assert!(!fs::read_to_string(&record).unwrap().contains("damaged"), "the record file was written again");
}

/// Rewrites every snapshot in format 3 (every record in the snapshot itself, as stores
/// written before format 4 have them) and removes the record files.
fn downgrade_snapshots_to_format_3(env: &TestEnv) {
    use sha2::Digest;
    let dir = env.state_dir().join("snapshots");
    for path in snapshots(env) {
        let text = fs::read_to_string(&path).unwrap();
        let (header, body) = text.split_once('\n').unwrap();
        let manifest: serde_json::Value = serde_json::from_str(body).unwrap();
        let records = |tree: &str| -> Vec<serde_json::Value> {
            let entries = manifest[tree].as_array().unwrap();
            entries
                .iter()
                .map(|e| {
                    serde_json::from_slice(&fs::read(dir.join(format!("{}.record", e[1].as_str().unwrap()))).unwrap())
                        .unwrap()
                })
                .collect()
        };
        let body =
            serde_json::to_vec(&serde_json::json!({"services": records("services"), "keys": records("keys")})).unwrap();
        let mut fields: Vec<String> = header.split(' ').map(str::to_owned).collect();
        assert_eq!(fields[1], "4");
        fields[1] = "3".into();
        fields[4] = data_encoding::HEXLOWER.encode(&sha2::Sha256::digest(&body));
        fs::write(&path, [format!("{}\n", fields.join(" ")).into_bytes(), body].concat()).unwrap();
    }
    for record in record_files(env) {
        fs::remove_file(record).unwrap();
    }
}

#[test]
fn a_store_with_snapshots_of_format_3_is_read_and_written_in_format_4_from_its_next_change() {
    let env = populated();
    let before = env.listing();
    downgrade_snapshots_to_format_3(&env);
    // Read from the format-3 snapshot alone: the database is gone, rebuilt from it.
    fs::remove_dir_all(env.state_dir().join("db")).unwrap();
    assert_eq!(env.listing(), before);
    env.run(&["set-option", "mumble", "autostart", "false"]).ok();
    let newest = fs::read_to_string(snapshots(&env).pop().unwrap()).unwrap();
    assert!(newest.starts_with("tails-server-snapshot 4 "), "{newest}");
    assert_eq!(record_files(&env).len(), 2, "a file for each record");
    let after = env.listing();
    assert_eq!(after.as_array().unwrap().len(), 2);
    assert_eq!(after[0]["address"], before[0]["address"]);
    // The newest snapshot is enough: sled lost, the store comes back from it.
    fs::remove_dir_all(env.state_dir().join("db")).unwrap();
    assert_eq!(env.listing(), after);
}

#[test]
fn record_files_a_snapshot_of_a_newer_format_may_name_are_kept() {
    let env = populated();
    // As if a newer tails-server had written the second newest snapshot (then the person
    // went back to this version): its format is unknown here, and so is what it names.
    let kept = snapshots(&env);
    let theirs = &kept[kept.len() - 2];
    let text = fs::read_to_string(theirs).unwrap();
    let (header, body) = text.split_once('\n').unwrap();
    let mut fields: Vec<&str> = header.split(' ').collect();
    fields[1] = "5";
    fs::write(theirs, format!("{}\n{body}", fields.join(" "))).unwrap();
    let their_record = env.state_dir().join("snapshots").join(format!("{}.record", "f".repeat(64)));
    fs::write(&their_record, b"a newer version's record").unwrap();
    env.run(&["set-option", "mumble", "autostart", "false"]).ok();
    assert!(snapshots(&env).contains(theirs), "still one of the three kept");
    assert!(their_record.exists(), "a record a kept snapshot may name was removed");
}

#[test]
fn only_a_few_snapshots_are_kept() {
    let env = populated();
    for i in 0..5 {
        env.run(&["set-option", "mumble", "max-users", &(i + 1).to_string()]).ok();
    }
    assert_eq!(snapshots(&env).len(), 3);
    // Two services, each one record file per version still named: the newest three
    // snapshots name mumble's last three versions and custom's one.
    assert_eq!(record_files(&env).len(), 4, "a record file no snapshot names is removed");
    assert_eq!(entries(&env.state_dir().join("snapshots")).len(), 7, "nothing else is left there");
}

#[test]
fn a_store_from_a_newer_version_is_refused_untouched() {
    let env = populated();
    {
        let path = env.state_dir().join("db");
        let db = sled::Config::new().path(&path).segment_size(segment_size(&path)).open().unwrap();
        db.open_tree("meta").unwrap().insert("schema-version", &99u64.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    // Its snapshots are in its own format too.
    for path in snapshots(&env) {
        let text = fs::read_to_string(&path).unwrap();
        let (header, body) = text.split_once('\n').unwrap();
        let mut fields: Vec<&str> = header.split(' ').collect();
        fields[1] = "99";
        fs::write(&path, format!("{}\n{body}", fields.join(" "))).unwrap();
    }
    env.run(&["list"]).fails_with("written by a newer tails-server (schema version 99");
    env.run(&["add", "web"]).fails_with("Upgrade tails-server");
}

#[test]
fn a_busy_store_is_waited_for_then_refused_clearly() {
    let env = populated();
    let lock = fs::OpenOptions::new().write(true).open(env.state_dir().join("lock")).unwrap();
    lock.lock().unwrap();
    let out = env.command().args(["list"]).env("TAILS_SERVER_LOCK_TIMEOUT", "0.3").output().unwrap();
    let out = common::Run::from(out);
    out.fails_with("in use by another tails-server process");

    // A command started while the store is busy waits for it, then finishes once it is
    // released.
    let snapshots_before = entries(&env.state_dir().join("snapshots"));
    let mut waiting = env.command().args(["client", "add", "mumble", "late"]).spawn().unwrap();
    let lock_path = env.state_dir().join("lock");
    let pid = waiting.id();
    wait_for("the command to open the lock file", || {
        has_open(pid, &lock_path) || waiting.try_wait().unwrap().is_some()
    });
    let exited = waiting.try_wait().unwrap();
    assert!(exited.is_none(), "the command did not wait for the store: it exited ({exited:?})");
    assert_eq!(entries(&env.state_dir().join("snapshots")), snapshots_before, "it changed a busy store");
    lock.unlock().unwrap();
    assert!(waiting.wait().unwrap().success());
    assert!(env.service("mumble")["clients"].as_array().unwrap().iter().any(|c| c["name"] == "late"));
}

#[test]
fn concurrent_commands_all_land() {
    let env = populated();
    let children: Vec<_> = (0..8)
        .map(|i| {
            env.command()
                .args(["client", "add", "custom", &format!("c{i}")])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    assert_eq!(env.service("custom")["clients"].as_array().unwrap().len(), 9);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Waits (polling, up to 30 s) until `condition` holds; fails the test if it never does.
#[track_caller]
fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether process `pid` has `path` open.
fn has_open(pid: u32, path: &Path) -> bool {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    fds.flatten().any(|fd| fs::read_link(fd.path()).is_ok_and(|target| target == path))
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    found.sort();
    found
}

/// The snapshots of a store (each names its record files, see `record_files`).
fn snapshots(env: &TestEnv) -> Vec<PathBuf> {
    entries(&env.state_dir().join("snapshots"))
        .into_iter()
        .filter(|p| p.extension() == Some("snapshot".as_ref()))
        .collect()
}

/// The record files of a store's snapshots, all of them, named or not.
fn record_files(env: &TestEnv) -> Vec<PathBuf> {
    entries(&env.state_dir().join("snapshots"))
        .into_iter()
        .filter(|p| p.extension() == Some("record".as_ref()))
        .collect()
}

fn damaged_copies(env: &TestEnv) -> Vec<PathBuf> {
    entries(&env.state_dir())
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("db.damaged-"))
        .collect()
}

#[test]
fn a_recovery_never_fails_because_the_damaged_copys_name_is_taken() {
    let env = populated();
    let before = env.listing();
    // Earlier recoveries in this second (and the next ones) already used the names.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    for t in now..now + 3 {
        let taken = env.state_dir().join(format!("db.damaged-{t}"));
        fs::create_dir(&taken).unwrap();
        fs::write(taken.join("db"), b"an earlier damaged database").unwrap();
    }
    flip_bytes_in_sled_log(&env);
    let (out, after) = change_and_list(&env, &["client", "add", "mumble", "bob"]);
    assert!(out.stderr.contains("restored from the snapshot"), "{}", out.stderr);
    assert_eq!(after.as_array().unwrap().len(), before.as_array().unwrap().len());
    env.run(&["client", "add", "mumble", "carol"]).ok();
}

#[test]
fn only_the_newest_damaged_copies_are_kept_and_the_warning_says_so() {
    let env = populated();
    let before = env.listing();
    let mut kept = Vec::new();
    for round in 0..3 {
        flip_bytes_in_sled_log(&env);
        let users = (round + 2).to_string();
        let (out, after) = change_and_list(&env, &["set-option", "mumble", "max-users", &users]);
        assert_eq!(after.as_array().unwrap().len(), before.as_array().unwrap().len());
        assert_eq!(env.service("mumble")["options"]["max-users"], round + 2);
        assert!(out.stderr.contains("at most 2 damaged copies are kept"), "{}", out.stderr);
        let copies = damaged_copies(&env);
        let new: Vec<_> = copies.iter().filter(|c| !kept.contains(*c)).cloned().collect();
        assert_eq!(new.len(), 1, "round {round}: one new damaged copy: {copies:?}");
        assert!(out.stderr.contains(&new[0].display().to_string()), "{}", out.stderr);
        if round < 2 {
            assert!(!out.stderr.contains("erased"), "{}", out.stderr);
        } else {
            let oldest = kept[0].display().to_string();
            assert!(out.stderr.contains(&format!("Older damaged copies were erased: {oldest}.")), "{}", out.stderr);
        }
        kept.push(new[0].clone());
        if kept.len() > 2 {
            kept.remove(0);
        }
        let mut expected = kept.clone();
        expected.sort();
        assert_eq!(damaged_copies(&env), expected, "round {round}: the newest two are kept");
    }
}

#[test]
fn a_purge_interrupted_between_its_renames_is_recovered_and_finished() {
    let env = populated();
    let before = env.listing();
    assert!(snapshots(&env).len() > 1);
    // The database was moved aside and the rebuilt one not yet moved into place.
    fs::rename(env.state_dir().join("db"), env.state_dir().join("db.old")).unwrap();
    copy_dir(&env.state_dir().join("db.old"), &env.state_dir().join("db.new"));
    let out = env.run(&["--format", "json", "list"]).ok();
    assert!(out.stderr.contains("database is missing"), "{}", out.stderr);
    assert_eq!(out.json(), before);
    assert!(!env.state_dir().join("db.old").exists() && !env.state_dir().join("db.new").exists());
    assert_eq!(snapshots(&env).len(), 1, "the purge was finished");
    assert_eq!(record_files(&env).len(), 2, "only the current version of each record is left");
    let again = env.run(&["list"]).ok();
    assert_eq!(again.stderr, "");
    env.run(&["client", "add", "mumble", "bob"]).ok();
}

#[test]
fn a_purge_interrupted_while_rebuilding_is_finished_quietly() {
    let env = populated();
    let before = env.listing();
    fs::create_dir(env.state_dir().join("db.new")).unwrap();
    fs::write(env.state_dir().join("db.new/db"), b"half a database").unwrap();
    let out = env.run(&["--format", "json", "list"]).ok();
    assert_eq!(out.stderr, "");
    assert_eq!(out.json(), before);
    assert!(!env.state_dir().join("db.new").exists());
    assert_eq!(snapshots(&env).len(), 1, "the purge was finished");
    assert_eq!(record_files(&env).len(), 2, "only the current version of each record is left");
}

#[test]
fn a_change_whose_snapshot_cannot_be_written_is_refused_and_changes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let state = root.path().join("state");
    let mut manager = Manager::open(Config::new(state.clone())).unwrap();
    let gobby = manager.add(AddRequest::new("gobby")).unwrap();
    // No snapshot can be written any more, not even by root: its directory is now a file.
    let kept = root.path().join("snapshots");
    fs::rename(state.join("snapshots"), &kept).unwrap();
    fs::write(state.join("snapshots"), b"").unwrap();
    let error = manager.add(AddRequest::new("web")).unwrap_err().to_string();
    assert!(error.contains("was not saved") && error.contains("Nothing was changed"), "{error}");
    drop(manager);
    fs::remove_file(state.join("snapshots")).unwrap();
    fs::rename(&kept, state.join("snapshots")).unwrap();
    let mut manager = Manager::open(Config::new(state)).unwrap();
    let names: Vec<String> = manager.list().unwrap().iter().map(|r| r.name.to_string()).collect();
    assert_eq!(names, [gobby.name.to_string()]);
    // Nor in sled, which the next change opens.
    manager.add(AddRequest::new("mumble")).unwrap();
    assert!(manager.warnings().is_empty(), "{:?}", manager.warnings());
    assert_eq!(manager.list().unwrap().len(), 2);
}

/// Every file and folder of the state directory with its modification and change times
/// (nanoseconds): a write changes them even when it writes bytes that were already there.
fn times(dir: &Path) -> Vec<(PathBuf, i64, i64, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).unwrap();
        out.push((path.clone(), meta.mtime(), meta.mtime_nsec(), meta.ctime(), meta.ctime_nsec()));
        if meta.is_dir() {
            stack.extend(fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
    }
    out.sort();
    out
}

#[test]
fn commands_that_only_read_write_nothing_to_the_state_dir() {
    let env = populated();
    let before = times(&env.state_dir());
    for args in [
        &["list"][..],
        &["--format", "json", "list"],
        &["info", "mumble", "--details"],
        &["status", "mumble"],
        &["get-option", "mumble", "max-users"],
        &["client", "list", "mumble"],
        &["client", "show", "mumble", "alice"],
        &["catalog"],
    ] {
        // `status` exits 3 here: no tor to ask.
        env.run(args).exits(if args.contains(&"status") { 3 } else { 0 });
        assert_eq!(times(&env.state_dir()), before, "`{}` wrote to the state directory", args.join(" "));
    }
}

fn segment_size(db: &Path) -> usize {
    let conf = String::from_utf8_lossy(&fs::read(db.join("conf")).unwrap()).into_owned();
    conf.lines().find_map(|l| l.strip_prefix("segment_size: ")?.parse().ok()).unwrap()
}

#[test]
fn a_database_with_sleds_default_segment_is_rebuilt_once_with_the_small_one() {
    let env = populated();
    let before = env.listing();
    let db = env.state_dir().join("db");
    let small = segment_size(&db);
    // The same content in a database with sled's default segment (512 KiB), as earlier
    // versions made it.
    let old = env.root.path().join("db-512k");
    {
        let current = sled::Config::new().path(&db).segment_size(small).open().unwrap();
        let made = sled::Config::new().path(&old).open().unwrap();
        for name in ["services", "meta"] {
            let (from, to) = (current.open_tree(name).unwrap(), made.open_tree(name).unwrap());
            for item in from.iter() {
                let (k, v) = item.unwrap();
                to.insert(k, v).unwrap();
            }
        }
        made.flush().unwrap();
    }
    fs::remove_dir_all(&db).unwrap();
    copy_dir(&old, &db);
    assert_eq!(segment_size(&db), 512 * 1024);
    let out = env.run(&["--format", "json", "list"]).ok();
    assert_eq!((out.json(), out.stderr.as_str()), (before.clone(), ""));
    assert_eq!(segment_size(&db), small, "rebuilt with the small segment");
    env.run(&["client", "add", "mumble", "bob"]).ok();
    assert_eq!(env.service("mumble")["clients"].as_array().unwrap().len(), 3);
}
