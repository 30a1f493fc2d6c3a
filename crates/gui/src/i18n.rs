//! The window in the person's language: every word it shows goes through gettext, in the
//! text domain [`DOMAIN`], as Tails' own applications do.
//!
//! - [`tr!`](crate::tr) for a sentence written in the code, with `{name}` placeholders
//!   filled after translation (a translation may move them; `format!` cannot take a
//!   translated template);
//! - [`trn!`](crate::trn) for one whose words depend on a number (`{n}`);
//! - [`catalog`] for the catalog's own words (a kind's description, an option's title), which
//!   arrive from the service in English.
//!
//! `crates/gui/po/tails-server-gui.pot` holds every message for translators; the test
//! `crates/gui/tests/translations.rs` writes it from the sources and the catalog (the
//! extractor reads `tr!` and `trn!` calls, which xgettext cannot: it has no Rust before
//! gettext 0.24), and the window's tests in a made-up language check that the main screens
//! show, and a screen reader says, nothing that did not go through it. The service's own
//! messages (a refusal, an error) stay in English: they come from a root process that has
//! no session language. Dates are written as ISO 8601, and catalog kinds added from a
//! folder at run time are not in the template.

use std::ffi::{c_char, CString};
use std::fmt::Display;

/// The text domain: `/usr/share/locale/<language>/LC_MESSAGES/tails-server-gui.mo`.
pub const DOMAIN: &str = "tails-server-gui";

/// Where the translations are unless `TAILS_SERVER_GUI_LOCALEDIR` says otherwise (the tests'
/// made-up language; a translator trying a `.mo` before it is packaged).
const LOCALE_DIR: &str = "/usr/share/locale";

extern "C" {
    // glibc's own gettext (libintl is part of it); GLib wraps the lookups, not the binding.
    fn bindtextdomain(domain: *const c_char, dir: *const c_char) -> *mut c_char;
    fn bind_textdomain_codeset(domain: *const c_char, codeset: *const c_char) -> *mut c_char;
}

/// Tells gettext where the window's translations are, in UTF-8 whatever the locale's
/// encoding. Call once, after GTK has set the locale from the environment (`gtk::init`).
pub fn init() {
    let dir = std::env::var_os("TAILS_SERVER_GUI_LOCALEDIR")
        .map(|dir| dir.into_encoded_bytes())
        .unwrap_or_else(|| LOCALE_DIR.as_bytes().to_vec());
    let (Ok(domain), Ok(dir)) = (CString::new(DOMAIN), CString::new(dir)) else {
        return; // a NUL in the variable: the window stays in English
    };
    // SAFETY: both are NUL-terminated strings that outlive the calls; glibc copies them.
    unsafe {
        bindtextdomain(domain.as_ptr(), dir.as_ptr());
        bind_textdomain_codeset(domain.as_ptr(), c"UTF-8".as_ptr());
    }
}

/// `msgid` in the person's language, or as it is when there is no translation.
pub fn gettext(msgid: &str) -> String {
    gtk::glib::dgettext(Some(DOMAIN), msgid).into()
}

/// The form of `one`/`many` that `n` takes in the person's language.
pub fn ngettext(one: &str, many: &str, n: u64) -> String {
    // gettext's plural forms take an unsigned long; more than that many services is not a case.
    gtk::glib::dngettext(Some(DOMAIN), one, many, n as std::ffi::c_ulong).into()
}

/// One of the catalog's words (a kind's description, an option's title or description, the
/// way a friend connects): the extractor reads them from `crates/core/src/catalog/kinds/`.
pub fn catalog(text: &str) -> String {
    if text.is_empty() {
        // gettext's empty msgid is the catalog's header.
        return String::new();
    }
    gettext(text)
}

/// `template` with each `{name}` replaced by the value of that name; `{{` and `}}` stand for
/// `{` and `}`. A placeholder with no value stays as it is, so that a translation naming one
/// the code does not give shows it rather than losing words.
pub fn fill(template: &str, values: &[(&str, &dyn Display)]) -> String {
    let mut filled = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(at) = rest.find(['{', '}']) {
        filled.push_str(&rest[..at]);
        let tail = &rest[at..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            filled.push_str(&tail[..1]);
            rest = &tail[2..];
            continue;
        }
        let placeholder = tail.strip_prefix('{').and_then(|after| after.find('}').map(|end| &after[..end]));
        match placeholder.and_then(|name| values.iter().find(|(n, _)| *n == name).map(|(_, v)| (name, v))) {
            Some((name, value)) => {
                use std::fmt::Write;
                let _ = write!(filled, "{value}");
                rest = &tail[name.len() + 2..];
            }
            None => {
                filled.push_str(&tail[..1]);
                rest = &tail[1..];
            }
        }
    }
    filled.push_str(rest);
    filled
}

/// A sentence in the person's language: `tr!("Remove {name}?", name = service)`, or
/// `tr!("Remove {name}?", name)` for a variable of the placeholder's name. The message must
/// be a literal: the extractor reads it from the source.
#[macro_export]
macro_rules! tr {
    (@value $name:ident) => { $name };
    (@value $name:ident = $value:expr) => { $value };
    // Filled too, so that `{{` and `}}` mean one brace in every message.
    ($msgid:literal $(,)?) => { $crate::i18n::fill(&$crate::i18n::gettext($msgid), &[]) };
    ($msgid:literal, $($name:ident $(= $value:expr)?),+ $(,)?) => {
        $crate::i18n::fill(
            &$crate::i18n::gettext($msgid),
            &[$((stringify!($name), &$crate::tr!(@value $name $(= $value)?) as &dyn ::std::fmt::Display)),+],
        )
    };
}

/// A sentence whose words depend on a number, given as `{n}`:
/// `trn!("{n} service", "{n} services", count)`; other placeholders as in [`tr!`].
#[macro_export]
macro_rules! trn {
    ($one:literal, $many:literal, $n:expr $(, $name:ident $(= $value:expr)?)* $(,)?) => {{
        let n: u64 = ($n) as u64;
        $crate::i18n::fill(
            &$crate::i18n::ngettext($one, $many, n),
            &[("n", &n as &dyn ::std::fmt::Display) $(, (stringify!($name), &$crate::tr!(@value $name $(= $value)?) as &dyn ::std::fmt::Display))*],
        )
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_by_name_wherever_a_translation_puts_them() {
        let service = "notes";
        assert_eq!(tr!("Remove {service}?", service), "Remove notes?");
        assert_eq!(fill("{b} avant {a}", &[("a", &1), ("b", &"deux")]), "deux avant 1");
        assert_eq!(fill("{{literal}} and {missing}", &[]), "{literal} and {missing}");
        assert_eq!(tr!("a brace: {{"), "a brace: {");
        assert_eq!(fill("{unclosed", &[("unclosed", &0)]), "{unclosed");
        assert_eq!(fill("ends with {", &[]), "ends with {");
    }

    #[test]
    fn a_number_picks_the_form_and_fills_n() {
        assert_eq!(trn!("{n} service", "{n} services", 1), "1 service");
        assert_eq!(trn!("{n} service", "{n} services", 3usize), "3 services");
        let whose = "web";
        assert_eq!(trn!("{n} friend of {whose}", "{n} friends of {whose}", 2, whose), "2 friends of web");
    }

    #[test]
    fn the_catalogs_empty_words_are_not_its_header() {
        assert_eq!(catalog(""), "");
        assert_eq!(catalog("Voice chat."), "Voice chat.");
    }
}
