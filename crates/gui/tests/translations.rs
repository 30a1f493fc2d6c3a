//! The translators' template, `po/tails-server-gui.pot`, holds every message the window can
//! show: each `tr!`/`trn!` of the sources and the catalog's words (a kind's name and
//! description, an option's title and description, the way a friend connects). This test
//! writes the template from the sources and fails when the committed one differs; run it with
//! `TAILS_SERVER_BLESS=1` to write it.
//!
//! xgettext cannot read Rust before gettext 0.24 (its C reader keeps the indentation of a
//! `\`-continued literal in the message), so the literals are read with syn, as rustc does.
//! It also checks what format! checked at compile time before translation: each `{name}` of a
//! message is given a value, and each value given is used; and that no string literal reaches
//! a call whose words a person sees without going through gettext.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::str::FromStr;

use proc_macro2::{Delimiter, TokenStream, TokenTree};

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One message: its singular and (for `trn!`) plural, where it is written, and what a
/// translator should know.
#[derive(Debug)]
struct Message {
    msgid: String,
    plural: Option<String>,
    references: Vec<String>,
    comment: Option<String>,
}

#[derive(Default)]
struct Template {
    messages: Vec<Message>,
    index: HashMap<(String, Option<String>), usize>,
    problems: Vec<String>,
}

impl Template {
    fn add(&mut self, msgid: String, plural: Option<String>, reference: String, comment: Option<&str>) {
        if msgid.is_empty() {
            return; // the header's msgid
        }
        let key = (msgid.clone(), plural.clone());
        match self.index.get(&key) {
            Some(&at) => {
                let references = &mut self.messages[at].references;
                if !references.contains(&reference) {
                    references.push(reference);
                }
            }
            None => {
                self.index.insert(key, self.messages.len());
                self.messages.push(Message {
                    msgid,
                    plural,
                    references: vec![reference],
                    comment: comment.map(str::to_owned),
                });
            }
        }
    }
}

/// The `{name}` placeholders of a message (`{{` is a brace, not a placeholder).
fn placeholders(message: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = message;
    while let Some(at) = rest.find('{') {
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("{{") {
            rest = after;
            continue;
        }
        match tail[1..].find('}') {
            Some(end) => {
                names.insert(tail[1..1 + end].to_owned());
                rest = &tail[end + 2..];
            }
            None => break,
        }
    }
    names
}

/// The arguments of a macro call, split at the commas outside any group.
fn arguments(group: TokenStream) -> Vec<Vec<TokenTree>> {
    let mut arguments = vec![Vec::new()];
    for token in group {
        match &token {
            TokenTree::Punct(p) if p.as_char() == ',' => arguments.push(Vec::new()),
            _ => arguments.last_mut().unwrap().push(token),
        }
    }
    arguments.retain(|a| !a.is_empty());
    arguments
}

/// The value of a string literal, escapes and `\` continuations resolved as rustc does.
fn string_literal(tokens: &[TokenTree]) -> Option<String> {
    match tokens {
        [TokenTree::Literal(literal)] => syn::parse_str::<syn::LitStr>(&literal.to_string()).ok().map(|l| l.value()),
        _ => None,
    }
}

/// The names an argument list gives values to (`name` or `name = value`).
fn named(arguments: &[Vec<TokenTree>]) -> Result<BTreeSet<String>, String> {
    arguments
        .iter()
        .map(|argument| match argument.first() {
            Some(TokenTree::Ident(name))
                if argument.len() == 1
                    || matches!(argument.get(1), Some(TokenTree::Punct(p)) if p.as_char() == '=') =>
            {
                Ok(name.to_string())
            }
            _ => Err(format!(
                "an argument that is not `name` or `name = value`: {}",
                TokenStream::from_iter(argument.clone())
            )),
        })
        .collect()
}

