//! Typed service options: the blueprint's common ones and each kind's own.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const PERSISTENCE: &str = "persistence";
pub const AUTOSTART: &str = "autostart";
pub const ALLOW_LAN: &str = "allow-lan-connections";

const MAX_STRING_LEN: usize = 1024;
/// Room for about 30 ed25519 keys or 5 RSA ones, under the D-Bus API's 4096-byte arguments.
const MAX_SSH_KEYS_LEN: usize = 4000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptionType {
    Bool,
    String,
    Integer,
    Port,
}

impl OptionType {
    fn expected(self) -> &'static str {
        match self {
            OptionType::Bool => "true or false",
            OptionType::String => "text of at most 1024 characters, without control characters",
            OptionType::Integer => "a whole number",
            OptionType::Port => "a port number from 1 to 65535",
        }
    }
}

impl fmt::Display for OptionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OptionType::Bool => "bool",
            OptionType::String => "string",
            OptionType::Integer => "integer",
            OptionType::Port => "port",
        })
    }
}

/// A stored option value. Untagged so the JSON/YAML output is the plain value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OptionValue {
    Bool(bool),
    Integer(i64),
    String(String),
}

impl fmt::Display for OptionValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionValue::Bool(b) => write!(f, "{b}"),
            OptionValue::Integer(i) => write!(f, "{i}"),
            OptionValue::String(s) => f.write_str(s),
        }
    }
}

impl OptionValue {
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            OptionValue::Bool(b) => Some(*b),
            _ => None,
        }
    }
}

/// How an option is declared, in the catalog or for the common options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct OptionSpec {
    #[serde(rename = "type")]
    pub value_type: OptionType,
    pub default: OptionValue,
    pub description: String,
    /// Shown in `status` output (the blueprint's display-status).
    #[serde(default)]
    pub display_status: bool,
    /// A password: never taken from the command line, never printed in listings, in
    /// `set-option`'s report or in an error (only `get-option`, asked for it by name, prints it).
    #[serde(default)]
    pub secret: bool,
    /// Bounds of an integer option (a Mumble server for 0 users is no server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<i64>,
    /// What a string option's text must be, beyond a string (SFTP's authorized keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<TextFormat>,
    /// For a yes/no option that decides who may connect or what they may do: the value that
    /// lets more in (`allow-lan-connections` true, SFTP's `read-only` false). Setting it
    /// there through the system service takes a person's presence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub widens_access_when: Option<bool>,
}

/// The shapes a string option can be required to have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TextFormat {
    /// OpenSSH public keys (`ssh-ed25519 AAAA… comment`), separated by commas. No
    /// `authorized_keys` options (`command=…`, `from=…`) can slip in: each entry must start
    /// with a key type, and its key must decode to that type.
    SshPublicKeys,
}

/// The key types OpenSSH's sshd accepts for user authentication (9.2, Debian 12).
const SSH_KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "sk-ssh-ed25519@openssh.com",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "rsa-sha2-512",
    "rsa-sha2-256",
    "ssh-rsa",
];

/// The public keys in an [`TextFormat::SshPublicKeys`] value, one `type base64 [comment]`
/// line each, or why one is not a key.
pub fn ssh_public_keys(value: &str) -> std::result::Result<Vec<String>, String> {
    let mut keys = Vec::new();
    for (i, entry) in value.split(',').map(str::trim).enumerate() {
        if entry.is_empty() {
            if value.trim().is_empty() {
                break;
            }
            return Err(format!("entry {} is empty", i + 1));
        }
        let mut words = entry.split_whitespace();
        let (Some(kind), Some(blob)) = (words.next(), words.next()) else {
            return Err(format!("entry {} is not `type key [comment]`", i + 1));
        };
        if !SSH_KEY_TYPES.contains(&kind) {
            return Err(format!("entry {} starts with {kind:?}, not an SSH key type", i + 1));
        }
        // The key blob starts with its own type, as a length-prefixed string (RFC 4253 §6.6).
        let decoded = data_encoding::BASE64.decode(blob.as_bytes()).ok();
        let inner = decoded.as_deref().and_then(|b| {
            let len = u32::from_be_bytes(b.get(..4)?.try_into().ok()?) as usize;
            b.get(4..4 + len)
        });
        if inner != Some(kind.as_bytes()) {
            return Err(format!("entry {} ({kind}) does not hold a {kind} key", i + 1));
        }
        keys.push(entry.split_whitespace().collect::<Vec<_>>().join(" "));
    }
    Ok(keys)
}

/// How a change of option lets more people in, or lets them do more, than before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Widening {
    /// A password changed or removed: whoever set it is let in (a new one is known to its
    /// setter; an empty one lets every key holder in).
    Password,
    /// An SSH key that was not there: its holder may log in.
    NewSshKey,
    /// A yes/no option set to its value that lets more in.
    Opened,
}

