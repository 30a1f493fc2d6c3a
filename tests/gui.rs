//! The window (crates/gui) against a real `tails-server service` on a private dbus-daemon
//! (configured like the system bus, with the repository's policy) and a real tor, in this
//! process on an X display: `scripts/test` runs the tests under `xvfb-run`. Every screen the
//! test reaches is saved as a PNG in target/gui-screens/, for review and for the README.
//!
//! One test function: GTK lives on the one thread that initialized it.

mod common;
#[path = "common/gui.rs"]
mod gui;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;

use common::{luks_volume, Bus, KillOnDrop, LocalTor, PersistentStorageStandIn, TestEnv};
use gui::{choose_in_file_chooser, find, save_png, wait_until};
use tails_server_dbus::{ServerProxy, BUS_NAME};
use tails_server_gui::adw::prelude::*;
use tails_server_gui::gtk;
use tails_server_gui::window::{page, Window};

const PASSPHRASE: &str = "correct horse battery staple";
/// The backups' passphrase (another one: nothing ties the two).
const BACKUP_PASSPHRASE: &str = "staple battery horse correct";

/// `tails-server service` on `bus` with `tor`, allowing the callers `authorization` names,
/// asking for the passphrase of the LUKS volume `storage` before a secret leaves.
fn start_service(env: &TestEnv, bus: &Bus, tor: &LocalTor, authorization: &str, storage: &Path) -> KillOnDrop {
    start_service_following(env, bus, tor, authorization, storage, "none")
}

