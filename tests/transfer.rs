//! Credentials in and out, on real files and with the real `age` and `tor` programs:
//! backups round-trip and interoperate with the age CLI, HiddenServiceDirs go both ways
//! and tor runs what we export, OnionShare settings import, and a corpus of hostile inputs
//! is refused with a message while the store stays byte-for-byte the same.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{age_encrypt, store_state, TestEnv};
use tails_server_core::keys::{ClientSecretKey, OnionSecretKey};

const PASS: &str = "correct horse battery staple";

fn passfile(env: &TestEnv, text: &str) -> PathBuf {
    let path = env.root.path().join(format!("pass-{}", text.len()));
    fs::write(&path, format!("{text}\n")).unwrap();
    path
}

fn populate(env: &TestEnv) {
    env.run(&["add", "mumble", "--set", "max-users=5"]).ok();
    // A secret never travels on the command line: standard input.
    let mut set = env.command();
    set.args(["set-option", "mumble", "server-password", "-"]).stdin(std::process::Stdio::piped());
    let mut child = set.stdout(std::process::Stdio::null()).spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"hunter2\n").unwrap();
    assert!(child.wait().unwrap().success());
    env.run(&["add", "custom", "--name", "blog", "--local-port", "8080", "--remote-port", "80"]).ok();
    env.run(&["client", "add", "mumble", "alice"]).ok();
    let theirs = ClientSecretKey::generate().unwrap().public_key();
    env.run(&["client", "add", "mumble", "bob", "--public-key", &theirs.to_base32()]).ok();
    env.run(&["add", "web", "--set", "persistence=false"]).ok();
}

/// The whole state as `list --format json` shows it, plus each client's stored keys.
fn full_listing(env: &TestEnv) -> serde_json::Value {
    let mut listing = env.listing();
    for service in listing.as_array_mut().unwrap() {
        let name = service["name"].as_str().unwrap().to_owned();
        let persistence = env.run(&["get-option", &name, "persistence"]).ok().stdout;
        service["persistence-option"] = persistence.trim().into();
        for client in service["clients"].as_array_mut().unwrap() {
            let c = client["name"].as_str().unwrap().to_owned();
            client["auth"] = env.run(&["client", "show", &name, &c, "--as", "auth"]).ok().stdout.into();
        }
        if name == "mumble" {
            service["server-password"] = env.run(&["get-option", "mumble", "server-password"]).ok().stdout.into();
        }
    }
    listing
}

/// `tails-server --format json import FILE --passphrase-file … EXTRA…` in `env`.
fn import(env: &TestEnv, file: &Path, extra: &[&str]) -> common::Run {
    let pass = passfile(env, PASS);
    let mut args =
        vec!["--format", "json", "import", file.to_str().unwrap(), "--passphrase-file", pass.to_str().unwrap()];
    args.extend_from_slice(extra);
    env.run(&args)
}

fn export(env: &TestEnv, out: &Path) {
    let pass = passfile(env, PASS);
    env.run(&["export", "--output", out.to_str().unwrap(), "--passphrase-file", pass.to_str().unwrap()]).ok();
}