impl fmt::Display for Widening {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Widening::Password => "a changed or removed password lets in whoever knows the new one",
            Widening::NewSshKey => "a new SSH key lets its holder log in",
            Widening::Opened => "it lets more people connect, or lets them do more",
        })
    }
}

impl OptionSpec {
    /// Whether going from `before` to `after` widens access, and how. A new password
    /// where there was none widens nothing: whoever could connect before still must, and
    /// now also needs it. Only the key material of SSH keys counts, not their comments.
    pub fn widening(&self, before: &OptionValue, after: &OptionValue) -> Option<Widening> {
        if before == after {
            return None;
        }
        if self.secret {
            let was_empty = matches!(before, OptionValue::String(s) if s.is_empty());
            return (!was_empty).then_some(Widening::Password);
        }
        if self.format == Some(TextFormat::SshPublicKeys) {
            let key_material = |value: &OptionValue| -> Vec<String> {
                let text = value.to_string();
                let keys = ssh_public_keys(&text).unwrap_or_default();
                keys.iter().map(|k| k.split(' ').take(2).collect::<Vec<_>>().join(" ")).collect()
            };
            let known = key_material(before);
            return key_material(after).iter().any(|k| !known.contains(k)).then_some(Widening::NewSshKey);
        }
        match (self.widens_access_when, after) {
            (Some(opening), OptionValue::Bool(b)) if *b == opening => Some(Widening::Opened),
            _ => None,
        }
    }

    /// The value that lets the fewest in: a yes/no option's closed side, no SSH key, no
    /// password; for any other option its default (it decides nothing about access). What an
    /// option today's service lacks is judged against when a backup's replaces it.
    pub fn closed_value(&self) -> OptionValue {
        match self.widens_access_when {
            Some(opening) => OptionValue::Bool(!opening),
            None if self.secret || self.format == Some(TextFormat::SshPublicKeys) => OptionValue::String(String::new()),
            None => self.default.clone(),
        }
    }

    /// Parses a value typed by a person, naming what would have been accepted.
    pub fn parse(&self, option: &str, raw: &str) -> Result<OptionValue> {
        let invalid = || self.invalid(option, raw);
        match self.value_type {
            OptionType::Bool => match raw {
                "true" | "yes" | "on" => Ok(OptionValue::Bool(true)),
                "false" | "no" | "off" => Ok(OptionValue::Bool(false)),
                _ => Err(invalid()),
            },
            OptionType::Integer => {
                let value = raw.parse().map(OptionValue::Integer).map_err(|_| invalid())?;
                self.check(option, &value).map(|_| value)
            }
            OptionType::Port => match raw.parse::<u16>() {
                Ok(p) if p > 0 => Ok(OptionValue::Integer(p.into())),
                _ => Err(invalid()),
            },
            OptionType::String => {
                let value = OptionValue::String(raw.to_owned());
                self.check(option, &value).map(|_| value)
            }
        }
    }

    /// Checks a value that arrived already typed (a catalog default, a stored record).
    pub fn check(&self, option: &str, value: &OptionValue) -> Result<()> {
        let ok = match (self.value_type, value) {
            (OptionType::Bool, OptionValue::Bool(_)) => true,
            (OptionType::Integer, OptionValue::Integer(i)) => {
                self.min.is_none_or(|min| *i >= min) && self.max.is_none_or(|max| *i <= max)
            }
            (OptionType::Port, OptionValue::Integer(p)) => (1..=65535).contains(p),
            (OptionType::String, OptionValue::String(s)) => {
                let text = s.chars().count() <= self.max_len() && !s.chars().any(char::is_control);
                if text && self.format == Some(TextFormat::SshPublicKeys) {
                    if let Err(why) = ssh_public_keys(s) {
                        return Err(Error::InvalidOptionValue {
                            option: option.to_owned(),
                            value: s.clone(),
                            expected: format!("{} ({why})", self.expected()),
                        });
                    }
                }
                text
            }
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(self.invalid(option, &value.to_string()))
        }
    }

    /// The error for a refused value. A secret one is described, never quoted: errors end
    /// up in terminals, logs and bug reports.
    fn invalid(&self, option: &str, raw: &str) -> Error {
        let value = if !self.secret {
            raw.to_owned()
        } else if raw.chars().any(char::is_control) {
            "(hidden: it contains a control character)".to_owned()
        } else {
            format!("(hidden: {} characters)", raw.chars().count())
        };
        Error::InvalidOptionValue { option: option.to_owned(), value, expected: self.expected() }
    }

    /// The longest text a string option takes: a few SSH keys need more than a password.
    fn max_len(&self) -> usize {
        match self.format {
            Some(TextFormat::SshPublicKeys) => MAX_SSH_KEYS_LEN,
            None => MAX_STRING_LEN,
        }
    }