/// The same, following the Persistent Storage as `persistent_storage` says (`tails`: Tails'
/// Persistent Storage service on the bus).
fn start_service_following(
    env: &TestEnv,
    bus: &Bus,
    tor: &LocalTor,
    authorization: &str,
    storage: &Path,
    persistent_storage: &str,
) -> KillOnDrop {
    let log = std::fs::File::create(env.root.path().join("service.log")).unwrap();
    KillOnDrop(
        env.command()
            .env("TAILS_SERVER_CONTROL_PORT", tor.control())
            .args(["service", "--bus", &bus.address, "--authorization", authorization])
            .args(["--persistent-storage", persistent_storage, "--presence"])
            .arg(format!("luks:{}", storage.display()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

/// Saves what the window shows now as target/gui-screens/NAME.png.
fn screenshot(window: &Window, name: &str) {
    wait_until("the page to settle", || !window.transition_running());
    save_png(window.widget(), name);
}

#[test]
fn the_window_shows_what_the_service_says_and_follows_it_without_polling() {
    if tails_server_core::unix::euid() != 0 {
        // The repository's bus policy lets only root own org.boum.tails.Server (as on Tails).
        eprintln!("skipped: the service owns org.boum.tails.Server, which the bus policy allows root only");
        return;
    }
    assert!(
        std::env::var_os("DISPLAY").is_some(),
        "the window needs an X display: run the tests with `xvfb-run -a cargo test` (scripts/test does)"
    );
    let bus = Bus::start();
    let env = TestEnv::new();
    let mut tor = LocalTor::start();
    let storage = luks_volume(env.root.path(), PASSPHRASE);
    // The window's system bus (zbus reads it when it connects).
    std::env::set_var("DBUS_SYSTEM_BUS_ADDRESS", &bus.address);
    tails_server_gui::adw::init().unwrap();
    // A GLib CRITICAL is a bug (a widget used after it was freed, a handler on a dead object):
    // it aborts the test instead of scrolling by.
    gtk::glib::log_set_always_fatal(gtk::glib::LogLevels::LEVEL_CRITICAL);
    // A worker thread of its own: the stand-in below answers while GTK's loop runs.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();

    let window = Window::new(None);
    window.widget().present();
    window.start();

    // No service on the bus: a page saying so, never a frozen window.
    wait_until("the not-running page", || window.page() == page::PROBLEM);
    assert_eq!(window.problem().0, "Tails Server is not running");
    screenshot(&window, "not-running");

    // The service starts: the window hears its name appear, and shows that nothing is there.
    let service = start_service(&env, &bus, &tor, "uids:0", &storage);
    wait_until("the empty page once the service is on the bus", || window.page() == page::EMPTY);
    screenshot(&window, "empty");

    // A service added elsewhere (the CLI, another window) appears through `Changed`.
    let connection = rt.block_on(bus.connect());
    let server = rt.block_on(ServerProxy::new(&connection)).unwrap();
    let add = |name: &str, port: &str| {
        let options = HashMap::from([("name".to_owned(), name.to_owned()), ("local-port".to_owned(), port.to_owned())]);
        rt.block_on(server.add("custom", options)).unwrap();
    };
    add("web", "8080");
    add("notes", "8081");
    rt.block_on(server.enable("web")).unwrap();
    wait_until("two rows, web on", || window.rows().len() == 2 && window.rows()[1].switched_on);
    let rows = window.rows();
    assert_eq!(rows[0].name, "notes");
    assert_eq!(rows[0].state, "Off: Tor does not publish it");
    assert_eq!(rows[1].name, "web");
    assert!(rows[1].switched_on);
    // This tor has DisableNetwork 1, as Tails' tor until the person connects.
    assert_eq!(rows[1].state, "Saved; Tor will publish it when it is connected");
    // The ladder in the details: every step still ahead while tor is not connected; none
    // drawn for a service that is off.
    let ahead =
        ["Tor connected", "Registered with Tor", "Announced", "Reached by a check"].map(|s| format!("{s}: not yet"));
    assert_eq!(window.ladder("web").unwrap(), ahead);
    assert_eq!(window.ladder("notes"), None);
    // (Without the reveal's animation, so that the picture shows the details, not a frame of it.)
    let settings = gtk::Settings::default().unwrap();
    settings.set_gtk_enable_animations(false);
    window.show_details_of("web", true);
    screenshot(&window, "details");
    window.show_details_of("web", false);
    settings.set_gtk_enable_animations(true);
    assert_eq!(
        window.tor_notice().unwrap(),
        "Tor is not connected yet. Connect to Tor with the Tor Connection assistant: 1 service will be published \
         as soon as it is connected."
    );
    screenshot(&window, "services");

    // tor goes away: nobody calls anything, the service's loop notices and says so.
    tor.stop();
    wait_until("the window to hear that tor went away", || {
        window.tor_notice().is_some_and(|n| n.starts_with("Tor cannot be reached right now"))
    });

    // "Check Now" tries to reach it through tor as a friend would, and says when and what it
    // found (tor is gone here).
    window.check_now("web");
    wait_until("the check's answer", || window.last_check("web").is_some_and(|t| t.starts_with("Could not check at")));

    // The person flips a switch: the service stores it, the window shows what is stored.
    window.switch("notes").unwrap().set_active(true);
    wait_until("notes switched on and stored", || {
        window.rows()[0].switched_on && !window.rows()[0].busy && window.last_notice().is_some()
    });
    let stored: serde_json::Value = serde_json::from_str(&rt.block_on(server.info("notes")).unwrap()).unwrap();
    assert_eq!(stored["enabled"], true);
    assert_eq!(window.last_notice().unwrap(), "Saved; Tor will publish it when it is back.");
    window.switch("web").unwrap().set_active(false);
    wait_until("web switched off", || !window.rows()[1].switched_on && window.rows()[1].state.starts_with("Off"));
    let stored: serde_json::Value = serde_json::from_str(&rt.block_on(server.info("web")).unwrap()).unwrap();
    assert_eq!(stored["enabled"], false);

    // A service that would come with a login key is added only after the Persistent Storage
    // passphrase; cancelled, nothing is added and the add window stays as it was.
    let services_before = window.rows().len();
    window.open_add();
    wait_until("the add window", || window.add_window().is_some_and(|a| a.window.is_mapped()));
    let adding = window.add_window().unwrap();
    adding.choose("sftp");
    adding.set("name", "files");
    adding.set(
        "option.authorized-keys",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEB",
    );
    adding.submit();
    wait_until("the passphrase question for the add", || window.dialog().is_some_and(|d| d.is_mapped()));
    let question = window.dialog().unwrap();
    let body = question.body().to_string();
    assert!(
        body.starts_with(
            "Adding a service that lets more people in, or lets them see or do more, needs the passphrase"
        ),
        "{body}"
    );
    question.response("cancel");
    wait_until("the question gone", || window.dialog().is_none_or(|d| d != question));
    assert!(adding.window.is_visible() && adding.error().is_none(), "the add window stays, saying nothing failed");
    assert_eq!(window.rows().len(), services_before, "nothing added");
    assert!(rt.block_on(server.info("files")).is_err());
    adding.window.close();

    // Inviting a friend: the service makes the key and, before it lets the key out, asks for
    // the Persistent Storage passphrase; a wrong one is asked again.
    window.invite("web", "alice");
    let answer = |passphrase: &str| {
        wait_until("the passphrase question", || window.dialog().is_some_and(|d| d.is_mapped()));
        let question = window.dialog().unwrap();
        let entry = question.extra_child().unwrap().downcast::<gtk::PasswordEntry>().unwrap();
        entry.set_text(passphrase);
        let body = question.body().to_string();
        question.response("prove");
        wait_until("the question answered", || window.dialog().is_none_or(|d| d != question));
        body
    };
    let first = answer("not the passphrase");
    assert!(first.starts_with("Showing a friend's key needs the passphrase of your Persistent Storage"), "{first}");
    let again = answer(PASSPHRASE);
    assert!(again.starts_with("This is not the passphrase of your Persistent Storage"), "{again}");
    // The sheet shows the address, then the key, and the key is the one the service keeps
    // (what `client show` prints).
    wait_until("the share sheet", || window.share_sheet().is_some_and(|s| s.window.is_mapped()));
    let sheet = window.share_sheet().unwrap();
    let address: serde_json::Value = serde_json::from_str(&rt.block_on(server.info("web")).unwrap()).unwrap();
    assert_eq!(sheet.address(), address["address"].as_str().unwrap());
    assert_eq!(sheet.step(), "address", "the address comes first");
    save_png(&sheet.window, "share-address");
    sheet.next();
    // The test's own connection proves presence for itself: the window's proof is not its.
    rt.block_on(server.prove_presence(PASSPHRASE)).unwrap();
    let key: serde_json::Value =
        serde_json::from_str(&rt.block_on(server.credential("web", "alice", "key")).unwrap()).unwrap();
    assert_eq!(sheet.key(), key["value"].as_str().unwrap());
    assert_eq!(sheet.key().len(), 52, "a base32 x25519 key, as Tor Browser asks for it");
    wait_until("the key step", || sheet.step() == "key" && !sheet.transition_running());
    save_png(&sheet.window, "share-key");
    // Saved as a file through the desktop's file chooser: private, the line her tor reads.
    let saved = env.root.path().join("alice.auth_private");
    find(&sheet.window, "save-key").unwrap().downcast::<gtk::Button>().unwrap().emit_clicked();
    choose_in_file_chooser(&saved);
    wait_until("the key saved", || window.last_notice().is_some_and(|n| n.starts_with("The key is saved in")));
    assert_eq!(std::fs::metadata(&saved).unwrap().permissions().mode() & 0o777, 0o600, "the key file is private");
    let line: serde_json::Value =
        serde_json::from_str(&rt.block_on(server.credential("web", "alice", "auth-private")).unwrap()).unwrap();
    assert_eq!(std::fs::read_to_string(&saved).unwrap(), format!("{}\n", line["value"].as_str().unwrap()));
    sheet.window.close();
    assert_eq!(sheet.key(), "", "the key leaves the sheet when it closes");
    // (client-1: the first client every service gets when it is added.)
    wait_until("alice listed", || window.friends("web") == ["client-1", "alice"]);

    // The proof belongs to the window's connection: showing the key again within five
    // minutes asks nothing.
    window.share_sheet().unwrap().window.destroy();
    window.set_share_sheet(None);
    window.show_key("web", "alice");
    wait_until("the share sheet again, without a question", || {
        assert!(window.dialog().is_none(), "the passphrase was asked again");
        window.share_sheet().is_some_and(|s| s.window.is_mapped())
    });
    window.share_sheet().unwrap().window.close();

    // Revoking asks first; Cancel keeps her.
    window.revoke("web", "alice");
    wait_until("the revoke question", || window.dialog().is_some_and(|d| d.is_mapped()));
    let question = window.dialog().unwrap();
    assert_eq!(question.heading().unwrap(), "Revoke alice's Key?");
    assert_eq!(question.default_response().unwrap(), "cancel", "the default answer destroys nothing");
    save_png(&question, "revoke");
    question.response("cancel");
    wait_until("the question gone", || window.dialog().is_none());
    let clients = || -> Vec<String> {
        let listed: serde_json::Value = serde_json::from_str(&rt.block_on(server.clients("web")).unwrap()).unwrap();
        listed.as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(clients(), ["client-1", "alice"]);
    window.revoke("web", "alice");
    wait_until("the revoke question again", || window.dialog().is_some());
    window.dialog().unwrap().response("confirm");
    wait_until("alice gone from the window", || window.friends("web") == ["client-1"]);
    assert_eq!(clients(), ["client-1"]);

    // Removing a service asks the same way, and destroys it.
    window.remove("notes");
    wait_until("the remove question", || window.dialog().is_some());
    let question = window.dialog().unwrap();
    assert_eq!(question.heading().unwrap(), "Remove notes?");
    assert_eq!(question.default_response().unwrap(), "cancel");
    question.response("confirm");
    wait_until("one row left", || window.rows().len() == 1);
    assert_eq!(window.rows()[0].name, "web");

    // Adding a service in the window: the catalog's kinds, then the kind's options. A value
    // the service refuses is said in the window, and nothing is added.
    window.open_add();
    wait_until("the add window", || window.add_window().is_some_and(|a| a.window.is_mapped()));
    let adding = window.add_window().unwrap();
    save_png(&adding.window, "add-kinds");
    adding.choose("custom");
    assert_eq!(adding.page(), "options");
    adding.set("name", "extra");
    adding.set("first-client", "bob");
    adding.set("local-port", "0");
    adding.submit();
    wait_until("the refusal in the add window", || adding.error().is_some());
    assert_eq!(adding.error().unwrap(), "Invalid port \"0\" for local-port: expected a number from 1 to 65535.");
    assert_eq!(window.rows().len(), 1, "nothing added");
    adding.set("local-port", "9000");
    wait_until("the options page to settle", || !adding.transition_running());
    save_png(&adding.window, "add-options");
    adding.submit();
    wait_until("extra listed", || window.rows().len() == 2 && !adding.window.is_visible());
    assert_eq!(window.rows()[0].name, "extra");
    assert_eq!(window.friends("extra"), ["bob"], "the first friend's key is made with the service");
    // A closed add window is freed once another replaces it: its own buttons hold it weakly.
    let closed_add = adding.window.downgrade();
    drop(adding);
    window.open_add();
    wait_until("a second add window", || window.add_window().is_some_and(|a| a.window.is_mapped()));
    window.add_window().unwrap().window.close();
    wait_until("the first add window freed", || closed_add.upgrade().is_none());

    // The friend's side: a key received from someone else's service (made here in a store of
    // its own), as its .auth_private line, pasted into the keys tab, kept and listed; then
    // forgotten.
    let theirs = TestEnv::new();
    theirs.run(&["add", "custom", "--name", "theirs", "--local-port", "9"]).ok();
    let line = theirs.run(&["client", "show", "theirs", "client-1", "--as", "auth-private"]).ok().stdout;
    window.show_tab("keys");
    find(window.widget(), "add-key").unwrap().downcast::<gtk::Button>().unwrap().emit_clicked();
    wait_until("the key question", || window.dialog().is_some_and(|d| d.is_mapped()));
    let question = window.dialog().unwrap();
    find(&question, "key-name").unwrap().downcast::<gtk::Entry>().unwrap().set_text("from-a-friend");
    let text = find(&question, "key-text").unwrap().downcast::<gtk::PasswordEntry>().unwrap();
    text.set_text(line.trim());
    question.response("add");
    wait_until("the key listed", || window.received_keys() == ["from-a-friend"]);
    assert_eq!(text.text(), "", "the pasted key leaves the form");
    assert_eq!(window.last_notice().unwrap(), "The key from-a-friend is kept; Tor gets it when it is back.");
    let kept: serde_json::Value = serde_json::from_str(&rt.block_on(server.keys()).unwrap()).unwrap();
    assert_eq!(kept[0]["name"], "from-a-friend");
    assert_eq!(kept[0]["persistent"], true, "kept across reboots unless asked not to");
    screenshot(&window, "keys");
    window.remove_received_key("from-a-friend");
    wait_until("the key forgotten", || window.received_keys().is_empty());

    // Backup: everything in one file, its passphrase typed twice (a mismatch is asked again),
    // after the Persistent Storage passphrase (proved above, on the window's connection).
    rt.block_on(server.enable("extra")).unwrap();
    let extra_address = |server: &ServerProxy| -> String {
        let info: serde_json::Value = serde_json::from_str(&rt.block_on(server.info("extra")).unwrap()).unwrap();
        info["address"].as_str().unwrap().to_owned()
    };
    let address_before = extra_address(&server);
    let backup = env.root.path().join("everything.age");
    window.show_tab("backup");
    screenshot(&window, "backup");
    let answer_backup = |first: &str, again: Option<&str>, response: &str| -> String {
        wait_until("the backup passphrase question", || window.dialog().is_some_and(|d| d.is_mapped()));
        let question = window.dialog().unwrap();
        let entry = |name| find(&question, name).unwrap().downcast::<gtk::PasswordEntry>().unwrap();
        entry("backup-passphrase").set_text(first);
        if let Some(again) = again {
            entry("backup-passphrase-again").set_text(again);
        }
        let body = question.body().to_string();
        question.response(response);
        wait_until("the question answered", || window.dialog().is_none_or(|d| d != question));
        body
    };
    find(window.widget(), "save-backup").unwrap().downcast::<gtk::Button>().unwrap().emit_clicked();
    choose_in_file_chooser(&backup);
    answer_backup(BACKUP_PASSPHRASE, Some("something else entirely"), "save");
    let asked_again = answer_backup(BACKUP_PASSPHRASE, Some(BACKUP_PASSPHRASE), "save");
    assert_eq!(asked_again, "The two passphrases are not the same. Type the same one twice.");
    wait_until("the backup saved", || window.last_notice().is_some_and(|n| n.starts_with("The backup is saved in")));
    assert_eq!(std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777, 0o600, "the backup is private");
    assert!(std::fs::read_to_string(&backup).unwrap().starts_with("-----BEGIN AGE ENCRYPTED FILE-----"));

    // Restore: the service is gone meanwhile. A wrong passphrase is said; the right one shows
    // what would change (extra added, web already here, extra held back off) before anything
    // does, with Cancel the default since Replace is offered.
    rt.block_on(server.remove("extra", false)).unwrap();
    wait_until("extra gone", || window.rows().len() == 1);
    window.restore_from(&backup);
    answer_backup("not the backup's passphrase", None, "open");
    wait_until("the wrong passphrase said", || {
        window.last_notice().is_some_and(|n| n.contains("the passphrase is wrong"))
    });
    find(window.widget(), "restore-backup").unwrap().downcast::<gtk::Button>().unwrap().emit_clicked();
    choose_in_file_chooser(&backup);
    answer_backup(BACKUP_PASSPHRASE, None, "open");
    wait_until("the preview", || window.dialog().is_some_and(|d| d.is_mapped()));
    let preview = window.dialog().unwrap();
    assert_eq!(preview.heading().unwrap(), "Restore This Backup?");
    let body = preview.body().to_string();
    assert!(body.starts_with("Services it adds: extra.\n\nAlready here: web."), "{body}");
    assert!(body.contains("nothing comes back more open than it is now: extra: imported disabled"), "{body}");
    assert_eq!(preview.default_response().unwrap(), "cancel");
    assert_eq!(window.rows().len(), 1, "nothing restored before the answer");
    save_png(&preview, "restore-preview");
    preview.response("restore");
    wait_until("extra back", || {
        window.rows().len() == 2 && window.last_notice().is_some_and(|n| n.starts_with("Restored"))
    });
    assert_eq!(
        window.last_notice().unwrap(),
        "Restored: extra. Restored services are off: turn each on to publish it."
    );
    assert_eq!(extra_address(&server), address_before, "at its old address");
    assert!(!window.rows()[0].switched_on, "held back off");
    assert_eq!(window.friends("extra"), ["bob"]);

    // Kept data: a service removed with its files kept, added again (a new address), and
    // given its files back; then removed again and its kept files deleted, after a question
    // whose default is Cancel.
    let add_old = || {
        let options =
            HashMap::from([("name".to_owned(), "old".to_owned()), ("local-port".to_owned(), "9100".to_owned())]);
        rt.block_on(server.add("custom", options)).unwrap();
    };
    let old_data = env.state_dir().join("data/old");
    add_old();
    std::fs::create_dir_all(&old_data).unwrap();
    std::fs::write(old_data.join("index.html"), "hello").unwrap();
    rt.block_on(server.remove("old", true)).unwrap();
    add_old();
    window.show_tab("backup");
    wait_until("the kept files listed", || window.kept_data().len() == 1 && window.rows().len() == 3);
    let kept = window.kept_data()[0].clone();
    assert!(kept.starts_with("old-"), "{kept}");
    screenshot(&window, "kept-data");
    window.give_kept_data(&kept);
    wait_until("the give question", || window.dialog().is_some_and(|d| d.is_mapped()));
    let question = window.dialog().unwrap();
    assert_eq!(question.heading().unwrap(), "Give the Files of old to a Service?");
    let choice = find(&question, "kept-data-to").unwrap().downcast::<gtk::DropDown>().unwrap();
    let offered = choice.model().unwrap().downcast::<gtk::StringList>().unwrap();
    let offered: Vec<String> =
        (0..offered.n_items()).filter_map(|i| offered.string(i)).map(|s| s.to_string()).collect();
    assert_eq!(offered, ["extra", "old", "web"], "the services that are off");
    assert_eq!(choice.selected(), 1, "the service of the same name first");
    question.response("give");
    wait_until("the files given", || {
        window.kept_data().is_empty() && window.last_notice().is_some_and(|n| n.contains("now old's"))
    });
    assert_eq!(window.last_notice().unwrap(), "The data of old is now old's. Turn old on to serve it.");
    assert_eq!(std::fs::read_to_string(old_data.join("index.html")).unwrap(), "hello");
    rt.block_on(server.remove("old", true)).unwrap();
    wait_until("the kept files listed again", || window.kept_data().len() == 1 && window.rows().len() == 2);
    let kept = window.kept_data()[0].clone();
    // No service of its name is off now: none is chosen for the person, and Give waits for a
    // choice (Enter cancels).
    window.give_kept_data(&kept);
    wait_until("the give question again", || window.dialog().is_some_and(|d| d.is_mapped()));
    let question = window.dialog().unwrap();
    let choice = find(&question, "kept-data-to").unwrap().downcast::<gtk::DropDown>().unwrap();
    assert_eq!(choice.selected(), gtk::INVALID_LIST_POSITION, "no service chosen");
    assert!(!question.is_response_enabled("give"), "nothing to give to yet");
    assert_eq!(question.default_response().unwrap(), "cancel");
    choice.set_selected(0);
    assert!(question.is_response_enabled("give"), "a service chosen");
    question.response("cancel");
    wait_until("the question gone", || window.dialog().is_none());
    window.delete_kept_data(&kept);
    wait_until("the delete question", || window.dialog().is_some_and(|d| d.is_mapped()));
    let question = window.dialog().unwrap();
    assert_eq!(question.heading().unwrap(), "Delete the Files of old?");
    assert_eq!(question.default_response().unwrap(), "cancel", "the default answer destroys nothing");
    question.response("cancel");
    wait_until("the question gone", || window.dialog().is_none());
    assert_eq!(window.kept_data(), std::slice::from_ref(&kept), "cancelled: still kept");
    window.delete_kept_data(&kept);
    wait_until("the delete question again", || window.dialog().is_some_and(|d| d.is_mapped()));
    window.dialog().unwrap().response("confirm");
    wait_until("the kept files deleted", || window.kept_data().is_empty());
    assert_eq!(rt.block_on(server.kept_data()).unwrap(), "[]");
    assert!(!env.state_dir().join("kept-data").join(&kept).exists());

    window.show_tab("services");

    // The service stops: the window says so.
    drop(service);
    wait_until("the not-running page again", || window.page() == page::PROBLEM);
    assert_eq!(window.problem().0, "Tails Server is not running");

    // A service that refuses this user (polkit's answer) gets a page of its own.
    let refusing = start_service(&env, &bus, &tor, "uids:65534", &storage);
    wait_until("the refusal page", || window.problem().0 == "You may not manage onion services here");
    assert_eq!(window.page(), page::PROBLEM);
    screenshot(&window, "not-authorized");
    let owner = rt.block_on(async {
        let dbus = zbus::fdo::DBusProxy::new(&connection).await.unwrap();
        dbus.name_has_owner(BUS_NAME.try_into().unwrap()).await.unwrap()
    });
    assert!(owner);

    // Tails at login: the service runs before the Persistent Storage is unlocked. The window
    // says what to do, then follows the unlock (PropertiesChanged) to the services.
    drop(refusing);
    wait_until("the not-running page once more", || window.problem().0 == "Tails Server is not running");
    let stand_in = rt.block_on(async {
        zbus::connection::Builder::address(bus.address.as_str())
            .name(common::STAND_IN_NAME)
            .serve_at("/org/boum/tails/PersistentStorage", PersistentStorageStandIn { unlocked: false })
            .build()
            .await
            .unwrap()
    });
    let _service = start_service_following(&env, &bus, &tor, "uids:0", &storage, "tails");
    wait_until("the locked page", || window.problem().0 == "Unlock your Persistent Storage");
    screenshot(&window, "locked");
    rt.block_on(async {
        let iface = stand_in
            .object_server()
            .interface::<_, PersistentStorageStandIn>("/org/boum/tails/PersistentStorage")
            .await
            .unwrap();
        iface.get_mut().await.unlocked = true;
        iface.get().await.is_unlocked_changed(iface.signal_emitter()).await.unwrap();
    });
    wait_until("the services once unlocked", || window.page() == page::SERVICES && window.rows().len() == 2);
    // Additional Software does not list tails-server (setup not done): the window says what
    // a restart would lose and the command that keeps it; once listed, the notice goes.
    wait_until("the setup notice", || window.setup_notice().is_some_and(|t| t.contains("sudo tails-server setup")));
    screenshot(&window, "not-set-up");
    let volume = env.state_dir().parent().unwrap().to_owned();
    std::fs::write(volume.join("live-additional-software.conf"), "tails-server\ntails-server-gui").unwrap();
    std::fs::create_dir_all(volume.join("tails-server-apt")).unwrap();
    std::fs::write(volume.join("tails-server-apt/tails-server_0.1.0-1_amd64.deb"), "").unwrap();
    window.reload();
    wait_until("the setup notice gone", || window.setup_notice().is_none());

    // A closed window is freed, with its bus connection and thread: nothing it made (rows,
    // sheets, the add window) holds it in a cycle.
    let gone = window.downgrade();
    window.widget().destroy();
    drop(window);
    wait_until("the closed window to be freed", || gone.is_gone());
}
