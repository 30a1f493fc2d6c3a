//! The system service against a real dbus-daemon started here, with the repository's bus
//! policy (persistence-hooks/dbus) included as the system bus includes it. polkit does not
//! run on this private bus: the service is told to allow user id 0 only (its documented
//! test backend); polkit itself is proven in the VM tests. The Persistent Storage service of
//! Tails (Python, tpsd) is stood in for by a small zbus object exporting the same interface
//! and properties — it stands in for tpsd only, and says so.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{luks_volume, wait_for_name, Bus, KillOnDrop, LocalTor, PersistentStorageStandIn, TestEnv, STAND_IN_NAME};
use tails_server_dbus::{ServerProxy, ServiceError, BUS_NAME};

/// `tails-server service` on the bus, as root, allowing uid 0 only.
fn start_service(env: &TestEnv, bus: &Bus, tor: Option<&LocalTor>, persistent_storage: &str) -> KillOnDrop {
    start_service_for(env, bus, tor, persistent_storage, "uids:0")
}

/// The same, allowing the callers `authorization` names (`uids:0,65534`: nobody too, the
/// allow-list standing in for polkit's allow_active).
fn start_service_for(
    env: &TestEnv,
    bus: &Bus,
    tor: Option<&LocalTor>,
    persistent_storage: &str,
    authorization: &str,
) -> KillOnDrop {
    start_service_with(env, bus, tor, persistent_storage, authorization, &[])
}

