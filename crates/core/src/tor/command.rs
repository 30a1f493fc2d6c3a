//! Building control-port commands safely and reading replies. Every value placed in a
//! command is checked first: a CR, LF, space or NUL in it could end the command early and
//! smuggle another one to tor, so such a value never reaches the socket.

use std::fmt;

use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// One control-port command line, built from checked parts. The buffer is zeroized on drop
/// because ADD_ONION lines carry secret keys.
pub struct CommandLine {
    line: Zeroizing<String>,
    /// What may be logged: the keyword and any arguments that are not secret.
    shown: String,
    /// Whether the line carries a secret: such a line goes only to a verified tor.
    secret: bool,
}

impl CommandLine {
    pub fn new(keyword: &'static str) -> Self {
        debug_assert!(keyword.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'));
        Self { line: Zeroizing::new(keyword.to_owned()), shown: keyword.to_owned(), secret: false }
    }

    /// Adds an argument after checking it is a single printable token.
    pub fn arg(mut self, what: &'static str, value: &str) -> Result<Self> {
        check_token(what, value)?;
        self.line.push(' ');
        self.line.push_str(value);
        self.shown.push(' ');
        self.shown.push_str(value);
        Ok(self)
    }

    /// Like [`CommandLine::arg`], but never shown in logs or errors.
    pub fn secret_arg(mut self, what: &'static str, value: &str) -> Result<Self> {
        check_token(what, value)?;
        self.line.push(' ');
        self.line.push_str(value);
        self.shown.push_str(" [secret]");
        self.secret = true;
        Ok(self)
    }

    /// An argument that tor reads as a quoted string (passwords). Only `\` and `"` need
    /// escaping; control characters are refused rather than escaped.
    pub fn quoted_secret_arg(mut self, what: &'static str, value: &[u8]) -> Result<Self> {
        let text = std::str::from_utf8(value).map_err(|_| invalid(what, "it is not UTF-8 text"))?;
        if text.chars().any(char::is_control) {
            return Err(invalid(what, "it contains a line break, tab or other control character"));
        }
        self.line.push_str(" \"");
        for c in text.chars() {
            if c == '\\' || c == '"' {
                self.line.push('\\');
            }
            self.line.push(c);
        }
        self.line.push('"');
        self.shown.push_str(" [secret]");
        self.secret = true;
        Ok(self)
    }

    /// Whether the line carries a secret (a key, a password, a cookie).
    pub fn is_secret(&self) -> bool {
        self.secret
    }

    pub fn keyword(&self) -> &str {
        self.shown.split(' ').next().unwrap_or_default()
    }

    pub(crate) fn wire_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut bytes = Zeroizing::new(Vec::with_capacity(self.line.len() + 2));
        bytes.extend_from_slice(self.line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        bytes
    }
}

impl fmt::Debug for CommandLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CommandLine({:?})", self.shown)
    }
}

impl fmt::Display for CommandLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

fn invalid(what: &'static str, reason: &str) -> Error {
    Error::InvalidControlArgument { what, reason: reason.to_owned() }
}

fn check_token(what: &'static str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(invalid(what, "it is empty"));
    }
    if let Some(c) = value.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(invalid(
            what,
            &format!("it contains {c:?}; only printable ASCII without spaces can be sent to tor"),
        ));
    }
    Ok(())
}

/// A reply from tor: its status code and its lines (data blocks as one entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn is_ok(&self) -> bool {
        (250..300).contains(&self.code)
    }

    /// The text of the last line, which carries tor's message for errors.
    pub fn message(&self) -> &str {
        self.lines.last().map(String::as_str).unwrap_or_default()
    }

    /// Values of `KEY=value` lines, in order.
    pub fn values<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.lines.iter().filter_map(move |line| line.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
    }
}

/// Parses `KEY=value` pairs separated by spaces, with quoted values (PROTOCOLINFO, events).
pub fn parse_pairs(text: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        let space = rest.find(' ');
        if space.is_some_and(|s| s < eq) {
            // A bare word: skip it.
            rest = rest[space.unwrap()..].trim_start();
            continue;
        }
        let key = rest[..eq].to_owned();
        let after = &rest[eq + 1..];
        if after.starts_with('"') {
            let (end, value) = torut::utils::unquote_string(after);
            let Ok(value) = value else { break };
            pairs.push((key, value.into_owned()));
            rest = match end {
                Some(end) => after[end + 1..].trim_start(),
                None => "",
            };
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            pairs.push((key, after[..end].to_owned()));
            rest = after[end..].trim_start();
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_with_line_breaks_spaces_or_nul_never_reach_tor() {
        for bad in ["a\r\nSIGNAL HALT", "a\nb", "a\rb", "two words", "nul\0", "", "tab\t", "é"] {
            let err = CommandLine::new("DEL_ONION").arg("onion address", bad).unwrap_err().to_string();
            assert!(err.contains("onion address"), "{bad:?}: {err}");
            assert!(CommandLine::new("ADD_ONION").secret_arg("key", bad).is_err());
        }
        assert!(CommandLine::new("AUTHENTICATE").quoted_secret_arg("password", b"a\r\nQUIT").is_err());
    }

    #[test]
    fn secrets_are_sent_but_not_shown() {
        let cmd = CommandLine::new("ADD_ONION")
            .secret_arg("key", "ED25519-V3:c2VjcmV0")
            .unwrap()
            .arg("flags", "Flags=Detach")
            .unwrap();
        assert_eq!(&cmd.wire_bytes()[..], b"ADD_ONION ED25519-V3:c2VjcmV0 Flags=Detach\r\n");
        assert_eq!(cmd.to_string(), "ADD_ONION [secret] Flags=Detach");
        assert!(!format!("{cmd:?}").contains("c2VjcmV0"));
        let auth = CommandLine::new("AUTHENTICATE").quoted_secret_arg("password", b"p\"w d\\").unwrap();
        assert_eq!(&auth.wire_bytes()[..], b"AUTHENTICATE \"p\\\"w d\\\\\"\r\n");
    }

    #[test]
    fn pairs() {
        let p = parse_pairs(r#"METHODS=COOKIE,SAFECOOKIE COOKIEFILE="/var/lib/tor/control auth cookie" X=1"#);
        assert_eq!(p[0], ("METHODS".into(), "COOKIE,SAFECOOKIE".into()));
        assert_eq!(p[1], ("COOKIEFILE".into(), "/var/lib/tor/control auth cookie".into()));
        assert_eq!(p[2], ("X".into(), "1".into()));
        let p = parse_pairs("NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY=\"Done\"");
        assert_eq!(p[0], ("PROGRESS".into(), "100".into()));
        assert_eq!(p[2], ("SUMMARY".into(), "Done".into()));
    }
}