/// Reads the `tr!` and `trn!` calls of `tokens` (recursively: inside other macros' arguments
/// too, which syn's visitors would not open), leaving out `#[cfg(test)]` modules.
fn read_calls(tokens: TokenStream, file: &str, template: &mut Template) {
    let tokens: Vec<TokenTree> = tokens.into_iter().collect();
    let mut i = 0;
    while i < tokens.len() {
        // #[cfg(test)] mod tests { … }: the tests' own sentences are not the window's. Only a
        // module with its body is skipped: any other item after the attribute is read.
        if let (TokenTree::Punct(hash), Some(TokenTree::Group(attribute))) = (&tokens[i], tokens.get(i + 1)) {
            let module = matches!(
                (tokens.get(i + 2), tokens.get(i + 3), tokens.get(i + 4)),
                (Some(TokenTree::Ident(m)), Some(TokenTree::Ident(_)), Some(TokenTree::Group(g)))
                    if m == "mod" && g.delimiter() == Delimiter::Brace
            );
            if hash.as_char() == '#' && attribute.stream().to_string().replace(' ', "") == "cfg(test)" && module {
                i += 5;
                continue;
            }
        }
        if let TokenTree::Group(group) = &tokens[i] {
            read_calls(group.stream(), file, template);
        }
        let call = match (&tokens[i], tokens.get(i + 1), tokens.get(i + 2)) {
            (TokenTree::Ident(name), Some(TokenTree::Punct(bang)), Some(TokenTree::Group(group)))
                if (name == "tr" || name == "trn") && bang.as_char() == '!' =>
            {
                Some((name.to_string(), group.clone(), name.span().start().line))
            }
            _ => None,
        };
        let Some((macro_name, group, line)) = call else {
            i += 1;
            continue;
        };
        i += 3;
        if group.delimiter() == Delimiter::Brace {
            // `tr! { … }` (a macro_rules! body is `tr { … }`, without the `!`)
            template.problems.push(format!("{file}:{line}: write {macro_name}!(…), which the extractor reads"));
            continue;
        }
        let arguments = arguments(group.stream());
        // The macros' own definitions (`$crate::tr!(@value …)`) are not calls.
        if matches!(arguments.first().and_then(|a| a.first()), Some(TokenTree::Punct(p)) if p.as_char() == '@' || p.as_char() == '$')
        {
            continue;
        }
        // Files only, as `xgettext --add-location=file`: a line moved is not a new template.
        let reference = file.to_owned();
        let at = format!("{file}:{line}");
        let literal = |n: usize| arguments.get(n).and_then(|a| string_literal(a));
        let (msgid, plural, given) = match macro_name.as_str() {
            "tr" => (literal(0), None, arguments.get(1..).unwrap_or_default()),
            _ => (literal(0), literal(1).map(Some), arguments.get(3..).unwrap_or_default()),
        };
        let Some(msgid) = msgid else {
            template.problems.push(format!("{at}: {macro_name}! needs a string literal (the extractor reads it)"));
            continue;
        };
        if macro_name == "trn" && plural.as_ref().is_none_or(|p| p.is_none()) {
            template.problems.push(format!("{at}: trn! needs two string literals and a number"));
            continue;
        }
        let plural = plural.flatten();
        let mut given = match named(given) {
            Ok(given) => given,
            Err(problem) => {
                template.problems.push(format!("{at}: {problem}"));
                continue;
            }
        };
        if plural.is_some() {
            given.insert("n".to_owned());
        }
        let mut wanted = placeholders(&msgid);
        wanted.extend(plural.iter().flat_map(|p| placeholders(p)));
        for missing in wanted.difference(&given) {
            template.problems.push(format!("{at}: {{{missing}}} is given no value"));
        }
        for unused in given.difference(&wanted) {
            if unused != "n" {
                template.problems.push(format!("{at}: {unused} is given but the message has no {{{unused}}}"));
            }
        }
        template.add(msgid, plural, reference, None);
    }
}

