//! The CLI on real sled files, one new process per command, as a user runs it.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{store_state, TestEnv};
use tails_server::keys::{ClientSecretKey, OnionAddress};

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
    env.run(&["--control-port", "127.0.0.1:9", "enable", "custom"])
        .fails_with("recorded as enabled, but it could not be published");
    assert_eq!(env.service("custom")["enabled"], true);

    env.run(&["--control-port", "127.0.0.1:9", "client", "add", "custom", "alice"])
        .fails_with("clients of custom are saved");
    let s = env.service("custom");
    assert_eq!(s["clients"].as_array().unwrap().len(), 2);
    assert_eq!(s["address"], address.as_str(), "the address never changes");

    env.run(&["set-option", "custom", "autostart", "false"]).ok();
    assert_eq!(env.service("custom")["options"]["autostart"], false);
    assert_eq!(env.run(&["get-option", "custom", "autostart"]).ok().stdout, "false\n");

    env.run(&["--control-port", "127.0.0.1:9", "client", "remove", "custom", "alice"])
        .fails_with("clients of custom are saved");
    assert_eq!(env.service("custom")["clients"].as_array().unwrap().len(), 1);

    // The key shown at creation is still the one stored.
    let shown = env.run(&["client", "show", "custom", "client-1", "--as", "key"]).ok();
    assert_eq!(shown.stdout.trim(), key);

    env.run(&["--control-port", "127.0.0.1:9", "disable", "custom"]).fails_with("recorded as disabled");
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
