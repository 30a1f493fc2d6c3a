//! The window in a made-up language whose every message is the English one between ⟦ and ⟧,
//! compiled by msgfmt from the translators' template (crates/gui/po): each main screen, against a
//! real `tails-server service` on a private bus and a real tor, shows no words that did not go
//! through gettext. What is left outside the brackets may only be the person's data (a
//! service's or friend's name, an address, a key), numbers and signs. The service's own
//! messages stay in English and appear here only inside a translated sentence.
//!
//! What this does not see: accessible names and descriptions (GTK 4.8 cannot read them back:
//! tests/gui_atspi.rs reads them over AT-SPI in the same language), the screens it does not
//! open (notifications, the error pages but one, the backup and key questions), and the
//! desktop's file chooser (its own words are GTK's).

mod common;
#[path = "common/gui.rs"]
mod gui;
#[path = "common/language.rs"]
mod language;

use std::collections::HashMap;

use common::{luks_volume, serve_for_the_window, Bus, LocalTor, TestEnv};
use gui::wait_until;
use tails_server_dbus::ServerProxy;
use tails_server_gui::adw::prelude::*;
use tails_server_gui::gtk;
use tails_server_gui::window::{page, Window};

const PASSPHRASE: &str = "correct horse battery staple";

/// Every text a mapped widget under `root` shows: labels (rows' titles and subtitles, buttons'
/// and dialogs' words are labels inside them), entries' placeholders, tooltips.
fn texts_shown(root: &gtk::Widget, texts: &mut Vec<String>) {
    if !root.is_mapped() {
        return;
    }
    if let Some(label) = root.downcast_ref::<gtk::Label>() {
        texts.push(label.text().to_string());
    }
    if let Some(text) = root.downcast_ref::<gtk::Text>() {
        texts.extend(text.placeholder_text().map(|t| t.to_string()));
    }
    texts.extend(root.tooltip_text().map(|t| t.to_string()));
    let mut child = root.first_child();
    while let Some(widget) = child {
        texts_shown(&widget, texts);
        child = widget.next_sibling();
    }
}

/// Words GTK and libadwaita show in their own widgets and translate in their own text
/// domains (a password row's peek icon, a drop-down with nothing chosen).
const TOOLKIT_WORDS: [&str; 3] = ["Show Text", "Hide Text", "(None)"];

/// The texts under `root` with words that did not go through gettext; `data`: what the
/// person typed or the service made (names, addresses, keys), shown as it is in any language.
fn untranslated(root: &impl IsA<gtk::Widget>, data: &[String]) -> Vec<String> {
    let mut texts = Vec::new();
    texts_shown(root.as_ref(), &mut texts);
    texts
        .into_iter()
        .filter(|text| !TOOLKIT_WORDS.contains(&text.as_str()))
        .filter(|text| language::has_untranslated_words(text, data))
        .collect()
}

fn assert_translated(what: &str, root: &impl IsA<gtk::Widget>, data: &[String]) {
    let left = untranslated(root, data);
    assert!(left.is_empty(), "{what} shows words that are not in the translators' template: {left:#?}");
}