#[test]
fn export_then_import_into_an_empty_state_gives_the_same_services() {
    let source = TestEnv::new();
    populate(&source);
    let backup = source.root.path().join("backup.age");
    export(&source, &backup);
    assert_eq!(fs::metadata(&backup).unwrap().permissions().mode() & 0o777, 0o600);
    let text = fs::read_to_string(&backup).unwrap();
    assert!(text.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"));
    assert!(!text.contains("mumble") && !text.contains("hunter2"));

    let target = TestEnv::new();
    let dry = import(&target, &backup, &["--dry-run"]).ok().json();
    assert_eq!(dry["dry-run"], true);
    assert_eq!(dry["added"].as_array().unwrap().len(), 3);
    assert_eq!(target.listing(), serde_json::json!([]), "a dry run writes nothing");

    import(&target, &backup, &[]).ok();
    assert_eq!(full_listing(&target), full_listing(&source));
    // The private keys came along: the same credential can be shown again.
    assert_eq!(
        target.run(&["client", "show", "mumble", "alice", "--as", "auth-private"]).ok().stdout,
        source.run(&["client", "show", "mumble", "alice", "--as", "auth-private"]).ok().stdout
    );

    // Conflicts: fail (default), skip, replace.
    import(&target, &backup, &[])
        .fails_with("nothing was imported")
        .fails_with("(choose --on-conflict skip or replace)");
    let skipped = import(&target, &backup, &["--on-conflict", "skip"]).ok().json();
    assert_eq!(skipped["skipped"].as_array().unwrap().len(), 3);
    target.run(&["client", "add", "blog", "extra"]).ok();
    let replaced = import(&target, &backup, &["--on-conflict", "replace"]).ok().json();
    assert_eq!(replaced["replaced"].as_array().unwrap().len(), 3);
    assert_eq!(full_listing(&target), full_listing(&source));

    // Only some services.
    let partial = source.root.path().join("partial.age");
    let pass = passfile(&source, PASS);
    source
        .run(&[
            "export",
            "-o",
            partial.to_str().unwrap(),
            "--service",
            "blog",
            "--passphrase-file",
            pass.to_str().unwrap(),
        ])
        .ok();
    let third = TestEnv::new();
    import(&third, &partial, &[]).ok();
    assert_eq!(third.listing().as_array().unwrap().len(), 1);
    // An existing file is never overwritten without --force.
    source
        .run(&["export", "-o", partial.to_str().unwrap(), "--passphrase-file", pass.to_str().unwrap()])
        .fails_with("--force");
    source
        .run(&["export", "-o", partial.to_str().unwrap(), "--passphrase-file", pass.to_str().unwrap(), "--force"])
        .ok();
}

/// Runs a program with a pseudo-terminal (the age CLI reads passphrases only from one).
fn with_tty(command: &str, input: &str) -> std::process::Output {
    let mut child = Command::new("script")
        .args(["-qec", command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (bsdutils) is installed");
    let mut stdin = child.stdin.take().unwrap();
    for line in input.lines() {
        stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    drop(stdin);
    child.wait_with_output().unwrap()
}

#[test]
fn backups_interoperate_with_the_age_command() {
    let env = TestEnv::new();
    populate(&env);
    let backup = env.root.path().join("backup.age");
    export(&env, &backup);

    // Our bundle opens with `age -d`.
    let plain = env.root.path().join("plain.json");
    let out = with_tty(&format!("age -d -o {} {}", plain.display(), backup.display()), PASS);
    assert!(plain.exists(), "age -d failed: {}", String::from_utf8_lossy(&out.stdout));
    let document: serde_json::Value = serde_json::from_slice(&fs::read(&plain).unwrap()).unwrap();
    assert_eq!(document["format"], "tails-server-backup");
    assert_eq!(document["services"].as_array().unwrap().len(), 3);

    // A document encrypted by `age -p -a` imports.
    let theirs = env.root.path().join("theirs.age");
    let out = with_tty(&format!("age -p -a -o {} {}", theirs.display(), plain.display()), &format!("{PASS}\n{PASS}"));
    assert!(theirs.exists(), "age -p failed: {}", String::from_utf8_lossy(&out.stdout));
    let target = TestEnv::new();
    import(&target, &theirs, &[]).ok();
    assert_eq!(target.listing(), env.listing());
}

#[test]
fn a_hidden_service_dir_we_write_is_one_tor_runs() {
    let env = TestEnv::new();
    populate(&env);
    let dir = env.root.path().join("hs-mumble");
    env.run(&["export-tor-dir", "mumble", dir.to_str().unwrap()]).ok();
    let address = env.service("mumble")["address"].as_str().unwrap().to_owned();
    // Remove our hostname so that tor writes its own.
    fs::remove_file(dir.join("hostname")).unwrap();
    let log = common::run_hidden_service_dir(&dir);
    assert_eq!(fs::read_to_string(dir.join("hostname")).unwrap().trim(), address, "{log}");
    for client in ["client-1", "alice", "bob"] {
        assert!(log.contains(&format!("Loaded a client authorization key file {client}.auth")), "{client}: {log}");
    }
    // Never over an existing directory without --force.
    env.run(&["export-tor-dir", "mumble", dir.to_str().unwrap()]).fails_with("--force");
}

#[test]
fn a_c_tor_hidden_service_dir_imports_with_its_address_and_clients() {
    let env = TestEnv::new();
    // Let tor itself make the directory and its key.
    let dir = env.root.path().join("tor-made");
    fs::create_dir_all(dir.join("authorized_clients")).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    let alice = ClientSecretKey::generate().unwrap();
    fs::write(dir.join("authorized_clients/alice.auth"), alice.public_key().auth_line() + "\n").unwrap();
    common::run_hidden_service_dir(&dir);
    let address = fs::read_to_string(dir.join("hostname")).unwrap().trim().to_owned();

    let added = env
        .run(&[
            "--format",
            "json",
            "import-tor-dir",
            dir.to_str().unwrap(),
            "--name",
            "imported",
            "--local-port",
            "8080",
        ])
        .ok()
        .json();
    assert_eq!(added["address"], address.as_str());
    assert_eq!(added["clients"][0]["name"], "alice");
    assert_eq!(added["clients"][0]["private-key-stored"], false);
    // The round trip: export it again and compare key files byte for byte.
    let back = env.root.path().join("back");
    env.run(&["export-tor-dir", "imported", back.to_str().unwrap()]).ok();
    assert_eq!(
        fs::read(back.join("hs_ed25519_secret_key")).unwrap(),
        fs::read(dir.join("hs_ed25519_secret_key")).unwrap()
    );

    // A directory without authorized clients was public: it gets a first client here.
    let open = env.root.path().join("open");
    fs::create_dir_all(&open).unwrap();
    fs::write(open.join("hs_ed25519_secret_key"), OnionSecretKey::generate().unwrap().to_tor_secret_file()).unwrap();
    let out = env.run(&["--format", "json", "import-tor-dir", open.to_str().unwrap(), "--local-port", "1"]).ok();
    assert!(out.stderr.contains("reachable by anyone"), "{}", out.stderr);
    assert_eq!(out.json()["name"], "open");
    assert_eq!(out.json()["client-authorization"], true);
}

fn onionshare_json(key: &OnionSecretKey, client: Option<&ClientSecretKey>, public: bool) -> String {
    let blob = key.to_control_blob();
    serde_json::json!({
        "onion": {
            "private_key": blob.trim_start_matches("ED25519-V3:"),
            "client_auth_priv_key": client.map(|c| c.to_base32().to_string()),
            "client_auth_pub_key": client.map(|c| c.public_key().to_base32()),
        },
        "persistent": {"mode": "website", "enabled": true},
        "general": {"public": public, "service_id": key.address().service_id()},
    })
    .to_string()
}

#[test]
fn an_onionshare_share_imports_with_its_address_and_key() {
    let env = TestEnv::new();
    let key = OnionSecretKey::generate().unwrap();
    let client = ClientSecretKey::generate().unwrap();
    let file = env.root.path().join("abc.json");
    fs::write(&file, onionshare_json(&key, Some(&client), false)).unwrap();
    let added = env
        .run(&["--format", "json", "import-onionshare", file.to_str().unwrap(), "--local-port", "17600"])
        .ok()
        .json();
    assert_eq!(added["address"], key.address().to_string().as_str());
    assert_eq!(added["remote-port"], 80);
    let shown = env.run(&["client", "show", "onionshare", "onionshare", "--as", "key"]).ok().stdout;
    assert_eq!(shown.trim(), client.to_base32().as_str(), "the OnionShare client key still works");
}

#[test]
fn sharing_one_credential_as_qr_codes_and_files() {
    let env = TestEnv::new();
    env.run(&["add", "web"]).ok();
    let out = env.run(&["client", "show", "web", "client-1", "--as", "qr"]).ok().stdout;
    assert!(out.contains("may be shared") && out.contains("SECRET"));
    assert!(out.matches('▀').count() > 50, "two QR codes are drawn");
    let file = env.root.path().join("bob.auth_private");
    let w = env
        .run(&["client", "show", "web", "client-1", "--as", "auth-private", "--output", file.to_str().unwrap()])
        .ok();
    assert!(w.stderr.contains("SECRET"));
    assert_eq!(fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(fs::read_to_string(&file).unwrap().contains(":descriptor:x25519:"));
    env.run(&["client", "show", "web", "client-1", "--output", file.to_str().unwrap()]).fails_with("--force");
    env.run(&["client", "show", "web", "client-1", "--as", "key", "--output", file.to_str().unwrap(), "--force"]).ok();
    assert_eq!(fs::read_to_string(&file).unwrap().trim().len(), 52);
}

/// One hostile input: the files it needs, the command, and what the error must name.
struct Case {
    label: String,
    files: Vec<(String, Vec<u8>)>,
    args: Vec<String>,
    needle: String,
}

fn case(label: impl Into<String>, files: Vec<(&str, Vec<u8>)>, args: &[&str], needle: &str) -> Case {
    Case {
        label: label.into(),
        files: files.into_iter().map(|(n, b)| (n.to_owned(), b)).collect(),
        args: args.iter().map(|s| s.to_string()).collect(),
        needle: needle.to_owned(),
    }
}

fn document(services: serde_json::Value) -> Vec<u8> {
    serde_json::json!({"format": "tails-server-backup", "version": 1, "created": 0, "services": services})
        .to_string()
        .into_bytes()
}

#[test]
#[allow(clippy::vec_init_then_push)]
fn a_corpus_of_hostile_inputs_is_refused_and_changes_nothing() {
    let env = TestEnv::new();
    populate(&env);
    let good_backup = env.root.path().join("good.age");
    export(&env, &good_backup);
    let good = fs::read(&good_backup).unwrap();
    let plain: serde_json::Value = {
        let doc = tails_server_core::backup::decrypt(&good, PASS).unwrap();
        serde_json::from_slice(&doc.to_json()).unwrap()
    };
    let service = plain["services"].as_array().unwrap().iter().find(|s| s["name"] == "mumble").unwrap().clone();
    let with = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut s = service.clone();
        s["name"] = "newcomer".into();
        s["key"] = OnionSecretKey::generate().unwrap().to_control_blob().as_str().to_owned().into();
        edit(&mut s);
        age_encrypt(&document(serde_json::json!([s])), PASS)
    };
    fn import_args(file: &str) -> Vec<&str> {
        vec!["import", file, "--passphrase-file", "pass"]
    }

    // One case per statement reads best.
    let mut cases: Vec<Case> = Vec::new();
    cases.push(case(
        "wrong passphrase",
        vec![("b.age", good.clone()), ("pass", b"not it\n".to_vec())],
        &import_args("b.age"),
        "passphrase is wrong",
    ));
    cases.push(case(
        "empty passphrase file",
        vec![("b.age", good.clone()), ("pass", b"\n".to_vec())],
        &import_args("b.age"),
        "passphrase file pass is empty",
    ));
    cases.push(case(
        "huge passphrase file",
        vec![("b.age", good.clone()), ("pass", vec![b'a'; 10_000])],
        &import_args("b.age"),
        "larger than",
    ));
    cases.push(case("missing file", vec![("pass", PASS.into())], &import_args("nothere.age"), "nothere.age"));
    cases.push(case("a directory", vec![("pass", PASS.into()), ("d/x", vec![])], &import_args("d"), "not a file"));
    cases.push(case(
        "huge file",
        vec![("b.age", vec![b'A'; 5 * 1024 * 1024]), ("pass", PASS.into())],
        &import_args("b.age"),
        "larger than",
    ));
    cases.push(case(
        "empty file",
        vec![("b.age", vec![]), ("pass", PASS.into())],
        &import_args("b.age"),
        "cannot use this backup",
    ));
    cases.push(case(
        "plain JSON, not encrypted",
        vec![("b.age", document(serde_json::json!([]))), ("pass", PASS.into())],
        &import_args("b.age"),
        "cannot use this backup",
    ));
    for cut in [
        1,
        10,
        34,
        35,
        40,
        64,
        100,
        150,
        200,
        300,
        500,
        800,
        1000,
        1500,
        2000,
        good.len() - 40,
        good.len() - 10,
        good.len() - 2,
    ] {
        if cut < good.len() {
            cases.push(case(
                format!("truncated at {cut}"),
                vec![("b.age", good[..cut].to_vec()), ("pass", PASS.into())],
                &import_args("b.age"),
                "cannot use this backup",
            ));
        }
    }
    for pos in
        [40, 60, 70, 80, 90, 100, 120, 140, 200, 300, 400, 600, 900, 1200, 1600, 2000, good.len() - 60, good.len() - 40]
    {
        if pos < good.len() {
            let mut flipped = good.clone();
            flipped[pos] ^= 0x04;
            cases.push(case(
                format!("bit flipped at {pos}"),
                vec![("b.age", flipped), ("pass", PASS.into())],
                &import_args("b.age"),
                "cannot use this backup",
            ));
        }
    }
    {
        let identity = age::x25519::Identity::generate();
        let recipient = identity.to_public();
        let encryptor = age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient)).unwrap();
        let mut out = Vec::new();
        let armor = age::armor::ArmoredWriter::wrap_output(&mut out, age::armor::Format::AsciiArmor).unwrap();
        let mut w = encryptor.wrap_output(armor).unwrap();
        w.write_all(&document(serde_json::json!([]))).unwrap();
        w.finish().unwrap().finish().unwrap();
        cases.push(case(
            "x25519 recipient instead of a passphrase",
            vec![("b.age", out), ("pass", PASS.into())],
            &import_args("b.age"),
            "not to a passphrase",
        ));
    }
    for (label, doc, needle) in [
        ("version 3", br#"{"format":"tails-server-backup","version":3,"services":[]}"#.to_vec(), "version 3"),
        ("version 0", br#"{"format":"tails-server-backup","version":0,"services":[]}"#.to_vec(), "version 0"),
        ("version 99", br#"{"format":"tails-server-backup","version":99}"#.to_vec(), "version 99"),
        (
            "version as text",
            br#"{"format":"tails-server-backup","version":"1","services":[]}"#.to_vec(),
            "version is missing",
        ),
        ("no version", br#"{"format":"tails-server-backup","services":[]}"#.to_vec(), "version is missing"),
        ("other format", br#"{"format":"onionshare","version":1}"#.to_vec(), "not a tails-server backup"),
        ("not JSON", b"hello".to_vec(), "not a tails-server backup"),
        (
            "unknown field",
            br#"{"format":"tails-server-backup","version":1,"created":0,"services":[],"extra":1}"#.to_vec(),
            "unknown field",
        ),
        (
            "services not a list",
            br#"{"format":"tails-server-backup","version":1,"created":0,"services":{}}"#.to_vec(),
            "invalid",
        ),
    ] {
        cases.push(case(
            label,
            vec![("b.age", age_encrypt(&doc, PASS)), ("pass", PASS.into())],
            &import_args("b.age"),
            needle,
        ));
    }
    let dup = age_encrypt(&document(serde_json::json!([service.clone(), service.clone()])), PASS);
    cases.push(case(
        "duplicate service names",
        vec![("b.age", dup), ("pass", PASS.into())],
        &import_args("b.age"),
        "appears twice",
    ));
    type Edit<'a> = Box<dyn Fn(&mut serde_json::Value) + 'a>;
    let service_key = service["key"].clone();
    let edits: Vec<(&str, Edit, &str)> = vec![
        ("name with /", Box::new(|s| s["name"] = "a/b".into()), "'/'"),
        ("name ..", Box::new(|s| s["name"] = "..".into()), "'.'"),
        ("name with NUL", Box::new(|s| s["name"] = "a\0b".into()), "\\0"),
        ("name with CR LF", Box::new(|s| s["name"] = "a\r\nb".into()), "\\r"),
        ("non-ASCII name", Box::new(|s| s["name"] = "café".into()), "'é'"),
        ("empty name", Box::new(|s| s["name"] = "".into()), "empty"),
        ("long name", Box::new(|s| s["name"] = "x".repeat(40).into()), "longer than 32"),
        ("key not base64", Box::new(|s| s["key"] = "ED25519-V3:!!!!".into()), "base64"),
        ("key too short", Box::new(|s| s["key"] = "ED25519-V3:AAAA".into()), "64 bytes"),
        ("key of another type", Box::new(|s| s["key"] = "RSA1024:AAAA".into()), "ED25519-V3"),
        (
            "unclamped key",
            Box::new(|s| s["key"] = format!("ED25519-V3:{}", data_encoding::BASE64.encode(&[0xffu8; 64])).into()),
            "clamped",
        ),
        ("client key too short", Box::new(|s| s["clients"][0]["public-key"] = "AAAA".into()), "52 base32"),
        ("client key not base32", Box::new(|s| s["clients"][0]["public-key"] = "1".repeat(52).into()), "base32"),
        (
            "client secret not matching",
            Box::new(|s| {
                s["clients"][0]["secret-key"] = ClientSecretKey::generate().unwrap().to_base32().to_string().into()
            }),
            "do not match",
        ),
        ("client name with /", Box::new(|s| s["clients"][0]["name"] = "../x".into()), "'.'"),
        (
            "duplicate client names",
            Box::new(|s| {
                let c = s["clients"][0].clone();
                s["clients"].as_array_mut().unwrap().push(c);
            }),
            "appears twice",
        ),
        (
            "33 clients",
            Box::new(|s| {
                let clients: Vec<_> = (0..33).map(|i| { let k = ClientSecretKey::generate().unwrap(); serde_json::json!({"name": format!("c{i}"), "public-key": k.public_key().to_base32(), "secret-key": null, "created": 0}) }).collect();
                s["clients"] = clients.into();
            }),
            "at most 32",
        ),
        ("client auth without clients", Box::new(|s| s["clients"] = serde_json::json!([])), "no client"),
        ("clients without client auth", Box::new(|s| s["client-auth"] = false.into()), "client authorization is off"),
        ("unknown kind", Box::new(|s| s["kind"] = "irc".into()), "unknown service kind"),
        ("unknown option", Box::new(|s| s["options"]["colour"] = "red".into()), "unknown option"),
        ("option of the wrong type", Box::new(|s| s["options"]["autostart"] = "yes".into()), "true or false"),
        (
            "option with a line break",
            Box::new(|s| s["options"]["welcome-message"] = "a\nb".into()),
            "control characters",
        ),
        ("port 0", Box::new(|s| s["local-port"] = 0.into()), "port 0"),
        ("port too large", Box::new(|s| s["remote-port"] = 70000.into()), "invalid"),
        (
            "missing key",
            Box::new(|s| {
                s.as_object_mut().unwrap().remove("key");
            }),
            "missing field",
        ),
        ("same address as an existing service", Box::new(|s| s["key"] = service_key.clone()), "already belongs"),
    ];
    for (label, edit, needle) in edits {
        cases.push(case(label, vec![("b.age", with(&*edit)), ("pass", PASS.into())], &import_args("b.age"), needle));
    }
    // An existing name, with the default --on-conflict fail.
    let existing = age_encrypt(&document(serde_json::json!([service.clone()])), PASS);
    cases.push(case(
        "existing name",
        vec![("b.age", existing.clone()), ("pass", PASS.into())],
        &import_args("b.age"),
        "nothing was imported",
    ));
    cases.push(case(
        "bad --on-conflict",
        vec![("b.age", existing), ("pass", PASS.into())],
        &["import", "b.age", "--passphrase-file", "pass", "--on-conflict", "merge"],
        "merge",
    ));

    // C tor HiddenServiceDirs.
    let secret = OnionSecretKey::generate().unwrap().to_tor_secret_file().to_vec();
    let mut wrong_header = secret.clone();
    wrong_header[3] = b'X';
    let public_key = ClientSecretKey::generate().unwrap().public_key();
    let tor_dir = |label: &str, files: Vec<(&str, Vec<u8>)>, needle: &str| {
        let files = files.into_iter().map(|(n, b)| (format!("hs/{n}"), b)).collect::<Vec<_>>();
        Case {
            label: label.into(),
            files,
            args: ["import-tor-dir", "hs", "--local-port", "80"].iter().map(|s| s.to_string()).collect(),
            needle: needle.into(),
        }
    };
    cases.push(tor_dir("no secret key", vec![("hostname", b"x\n".to_vec())], "hs_ed25519_secret_key"));
    cases.push(tor_dir("wrong header", vec![("hs_ed25519_secret_key", wrong_header)], "header"));
    cases.push(tor_dir("short key file", vec![("hs_ed25519_secret_key", secret[..90].to_vec())], "96 bytes"));
    cases.push(tor_dir(
        "long key file",
        vec![("hs_ed25519_secret_key", [secret.clone(), vec![0]].concat())],
        "96 bytes",
    ));
    cases.push(tor_dir("huge key file", vec![("hs_ed25519_secret_key", vec![0; 100_000])], "larger than"));
    cases.push(tor_dir(
        "hostname of another key",
        vec![
            ("hs_ed25519_secret_key", secret.clone()),
            ("hostname", format!("{}\n", OnionSecretKey::generate().unwrap().address()).into_bytes()),
        ],
        "but the secret key is that of",
    ));
    cases.push(tor_dir(
        "hostname not an address",
        vec![("hs_ed25519_secret_key", secret.clone()), ("hostname", b"example.com\n".to_vec())],
        "56 characters",
    ));
    cases.push(tor_dir(
        "public key file not matching",
        vec![("hs_ed25519_secret_key", secret.clone()), ("hs_ed25519_public_key", vec![0; 64])],
        "does not match",
    ));
    for (label, name, content, needle) in [
        (".auth without prefix", "a.auth", public_key.to_base32(), "descriptor:x25519"),
        (".auth bad key", "a.auth", "descriptor:x25519:AAAA".to_owned(), "52 base32"),
        (".auth ed25519", "a.auth", "descriptor:ed25519:AAAA".to_owned(), "descriptor:x25519"),
        (".auth empty", "a.auth", String::new(), "descriptor:x25519"),
        (".auth bad client name", "Alice Smith.auth", public_key.auth_line(), "'A'"),
        (".auth non-ASCII client name", "zoë.auth", public_key.auth_line(), "'ë'"),
    ] {
        cases.push(tor_dir(
            label,
            vec![
                ("hs_ed25519_secret_key", secret.clone()),
                (&format!("authorized_clients/{name}"), content.into_bytes()),
            ],
            needle,
        ));
    }
    {
        let mut files = vec![("hs_ed25519_secret_key".to_owned(), secret.clone())];
        for i in 0..33 {
            files.push((
                format!("authorized_clients/c{i}.auth"),
                ClientSecretKey::generate().unwrap().public_key().auth_line().into_bytes(),
            ));
        }
        let files: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
        cases.push(tor_dir("33 authorized clients", files, "at most 32"));
    }
    cases.push(case(
        "tor dir: not a directory",
        vec![("hs", b"x".to_vec())],
        &["import-tor-dir", "hs", "--local-port", "80"],
        "not a directory",
    ));
    cases.push(case(
        "tor dir: no local port",
        vec![("hs/hs_ed25519_secret_key", secret.clone())],
        &["import-tor-dir", "hs"],
        "--local-port",
    ));
    cases.push(case(
        "tor dir: bad name",
        vec![("hs/hs_ed25519_secret_key", secret.clone())],
        &["import-tor-dir", "hs", "--local-port", "1", "--name", "Bad/Name"],
        "'B'",
    ));

    // OnionShare settings.
    let key = OnionSecretKey::generate().unwrap();
    let client = ClientSecretKey::generate().unwrap();
    let share = |label: &str, json: String, needle: &str| {
        case(
            label,
            vec![("share.json", json.into_bytes())],
            &["import-onionshare", "share.json", "--local-port", "17600"],
            needle,
        )
    };
    let good_share: serde_json::Value = serde_json::from_str(&onionshare_json(&key, Some(&client), false)).unwrap();
    let edit_share = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut v = good_share.clone();
        edit(&mut v);
        v.to_string()
    };
    cases.push(share("not JSON", "{".into(), "not JSON"));
    cases.push(share(
        "no private key",
        edit_share(&|v| v["onion"]["private_key"] = serde_json::Value::Null),
        "no onion.private_key",
    ));
    cases.push(share("private key not base64", edit_share(&|v| v["onion"]["private_key"] = "%%%".into()), "base64"));
    cases.push(share("private key short", edit_share(&|v| v["onion"]["private_key"] = "AAAA".into()), "64 bytes"));
    cases.push(share(
        "service id of another key",
        edit_share(&|v| v["general"]["service_id"] = OnionSecretKey::generate().unwrap().address().service_id().into()),
        "but the key is that of",
    ));
    cases.push(share(
        "service id malformed",
        edit_share(&|v| v["general"]["service_id"] = "abc".into()),
        "56 characters",
    ));
    cases.push(share(
        "client key bad",
        edit_share(&|v| v["onion"]["client_auth_priv_key"] = "AAAA".into()),
        "client_auth_priv_key",
    ));
    cases.push(share(
        "client keys not matching",
        edit_share(&|v| {
            v["onion"]["client_auth_pub_key"] = ClientSecretKey::generate().unwrap().public_key().to_base32().into()
        }),
        "does not match",
    ));
    cases.push(share("huge file", format!("{{\"x\":\"{}\"}}", "a".repeat(2 * 1024 * 1024)), "larger than"));
    cases.push(case(
        "onionshare: missing file",
        vec![],
        &["import-onionshare", "nope.json", "--local-port", "1"],
        "nope.json",
    ));

    // Sharing: files are never overwritten, and there is nothing to show for public-key clients.
    cases.push(case(
        "credential over an existing file",
        vec![("out", b"keep".to_vec())],
        &["client", "show", "mumble", "alice", "--output", "out"],
        "--force",
    ));
    cases.push(case(
        "private form of a public-key client",
        vec![],
        &["client", "show", "mumble", "bob", "--as", "qr"],
        "public key only",
    ));
    cases.push(case(
        "export over an existing file",
        vec![("out", b"keep".to_vec()), ("pass", PASS.into())],
        &["export", "-o", "out", "--passphrase-file", "pass"],
        "--force",
    ));
    cases.push(case(
        "export of an unknown service",
        vec![("pass", PASS.into())],
        &["export", "-o", "new.age", "--service", "nothere", "--passphrase-file", "pass"],
        "no service named",
    ));
    cases.push(case(
        "export-tor-dir over a file",
        vec![("f", b"x".to_vec())],
        &["export-tor-dir", "mumble", "f"],
        "not a directory",
    ));

    assert!(cases.len() >= 100, "the corpus has {} cases", cases.len());
    let before = store_state(&env.state_dir());
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let work = env.root.path().join(format!("case{i}"));
        fs::create_dir_all(&work).unwrap();
        for (name, bytes) in &case.files {
            let path = work.join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            if name.ends_with("/x") {
                continue;
            }
            fs::write(&path, bytes).unwrap();
        }
        let out: common::Run = env.command().current_dir(&work).args(&case.args).output().unwrap().into();
        if out.code == 0 || !out.stderr.contains(&case.needle) {
            failures.push(format!(
                "{} ({:?}): exit {}, stderr: {}",
                case.label,
                case.args,
                out.code,
                out.stderr.trim()
            ));
        }
        if store_state(&env.state_dir()) != before {
            failures.push(format!("{}: the store changed", case.label));
            break;
        }
        // Files that were there are never overwritten.
        if let Some((name, bytes)) = case.files.iter().find(|(n, _)| n == "out") {
            assert_eq!(&fs::read(work.join(name)).unwrap(), bytes);
        }
    }
    assert!(failures.is_empty(), "{} of {} cases misbehaved:\n{}", failures.len(), cases.len(), failures.join("\n"));
    eprintln!("{} hostile inputs refused, store unchanged", cases.len());
}

/// A mumble service with clients client-1, alice (key pair) and bob (public key only).
fn mumble_with_clients(env: &TestEnv) {
    env.run(&["add", "mumble"]).ok();
    env.run(&["client", "add", "mumble", "alice"]).ok();
    let theirs = ClientSecretKey::generate().unwrap().public_key();
    env.run(&["client", "add", "mumble", "bob", "--public-key", &theirs.to_base32()]).ok();
}

/// u = 0, u = 1 and a point of order 8: x25519 public keys whose shared secret with any key
/// is all zeros, so that anyone who knows the address could decrypt the descriptor.
fn small_order_keys() -> Vec<String> {
    let mut one = [0u8; 32];
    one[0] = 1;
    let order8 =
        data_encoding::HEXLOWER.decode(b"5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157").unwrap();
    [&[0u8; 32][..], &one, &order8].iter().map(|b| data_encoding::BASE32_NOPAD.encode(b)).collect()
}

#[test]
fn small_order_client_keys_are_refused_from_tor_dirs_backups_and_onionshare() {
    let env = TestEnv::new();
    mumble_with_clients(&env);
    let good_backup = env.root.path().join("good.age");
    export(&env, &good_backup);
    let plain: serde_json::Value = serde_json::from_slice(
        &tails_server_core::backup::decrypt(&fs::read(&good_backup).unwrap(), PASS).unwrap().to_json(),
    )
    .unwrap();
    let mumble = plain["services"].as_array().unwrap().iter().find(|s| s["name"] == "mumble").unwrap().clone();
    let pass = passfile(&env, PASS);
    let before = store_state(&env.state_dir());
    let needle = "it is a small-order point";
    for (i, bad) in small_order_keys().into_iter().enumerate() {
        // A C tor HiddenServiceDir with one such client among good ones.
        let hs = env.root.path().join(format!("hs{i}"));
        fs::create_dir_all(hs.join("authorized_clients")).unwrap();
        fs::write(hs.join("hs_ed25519_secret_key"), OnionSecretKey::generate().unwrap().to_tor_secret_file()).unwrap();
        let alice = ClientSecretKey::generate().unwrap().public_key();
        fs::write(hs.join("authorized_clients/alice.auth"), alice.auth_line() + "\n").unwrap();
        fs::write(hs.join("authorized_clients/eve.auth"), format!("descriptor:x25519:{bad}\n")).unwrap();
        let run = env.run(&["import-tor-dir", hs.to_str().unwrap(), "--name", "fromtor", "--local-port", "80"]);
        let run = run.fails_with(needle);
        assert!(run.stderr.contains("eve.auth"), "the error names the file: {}", run.stderr);

        // A backup holding a new service whose client has such a key.
        let mut service = mumble.clone();
        service["name"] = "newcomer".into();
        service["key"] = OnionSecretKey::generate().unwrap().to_control_blob().as_str().to_owned().into();
        let clients = service["clients"].as_array_mut().unwrap();
        let bob = clients.iter_mut().find(|c| c["name"] == "bob").unwrap();
        bob["public-key"] = bad.clone().into();
        let file = env.root.path().join(format!("bad{i}.age"));
        fs::write(&file, age_encrypt(&document(serde_json::json!([service])), PASS)).unwrap();
        env.run(&["import", file.to_str().unwrap(), "--passphrase-file", pass.to_str().unwrap()]).fails_with(needle);
        env.run(&["import", file.to_str().unwrap(), "--passphrase-file", pass.to_str().unwrap(), "--dry-run"])
            .fails_with(needle);

        // An OnionShare file whose client public key is such a key.
        let mut share: serde_json::Value = serde_json::from_str(&onionshare_json(
            &OnionSecretKey::generate().unwrap(),
            Some(&ClientSecretKey::generate().unwrap()),
            false,
        ))
        .unwrap();
        share["onion"]["client_auth_pub_key"] = bad.clone().into();
        let file = env.root.path().join(format!("share{i}.json"));
        fs::write(&file, share.to_string()).unwrap();
        env.run(&["import-onionshare", file.to_str().unwrap(), "--local-port", "17600"]).fails_with(needle);
    }
    assert!(store_state(&env.state_dir()) == before, "refused imports must not touch the store");
}

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

/// The 64 secret bytes of the key in an `hs_ed25519_secret_key` file, in every form we know.
fn key_forms(key_file: &[u8]) -> Vec<Vec<u8>> {
    let key = &key_file[32..];
    assert_eq!(key.len(), 64);
    vec![
        key.to_vec(),
        data_encoding::BASE64.encode(key).into_bytes(),
        data_encoding::BASE32_NOPAD.encode(key).into_bytes(),
        data_encoding::HEXLOWER.encode(key).into_bytes(),
    ]
}

fn holds_any(haystack: &[u8], needles: &[Vec<u8>]) -> bool {
    needles.iter().any(|n| haystack.windows(n.len()).any(|w| w == &n[..]))
}

#[test]
fn export_tor_dir_never_follows_a_planted_symlink() {
    let env = TestEnv::new();
    mumble_with_clients(&env);
    let elsewhere = env.root.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    let victim = elsewhere.join("victim");
    fs::write(&victim, b"untouched").unwrap();
    let hs = env.root.path().join("hs");
    fs::create_dir(&hs).unwrap();
    fs::set_permissions(&hs, fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink(&victim, hs.join("hs_ed25519_secret_key")).unwrap();
    // A dangling link too: the file it names must not come into being.
    let dangling = elsewhere.join("created-by-us");
    std::os::unix::fs::symlink(&dangling, hs.join("hostname")).unwrap();

    env.run(&["export-tor-dir", "mumble", hs.to_str().unwrap()]).fails_with("--force");
    env.run(&["export-tor-dir", "mumble", hs.to_str().unwrap(), "--force"]).ok();

    let key_file = hs.join("hs_ed25519_secret_key");
    assert!(fs::symlink_metadata(&key_file).unwrap().file_type().is_file(), "the link was replaced by a file");
    assert_eq!(mode_of(&key_file), 0o600);
    let forms = key_forms(&fs::read(&key_file).unwrap());
    let victim_bytes = fs::read(&victim).unwrap();
    assert_eq!(victim_bytes, b"untouched", "the link's target is untouched");
    assert!(!holds_any(&victim_bytes, &forms));
    assert!(!dangling.exists(), "a dangling link's target was created");
    assert!(fs::symlink_metadata(hs.join("hostname")).unwrap().file_type().is_file());
    for entry in fs::read_dir(&elsewhere).unwrap() {
        assert!(!holds_any(&fs::read(entry.unwrap().path()).unwrap(), &forms));
    }
}

#[test]
fn export_tor_dir_makes_what_it_writes_private() {
    let env = TestEnv::new();
    mumble_with_clients(&env);
    // An existing directory and key file that others can read.
    let hs = env.root.path().join("hs");
    fs::create_dir_all(hs.join("authorized_clients")).unwrap();
    fs::write(hs.join("hs_ed25519_secret_key"), b"old").unwrap();
    fs::set_permissions(hs.join("hs_ed25519_secret_key"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(hs.join("authorized_clients"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&hs, fs::Permissions::from_mode(0o755)).unwrap();
    env.run(&["export-tor-dir", "mumble", hs.to_str().unwrap(), "--force"]).ok();
    assert_eq!(mode_of(&hs), 0o700);
    assert_eq!(mode_of(&hs.join("authorized_clients")), 0o700);
    for name in ["hs_ed25519_secret_key", "hs_ed25519_public_key", "hostname", "authorized_clients/alice.auth"] {
        assert_eq!(mode_of(&hs.join(name)), 0o600, "{name}");
    }
    assert_eq!(fs::read(hs.join("hs_ed25519_secret_key")).unwrap().len(), 96);

    // New directories (and missing parents) are created 0700.
    let deep = env.root.path().join("new/deeper/hs");
    env.run(&["export-tor-dir", "mumble", deep.to_str().unwrap()]).ok();
    for d in [env.root.path().join("new"), env.root.path().join("new/deeper"), deep.clone()] {
        assert_eq!(mode_of(&d), 0o700, "{}", d.display());
    }

    // A directory others can write to is refused, and nothing is written into it.
    let shared = env.root.path().join("shared");
    fs::create_dir(&shared).unwrap();
    for mode in [0o777, 0o770, 0o1777] {
        fs::set_permissions(&shared, fs::Permissions::from_mode(mode)).unwrap();
        env.run(&["export-tor-dir", "mumble", shared.to_str().unwrap(), "--force"])
            .fails_with("other users can write to this directory");
        assert_eq!(fs::read_dir(&shared).unwrap().count(), 0);
    }
}

#[test]
fn export_tor_dir_with_force_removes_the_auth_files_of_removed_clients() {
    let env = TestEnv::new();
    mumble_with_clients(&env);
    let hs = env.root.path().join("hs");
    env.run(&["export-tor-dir", "mumble", hs.to_str().unwrap()]).ok();
    let auth = hs.join("authorized_clients");
    let listing = |dir: &Path| {
        let mut names: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        names
    };
    assert_eq!(listing(&auth), ["alice.auth", "bob.auth", "client-1.auth"]);
    fs::write(auth.join("notes.txt"), b"not tor's").unwrap();
    env.run(&["client", "remove", "mumble", "alice"]).ok();
    env.run(&["export-tor-dir", "mumble", hs.to_str().unwrap(), "--force"]).ok();
    assert_eq!(listing(&auth), ["bob.auth", "client-1.auth", "notes.txt"], "alice would still be admitted");
}

#[test]
fn credential_files_and_backups_never_follow_symlinks() {
    let env = TestEnv::new();
    mumble_with_clients(&env);
    let elsewhere = env.root.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    let victim = elsewhere.join("victim");
    fs::write(&victim, b"untouched").unwrap();
    let out = env.root.path().join("out");
    fs::create_dir(&out).unwrap();
    let pass = passfile(&env, PASS);

    // Without --force, any existing entry is refused, a dangling link included.
    let dangling = out.join("dangling");
    std::os::unix::fs::symlink(elsewhere.join("nothing"), &dangling).unwrap();
    env.run(&["client", "show", "mumble", "alice", "--as", "auth-private", "--output", dangling.to_str().unwrap()])
        .fails_with("--force");
    env.run(&["export", "--output", dangling.to_str().unwrap(), "--passphrase-file", pass.to_str().unwrap()])
        .fails_with("--force");
    assert!(!elsewhere.join("nothing").exists());

    // With --force, the link is replaced by a private file; its target is untouched.
    for (i, args) in [
        vec!["client", "show", "mumble", "alice", "--as", "auth-private"],
        vec!["export", "--passphrase-file", pass.to_str().unwrap()],
    ]
    .into_iter()
    .enumerate()
    {
        let link = out.join(format!("link{i}"));
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let mut args = args.clone();
        args.extend(["--output", link.to_str().unwrap(), "--force"]);
        env.run(&args).ok();
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_file(), "{args:?}");
        assert_eq!(mode_of(&link), 0o600, "{args:?}");
        assert_eq!(fs::read(&victim).unwrap(), b"untouched", "{args:?}");
    }

    // Not into a directory others can write to.
    fs::set_permissions(&out, fs::Permissions::from_mode(0o1777)).unwrap();
    let file = out.join("alice.auth_private");
    env.run(&["client", "show", "mumble", "alice", "--as", "auth-private", "--output", file.to_str().unwrap()])
        .fails_with("other users can write to this directory");
    env.run(&["export", "--output", file.to_str().unwrap(), "--passphrase-file", pass.to_str().unwrap()])
        .fails_with("other users can write to this directory");
    assert!(!file.exists());
}

/// The backup holds the keys kept for other people's services too (version 2): they come
/// back with their names and persistence, a version-1 backup still imports, and a kept key
/// meets the same conflict rules as a service.
#[test]
fn kept_keys_travel_in_the_backup_under_the_same_rules() {
    let owner = TestEnv::new();
    for name in ["blog", "chat"] {
        owner.run(&["add", "custom", "--name", name, "--local-port", "8080"]).ok();
    }
    let friend = TestEnv::new();
    for (key, service, extra) in [("alice-blog", "blog", None), ("alice-chat", "chat", Some("--until-shutdown"))] {
        let file = friend.root.path().join(key);
        fs::write(&file, owner.run(&["client", "show", service, "client-1"]).ok().stdout).unwrap();
        let mut args = vec!["--control-socket", "/nonexistent", "key", "add", key, file.to_str().unwrap()];
        args.extend(extra);
        assert_eq!(friend.run(&args).code, 3, "kept; tor to be told later");
    }
    let backup = friend.root.path().join("keys.age");
    let pass = passfile(&friend, PASS);
    let exported =
        friend.run(&["export", "--output", backup.to_str().unwrap(), "--passphrase-file", pass.to_str().unwrap()]).ok();
    assert!(
        exported.stdout.contains("key alice-blog") && exported.stdout.contains("key alice-chat"),
        "{}",
        exported.stdout
    );

    let elsewhere = TestEnv::new();
    // Exit 3: the keys are stored, and tor (unreachable here) is still to get them.
    let imported = import(&elsewhere, &backup, &["--control-socket", "/nonexistent"]);
    assert_eq!(imported.code, 3, "{}", imported.stderr);
    assert!(imported.stderr.contains("tor does not have key alice-blog yet"), "{}", imported.stderr);
    assert!(imported.stdout.contains("key alice-blog"), "{}", imported.stdout);
    let keys = elsewhere.run(&["--format", "json", "key", "list"]).ok().json();
    let kept = |name: &str| keys.as_array().unwrap().iter().find(|k| k["name"] == name).cloned().unwrap();
    assert_eq!(kept("alice-blog")["persistent"], true);
    assert_eq!(kept("alice-chat")["persistent"], false);
    assert_eq!(kept("alice-blog")["address"], owner.service("blog")["address"]);

    let before = store_state(&elsewhere.state_dir());
    import(&elsewhere, &backup, &[]).fails_with("key alice-blog: a key of that name is kept");
    assert_eq!(store_state(&elsewhere.state_dir()), before, "a refused import changes nothing");
    let skipped = import(&elsewhere, &backup, &["--on-conflict", "skip", "--control-socket", "/nonexistent"]).ok();
    assert!(skipped.stdout.contains("key alice-chat"), "{}", skipped.stdout);
    // Into the owner's own store: a key for one of its own services makes no sense.
    import(&owner, &backup, &[]).fails_with("key alice-blog: it is for your own service");

    // A version-1 backup (services only, no `keys`), as earlier versions wrote it.
    let owners = owner.root.path().join("services.age");
    export(&owner, &owners);
    let mut document: serde_json::Value = serde_json::from_slice(
        &tails_server_core::backup::decrypt(&fs::read(&owners).unwrap(), PASS).unwrap().to_json(),
    )
    .unwrap();
    document["version"] = 1.into();
    document.as_object_mut().unwrap().remove("keys");
    let old = friend.root.path().join("old.age");
    fs::write(&old, age_encrypt(document.to_string().as_bytes(), PASS)).unwrap();
    let restored = TestEnv::new();
    import(&restored, &old, &[]).ok();
    assert_eq!(restored.service("chat")["address"], owner.service("chat")["address"]);
}

/// Replacing a service by import says what the backup's version lets in that today's does
/// not: friends whose keys today's lacks, an SFTP login key it lacks, write access, a
/// changed password. The dry run that skips says it too, so the question comes before the
/// choice; what only narrows says nothing.
#[test]
fn replacing_a_service_by_import_says_what_the_backups_version_lets_in() {
    const ALICE: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEB";
    const MALLORY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgIC";
    let source = TestEnv::new();
    source.run(&["add", "sftp", "--set", &format!("authorized-keys={ALICE},{MALLORY}")]).ok();
    source.run(&["client", "add", "sftp", "mallory"]).ok();
    let backup = source.root.path().join("backup.age");
    export(&source, &backup);

    let target = TestEnv::new();
    import(&target, &backup, &[]).ok();
    let widened = |out: &common::Run| -> Vec<String> {
        out.json()["replacing-widens"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
    };
    assert!(widened(&import(&target, &backup, &["--on-conflict", "skip", "--dry-run"]).ok()).is_empty(), "the same");
    // Today's is narrower than the backup's: one friend and one login key fewer, read-only.
    target.run(&["client", "remove", "sftp", "mallory"]).ok();
    target.run(&["set-option", "sftp", "authorized-keys", &format!("{ALICE} alice")]).ok();
    target.run(&["set-option", "sftp", "read-only", "true"]).ok();
    let expected = [
        "sftp: clients whose keys it does not have today: mallory",
        "sftp: authorized-keys (a new SSH key lets its holder log in)",
        "sftp: read-only (it lets more people connect, or lets them do more)",
    ];
    for rule in ["skip", "replace"] {
        let dry = import(&target, &backup, &["--on-conflict", rule, "--dry-run"]).ok();
        assert_eq!(widened(&dry), expected, "{rule}: {}", dry.stdout);
    }
    let pass = passfile(&target, PASS);
    let args = ["import", backup.to_str().unwrap(), "--passphrase-file", pass.to_str().unwrap(), "--on-conflict"];
    let told = target.run(&[&args[..], &["skip", "--dry-run"]].concat()).ok();
    assert!(
        told.stderr.contains("Replacing today's services (--on-conflict replace) would let in more"),
        "{}",
        told.stderr
    );
    let replaced = target.run(&[&args[..], &["replace"]].concat()).ok();
    assert!(
        replaced.stderr.contains("let in more than today's did") && replaced.stderr.contains("mallory"),
        "{}",
        replaced.stderr
    );
    assert_eq!(target.run(&["get-option", "sftp", "read-only"]).ok().stdout.trim(), "false");
}

/// An import never lowers protection unasked: a service open to anyone, one published at once,
/// one open to the local network are shown and held back (imported disabled and without LAN
/// access; an open one refused) unless the person confirms with --accept-lower-protection.
#[test]
fn an_import_never_lowers_protection_without_a_confirmation() {
    let source = TestEnv::new();
    source.run(&["add", "custom", "--name", "site", "--local-port", "8080"]).ok();
    source.run(&["--control-port", "127.0.0.1:9", "enable", "site"]).exits(3);
    source.run(&["set-option", "site", "allow-lan-connections", "true"]).ok();
    let guarded = source.root.path().join("guarded.age");
    export(&source, &guarded);
    source.run(&["add", "custom", "--name", "open", "--local-port", "8081", "--allow-anyone-with-the-address"]).ok();
    let with_open = source.root.path().join("with-open.age");
    export(&source, &with_open);

    // Not a terminal, no confirmation: shown, then held back.
    let target = TestEnv::new();
    let out = import(&target, &guarded, &[]).ok();
    assert!(out.stderr.contains("site is enabled: it is published as soon as it is imported"), "{}", out.stderr);
    assert!(out.stderr.contains("site allows connections from the local network"), "{}", out.stderr);
    let held = out.json()["held-back"].as_array().unwrap().len();
    assert_eq!(held, 2, "{}", out.stdout);
    let site = target.service("site");
    assert_eq!(
        (site["enabled"].clone(), site["options"]["allow-lan-connections"].clone()),
        (false.into(), false.into())
    );

    // An open service is never imported unconfirmed; nothing is written.
    let before = common::store_state(&target.state_dir());
    let refused = import(&target, &with_open, &["--on-conflict", "skip"]);
    assert!(refused.code != 0 && refused.stderr.contains("--accept-lower-protection"), "{}", refused.stderr);
    assert!(refused.stderr.contains("anyone who learns its address can reach it"), "{}", refused.stderr);
    assert!(common::store_state(&target.state_dir()) == before, "a refused import writes nothing");

    // Confirmed: as the backup has it (tor is not here: saved, to be published, exit 3).
    let confirmed = TestEnv::new();
    let out = import(&confirmed, &with_open, &["--accept-lower-protection", "--control-port", "127.0.0.1:9"]).exits(3);
    assert!(out.json()["held-back"].as_array().unwrap().is_empty(), "{}", out.stdout);
    assert_eq!(confirmed.service("site")["enabled"], true);
    assert_eq!(confirmed.service("open")["client-authorization"], false);
}