/// Calls whose arguments a person sees or hears: a string literal given to one, or a
/// `format!` of one, has not gone through gettext.
const SHOWN_BY: [&str; 26] = [
    "label",
    "set_label",
    "title",
    "set_title",
    "subtitle",
    "set_subtitle",
    "description",
    "set_description",
    "heading",
    "set_heading",
    "body",
    "set_body",
    "placeholder_text",
    "set_placeholder_text",
    "tooltip_text",
    "set_tooltip_text",
    "add_response",
    "add_responses",
    "add_titled",
    "notify",
    "describe",
    "explain",
    "ask",
    "Toast",
    "password_entry",
    "confirm",
];

/// The English words of an argument that did not go through gettext: a string literal with a
/// letter, alone, borrowed, or formatted.
fn untranslated_words(argument: &[TokenTree]) -> Option<String> {
    let argument = match argument {
        [TokenTree::Punct(and), rest @ ..] if and.as_char() == '&' => rest,
        other => other,
    };
    if let [TokenTree::Ident(some), TokenTree::Group(inner)] = argument {
        if some == "Some" {
            let inner: Vec<TokenTree> = inner.stream().into_iter().collect();
            return untranslated_words(&inner);
        }
    }
    let literal = match argument {
        [TokenTree::Literal(_)] => string_literal(argument),
        [TokenTree::Ident(format), TokenTree::Punct(bang), TokenTree::Group(group)]
            if format == "format" && bang.as_char() == '!' =>
        {
            arguments(group.stream()).first().and_then(|first| string_literal(first))
        }
        _ => None,
    }?;
    // Placeholders' names are not words (`"{mark} {step}"` only places two values).
    let mut words = literal.clone();
    for name in placeholders(&literal) {
        words = words.replace(&format!("{{{name}}}"), "");
    }
    words.chars().any(char::is_alphabetic).then_some(literal)
}

/// Literals given to [`SHOWN_BY`] calls in `tokens`, with where they are.
fn read_shown_literals(tokens: TokenStream, file: &str, found: &mut Vec<String>) {
    let tokens: Vec<TokenTree> = tokens.into_iter().collect();
    for (i, token) in tokens.iter().enumerate() {
        if let TokenTree::Group(group) = token {
            read_shown_literals(group.stream(), file, found);
        }
        let (TokenTree::Ident(name), Some(TokenTree::Group(group))) = (token, tokens.get(i + 1)) else { continue };
        if group.delimiter() != Delimiter::Parenthesis || !SHOWN_BY.contains(&name.to_string().as_str()) {
            continue;
        }
        let given = arguments(group.stream());
        // A response's (or a page's) id comes before its words.
        let words = match name.to_string().as_str() {
            "add_response" | "password_entry" => given.get(1..).unwrap_or_default(),
            // add_titled(child, name, title)
            "add_titled" => given.get(2..).unwrap_or_default(),
            _ => &given[..],
        };
        for argument in words {
            // add_responses(&[("id", "words"), …]): each pair's words.
            let pairs: Vec<Vec<TokenTree>> = match argument.as_slice() {
                [TokenTree::Punct(and), TokenTree::Group(list)] if and.as_char() == '&' && name == "add_responses" => {
                    collect_groups(list.stream())
                        .into_iter()
                        .filter_map(|pair| arguments(pair).get(1).cloned())
                        .collect()
                }
                _ => vec![argument.clone()],
            };
            for words in pairs {
                if let Some(literal) = untranslated_words(&words) {
                    found.push(format!("{file}:{}: {name}({literal:?})", name.span().start().line));
                }
            }
        }
    }
}

/// The parenthesized groups directly in `tokens` (a slice's tuples).
fn collect_groups(tokens: TokenStream) -> Vec<TokenStream> {
    tokens
        .into_iter()
        .filter_map(|t| match t {
            TokenTree::Group(g) if g.delimiter() == Delimiter::Parenthesis => Some(g.stream()),
            _ => None,
        })
        .collect()
}