/// The same, with more arguments for `tails-server service`.
fn start_service_with(
    env: &TestEnv,
    bus: &Bus,
    tor: Option<&LocalTor>,
    persistent_storage: &str,
    authorization: &str,
    more: &[&str],
) -> KillOnDrop {
    let mut command = env.command();
    if let Some(tor) = tor {
        command.env("TAILS_SERVER_CONTROL_PORT", tor.control());
    } else {
        command.env("TAILS_SERVER_CONTROL_SOCKET", bus.dir.path().join("no-tor"));
    }
    let log = std::fs::File::create(env.root.path().join("service.log")).unwrap();
    KillOnDrop(
        command
            .args(["service", "--bus", &bus.address, "--authorization", authorization])
            .args(["--persistent-storage", persistent_storage])
            .args(more)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

/// The service allowing root and nobody (the allow-list standing in for polkit's
/// allow_active), once its name is on the bus.
fn serve_root_and_nobody(env: &TestEnv, bus: &Bus, tor: Option<&LocalTor>) -> KillOnDrop {
    let service = start_service_for(env, bus, tor, "none", "uids:0,65534");
    rt().block_on(async {
        wait_for_name(&bus.connect().await, BUS_NAME, &env.root.path().join("service.log")).await;
    });
    service
}

/// The CLI in direct mode (root, on the store itself) with `tor`'s control port.
fn direct(env: &TestEnv, tor: &LocalTor, args: &[&str]) -> common::Run {
    let control = tor.control();
    let mut all = vec!["--control-port", control.as_str()];
    all.extend_from_slice(args);
    env.run(&all)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// tor's `onions/detached` (empty while tor does not answer), from inside the test's runtime.
async fn detached(tor: &LocalTor) -> std::collections::HashSet<String> {
    match tails_server_core::tor::TorControl::connect(&tor.config()).await {
        Ok(mut control) => control.detached_onions().await.unwrap_or_default(),
        Err(_) => Default::default(),
    }
}

fn error_name<T: std::fmt::Debug>(result: Result<T, ServiceError>) -> String {
    match result {
        Err(e) => zbus::DBusError::name(&e).to_string(),
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

fn root_only() -> bool {
    if tails_server_core::unix::euid() != 0 {
        // The repository's policy lets only root own the name (as on Tails); CI runs as root.
        eprintln!("skipped: the D-Bus tests own org.boum.tails.Server, which the bus policy allows root only");
        return false;
    }
    true
}

#[test]
fn every_method_answers_with_the_clis_documents_or_a_named_error() {
    if !root_only() {
        return;
    }
    let bus = Bus::start();
    let env = TestEnv::new();
    let tor = LocalTor::start();
    let _service = start_service(&env, &bus, Some(&tor), "none");
    rt().block_on(async {
        let connection = bus.connect().await;
        wait_for_name(&connection, BUS_NAME, &env.root.path().join("service.log")).await;
        let server = ServerProxy::new(&connection).await.unwrap();
        assert_eq!(server.version().await.unwrap(), 1);

        // The interface as documented in the repository is the one served.
        let introspectable = zbus::fdo::IntrospectableProxy::builder(&connection)
            .destination(BUS_NAME)
            .path(tails_server_dbus::OBJECT_PATH)
            .build()
            .await
            .unwrap();
        let xml = introspectable.introspect().await.unwrap();
        let start = xml.find(r#"<interface name="org.boum.tails.Server1">"#).expect("the interface is exported");
        let served = &xml[start..start + xml[start..].find("</interface>").unwrap() + "</interface>".len()];
        let documented_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/dbus/org.boum.tails.Server1.xml");
        if std::env::var_os("TAILS_SERVER_WRITE_INTROSPECTION").is_some() {
            std::fs::write(&documented_path, format!("{served}\n")).unwrap();
        }
        let documented = std::fs::read_to_string(&documented_path).unwrap_or_default();
        assert_eq!(documented.trim(), served.trim(), "docs/dbus/org.boum.tails.Server1.xml is out of date");
        assert!(server.persistent_storage_unlocked().await.unwrap());
        assert!(server.installed_at_every_login().await.unwrap(), "nothing forgets it off Tails");

        let catalog: serde_json::Value = serde_json::from_str(&server.catalog().await.unwrap()).unwrap();
        assert!(catalog.as_array().unwrap().iter().any(|k| k["name"] == "mumble"), "{catalog}");

        // Signals a GUI can follow.
        use futures_util::StreamExt;
        let mut changes = server.receive_changed().await.unwrap();

        let added = server
            .add("custom", HashMap::from([("name".into(), "web".into()), ("local-port".into(), "8080".into())]))
            .await
            .unwrap();
        let added: serde_json::Value = serde_json::from_str(&added).unwrap();
        assert_eq!(added["name"], "web");
        assert_eq!(added["enabled"], false);
        let signal = tokio::time::timeout(Duration::from_secs(10), changes.next()).await.unwrap().unwrap();
        // Broadcast to every user of the bus: it names nothing (a service's name needs the
        // read action, which `List` asks polkit for).
        assert!(signal.args().unwrap().names.is_empty(), "Changed names nothing");

        // The same document as the CLI's `--format json info`, from the same store.
        let over_dbus: serde_json::Value = serde_json::from_str(&server.info("web").await.unwrap()).unwrap();
        assert_eq!(over_dbus, env.service("web"));
        let list: serde_json::Value = serde_json::from_str(&server.list().await.unwrap()).unwrap();
        assert_eq!(list, env.listing());

        let enabled: serde_json::Value = serde_json::from_str(&server.enable("web").await.unwrap()).unwrap();
        assert_eq!(enabled["enabled"], true);
        assert_eq!(enabled["tor"]["applied"], true, "{enabled}");
        let id = common::service_id(&env.service("web"));
        assert!(detached(&tor).await.contains(&id));
        let status: serde_json::Value = serde_json::from_str(&server.status("web", false).await.unwrap()).unwrap();
        assert_eq!(status["registered"], true, "{status}");
        assert_eq!(status["published-as-stored"], true, "{status}");

        let with_bob: serde_json::Value =
            serde_json::from_str(&server.add_client("web", "bob", "").await.unwrap()).unwrap();
        assert_eq!(with_bob["clients"].as_array().unwrap().len(), 2);
        let clients: serde_json::Value = serde_json::from_str(&server.clients("web").await.unwrap()).unwrap();
        assert_eq!(clients.as_array().unwrap().len(), 2);
        let line: serde_json::Value =
            serde_json::from_str(&server.credential("web", "bob", "auth-private").await.unwrap()).unwrap();
        let cli_line = env.run(&["client", "show", "web", "bob", "--as", "auth-private"]).ok().stdout;
        assert_eq!(line["value"].as_str().unwrap(), cli_line.trim());
        server.remove_client("web", "bob").await.unwrap();

        let set: serde_json::Value =
            serde_json::from_str(&server.set_option("web", "autostart", "false").await.unwrap()).unwrap();
        assert_eq!(set["options"]["autostart"], false);
        let got: serde_json::Value =
            serde_json::from_str(&server.get_option("web", "autostart").await.unwrap()).unwrap();
        assert_eq!(got["value"], false);

        let disabled: serde_json::Value = serde_json::from_str(&server.disable("web").await.unwrap()).unwrap();
        assert_eq!(disabled["enabled"], false);
        assert!(!detached(&tor).await.contains(&id), "disable over D-Bus removes it from tor");
        let restored: serde_json::Value = serde_json::from_str(&server.restore().await.unwrap()).unwrap();
        assert_eq!(restored["failed"], serde_json::json!([]));

        // Every failure is a named error carrying the CLI's message; the service goes on.
        let prefix = "org.boum.tails.Server1.Error";
        assert_eq!(error_name(server.info("no-such").await), format!("{prefix}.NotFound"));
        assert_eq!(error_name(server.info("Bad Name").await), format!("{prefix}.InvalidInput"));
        let exists = server
            .add("custom", HashMap::from([("name".into(), "web".into()), ("local-port".into(), "1".into())]))
            .await;
        assert_eq!(error_name(exists), format!("{prefix}.Conflict"));
        assert_eq!(error_name(server.add("nope", HashMap::new()).await), format!("{prefix}.InvalidInput"));
        assert_eq!(
            error_name(server.add("custom", HashMap::from([("colour".into(), "red".into())])).await),
            format!("{prefix}.InvalidInput")
        );
        assert_eq!(error_name(server.info(&"a".repeat(100_000)).await), format!("{prefix}.InvalidInput"));
        assert_eq!(error_name(server.credential("web", "client-1", "qr").await), format!("{prefix}.InvalidInput"));
        match server.info("no-such").await {
            Err(e) => assert!(e.message().contains("there is no service named \"no-such\""), "{}", e.message()),
            Ok(_) => unreachable!(),
        }
        assert_eq!(error_name(server.wait_uploaded("web", 0).await), format!("{prefix}.InvalidInput"));
        assert_eq!(error_name(server.wait_uploaded("no-such", 5).await), format!("{prefix}.NotFound"));
        // A backup out and in again, and what is not one.
        let backup = server.export(vec![], "a long enough passphrase").await.unwrap();
        assert!(backup.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----"), "ASCII-armored age");
        let dry: serde_json::Value = serde_json::from_str(
            &server.import(backup.clone(), "a long enough passphrase", "skip", true).await.unwrap(),
        )
        .unwrap();
        assert_eq!(
            (&dry["skipped"], &dry["dry-run"]),
            (&serde_json::json!(["web"]), &serde_json::json!(true)),
            "{dry}"
        );
        let wrong = server.import(backup.clone(), "another passphrase", "skip", true).await;
        assert_eq!(error_name(wrong), format!("{prefix}.InvalidInput"));
        let conflict = server.import(backup.clone(), "a long enough passphrase", "fail", false).await;
        assert_eq!(error_name(conflict), format!("{prefix}.Conflict"));
        let rule = server.import(backup, "a long enough passphrase", "merge", false).await;
        assert_eq!(error_name(rule), format!("{prefix}.InvalidInput"));
        assert_eq!(
            error_name(server.import(b"not a backup".to_vec(), "x", "skip", true).await),
            format!("{prefix}.InvalidInput")
        );
        assert_eq!(error_name(server.export(vec![], "").await), format!("{prefix}.InvalidInput"));
        assert_eq!(error_name(server.export(vec!["no-such".into()], "pw").await), format!("{prefix}.NotFound"));
        let huge = vec![b'x'; (tails_server_core::backup::MAX_BACKUP_SIZE + 1) as usize];
        assert_eq!(error_name(server.import(huge, "x", "skip", true).await), format!("{prefix}.InvalidInput"));

        // A removed service's data goes with it, whatever front end removes it.
        let web_data = env.state_dir().join("data/web");
        std::fs::create_dir_all(web_data.join("site")).unwrap();
        std::fs::write(web_data.join("site/index.html"), "the old site").unwrap();
        let removed: serde_json::Value = serde_json::from_str(&server.remove("web", false).await.unwrap()).unwrap();
        assert_eq!(removed["name"], "web");
        assert_eq!(removed["data-kept-at"], serde_json::Value::Null);
        assert!(!web_data.exists(), "the data of a removed service was left under its name");
        assert_eq!(server.list().await.unwrap(), "[]", "still serving after every failure");

        // Through the service an import never lowers protection: an enabled service open to
        // the LAN comes back disabled and without LAN access, held back for the person to turn
        // on; an open one is refused.
        env.run(&["add", "custom", "--name", "site", "--local-port", "8082"]).ok();
        env.run(&["--control-port", "127.0.0.1:9", "enable", "site"]).exits(3);
        env.run(&["set-option", "site", "allow-lan-connections", "true"]).ok();
        let lowered = server.export(vec![], "a long enough passphrase").await.unwrap();
        server.remove("site", false).await.unwrap();
        let imported: serde_json::Value =
            serde_json::from_str(&server.import(lowered, "a long enough passphrase", "fail", false).await.unwrap())
                .unwrap();
        assert_eq!(imported["held-back"].as_array().map(Vec::len), Some(2), "{imported}");
        let site = env.service("site");
        assert_eq!((&site["enabled"], &site["options"]["allow-lan-connections"]), (&false.into(), &false.into()));
        server.remove("site", false).await.unwrap();
        env.run(&["add", "custom", "--name", "open", "--local-port", "8081", "--allow-anyone-with-the-address"]).ok();
        let open = server.export(vec![], "a long enough passphrase").await.unwrap();
        server.remove("open", false).await.unwrap();
        let refused = server.import(open, "a long enough passphrase", "fail", false).await;
        assert_eq!(error_name(refused), format!("{prefix}.InvalidInput"));
        assert_eq!(server.list().await.unwrap(), "[]", "nothing imported");
    });
}

/// Runs `gdbus call` as user `nobody` against the service; returns its stderr and status.
fn call_as_nobody(bus: &Bus, args: &[&str]) -> (bool, String) {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "gdbus", "call", "--address", &bus.address])
        .args(args)
        .output()
        .expect("setpriv and gdbus are installed");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout))
}

#[test]
fn an_unauthorized_caller_is_refused_and_only_root_may_own_the_name() {
    if !root_only() {
        return;
    }
    let bus = Bus::start();
    let env = TestEnv::new();
    let _service = start_service(&env, &bus, None, "none");
    rt().block_on(async {
        let connection = bus.connect().await;
        wait_for_name(&connection, BUS_NAME, &env.root.path().join("service.log")).await;
    });
    let (ok, out) = call_as_nobody(
        &bus,
        &["--dest", BUS_NAME, "--object-path", "/org/boum/tails/Server", "--method", "org.boum.tails.Server1.List"],
    );
    assert!(!ok && out.contains("org.boum.tails.Server1.Error.NotAuthorized"), "{out}");
    let (ok, out) = call_as_nobody(
        &bus,
        &[
            "--dest",
            "org.freedesktop.DBus",
            "--object-path",
            "/org/freedesktop/DBus",
            "--method",
            "org.freedesktop.DBus.RequestName",
            "org.boum.tails.Server",
            "4",
        ],
    );
    assert!(!ok && out.contains("AccessDenied"), "only root may own the name: {out}");
}

#[test]
fn the_service_waits_for_the_persistent_storage_then_opens_the_store_and_publishes() {
    if !root_only() {
        return;
    }
    let bus = Bus::start();
    let env = TestEnv::new();
    let mut tor = LocalTor::start();
    // A service stored and enabled earlier (a previous boot).
    env.run(&["add", "custom", "--name", "web", "--local-port", "8080"]).ok();
    env.run(&["--control-port", &tor.control(), "enable", "web"]).ok();
    let id = common::service_id(&env.service("web"));
    tor.restart();
    std::fs::remove_dir_all(env.runtime_dir()).ok();
    // The volume is not there yet: the state directory must not be touched.
    let state = env.state_dir();
    let hidden = env.root.path().join("volume-not-mounted");
    std::fs::rename(&state, &hidden).unwrap();

    rt().block_on(async {
        let connection = bus.connect().await;
        let stand_in = zbus::connection::Builder::address(bus.address.as_str())
            .name(STAND_IN_NAME)
            .serve_at("/org/boum/tails/PersistentStorage", PersistentStorageStandIn { unlocked: false })
            .build()
            .await
            .unwrap();
        let _service = start_service(&env, &bus, Some(&tor), "tails");
        wait_for_name(&connection, BUS_NAME, &env.root.path().join("service.log")).await;
        let server = ServerProxy::new(&connection).await.unwrap();
        assert!(!server.persistent_storage_unlocked().await.unwrap());
        assert!(!server.installed_at_every_login().await.unwrap(), "not known while locked");
        assert_eq!(error_name(server.list().await), "org.boum.tails.Server1.Error.PersistentStorageLocked");
        match server.list().await {
            Err(e) => assert!(e.message().contains("Persistent Storage is not unlocked"), "{}", e.message()),
            Ok(_) => unreachable!(),
        }
        assert!(!state.exists(), "nothing is created where the volume will be mounted");

        // tpsd unlocks the volume: the service opens the store and publishes, unprompted.
        std::fs::rename(&hidden, &state).unwrap();
        let iface = stand_in
            .object_server()
            .interface::<_, PersistentStorageStandIn>("/org/boum/tails/PersistentStorage")
            .await
            .unwrap();
        iface.get_mut().await.unlocked = true;
        iface.get().await.is_unlocked_changed(iface.signal_emitter()).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !detached(&tor).await.contains(&id) {
            assert!(
                Instant::now() < deadline,
                "not published after the unlock:\n{}",
                std::fs::read_to_string(env.root.path().join("service.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let list: serde_json::Value = serde_json::from_str(&server.list().await.unwrap()).unwrap();
        assert_eq!(list[0]["name"], "web");

        // Whether it comes back after a restart: Additional Software's list, beside the
        // store on the volume, and setup's repository there, read at each get (setup runs in
        // another process).
        assert!(!server.installed_at_every_login().await.unwrap(), "no list: setup not done");
        let volume = state.parent().unwrap();
        let additional_software = volume.join("live-additional-software.conf");
        std::fs::write(&additional_software, "mumble-server\ntails-server-gui").unwrap();
        assert!(!server.installed_at_every_login().await.unwrap(), "the window alone does not bring it back");
        std::fs::write(&additional_software, "mumble-server\ntails-server=0.1.0-1\ntails-server-gui").unwrap();
        // Listed by Tails' own "Install Every Time" after `apt install ./….deb`: no login finds it.
        assert!(!server.installed_at_every_login().await.unwrap(), "listed, but no package to install");
        std::fs::create_dir_all(volume.join("tails-server-apt")).unwrap();
        std::fs::write(volume.join("tails-server-apt/tails-server_0.1.0-1_amd64.deb"), "").unwrap();
        assert!(server.installed_at_every_login().await.unwrap());
    });
}

/// The CLI run as `nobody` (a user who can read neither the store nor tor's port, as
/// amnesia on Tails), with the private bus as its system bus.
fn cli_as_nobody(bus: &Bus, args: &[&str]) -> common::Run {
    bus.run_as_nobody(Path::new(env!("CARGO_BIN_EXE_tails-server")), args)
}

#[test]
fn the_cli_of_a_user_without_rights_goes_through_the_service_with_the_same_outputs() {
    if !root_only() {
        return;
    }
    let bus = Bus::start();
    let env = TestEnv::new();
    let tor = LocalTor::start();
    env.run(&["add", "custom", "--name", "web", "--local-port", "8080", "--remote-port", "80"]).ok();
    env.run(&["client", "add", "web", "bob"]).ok();
    let _service = serve_root_and_nobody(&env, &bus, Some(&tor));
    let direct = |args: &[&str]| direct(&env, &tor, args);
    for format in ["human", "json", "yaml"] {
        for command in [&["list"][..], &["info", "web"], &["info", "web", "--details"], &["client", "list", "web"]] {
            let args = [&["--format", format][..], command].concat();
            let through = cli_as_nobody(&bus, &args);
            let here = direct(&args);
            assert_eq!(through.code, 0, "{args:?}: {}", through.stderr);
            assert_eq!(through.stdout, here.stdout, "{args:?}: the same output in both modes");
        }
    }
    // A client's credential, in every form and format, as direct mode shows it.
    for format in ["human", "json", "yaml"] {
        for form in ["auth-private", "key", "auth", "qr"] {
            let args = ["--format", format, "client", "show", "web", "bob", "--as", form];
            let through = cli_as_nobody(&bus, &args);
            let here = direct(&args);
            assert_eq!(through.code, 0, "{args:?}: {}", through.stderr);
            assert_eq!(
                (through.stdout, through.stderr),
                (here.stdout, here.stderr),
                "{args:?}: the same in both modes"
            );
        }
    }
    let status = [&["--format", "json", "status", "web"][..]].concat();
    assert_eq!(cli_as_nobody(&bus, &status).json(), direct(&status).json());

    // Changes, with the same words and exit statuses.
    let enabled = cli_as_nobody(&bus, &["enable", "web"]);
    assert_eq!(enabled.code, 0, "{}", enabled.stderr);
    assert!(enabled.stdout.contains("web is enabled and registered with tor"), "{}", enabled.stdout);
    let id = common::service_id(&env.service("web"));
    assert!(tor.detached().contains(&id));
    let set = cli_as_nobody(&bus, &["set-option", "web", "autostart", "false"]);
    assert_eq!(set.stdout, "web: autostart = false (was true)\n", "{}", set.stderr);
    let missing = cli_as_nobody(&bus, &["info", "no-such"]);
    let missing_here = direct(&["info", "no-such"]);
    assert_eq!((missing.code, missing.stderr.clone()), (missing_here.code, missing_here.stderr), "errors alike");
    let disabled = cli_as_nobody(&bus, &["disable", "web"]);
    assert_eq!(disabled.stdout, "web is disabled.\n", "{}", disabled.stderr);
    assert!(!tor.detached().contains(&id));
    // A new client's key is shown once, the stored one, in the same words and keys.
    let added = cli_as_nobody(&bus, &["client", "add", "web", "carol"]);
    assert_eq!(added.code, 0, "{}", added.stderr);
    let key = direct(&["client", "show", "web", "carol", "--as", "key"]).ok().stdout;
    assert!(added.stdout.starts_with("Added client carol to service web ("), "{}", added.stdout);
    assert!(added.stdout.contains(&format!("\n    {}\n", key.trim())), "{}", added.stdout);
    let added = cli_as_nobody(&bus, &["--format", "json", "client", "add", "web", "dave"]).json();
    let line = direct(&["client", "show", "web", "dave", "--as", "auth-private"]).ok().stdout;
    assert_eq!(added["credential"]["auth-private"], line.trim(), "{added}");
    assert_eq!(added["client"]["private-key-stored"], true);
    let removed = cli_as_nobody(&bus, &["client", "remove", "web", "dave"]);
    assert_eq!(removed.stdout, "Removed client dave of service web from the store.\n", "{}", removed.stderr);
    // A new service and its first client's key, shown once, as direct mode shows them.
    let added =
        cli_as_nobody(&bus, &["add", "custom", "--name", "blog", "--local-port", "8081", "--set", "autostart=false"]);
    assert_eq!(added.code, 0, "{}", added.stderr);
    let blog = env.service("blog");
    let key = direct(&["client", "show", "blog", "client-1", "--as", "key"]).ok().stdout;
    assert!(added.stdout.starts_with("Added service blog (custom). It is not enabled yet."), "{}", added.stdout);
    assert!(added.stdout.contains(&format!("\n    {}\n", blog["address"].as_str().unwrap())), "{}", added.stdout);
    assert!(added.stdout.contains(&format!("\n    {}\n", key.trim())), "{}", added.stdout);
    assert_eq!(blog["options"]["autostart"], false);
    let added = cli_as_nobody(
        &bus,
        &["--format", "json", "add", "custom", "--name", "wiki", "--local-port", "8082", "--client", "erin"],
    )
    .json();
    let line = direct(&["client", "show", "wiki", "erin", "--as", "auth-private"]).ok().stdout;
    assert_eq!(added["first-client"]["auth-private"], line.trim(), "{added}");
    assert_eq!(added["address"], env.service("wiki")["address"]);
    // Bad input gets the library's message, as in direct mode.
    let bad = ["add", "custom", "--name", "x", "--local-port", "8083", "--set", "colour=red"];
    let (through, here) = (cli_as_nobody(&bus, &bad), direct(&bad));
    assert_eq!((through.code, through.stderr), (here.code, here.stderr));
    // The opt-out stays the root CLI's.
    cli_as_nobody(&bus, &["add", "custom", "--name", "x", "--local-port", "1", "--allow-anyone-with-the-address"])
        .fails_with("not offered by the tails-server service");
    // An encrypted backup made through the service opens in direct mode, and imports
    // through the service say what direct mode says.
    let home = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(home.path(), Some(65534), Some(65534)).unwrap();
    let pass = home.path().join("passphrase");
    std::fs::write(&pass, "correct horse battery staple\n").unwrap();
    let backup = home.path().join("services.age");
    let (pass, backup) = (pass.to_str().unwrap(), backup.to_str().unwrap());
    let exported = cli_as_nobody(&bus, &["export", "--output", backup, "--passphrase-file", pass]);
    assert_eq!(exported.code, 0, "{}", exported.stderr);
    assert!(exported.stdout.starts_with("Exported 3 service(s) (blog, web, wiki) to "), "{}", exported.stdout);
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(backup).unwrap().permissions()) & 0o777;
    assert_eq!(mode, 0o600);
    for args in [
        &["import", backup, "--passphrase-file", pass, "--dry-run", "--on-conflict", "skip"][..],
        &["--format", "json", "import", backup, "--passphrase-file", pass, "--dry-run", "--on-conflict", "replace"],
        &["import", backup, "--passphrase-file", pass],
    ] {
        let (through, here) = (cli_as_nobody(&bus, args), direct(args));
        assert_eq!(
            (through.code, &through.stdout, &through.stderr),
            (here.code, &here.stdout, &here.stderr),
            "{args:?}"
        );
    }
    let wrong = home.path().join("wrong");
    std::fs::write(&wrong, "not the passphrase\n").unwrap();
    let args = ["import", backup, "--passphrase-file", wrong.to_str().unwrap(), "--on-conflict", "skip"];
    let (through, here) = (cli_as_nobody(&bus, &args), direct(&args));
    assert_ne!(through.code, 0);
    assert_eq!((through.code, through.stderr), (here.code, here.stderr), "a wrong passphrase, the same words");
    for name in ["blog", "wiki"] {
        assert_eq!(cli_as_nobody(&bus, &["remove", name, "--yes"]).code, 0);
    }
    let removed = cli_as_nobody(&bus, &["remove", "web", "--yes"]);
    assert_eq!(removed.code, 0, "{}", removed.stderr);
    assert_eq!(env.listing(), serde_json::json!([]));
}

/// The friend's side through the service, as amnesia uses it on Tails: the key is kept in
/// the store the service opens, given to tor at once, shown alike in both modes, and taken
/// back from tor when removed.
#[test]
fn a_user_without_rights_keeps_a_received_key_through_the_service() {
    if !root_only() {
        return;
    }
    let bus = Bus::start();
    let env = TestEnv::new();
    let tor = LocalTor::start();
    let owner = TestEnv::new();
    owner.run(&["add", "custom", "--name", "blog", "--local-port", "8080"]).ok();
    let id = common::service_id(&owner.service("blog"));
    // A file nobody may read, as a key saved in amnesia's home would be to other users.
    let shared = tempfile::tempdir().unwrap();
    std::fs::set_permissions(shared.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let from_owner = shared.path().join("from-owner.txt");
    std::fs::write(&from_owner, owner.run(&["client", "show", "blog", "client-1"]).ok().stdout).unwrap();
    std::fs::set_permissions(&from_owner, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let _service = serve_root_and_nobody(&env, &bus, Some(&tor));
    let direct = |args: &[&str]| direct(&env, &tor, args);
    let added = cli_as_nobody(&bus, &["key", "add", "from-owner", from_owner.to_str().unwrap()]);
    assert_eq!(added.code, 0, "{}", added.stderr);
    assert!(added.stdout.starts_with("Kept key from-owner for "), "{}", added.stdout);
    assert!(tor.client_keys().contains_key(&id), "given to tor at once");
    for args in [&["key", "list"][..], &["--format", "json", "key", "list"], &["key", "show", "from-owner"]] {
        let (through, here) = (cli_as_nobody(&bus, args), direct(args));
        assert_eq!((through.code, &through.stdout), (0, &here.stdout), "{args:?}: {}", through.stderr);
    }
    let again = ["key", "add", "again", from_owner.to_str().unwrap()];
    let (through, here) = (cli_as_nobody(&bus, &again), direct(&again));
    assert_eq!((through.code, &through.stderr), (here.code, &here.stderr), "the same refusal");
    assert!(through.stderr.contains("already kept as \"from-owner\""), "{}", through.stderr);
    let removed = cli_as_nobody(&bus, &["key", "remove", "from-owner"]);
    assert_eq!(removed.code, 0, "{}", removed.stderr);
    assert!(!tor.client_keys().contains_key(&id), "taken back from tor");
    assert!(direct(&["key", "list"]).stderr.contains("No keys kept"));
}

/// The Persistent Storage passphrase of the tests that prove a person's presence.
const STORAGE_PASSPHRASE: &str = "correct horse battery staple";

/// The service allowing root and nobody, asking for [`STORAGE_PASSPHRASE`] (checked against
/// a LUKS volume made in `env`) before a secret leaves or access widens.
fn serve_asking_presence(env: &TestEnv, bus: &Bus, tor: Option<&LocalTor>) -> KillOnDrop {
    let volume = luks_volume(env.root.path(), STORAGE_PASSPHRASE);
    let presence = format!("luks:{}", volume.display());
    start_service_with(env, bus, tor, "none", "uids:0,65534", &["--presence", &presence])
}

/// Once the service is on the bus, two processes of the same session: a background one
/// and the person's front end (connections of their own, as presence is per connection).
async fn background_and_person(env: &TestEnv, bus: &Bus) -> (zbus::Connection, zbus::Connection) {
    wait_for_name(&bus.connect().await, BUS_NAME, &env.root.path().join("service.log")).await;
    (bus.connect().await, bus.connect().await)
}

/// Issue 19's first property: a process of the session (polkit's allow_active lets it call
/// everything) gets no secret and widens no access without the Persistent Storage
/// passphrase, which the service checks against the volume; a proof holds for the
/// connection that made it, not for the other processes of the session.
#[test]
fn a_secret_leaves_and_access_widens_only_after_the_persistent_storage_passphrase() {
    if !root_only() {
        return;
    }
    let bus = Bus::start();
    let env = TestEnv::new();
    let tor = LocalTor::start();
    env.run(&["add", "custom", "--name", "web", "--local-port", "8080", "--remote-port", "80"]).ok();
    env.run(&["client", "add", "web", "bob"]).ok();
    let _service = serve_asking_presence(&env, &bus, Some(&tor));
    let direct = |args: &[&str]| direct(&env, &tor, args);
    let bob_line = direct(&["client", "show", "web", "bob", "--as", "auth-private"]).ok().stdout;
    let prefix = tails_server_dbus::ERROR_PREFIX;
    let required = format!("{prefix}.PresenceRequired");
    // A key pair made elsewhere (a friend's), of which the service gets the public half.
    let elsewhere = TestEnv::new();
    elsewhere.run(&["add", "custom", "--name", "theirs", "--local-port", "8081"]).ok();
    let outside_key = elsewhere.run(&["client", "show", "theirs", "client-1", "--as", "auth"]).ok().stdout;
    rt().block_on(async {
        let (background_connection, person_connection) = background_and_person(&env, &bus).await;
        let background = ServerProxy::new(&background_connection).await.unwrap();
        let person = ServerProxy::new(&person_connection).await.unwrap();

        // Reading is not gated, nor is a change that widens nothing.
        assert!(background.credential("web", "bob", "auth").await.unwrap().contains("descriptor:x25519:"));
        background.set_option("web", "allow-lan-connections", "false").await.unwrap();
        background.add_client("web", "made-here", "").await.unwrap();
        // Every secret, and every widening, is refused without the passphrase.
        for form in ["auth-private", "key"] {
            assert_eq!(error_name(background.credential("web", "bob", form).await), required, "{form}");
        }
        assert_eq!(error_name(background.credential("web", "made-here", "key").await), required);
        assert_eq!(error_name(background.export(vec![], "a long enough passphrase").await), required);
        let widening = background.add_client("web", "outsider", outside_key.trim()).await;
        assert_eq!(error_name(widening), required);
        assert_eq!(error_name(background.set_option("web", "allow-lan-connections", "true").await), required);
        let lan = HashMap::from([("option.allow-lan-connections".to_owned(), "yes".to_owned())]);
        assert_eq!(error_name(background.add("custom", lan.clone()).await), required);
        assert_eq!(
            error_name(background.import(vec![0; 64], "a long enough passphrase", "fail", false).await),
            required
        );
        let message = background.credential("web", "bob", "key").await.unwrap_err().message();
        assert!(message.contains("Persistent Storage passphrase") && message.contains("not a program"), "{message}");
        // A wrong passphrase proves nothing.
        assert_eq!(error_name(background.prove_presence("guess").await), format!("{prefix}.NotAuthorized"));
        assert_eq!(error_name(background.credential("web", "bob", "key").await), required);

        // The person types it in their front end: that connection, and only it, may now.
        assert_eq!(person.prove_presence(STORAGE_PASSPHRASE).await.unwrap(), 300);
        let shown: serde_json::Value =
            serde_json::from_str(&person.credential("web", "bob", "auth-private").await.unwrap()).unwrap();
        assert_eq!(shown["value"].as_str().unwrap(), bob_line.trim(), "the stored key, as `client show` gives it");
        assert!(!person.export(vec![], "a long enough passphrase").await.unwrap().is_empty());
        person.add_client("web", "outsider", outside_key.trim()).await.unwrap();
        person.set_option("web", "allow-lan-connections", "true").await.unwrap();
        assert_eq!(error_name(background.credential("web", "bob", "key").await), required, "not another process");
        // A wrong passphrase later takes the proof back.
        assert_eq!(error_name(person.prove_presence("guess").await), format!("{prefix}.NotAuthorized"));
        assert_eq!(error_name(person.credential("web", "bob", "key").await), required);
    });

    // The CLI, as a user of the session without a terminal: it says what is needed and how.
    let passphrase_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(passphrase_dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let file = |name: &str, text: &str| {
        let path = passphrase_dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        path.display().to_string()
    };
    let (right, wrong) = (file("right", &format!("{STORAGE_PASSPHRASE}\n")), file("wrong", "guess\n"));
    let show = ["client", "show", "web", "bob", "--as", "auth-private"];
    let refused = cli_as_nobody(&bus, &show);
    assert_ne!(refused.code, 0);
    assert!(refused.stdout.is_empty(), "{}", refused.stdout);
    assert!(
        refused.stderr.contains("Persistent Storage passphrase")
            && refused.stderr.contains("--storage-passphrase-file"),
        "{}",
        refused.stderr
    );
    let guessed = cli_as_nobody(&bus, &[&["--storage-passphrase-file", &wrong][..], &show].concat());
    assert!(guessed.stderr.contains("that is not the Persistent Storage passphrase"), "{}", guessed.stderr);
    assert!(guessed.stdout.is_empty());
    let shown = cli_as_nobody(&bus, &[&["--storage-passphrase-file", &right][..], &show].concat());
    assert_eq!((shown.code, &shown.stdout), (0, &direct(&show).stdout), "{}", shown.stderr);
    // A client is added all the same; its key is kept to be shown when the person can.
    let added = cli_as_nobody(&bus, &["client", "add", "web", "carol"]);
    assert_eq!(added.code, 0, "{}", added.stderr);
    assert!(added.stdout.contains("tails-server client show web carol"), "{}", added.stdout);
    assert!(added.stderr.contains("not shown"), "{}", added.stderr);
    let carol_key = direct(&["client", "show", "web", "carol", "--as", "key"]).ok().stdout;
    assert!(!added.stdout.contains(carol_key.trim()) && !added.stderr.contains(carol_key.trim()));
}

/// Issue 19: through the service, a person's presence is also needed for an option change
/// that lets someone new in or lets them do more (an SFTP login key, a password changed or
/// removed, write access, the local network), judged against the value it replaces. A
/// change that takes access away, or adds a password where there was none, is not gated.
#[test]
fn a_login_key_a_new_password_or_write_access_is_given_only_after_the_passphrase() {
    if !root_only() {
        return;
    }
    const ALICE: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEB";
    const MALLORY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgIC";
    let bus = Bus::start();
    let env = TestEnv::new();
    env.run(&["add", "sftp", "--set", "read-only=true"]).ok();
    env.run(&["add", "mumble"]).ok();
    let _service = serve_asking_presence(&env, &bus, None);
    let required = format!("{}.PresenceRequired", tails_server_dbus::ERROR_PREFIX);
    rt().block_on(async {
        let (background_connection, person_connection) = background_and_person(&env, &bus).await;
        let background = ServerProxy::new(&background_connection).await.unwrap();
        let person = ServerProxy::new(&person_connection).await.unwrap();
        let value = |answer: String| serde_json::from_str::<serde_json::Value>(&answer).unwrap()["value"].clone();

        // A first password is one more thing to know: not gated. Changing or removing it is.
        background.set_option("mumble", "server-password", "first").await.unwrap();
        for password in ["mine now", ""] {
            let refused = background.set_option("mumble", "server-password", password).await;
            assert_eq!(error_name(refused), required, "{password:?}");
        }
        // A login key: the first, or one more, is gated; the message says what it would do.
        let refused = background.set_option("sftp", "authorized-keys", MALLORY).await.unwrap_err();
        assert_eq!(zbus::DBusError::name(&refused).to_string(), required);
        let message = refused.message();
        assert!(
            message.contains("authorized-keys") && message.contains("new SSH key") && !message.contains(MALLORY),
            "{message}"
        );
        // Write access, and the local network.
        assert_eq!(error_name(background.set_option("sftp", "read-only", "false").await), required);
        assert_eq!(error_name(background.set_option("sftp", "allow-lan-connections", "yes").await), required);
        // Nothing of it was stored.
        assert_eq!(value(background.get_option("sftp", "authorized-keys").await.unwrap()), "");
        assert_eq!(value(background.get_option("sftp", "read-only").await.unwrap()), true);
        // A new service that comes with one of these ways in, judged against what a plain
        // add gives: no key, not on the local network.
        let sftp_with = |name: &str, option: &str, value: &str| {
            HashMap::from([("name".to_owned(), name.to_owned()), (format!("option.{option}"), value.to_owned())])
        };
        let refused = background.add("sftp", sftp_with("brought", "authorized-keys", MALLORY)).await.unwrap_err();
        assert_eq!(zbus::DBusError::name(&refused).to_string(), required);
        let message = refused.message();
        assert!(
            message.contains("authorized-keys") && message.contains("new SSH key") && !message.contains(MALLORY),
            "{message}"
        );
        let lan = sftp_with("brought", "allow-lan-connections", "on");
        assert_eq!(error_name(background.add("sftp", lan).await), required);
        let not_found = format!("{}.NotFound", tails_server_dbus::ERROR_PREFIX);
        assert_eq!(error_name(background.info("brought").await), not_found, "nothing added");
        // What a plain add gives (SFTP writable), and a first password, are added.
        background.add("sftp", sftp_with("plain", "read-only", "false")).await.unwrap();
        background.add("mumble", sftp_with("talk", "server-password", "first")).await.unwrap();

        // The person, once present, may.
        assert_eq!(person.prove_presence(STORAGE_PASSPHRASE).await.unwrap(), 300);
        person.add("sftp", sftp_with("alices", "authorized-keys", ALICE)).await.unwrap();
        person.set_option("sftp", "authorized-keys", ALICE).await.unwrap();
        person.set_option("mumble", "server-password", "second").await.unwrap();
        assert_eq!(value(person.get_option("mumble", "server-password").await.unwrap()), "second");
        person.set_option("sftp", "read-only", "false").await.unwrap();
        person.set_option("sftp", "allow-lan-connections", "yes").await.unwrap();
        // Taking away, or renaming a key, widens nothing: a background process may.
        background.set_option("sftp", "authorized-keys", &format!("{ALICE} alice@laptop")).await.unwrap();
        let both = format!("{ALICE} alice, {MALLORY}");
        assert_eq!(error_name(background.set_option("sftp", "authorized-keys", &both).await), required);
        background.set_option("sftp", "read-only", "true").await.unwrap();
        background.set_option("sftp", "authorized-keys", "").await.unwrap();
        background.set_option("sftp", "allow-lan-connections", "no").await.unwrap();
        assert_eq!(value(background.get_option("sftp", "read-only").await.unwrap()), true);
        assert_eq!(value(background.get_option("sftp", "allow-lan-connections").await.unwrap()), false);
        assert_eq!(value(background.get_option("sftp", "authorized-keys").await.unwrap()), "");
        // A refused value is refused for what it is, before any question of presence.
        let invalid = background.set_option("sftp", "authorized-keys", "ssh-ed25519 notakey").await;
        assert_eq!(error_name(invalid), format!("{}.InvalidInput", tails_server_dbus::ERROR_PREFIX));
    });
}

/// The change counter sled holds, read from its files (the service must be gone: sled
/// allows one process at a time).
fn sled_generation(state: &Path) -> u64 {
    let db = sled::Config::new().path(state.join("db")).segment_size(32 * 1024).open().unwrap();
    let meta = db.open_tree("meta").unwrap();
    u64::from_be_bytes(meta.get("generation").unwrap().unwrap().as_ref().try_into().unwrap())
}

/// The newest snapshot's change number.
fn snapshot_generation(state: &Path) -> u64 {
    std::fs::read_dir(state.join("snapshots"))
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.strip_suffix(".snapshot")?.parse().ok())
        .max()
        .unwrap()
}

/// The service keeps sled open between changes and flushes it only when it lets go of it:
/// a change through it is durable once its snapshot is written. A command run as root
/// meanwhile asks it to let go; a service killed before flushing loses nothing, and the
/// next command rolls sled forward without calling the store damaged.
#[test]
fn the_service_holds_sled_between_changes_and_a_kill_loses_none_of_them() {
    if !root_only() {
        return;
    }
    let bus = Bus::start();
    let env = TestEnv::new();
    let mut service = serve_root_and_nobody(&env, &bus, None);
    let stored = |run: common::Run, what: &str| {
        assert!(run.code == 0 || run.code == 3, "{what}: {}", run.stderr);
        assert!(!run.stderr.contains("WARNING"), "{what}: {}", run.stderr);
    };
    stored(cli_as_nobody(&bus, &["add", "custom", "--name", "held", "--local-port", "8080"]), "add");
    // The service holds sled now; a command run as root asks it to let go (CloseStore),
    // well before its lock timeout (20 s here).
    let start = Instant::now();
    let mut as_root = env.command();
    as_root.env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address).args(["client", "add", "held", "alice"]);
    stored(as_root.output().unwrap().into(), "a direct change while the service holds sled");
    assert!(start.elapsed() < Duration::from_secs(15), "the service let go when asked");
    stored(cli_as_nobody(&bus, &["client", "add", "held", "bob"]), "client add");
    stored(cli_as_nobody(&bus, &["set-option", "held", "autostart", "false"]), "set-option");
    stored(cli_as_nobody(&bus, &["set-option", "held", "allow-lan-connections", "true"]), "set-option");

    service.0.kill().unwrap();
    service.0.wait().unwrap();
    let state = env.state_dir();
    let (in_sled, in_snapshots) = (sled_generation(&state), snapshot_generation(&state));
    assert!(in_sled < in_snapshots, "sled was not flushed change by change ({in_sled} vs {in_snapshots})");

    stored(env.run(&["client", "add", "held", "carol"]), "the next change rolls sled forward");
    assert_eq!(sled_generation(&state), snapshot_generation(&state), "sled caught up");
    let service_json = env.run(&["--format", "json", "info", "held"]).ok().json();
    let mut clients: Vec<String> =
        service_json["clients"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_owned()).collect();
    clients.sort();
    assert_eq!(clients, ["alice", "bob", "carol", "client-1"]);
    assert_eq!(service_json["options"]["autostart"], false);
    assert_eq!(service_json["options"]["allow-lan-connections"], true);
}

/// Kept data through the service, for a user who cannot read the store (amnesia on Tails):
/// listed as direct mode lists it, deleted, and given to a service only after the
/// Persistent Storage passphrase (its friends get to see it).
#[test]
fn kept_data_is_listed_deleted_and_given_through_the_service() {
    if !root_only() {
        return;
    }
    let bus = Bus::start();
    let env = TestEnv::new();
    env.run(&["add", "custom", "--name", "site", "--local-port", "8080"]).ok();
    let data = env.state_dir().join("data/site");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("index.html"), "hello").unwrap();
    env.run(&["remove", "--yes", "--keep-data", "site"]).ok();
    env.run(&["add", "custom", "--name", "site", "--local-port", "8080"]).ok();
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("index.html"), "hello").unwrap();
    env.run(&["remove", "--yes", "--keep-data", "site"]).ok();
    env.run(&["add", "custom", "--name", "site", "--local-port", "8080"]).ok();
    let service = serve_asking_presence(&env, &bus, None);
    rt().block_on(async { wait_for_name(&bus.connect().await, BUS_NAME, &env.root.path().join("service.log")).await });
    for format in ["human", "json"] {
        let args = ["--format", format, "kept-data", "list"];
        let through = cli_as_nobody(&bus, &args);
        assert_eq!(through.code, 0, "{}", through.stderr);
        assert_eq!(through.stdout, env.run(&args).ok().stdout, "the same output in both modes");
    }
    let listed = cli_as_nobody(&bus, &["--format", "json", "kept-data", "list"]).json();
    let (id, other) = (listed[0]["id"].as_str().unwrap().to_owned(), listed[1]["id"].as_str().unwrap().to_owned());
    assert!(id.starts_with("site-") && other.starts_with("site-") && id != other, "{listed}");
    // A give the service would refuse is refused before the passphrase is asked for.
    let refused = cli_as_nobody(&bus, &["kept-data", "give", &other, "nosuch"]);
    assert!(refused.code != 0 && refused.stderr.contains("nosuch"), "{}", refused.stderr);
    assert!(!refused.stderr.contains("passphrase"), "refused before presence: {}", refused.stderr);
    // Given only with the passphrase.
    let unasked = cli_as_nobody(&bus, &["kept-data", "give", &other, "site"]);
    assert!(unasked.code != 0 && unasked.stderr.contains("Persistent Storage passphrase"), "{}", unasked.stderr);
    let passphrase = bus.dir.path().join("storage-passphrase");
    std::fs::write(&passphrase, format!("{STORAGE_PASSPHRASE}\n")).unwrap();
    let file = passphrase.to_str().unwrap();
    let given = cli_as_nobody(&bus, &["--storage-passphrase-file", file, "kept-data", "give", &other, "site"]);
    assert!(given.stdout.starts_with(&format!("{other} (5 B, the data of site) is now site's")), "{}", given.stderr);
    assert_eq!(std::fs::read_to_string(data.join("index.html")).unwrap(), "hello");
    let refused = cli_as_nobody(&bus, &["kept-data", "delete", "--yes", "site-0"]);
    assert!(refused.code != 0 && refused.stderr.contains("no kept data named \"site-0\""), "{}", refused.stderr);
    // A window listing kept data hears of the change (Changed, naming nothing).
    use futures_util::StreamExt;
    let rt = rt();
    let connection = rt.block_on(bus.connect());
    let server = rt.block_on(ServerProxy::new(&connection)).unwrap();
    let mut changes = rt.block_on(server.receive_changed()).unwrap();
    let deleted = cli_as_nobody(&bus, &["kept-data", "delete", "--yes", &id]);
    let heard = rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), changes.next()).await });
    assert!(heard.is_ok_and(|s| s.is_some()), "Changed after kept data was deleted");
    assert!(deleted.stdout.starts_with(&format!("Deleted {id} (5 B, the data of site)")), "{}", deleted.stderr);
    assert!(!env.state_dir().join("kept-data").join(&id).exists());
    drop(service);
}
