//! Names of services and clients. They end up in file names (`NAME.auth`), in tor control
//! commands and in systemd unit names, so the alphabet is deliberately small.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

pub const MAX_NAME_LEN: usize = 32;

fn validate(what: &'static str, name: &str) -> Result<()> {
    let fail = |reason: &str| Err(Error::InvalidName { what, name: name.to_owned(), reason: reason.to_owned() });
    if name.is_empty() {
        return fail("it is empty");
    }
    if name.chars().count() > MAX_NAME_LEN {
        return fail(&format!("it is longer than {MAX_NAME_LEN} characters"));
    }
    if let Some(bad) = name.chars().find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-')) {
        let shown = if bad.is_control() { format!("{:?}", bad) } else { format!("'{bad}'") };
        return fail(&format!("it contains {shown}; use only lowercase letters a-z, digits 0-9 and '-'"));
    }
    if name.starts_with('-') {
        return fail("it starts with '-', which would be read as an option");
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $ty(String);

        impl $ty {
            pub fn new(name: &str) -> Result<Self> {
                validate($what, name)?;
                Ok(Self(name.to_owned()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl FromStr for $ty {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                Self::new(s)
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_type!(
    /// A service name: 1–32 characters from `[a-z0-9-]`, not starting with '-'.
    ServiceName, "service"
);
name_type!(
    /// A client name, with the same rules as a service name (it becomes `NAME.auth`).
    ClientName, "client"
);
name_type!(
    /// The name of a key received from a service's owner (the friend's side), with the same
    /// rules as a service name.
    KeyName, "key"
);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_plain_names() {
        for ok in ["a", "mumble", "web-2", "0", &"x".repeat(32)] {
            ServiceName::new(ok).unwrap();
        }
    }

    #[test]
    fn refuses_hostile_names_with_a_reason() {
        for (bad, why) in [
            ("", "empty"),
            ("Web", "'W'"),
            ("a/b", "'/'"),
            ("..", "'.'"),
            ("a\0b", "'\\0'"),
            ("a\nb", "'\\n'"),
            ("a\rb", "'\\r'"),
            ("café", "'é'"),
            ("a b", "' '"),
            ("-rf", "starts with '-'"),
            (&"x".repeat(33), "longer than 32"),
        ] {
            let err = ServiceName::new(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    proptest! {
        #[test]
        fn valid_iff_in_alphabet(s in "\\PC{0,40}") {
            let expected = !s.is_empty()
                && s.chars().count() <= 32
                && s.chars().all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-'))
                && !s.starts_with('-');
            prop_assert_eq!(ServiceName::new(&s).is_ok(), expected);
            prop_assert_eq!(ClientName::new(&s).is_ok(), expected);
        }

        #[test]
        fn serde_round_trip(s in "[a-z0-9][a-z0-9-]{0,31}") {
            let n = ServiceName::new(&s).unwrap();
            let json = serde_json::to_string(&n).unwrap();
            prop_assert_eq!(serde_json::from_str::<ServiceName>(&json).unwrap(), n);
        }

        #[test]
        fn serde_refuses_invalid(s in "[A-Z/. ]{1,8}") {
            let json = serde_json::to_string(&s).unwrap();
            prop_assert!(serde_json::from_str::<ServiceName>(&json).is_err());
        }
    }
}
