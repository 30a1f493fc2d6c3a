//! The made-up language the window's tests use to find words that did not go through
//! gettext: every message of the translators' template with each run of words between ⟦ and
//! ⟧, compiled by msgfmt. Included by tests/gui_language.rs and tests/gui_atspi.rs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Compiles the made-up language from the committed template into `dir/language/`; the
/// environment that selects it: the window's catalog there (`TAILS_SERVER_GUI_LOCALEDIR`),
/// and a locale named for it. gettext ignores `LANGUAGE` in the C locale, and glibc 2.41
/// (Debian 13) in C.UTF-8 too: the locale is a copy of C.UTF-8 under another name, found
/// through `LOCPATH`, whose messages are looked up as `xx`.
pub fn compile(dir: &Path) -> Vec<(String, String)> {
    let template =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/gui/po/tails-server-gui.pot"))
            .expect("the translators' template (crates/gui/tests/translations.rs writes it)");
    let root = directory(dir);
    let catalog = root.join("messages");
    std::fs::create_dir_all(catalog.join("xx/LC_MESSAGES")).unwrap();
    let po = root.join("xx.po");
    std::fs::write(&po, bracketed_catalog(&template)).unwrap();
    let compiled = std::process::Command::new("msgfmt")
        .arg("-o")
        .arg(catalog.join("xx/LC_MESSAGES/tails-server-gui.mo"))
        .arg(&po)
        .output()
        .expect("msgfmt (Debian's gettext)");
    assert!(compiled.status.success(), "msgfmt: {}", String::from_utf8_lossy(&compiled.stderr));
    let locales = root.join("locales");
    std::fs::create_dir_all(&locales).unwrap();
    let copied = std::process::Command::new("cp")
        .args(["-r", "/usr/lib/locale/C.utf8"])
        .arg(locales.join("xx_XX.UTF-8"))
        .status()
        .expect("cp");
    assert!(copied.success(), "glibc's C.UTF-8 locale (/usr/lib/locale/C.utf8) is copied");
    [
        ("LOCPATH", locales.display().to_string()),
        ("LC_ALL", "xx_XX.UTF-8".to_owned()),
        ("LANGUAGE", "xx".to_owned()),
        ("TAILS_SERVER_GUI_LOCALEDIR", catalog.display().to_string()),
    ]
    .map(|(k, v)| (k.to_owned(), v))
    .to_vec()
}

/// Where [`compile`] puts everything under `dir` (to mount in a container).
pub fn directory(dir: &Path) -> PathBuf {
    dir.join("language")
}

/// A message of the made-up language: each run of words between ⟦ and ⟧, each `{placeholder}`
/// outside, so that a value filled in is checked too (an English word given to a translated
/// sentence is not hidden inside its brackets).
pub fn bracketed(message: &str) -> String {
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
pub fn bracketed_catalog(template: &str) -> String {
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

/// What of `text` is outside every ⟦…⟧ (nested brackets: a translated word inside a
/// translated sentence).
pub fn outside_brackets(text: &str) -> String {
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

/// Whether `text` has a word outside the brackets that is not one of `data` (what the person
/// typed or the service made: names, addresses, keys, the same in every language).
pub fn has_untranslated_words(text: &str, data: &[String]) -> bool {
    let mut data: Vec<&String> = data.iter().collect();
    // The longest first: an address is not read as a service's name inside it.
    data.sort_by_key(|d| std::cmp::Reverse(d.len()));
    let mut outside = outside_brackets(text);
    for value in data {
        outside = outside.replace(value.as_str(), "");
    }
    outside.chars().any(char::is_alphabetic)
}

#[test]
fn words_outside_brackets_are_found_and_data_is_not() {
    assert_eq!(outside_brackets("⟦Remove ⟦web⟧?⟧"), "");
    assert_eq!(outside_brackets("✓ ⟦Tor connected⟧"), "✓ ");
    assert_eq!(outside_brackets("⟦Step⟧ 2 of 2"), " 2 of 2");
    assert!(!has_untranslated_words("⟦Remove ⟧web⟦?⟧", &["web".to_owned()]));
    assert!(has_untranslated_words("⟦Remove ⟧web⟦?⟧", &[]));
    let po = bracketed_catalog(
        "header\n\n#: a.rs:1\nmsgid \"Say \\\"hi\\\"\"\nmsgstr \"\"\n\n#: a.rs:2\nmsgid \"{n} key\"\nmsgid_plural \"{n} keys\"\nmsgstr[0] \"\"\nmsgstr[1] \"\"\n",
    );
    assert!(po.contains("msgid \"Say \\\"hi\\\"\"\nmsgstr \"⟦Say \\\"hi\\\"⟧\""), "{po}");
    assert!(po.contains("msgstr[1] \"{n}⟦ keys⟧\""), "{po}");
    assert_eq!(bracketed("Remove {service}? {{x}}"), "⟦Remove ⟧{service}⟦? {{x}}⟧");
}