/// The catalog's words, as the window passes them to `i18n::catalog`.
fn read_catalog(template: &mut Template) {
    let kinds = crate_dir().join("../core/src/catalog/kinds");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&kinds).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for path in files.into_iter().filter(|p| p.extension().is_some_and(|e| e == "toml")) {
        let reference = format!("crates/core/src/catalog/kinds/{}", path.file_name().unwrap().to_string_lossy());
        let kind: toml::Table = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let text = |table: &toml::Table, key: &str| table.get(key).and_then(|v| v.as_str()).map(str::to_owned);
        if let Some(name) = text(&kind, "name-in-gui") {
            template.add(name, None, reference.clone(), Some("The name of a kind of service"));
        }
        if let Some(description) = text(&kind, "description") {
            template.add(description, None, reference.clone(), None);
        }
        if let Some(connect) = text(&kind, "connect") {
            template.add(
                connect,
                None,
                reference.clone(),
                Some("How a friend connects: keep {client}, {address}, {port} and {service}, and the commands, as they are"),
            );
        }
        for (option, spec) in kind.get("options").and_then(|o| o.as_table()).into_iter().flatten() {
            template.add(option.replace('-', " "), None, reference.clone(), Some("The title of a service's option"));
            if let Some(description) = spec.as_table().and_then(|s| text(s, "description")) {
                template.add(description, None, reference.clone(), None);
            }
        }
    }
}

