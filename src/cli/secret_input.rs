//! Values of secret options (passwords). Never taken from the command line, which every
//! program on the computer can read in /proc and which stays in the shell's history: they
//! are asked for on the terminal (twice, not shown) or read as one line of standard input.

use std::io::{BufRead, IsTerminal, Read};

use anyhow::{anyhow, bail, Context, Result};
use zeroize::Zeroizing;

use tails_server_core::names::ServiceName;
use tails_server_core::Manager;

/// Longest line taken from standard input: any option's longest text (1024 characters of
/// up to 4 bytes) and a line end. The buffer never grows, so no copy is left behind.
const MAX_LINE: usize = 4 * 1024 + 2;

/// The largest password or passphrase file read (its first line is the secret).
const MAX_SECRET_FILE: u64 = 4096;

/// The first line of a file holding a password or passphrase (`what`, for messages):
/// the one reader of secret files, with a size bound checked before reading.
pub fn first_line_of(path: &std::path::Path, what: &str) -> Result<Zeroizing<String>> {
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read the {what} file {}", path.display()))?;
    if meta.len() > MAX_SECRET_FILE {
        bail!("{} is not a {what} file: it is larger than {MAX_SECRET_FILE} bytes", path.display());
    }
    let text = Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("cannot read the {what} file {}", path.display()))?,
    );
    let line = text.lines().next().unwrap_or_default();
    if line.is_empty() {
        bail!("the {what} file {} is empty", path.display());
    }
    Ok(Zeroizing::new(line.to_owned()))
}

/// Mismatched terminal entries are asked again this many times in all.
const ATTEMPTS: usize = 3;

const WHY: &str = "the command line can be read by every program on this computer and stays in your shell's \
                   history (you may want to remove it from there)";

fn ways(service: &str, option: &str) -> String {
    format!(
        "`tails-server set-option {service} {option}` asks for it on the terminal (twice, not shown); \
         `tails-server set-option {service} {option} -` reads it as one line of standard input"
    )
}

/// The new value of secret option `option` for `set-option`: `-` reads one line of
/// standard input; no value asks on the terminal; any other value is refused, unquoted.
pub fn read(service: &ServiceName, option: &str, given: Option<&str>) -> Result<Zeroizing<String>> {
    match given {
        Some("-") => read_line(&mut std::io::stdin().lock(), option),
        Some(_) => Err(anyhow!(
            "refusing a value for {option} on the command line: it is secret, and {WHY}. Nothing was changed. \
             Instead, {}",
            ways(service.as_str(), option)
        )),
        None if std::io::stdin().is_terminal() => prompt_twice(service, option),
        None => bail!(
            "no value given for {option}, and standard input is not a terminal to ask on; give `-` to read it \
             from standard input: `... | tails-server set-option {service} {option} -`"
        ),
    }
}

/// `add --set OPTION=VALUE` with a secret option: refused, with the way that works.
pub fn refuse_secret_settings(
    manager: &Manager,
    kind: &str,
    name: Option<&ServiceName>,
    settings: &[(String, String)],
) -> Result<()> {
    // An unknown kind is for `add` to report.
    let Ok(def) = manager.catalog().get(kind) else { return Ok(()) };
    let specs = def.all_options();
    match settings.iter().find(|(option, _)| specs.get(option).is_some_and(|spec| spec.secret)) {
        Some((option, _)) => {
            let service = name.map(ToString::to_string).unwrap_or_else(|| def.name.clone());
            bail!(
                "refusing --set {option}=...: {option} is secret, and {WHY}. Nothing was added. Add the service \
                 without it, then set it: {}",
                ways(&service, option)
            )
        }
        None => Ok(()),
    }
}

/// One line, without its line end. Nothing at all (not even an empty line) is refused.
fn read_line(input: &mut impl BufRead, option: &str) -> Result<Zeroizing<String>> {
    let mut line = Zeroizing::new(Vec::with_capacity(MAX_LINE + 1));
    input
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut line)
        .with_context(|| format!("cannot read the value of {option} from standard input"))?;
    if line.is_empty() {
        bail!(
            "standard input is empty: no value for {option}, nothing was changed (an empty line sets an \
             empty value)"
        );
    }
    if line.len() > MAX_LINE || (line.len() == MAX_LINE && line.last() != Some(&b'\n')) {
        bail!("the line on standard input is too long for {option}; nothing was changed");
    }
    for end in [b'\n', b'\r'] {
        if line.last() == Some(&end) {
            line.pop();
        }
    }
    if std::str::from_utf8(&line).is_err() {
        bail!("the value of {option} on standard input is not UTF-8 text; nothing was changed");
    }
    // Moves the buffer, no copy; the Zeroizing<String> wipes it in the end.
    Ok(Zeroizing::new(String::from_utf8(std::mem::take(&mut *line)).expect("checked above")))
}

fn prompt_twice(service: &ServiceName, option: &str) -> Result<Zeroizing<String>> {
    let ask = |prompt: String| -> Result<Zeroizing<String>> {
        rpassword::prompt_password(prompt).map(Zeroizing::new).context("cannot read from the terminal")
    };
    for attempt in 1..=ATTEMPTS {
        let first = ask(format!("New {option} for {service} (not shown): "))?;
        let second = ask(format!("The same {option} again: "))?;
        if *first == *second {
            return Ok(first);
        }
        if attempt < ATTEMPTS {
            eprintln!("tails-server: the two entries differ; once more.");
        }
    }
    bail!("the two entries differed {ATTEMPTS} times; nothing was changed")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(input: &[u8]) -> Result<Zeroizing<String>> {
        read_line(&mut std::io::Cursor::new(input), "server-password")
    }

    #[test]
    fn one_line_without_its_end() {
        assert_eq!(line(b"correct horse\n").unwrap().as_str(), "correct horse");
        assert_eq!(line(b"crlf\r\nsecond line\n").unwrap().as_str(), "crlf");
        assert_eq!(line(b"no end").unwrap().as_str(), "no end");
        assert_eq!(line(b"\n").unwrap().as_str(), "");
        let err = line(b"").unwrap_err().to_string();
        assert!(err.contains("empty") && err.contains("nothing was changed"), "{err}");
        let longest = "é".repeat(1024) + "\r\n";
        assert_eq!(line(longest.as_bytes()).unwrap().chars().count(), 1024);
        let err = line("x".repeat(MAX_LINE + 1).as_bytes()).unwrap_err().to_string();
        assert!(err.contains("too long") && !err.contains("xxx"), "{err}");
        let err = line(b"\xffsecret\n").unwrap_err().to_string();
        assert!(err.contains("UTF-8") && !err.contains("secret"), "{err}");
    }
}