#[test]
fn every_main_screen_speaks_the_persons_language() {
    if tails_server_core::unix::euid() != 0 {
        eprintln!("skipped: the service owns org.boum.tails.Server, which the bus policy allows root only");
        return;
    }
    assert!(std::env::var_os("DISPLAY").is_some(), "the window needs an X display: run the tests with `xvfb-run -a`");
    let env = TestEnv::new();
    let environment = language::compile(env.root.path());
    for (name, value) in &environment {
        std::env::set_var(name, value);
    }

    let bus = Bus::start();
    let tor = LocalTor::start();
    let storage = luks_volume(env.root.path(), PASSPHRASE);
    std::env::set_var("DBUS_SYSTEM_BUS_ADDRESS", &bus.address);
    tails_server_gui::adw::init().unwrap();
    gtk::glib::log_set_always_fatal(gtk::glib::LogLevels::LEVEL_CRITICAL);
    gtk::Settings::default().unwrap().set_gtk_enable_animations(false);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();

    let window = Window::new(None);
    window.widget().present();
    window.start();
    let mut data: Vec<String> = Vec::new();

    wait_until("the not-running page", || window.page() == page::PROBLEM);
    assert!(window.problem().0.starts_with('⟦'), "the made-up language is in use: {:?}", window.problem());
    wait_until("the page to settle", || !window.transition_running());
    assert_translated("the not-running page", window.widget(), &data);

    let _service = serve_for_the_window(&env, &bus, &tor, &storage);
    wait_until("the empty page", || window.page() == page::EMPTY && !window.transition_running());
    assert_translated("the empty page", window.widget(), &data);

    // Two services: one of the catalog's kinds (its program is not installed here) and a
    // custom one, on; the services page, one's details open.
    let connection = rt.block_on(bus.connect());
    let server = rt.block_on(ServerProxy::new(&connection)).unwrap();
    for (kind, name, port) in [("gobby", "notes", "6523"), ("custom", "web", "8080")] {
        let options = HashMap::from([("name".to_owned(), name.to_owned()), ("local-port".to_owned(), port.to_owned())]);
        rt.block_on(server.add(kind, options)).unwrap();
        let info: serde_json::Value = serde_json::from_str(&rt.block_on(server.info(name)).unwrap()).unwrap();
        data.extend([name.to_owned(), info["address"].as_str().unwrap().to_owned()]);
    }
    data.push("client-1".to_owned());
    rt.block_on(server.enable("web")).unwrap();
    wait_until("both rows, web on", || window.rows().len() == 2 && window.rows()[1].switched_on);
    window.show_details_of("web", true);
    window.show_details_of("notes", true);
    wait_until("the page to settle", || !window.transition_running());
    assert_translated("the services page", window.widget(), &data);

    // Adding: the catalog's kinds, then a kind's options (the catalog's words too). A kind's
    // name and its Debian packages are commands' words, the same in every language.
    let catalog: serde_json::Value = serde_json::from_str(&rt.block_on(server.catalog()).unwrap()).unwrap();
    for kind in catalog.as_array().unwrap() {
        data.push(kind["name"].as_str().unwrap().to_owned());
        data.extend(kind["packages"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_owned()));
    }
    window.open_add();
    wait_until("the add window", || window.add_window().is_some_and(|a| a.window.is_mapped()));
    let adding = window.add_window().unwrap();
    wait_until("the add window to settle", || !adding.transition_running());
    assert_translated("the add window's kinds", &adding.window, &data);
    adding.choose("mumble");
    wait_until("the options page", || adding.page() == "options" && !adding.transition_running());
    // Mumble's default welcome message is a value the person may change, not the window's words.
    data.push("Welcome to this Mumble server, reachable only through Tor.".to_owned());
    assert_translated("the add window's options", &adding.window, &data);
    adding.window.close();

    // Revoking asks first.
    window.revoke("web", "client-1");
    wait_until("the revoke question", || window.dialog().is_some_and(|d| d.is_mapped()));
    let question = window.dialog().unwrap();
    assert_translated("the revoke question", &question, &data);
    question.response("cancel");
    wait_until("the question gone", || window.dialog().is_none());

    // Inviting: the passphrase question, then the share sheet's two steps.
    window.invite("web", "alice");
    data.push("alice".to_owned());
    wait_until("the passphrase question", || window.dialog().is_some_and(|d| d.is_mapped()));
    let question = window.dialog().unwrap();
    assert_translated("the passphrase question", &question, &data);
    let entry = question.extra_child().unwrap().downcast::<gtk::PasswordEntry>().unwrap();
    entry.set_text(PASSPHRASE);
    question.response("prove");
    wait_until("the share sheet", || window.share_sheet().is_some_and(|s| s.window.is_mapped()));
    let sheet = window.share_sheet().unwrap();
    wait_until("the sheet to settle", || !sheet.transition_running());
    assert_translated("the share sheet's address", &sheet.window, &data);
    sheet.next();
    wait_until("the key step", || sheet.step() == "key" && !sheet.transition_running());
    data.push(sheet.key());
    data.push("alice.auth_private".to_owned());
    assert_translated("the share sheet's key", &sheet.window, &data);
    sheet.window.close();

    // Files kept from a removed service: their row, and the questions before they are given
    // or deleted.
    std::fs::create_dir_all(env.state_dir().join("data/web")).unwrap();
    std::fs::write(env.state_dir().join("data/web/index.html"), "hello").unwrap();
    rt.block_on(server.remove("web", true)).unwrap();
    window.show_tab("backup");
    wait_until("the kept files listed", || window.kept_data().len() == 1 && !window.transition_running());
    let kept = window.kept_data()[0].clone();
    data.push(kept.clone());
    // A size in GLib's words, which GLib translates (its own text domain).
    data.push(gtk::glib::format_size(5).to_string());
    window.give_kept_data(&kept);
    wait_until("the give question", || window.dialog().is_some_and(|d| d.is_mapped()));
    assert_translated("the give question", &window.dialog().unwrap(), &data);
    window.dialog().unwrap().response("cancel");
    wait_until("the question gone", || window.dialog().is_none());
    window.delete_kept_data(&kept);
    wait_until("the delete question", || window.dialog().is_some_and(|d| d.is_mapped()));
    assert_translated("the delete question", &window.dialog().unwrap(), &data);
    window.dialog().unwrap().response("cancel");
    wait_until("the question gone", || window.dialog().is_none());

    // The other tabs.
    for tab in ["keys", "backup"] {
        window.show_tab(tab);
        wait_until("the tab to settle", || !window.transition_running());
        assert_translated(&format!("the {tab} tab"), window.widget(), &data);
    }
}