/// A PO string: one line, escaped as msgfmt reads it.
fn quoted(text: &str) -> String {
    let mut quoted = String::from("\"");
    for c in text.chars() {
        match c {
            '\\' => quoted.push_str("\\\\"),
            '"' => quoted.push_str("\\\""),
            '\n' => quoted.push_str("\\n"),
            '\t' => quoted.push_str("\\t"),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

fn template_text(template: &Template) -> String {
    let mut text = String::from(
        "# The messages of tails-server-gui, the window of tails-server, for translators.\n\
         # Written by crates/gui/tests/translations.rs (TAILS_SERVER_BLESS=1): do not edit.\n\
         # Keep each {placeholder} as it is; move it wherever your language puts it.\n\
         # This file is distributed under the same license as tails-server (GPL-3.0-or-later).\n\
         #\n\
         #, fuzzy\n\
         msgid \"\"\n\
         msgstr \"\"\n\
         \"Project-Id-Version: tails-server-gui\\n\"\n\
         \"Language: \\n\"\n\
         \"MIME-Version: 1.0\\n\"\n\
         \"Content-Type: text/plain; charset=UTF-8\\n\"\n\
         \"Content-Transfer-Encoding: 8bit\\n\"\n\
         \"Plural-Forms: nplurals=INTEGER; plural=EXPRESSION;\\n\"\n",
    );
    for message in &template.messages {
        text.push('\n');
        if let Some(comment) = &message.comment {
            text.push_str(&format!("#. {comment}\n"));
        }
        text.push_str(&format!("#: {}\n", message.references.join(" ")));
        // msgfmt -c then checks that a translation keeps each {placeholder} (the syntax is
        // Python's str.format's: {name}, {{ and }}).
        let has_placeholders = |text: &str| !placeholders(text).is_empty();
        if has_placeholders(&message.msgid) || message.plural.as_deref().is_some_and(has_placeholders) {
            text.push_str("#, python-brace-format\n");
        }
        text.push_str(&format!("msgid {}\n", quoted(&message.msgid)));
        match &message.plural {
            Some(plural) => {
                text.push_str(&format!("msgid_plural {}\nmsgstr[0] \"\"\nmsgstr[1] \"\"\n", quoted(plural)))
            }
            None => text.push_str("msgstr \"\"\n"),
        }
    }
    text
}

fn extract() -> Template {
    let mut template = Template::default();
    for (file, tokens) in sources() {
        read_calls(tokens, &file, &mut template);
    }
    read_catalog(&mut template);
    template
}

/// The sources of the window, each with its name as the template writes it.
fn sources() -> Vec<(String, TokenStream)> {
    let dir = crate_dir().join("src");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .map(|path| {
            let source = std::fs::read_to_string(&path).unwrap();
            let tokens = TokenStream::from_str(&source).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (format!("crates/gui/src/{}", path.file_name().unwrap().to_string_lossy()), tokens)
        })
        .collect()
}

#[test]
fn no_sentence_reaches_the_screen_without_gettext() {
    let mut found = Vec::new();
    for (file, tokens) in sources() {
        read_shown_literals(tokens, &file, &mut found);
    }
    assert!(found.is_empty(), "words a person sees that are not tr!, trn! or the catalog's:\n{}", found.join("\n"));
}

#[test]
fn the_screen_check_finds_literals_and_formats() {
    let source = r#"
        fn f() {
            label.set_label("Plain");
            owner.notify(&format!("Saved {x}"));
            dialog.add_responses(&[("cancel", "Cancel"), ("ok", tr!("OK").as_str())]);
            describe(&row, &tr!("Fine"), Some("Left out"));
            builder.name("a-widget-name").title(tr!("Fine"));
            dialog.add_response("id", &tr!("Fine"));
            label.set_label("…");
            label.set_label(&format!("{mark} {step}"));
        }
    "#;
    let mut found = Vec::new();
    read_shown_literals(TokenStream::from_str(source).unwrap(), "x.rs", &mut found);
    assert_eq!(
        found,
        [
            "x.rs:3: set_label(\"Plain\")",
            "x.rs:4: notify(\"Saved {x}\")",
            "x.rs:5: add_responses(\"Cancel\")",
            "x.rs:6: describe(\"Left out\")",
        ]
    );
}

fn template_path() -> PathBuf {
    crate_dir().join("po/tails-server-gui.pot")
}

#[test]
fn the_translators_template_holds_every_message_of_the_window_and_the_catalog() {
    let template = extract();
    assert!(
        template.problems.is_empty(),
        "messages the window cannot translate or fill:\n{}",
        template.problems.join("\n")
    );
    let text = template_text(&template);
    let path = template_path();
    if std::env::var_os("TAILS_SERVER_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == text,
        "{} is not what the sources say (a message added, changed or removed): run this test with \
         TAILS_SERVER_BLESS=1 and commit the template",
        path.display()
    );
    // msgfmt reads it as translators' tools will (a template is a catalog with empty translations).
    let checked = std::process::Command::new("msgfmt").args(["--check-format", "-o", "/dev/null"]).arg(&path).output();
    match checked {
        Ok(out) => {
            assert!(out.status.success(), "msgfmt refuses the template: {}", String::from_utf8_lossy(&out.stderr))
        }
        Err(e) => panic!("msgfmt (Debian's gettext) is needed to check the template: {e}"),
    }
}

#[test]
fn the_extractor_reads_continued_literals_and_checks_placeholders() {
    let source = r#"
        fn f() {
            let a = tr!("One \
                         line");
            let b = format!("{}", tr!("Hello {who}", who = x));
            let c = trn!("{n} key of {whose}", "{n} keys of {whose}", count, whose);
            let d = tr!("Missing {value}");
            let e = tr!("Unused", extra);
        }
        #[cfg(test)]
        use something;
        fn g() { tr!("after a cfg(test) use"); }
        #[cfg(test)]
        mod tests { fn t() { tr!("only in a test"); } }
        fn h() { tr! { "braces" } }
    "#;
    let mut template = Template::default();
    read_calls(TokenStream::from_str(source).unwrap(), "x.rs", &mut template);
    let ids: Vec<&str> = template.messages.iter().map(|m| m.msgid.as_str()).collect();
    assert_eq!(
        ids,
        ["One line", "Hello {who}", "{n} key of {whose}", "Missing {value}", "Unused", "after a cfg(test) use"]
    );
    assert_eq!(template.messages[2].plural.as_deref(), Some("{n} keys of {whose}"));
    assert_eq!(template.messages[0].references, ["x.rs"]);
    assert_eq!(
        template.problems,
        [
            "x.rs:7: {value} is given no value",
            "x.rs:8: extra is given but the message has no {extra}",
            "x.rs:15: write tr!(…), which the extractor reads",
        ]
    );
    assert_eq!(quoted("a \"b\"\\\n"), r#""a \"b\"\\\n""#);
}
