//! The window in a made-up language whose every message is the English one between ⟦ and ⟧,
//! compiled by msgfmt from the translators' template (crates/gui/po): each main screen, against a
//! real `tails-server service` on a private bus and a real tor, shows no words that did not go
//! through gettext. What is left outside the brackets may only be the person's data (a
//! service's or friend's name, an address, a key), numbers and signs. The service's own
//! messages stay in English and appear here only inside a translated sentence.
//!
//! What this does not see: accessible names and descriptions (GTK 4.8 cannot read them back;
//! tests/gui_atspi.rs reads them in English, and the template test lists every `describe`
//! call's words), and the desktop's file chooser (its own words are GTK's).

mod common;
#[path = "common/gui.rs"]
mod gui;

use std::collections::HashMap;
use std::path::Path;

use common::{luks_volume, serve_for_the_window, Bus, LocalTor, TestEnv};
use gui::wait_until;
use tails_server_dbus::ServerProxy;
use tails_server_gui::adw::prelude::*;
use tails_server_gui::gtk;
use tails_server_gui::window::{page, Window};

const PASSPHRASE: &str = "correct horse battery staple";

/// A message of the made-up language: each run of words between ⟦ and ⟧, each `{placeholder}`
/// outside, so that a value filled in is checked too (an English word given to a translated
/// sentence is not hidden inside its brackets).
fn bracketed(message: &str) -> String {
    let mut out = String::new();
    let mut words = String::new();
    let mut rest = message;
    let flush = |words: &mut String, out: &mut String| {
        if !words.is_empty() {
            out.push_str(&format!("⟦{words}⟧"));
            words.clear();
        }
    };
    while let Some(c) = rest.chars().next() {
        let placeholder = (c == '{' && !rest.starts_with("{{")).then(|| rest.find('}')).flatten();
        match placeholder {
            Some(end) => {
                flush(&mut words, &mut out);
                out.push_str(&rest[..=end]);
                rest = &rest[end + 1..];
            }
            None => {
                let len = if rest.starts_with("{{") || rest.starts_with("}}") { 2 } else { c.len_utf8() };
                words.push_str(&rest[..len]);
                rest = &rest[len..];
            }
        }
    }
    flush(&mut words, &mut out);
    out
}

/// The made-up language's catalog, from the template: every message bracketed, each plural
/// form too.
fn bracketed_catalog(template: &str) -> String {
    let mut po = String::from(
        "msgid \"\"\nmsgstr \"\"\n\"Content-Type: text/plain; charset=UTF-8\\n\"\n\
         \"Plural-Forms: nplurals=2; plural=(n != 1);\\n\"\n",
    );
    let inner = |line: &str, keyword: &str| -> String {
        let quoted = line.strip_prefix(keyword).unwrap().trim();
        quoted[1..quoted.len() - 1].to_owned()
    };
    for entry in template.split("\n\n").skip(1) {
        let msgid = entry.lines().find(|l| l.starts_with("msgid ")).map(|l| inner(l, "msgid"));
        let plural = entry.lines().find(|l| l.starts_with("msgid_plural ")).map(|l| inner(l, "msgid_plural"));
        let Some(msgid) = msgid else { continue };
        let translated = bracketed(&msgid);
        match plural {
            None => po.push_str(&format!("\nmsgid \"{msgid}\"\nmsgstr \"{translated}\"\n")),
            Some(plural) => po.push_str(&format!(
                "\nmsgid \"{msgid}\"\nmsgid_plural \"{plural}\"\nmsgstr[0] \"{translated}\"\nmsgstr[1] \"{}\"\n",
                bracketed(&plural)
            )),
        }
    }
    po
}

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

/// What of `text` is outside every ⟦…⟧ (nested brackets: a translated word inside a
/// translated sentence).
fn outside_brackets(text: &str) -> String {
    let mut depth = 0usize;
    let mut outside = String::new();
    for c in text.chars() {
        match c {
            '⟦' => depth += 1,
            '⟧' => depth = depth.saturating_sub(1),
            c if depth == 0 => outside.push(c),
            _ => {}
        }
    }
    outside
}

/// Words GTK and libadwaita show in their own widgets and translate in their own text
/// domains (a password row's peek icon).
const TOOLKIT_WORDS: [&str; 2] = ["Show Text", "Hide Text"];

/// The texts under `root` with words that did not go through gettext; `data`: what the
/// person typed or the service made (names, addresses, keys), shown as it is in any language.
fn untranslated(root: &impl IsA<gtk::Widget>, data: &[String]) -> Vec<String> {
    let mut texts = Vec::new();
    texts_shown(root.as_ref(), &mut texts);
    let mut data: Vec<&String> = data.iter().collect();
    // The longest first: an address is not read as a service's name inside it.
    data.sort_by_key(|d| std::cmp::Reverse(d.len()));
    texts
        .into_iter()
        .filter(|text| !TOOLKIT_WORDS.contains(&text.as_str()))
        .filter(|text| {
            let mut outside = outside_brackets(text);
            for value in &data {
                outside = outside.replace(value.as_str(), "");
            }
            outside.chars().any(char::is_alphabetic)
        })
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
    let template =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/gui/po/tails-server-gui.pot"))
            .expect("the translators' template (crates/gui/tests/translations.rs writes it)");
    let locale = env.root.path().join("locale");
    std::fs::create_dir_all(locale.join("xx/LC_MESSAGES")).unwrap();
    let po = env.root.path().join("xx.po");
    std::fs::write(&po, bracketed_catalog(&template)).unwrap();
    let compiled = std::process::Command::new("msgfmt")
        .arg("-o")
        .arg(locale.join("xx/LC_MESSAGES/tails-server-gui.mo"))
        .arg(&po)
        .output()
        .expect("msgfmt (Debian's gettext)");
    assert!(compiled.status.success(), "msgfmt: {}", String::from_utf8_lossy(&compiled.stderr));
    // Before GTK sets the locale from the environment. gettext ignores LANGUAGE in the "C"
    // locale, not in C.UTF-8 (always there with glibc 2.35 and later).
    std::env::set_var("LC_ALL", "C.UTF-8");
    std::env::set_var("LANGUAGE", "xx");
    std::env::set_var("TAILS_SERVER_GUI_LOCALEDIR", &locale);

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
    window.give_kept_data(&kept, None);
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

#[test]
fn words_outside_brackets_are_found_and_data_is_not() {
    assert_eq!(outside_brackets("⟦Remove ⟦web⟧?⟧"), "");
    assert_eq!(outside_brackets("✓ ⟦Tor connected⟧"), "✓ ");
    assert_eq!(outside_brackets("⟦Step⟧ 2 of 2"), " 2 of 2");
    let po = bracketed_catalog(
        "header\n\n#: a.rs:1\nmsgid \"Say \\\"hi\\\"\"\nmsgstr \"\"\n\n#: a.rs:2\nmsgid \"{n} key\"\nmsgid_plural \"{n} keys\"\nmsgstr[0] \"\"\nmsgstr[1] \"\"\n",
    );
    assert!(po.contains("msgid \"Say \\\"hi\\\"\"\nmsgstr \"⟦Say \\\"hi\\\"⟧\""), "{po}");
    assert!(po.contains("msgstr[1] \"{n}⟦ keys⟧\""), "{po}");
    assert_eq!(bracketed("Remove {service}? {{x}}"), "⟦Remove ⟧{service}⟦? {{x}}⟧");
}
