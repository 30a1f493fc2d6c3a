//! The CLI's words and exit statuses, pinned: every `tests/cmd/*.console` file is a session
//! (in the style of trycmd's files, as rage keeps them in `tests/cmd/`) run in a fresh
//! directory with a store of its own and no tor. A session is a list of commands:
//!
//! ```text
//! # a comment
//! $ tails-server add custom --name blog --local-port 8080
//! < a line of standard input (optional, repeatable)
//! ? 0
//! what the command prints on stdout
//! --- stderr
//! what it prints on stderr
//! ```
//!
//! Before comparing, what changes from run to run is replaced: the session's directory by
//! `[ROOT]`, onion addresses by `[ADDRESS]`, keys (52 base32 characters) by `[KEY]`, times by
//! `[TIME]`. `TAILS_SERVER_BLESS=1 cargo test --test snapshots` writes what the commands print
//! now into the files: review the diff before committing it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

struct Step {
    args: Vec<String>,
    stdin: String,
    code: i32,
    stdout: String,
    stderr: String,
}

fn parse(text: &str, file: &Path) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut in_stderr = false;
    // Blank lines are held until the next line of the same output: the one before the next
    // command (or the end) separates the sessions' steps and belongs to neither.
    let mut blanks = 0;
    for line in text.lines() {
        if let Some(command) = line.strip_prefix("$ ") {
            finish(steps.last_mut(), in_stderr, blanks);
            blanks = 0;
            let args = shell_words(command);
            assert_eq!(args.first().map(String::as_str), Some("tails-server"), "{}: {line}", file.display());
            steps.push(Step {
                args: args[1..].to_vec(),
                stdin: String::new(),
                code: -1,
                stdout: String::new(),
                stderr: String::new(),
            });
            in_stderr = false;
            continue;
        }
        let Some(step) = steps.last_mut() else {
            assert!(line.is_empty() || line.starts_with('#'), "{}: text before the first $: {line}", file.display());
            continue;
        };
        if step.code == -1 {
            if let Some(input) = line.strip_prefix("< ") {
                step.stdin.push_str(input);
                step.stdin.push('\n');
            } else if let Some(code) = line.strip_prefix("? ") {
                step.code = code.parse().unwrap_or_else(|_| panic!("{}: bad status line {line}", file.display()));
            } else {
                panic!("{}: expected `< input` or `? STATUS` after the command, got {line:?}", file.display());
            }
            continue;
        }
        if line.is_empty() {
            blanks += 1;
            continue;
        }
        let section = if in_stderr { &mut step.stderr } else { &mut step.stdout };
        section.push_str(&"\n".repeat(blanks));
        blanks = 0;
        if line == "--- stderr" {
            in_stderr = true;
        } else {
            let section = if in_stderr { &mut step.stderr } else { &mut step.stdout };
            section.push_str(line);
            section.push('\n');
        }
    }
    finish(steps.last_mut(), in_stderr, blanks);
    steps
}

/// Ends a step: of the blank lines held, all but the separator belong to its last output.
fn finish(step: Option<&mut Step>, in_stderr: bool, blanks: usize) {
    if let Some(step) = step {
        let section = if in_stderr { &mut step.stderr } else { &mut step.stdout };
        section.push_str(&"\n".repeat(blanks.saturating_sub(1)));
    }
}

/// Splits a command line as a shell would for the simple quoting these files use ('…', "…").
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    let mut started = false;
    for c in line.chars() {
        match (quote, c) {
            (None, '\'' | '"') => {
                quote = Some(c);
                started = true;
            }
            (Some(q), c) if c == q => quote = None,
            (None, ' ') => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            (_, c) => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        words.push(word);
    }
    words
}

/// Replaces what differs from run to run.
fn normalize(text: &str, root: &Path) -> String {
    let text = text.replace(&root.display().to_string(), "[ROOT]");
    let address = regex::Regex::new(r"\b[a-z2-7]{56}(\.onion)?\b").unwrap();
    let key = regex::Regex::new(r"\b[A-Z2-7]{52}\b").unwrap();
    let time = regex::Regex::new(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ").unwrap();
    let text = address.replace_all(&text, "[ADDRESS]$1");
    let text = key.replace_all(&text, "[KEY]");
    time.replace_all(&text, "[TIME]").into_owned()
}

fn run_session(file: &Path, bless: bool) -> Result<(), String> {
    let text = std::fs::read_to_string(file).unwrap();
    let steps = parse(&text, file);
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("run")).unwrap();
    let mut actual = String::new();
    let mut failures = Vec::new();
    // Comments and blank lines before the first command are kept as they are.
    for line in text.lines().take_while(|l| !l.starts_with("$ ")) {
        actual.push_str(line);
        actual.push('\n');
    }
    for step in &steps {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tails-server"))
            .args(&step.args)
            .current_dir(root.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", root.path())
            .env("TAILS_SERVER_STATE_DIR", root.path().join("state"))
            .env("TAILS_SERVER_RUNTIME_DIR", root.path().join("run/tails-server"))
            .env("TAILS_SERVER_CONTROL_SOCKET", root.path().join("no-tor"))
            .env("COLUMNS", "100")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), step.stdin.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let (code, stdout, stderr) = (
            out.status.code().unwrap_or(-1),
            normalize(&String::from_utf8_lossy(&out.stdout), root.path()),
            normalize(&String::from_utf8_lossy(&out.stderr), root.path()),
        );
        let shown = step.args.iter().map(|a| if a.contains(' ') { format!("'{a}'") } else { a.clone() });
        actual.push_str(&format!("$ tails-server {}\n", shown.collect::<Vec<_>>().join(" ")));
        for line in step.stdin.lines() {
            actual.push_str(&format!("< {line}\n"));
        }
        actual.push_str(&format!("? {code}\n{stdout}"));
        if !stderr.is_empty() {
            actual.push_str(&format!("--- stderr\n{stderr}"));
        }
        actual.push('\n');
        let expected_stderr = step.stderr.trim_end();
        if code != step.code || stdout != step.stdout || stderr.trim_end() != expected_stderr {
            failures.push(format!(
                "$ tails-server {}\n  status: expected {}, got {code}\n  stdout: expected\n{}  got\n{stdout}  stderr: \
                 expected\n{expected_stderr}\n  got\n{stderr}",
                step.args.join(" "),
                step.code,
                step.stdout
            ));
        }
    }
    if bless {
        std::fs::write(file, actual).unwrap();
        return Ok(());
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("{}:\n{}", file.display(), failures.join("\n\n")))
    }
}

#[test]
fn the_clis_words_and_exit_statuses_are_as_pinned() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/cmd");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "console"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no sessions in {}", dir.display());
    let bless = std::env::var_os("TAILS_SERVER_BLESS").is_some();
    let failures: Vec<String> = files.iter().filter_map(|f| run_session(f, bless).err()).collect();
    assert!(failures.is_empty(), "{}\n\n(TAILS_SERVER_BLESS=1 rewrites the files)", failures.join("\n\n"));
}