    /// What a value must be, bounds included.
    pub fn expected(&self) -> String {
        match (self.value_type, self.min, self.max) {
            (OptionType::Integer, Some(min), Some(max)) => format!("a whole number from {min} to {max}"),
            (OptionType::Integer, Some(min), None) => format!("a whole number, at least {min}"),
            (OptionType::Integer, None, Some(max)) => format!("a whole number, at most {max}"),
            (OptionType::String, _, _) if self.format == Some(TextFormat::SshPublicKeys) => {
                "OpenSSH public keys (each the line of a .pub file, like `ssh-ed25519 AAAA… name`), \
                 separated by commas, 4000 characters in all"
                    .to_owned()
            }
            (other, _, _) => other.expected().to_owned(),
        }
    }
}

/// The blueprint's options that every service has.
pub fn common_options() -> BTreeMap<String, OptionSpec> {
    let bool_option = |default: bool, description: &str, display_status: bool| OptionSpec {
        value_type: OptionType::Bool,
        default: OptionValue::Bool(default),
        description: description.to_owned(),
        display_status,
        secret: false,
        min: None,
        max: None,
        format: None,
        widens_access_when: None,
    };
    BTreeMap::from([
        (
            PERSISTENCE.to_owned(),
            bool_option(
                true,
                "Keep this service, its address and its clients in the Persistent Storage. \
                 When false it lives only until shutdown.",
                true,
            ),
        ),
        (
            AUTOSTART.to_owned(),
            bool_option(true, "Publish this service automatically after login, when it is enabled.", true),
        ),
        (
            ALLOW_LAN.to_owned(),
            OptionSpec {
                widens_access_when: Some(true),
                ..bool_option(
                    false,
                    "Also accept connections from the local network, not only through Tor. \
                     Anyone on that network can then connect without a client key.",
                    true,
                )
            },
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(t: OptionType, default: OptionValue) -> OptionSpec {
        OptionSpec {
            value_type: t,
            default,
            description: String::new(),
            display_status: false,
            secret: false,
            min: None,
            max: None,
            format: None,
            widens_access_when: None,
        }
    }

    #[test]
    fn parse_by_type() {
        let b = spec(OptionType::Bool, OptionValue::Bool(false));
        assert_eq!(b.parse("x", "true").unwrap(), OptionValue::Bool(true));
        assert_eq!(b.parse("x", "off").unwrap(), OptionValue::Bool(false));
        let err = b.parse("autostart", "maybe").unwrap_err().to_string();
        assert!(err.contains("autostart") && err.contains("true or false"), "{err}");

        let p = spec(OptionType::Port, OptionValue::Integer(1));
        assert_eq!(p.parse("x", "8080").unwrap(), OptionValue::Integer(8080));
        for bad in ["0", "65536", "-1", "http"] {
            assert!(p.parse("x", bad).unwrap_err().to_string().contains("1 to 65535"));
        }
        let s = spec(OptionType::String, OptionValue::String(String::new()));
        assert!(s.parse("x", "hello world").is_ok());
        assert!(s.parse("x", "two\nlines").is_err());
        assert!(s.parse("x", &"a".repeat(1025)).is_err());
        let i = spec(OptionType::Integer, OptionValue::Integer(0));
        assert!(i.parse("x", "12").is_ok() && i.parse("x", "1.5").is_err());
    }

    #[test]
    fn check_refuses_mismatched_types() {
        let b = spec(OptionType::Bool, OptionValue::Bool(false));
        assert!(b.check("x", &OptionValue::String("true".into())).is_err());
        assert!(b.check("x", &OptionValue::Bool(true)).is_ok());
    }

    #[test]
    fn refused_secret_values_are_described_not_quoted() {
        let s = OptionSpec { secret: true, ..spec(OptionType::String, OptionValue::String(String::new())) };
        let long = format!("hunter2{}", "x".repeat(1100));
        for (raw, problem) in [("hunter2\u{7}bell", "control character"), (long.as_str(), "1107 characters")] {
            let err = s.parse("server-password", raw).unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("server-password") && shown.contains(problem) && shown.contains("1024"), "{shown}");
            let err = s.check("server-password", &OptionValue::String(raw.to_owned())).unwrap_err();
            assert!(!format!("{err} {err:?}").contains("hunter2"), "{err:?}");
        }
        let pin = OptionSpec { secret: true, ..spec(OptionType::Integer, OptionValue::Integer(0)) };
        let err = pin.parse("pin", "12345six").unwrap_err();
        assert!(!format!("{err} {err:?}").contains("12345"), "{err:?}");
        assert!(pin.check("pin", &OptionValue::String("12345six".into())).unwrap_err().to_string().contains("hidden"));
        // Values of ordinary options are still quoted: they help and hide nothing.
        let err = spec(OptionType::Integer, OptionValue::Integer(0)).parse("max-users", "ten").unwrap_err();
        assert!(err.to_string().contains("\"ten\""), "{err}");
    }

    #[test]
    fn a_change_widens_access_when_it_lets_someone_new_in_or_lets_them_do_more() {
        let text = |s: &str| OptionValue::String(s.to_owned());
        let password = OptionSpec { secret: true, ..spec(OptionType::String, text("")) };
        assert_eq!(password.widening(&text("old"), &text("new")), Some(Widening::Password), "known to its setter");
        assert_eq!(password.widening(&text("old"), &text("")), Some(Widening::Password), "removed");
        assert_eq!(password.widening(&text(""), &text("new")), None, "one more thing to know");
        assert_eq!(password.widening(&text("same"), &text("same")), None);

        let keys = OptionSpec {
            format: Some(TextFormat::SshPublicKeys),
            ..spec(OptionType::String, OptionValue::String(String::new()))
        };
        let (alice, bob) = (
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEB",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgIC",
        );
        let both = text(&format!("{alice} alice@laptop, {bob}"));
        assert_eq!(keys.widening(&text(alice), &both), Some(Widening::NewSshKey));
        assert_eq!(keys.widening(&both, &text(alice)), None, "a key taken away");
        assert_eq!(keys.widening(&text(alice), &text(&format!("{alice} renamed"))), None, "only the comment");
        assert_eq!(keys.widening(&text(""), &text(bob)), Some(Widening::NewSshKey));

        let lan = &common_options()[ALLOW_LAN];
        assert_eq!(lan.widening(&OptionValue::Bool(false), &OptionValue::Bool(true)), Some(Widening::Opened));
        assert_eq!(lan.widening(&OptionValue::Bool(true), &OptionValue::Bool(false)), None);
        let read_only =
            OptionSpec { widens_access_when: Some(false), ..spec(OptionType::Bool, OptionValue::Bool(false)) };
        assert_eq!(read_only.widening(&OptionValue::Bool(true), &OptionValue::Bool(false)), Some(Widening::Opened));
        assert_eq!(read_only.widening(&OptionValue::Bool(false), &OptionValue::Bool(true)), None);
        let users = spec(OptionType::Integer, OptionValue::Integer(10));
        assert_eq!(users.widening(&OptionValue::Integer(10), &OptionValue::Integer(100)), None);
    }

    #[test]
    fn integer_bounds_are_checked_and_named() {
        let users = OptionSpec { min: Some(1), max: Some(1000), ..spec(OptionType::Integer, OptionValue::Integer(10)) };
        assert_eq!(users.parse("max-users", "1000").unwrap(), OptionValue::Integer(1000));
        for bad in ["0", "100000", "-5"] {
            let error = users.parse("max-users", bad).unwrap_err().to_string();
            assert!(error.contains("a whole number from 1 to 1000") && error.contains(bad), "{error}");
        }
        assert!(users.check("max-users", &OptionValue::Integer(1001)).is_err(), "stored values too (import, D-Bus)");
    }

    const ALICE: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOh4sgryCCw4zaVE7laV88IQHnVk0qbHQ+Nh+6mJ+unx alice@tails";
    const BOB: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBMXtmBQaDLxp51MdRYLAJP9NJ/V1vFAnAS3OlgBAjzOPclDPTo4ruVFY3jLhFKeR2ydPQpvdqQa9/HF8+XKkx5Q=";

    #[test]
    fn ssh_public_keys_are_real_keys_and_nothing_else() {
        let keys = OptionSpec {
            format: Some(TextFormat::SshPublicKeys),
            ..spec(OptionType::String, OptionValue::String(String::new()))
        };
        assert_eq!(keys.parse("authorized-keys", "").unwrap(), OptionValue::String(String::new()));
        assert_eq!(ssh_public_keys(&format!(" {ALICE} ,{BOB}")).unwrap(), [ALICE, BOB]);
        for (bad, why) in [
            (format!("command=\"sh\" {ALICE}"), "not an SSH key type"),
            (format!("{ALICE},"), "entry 2 is empty"),
            ("ssh-ed25519".to_owned(), "not `type key [comment]`"),
            (BOB.replace("ecdsa-sha2-nistp256 ", "ssh-ed25519 "), "does not hold a ssh-ed25519 key"),
            ("ssh-rsa bm90IGJhc2U2NA!!".to_owned(), "does not hold a ssh-rsa key"),
        ] {
            let error = keys.parse("authorized-keys", &bad).unwrap_err().to_string();
            assert!(error.contains(why) && error.contains("OpenSSH public keys"), "{bad}: {error}");
            assert!(keys.check("authorized-keys", &OptionValue::String(bad)).is_err(), "stored values too");
        }
    }
}
