//! The catalog of service kinds: data-driven definitions (one TOML file per kind), the
//! built-in ones embedded in the binary plus any a user drops into a directory.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::names::ServiceName;
use crate::options::{common_options, OptionSpec};

const BUILTIN: &[(&str, &str)] = &[
    ("custom.toml", include_str!("kinds/custom.toml")),
    ("gobby.toml", include_str!("kinds/gobby.toml")),
    ("mumble.toml", include_str!("kinds/mumble.toml")),
    ("sftp.toml", include_str!("kinds/sftp.toml")),
    ("web.toml", include_str!("kinds/web.toml")),
];

/// Refuse to read a drop-in definition larger than this: they are a few hundred bytes.
const MAX_DEFINITION_SIZE: u64 = 64 * 1024;

/// The built-in daemons a kind can name (`daemon = "…"` in its definition); `system` knows
/// how to run each.
pub const BUILTIN_DAEMONS: &[&str] = &["mumble", "web", "gobby", "sftp"];

/// One kind of service, with the blueprint's attributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct KindDefinition {
    pub name: String,
    pub name_in_gui: String,
    pub description: String,
    #[serde(default)]
    pub documentation: Option<String>,
    #[serde(default)]
    pub packages: Vec<String>,
    /// The built-in daemon tails-server runs for services of this kind (see
    /// [`BUILTIN_DAEMONS`]), configured from their options. None: the user
    /// runs the program listening on the local port.
    #[serde(default)]
    pub daemon: Option<String>,
    /// The system user the daemon runs as (created by its package).
    #[serde(default)]
    pub daemon_user: Option<String>,
    /// The user that owns the kind's folders when it is not the daemon's own (SFTP: sshd
    /// runs as root, the friends' files belong to the account they log in as).
    #[serde(default)]
    pub folders_user: Option<String>,
    /// Units of the package that would take the same port (stopped before ours starts).
    #[serde(default)]
    pub conflicts: Vec<String>,
    /// Port the daemon listens on, on 127.0.0.1. None: the user must give one (custom).
    #[serde(default)]
    pub local_port: Option<u16>,
    /// Virtual port on the onion address. None: same as the local port.
    #[serde(default)]
    pub remote_port: Option<u16>,
    /// Folders the user fills (a web site, shared files), inside the service's data
    /// directory `<store>/data/<service>/`, which is kept with the store.
    #[serde(default)]
    pub persistent_paths: Vec<String>,
    #[serde(default)]
    pub icon_name: Option<String>,
    /// How a friend connects, shown with each new client's key: `{service}`, `{address}`,
    /// `{port}` (the onion port) and `{client}` are replaced.
    #[serde(default)]
    pub connect: Option<String>,
    #[serde(default)]
    pub options: BTreeMap<String, OptionSpec>,
}

/// How `client` reaches a service: its kind's `connect` text, or, for a kind that says
/// nothing (or is no longer defined), the steps that fit any program.
pub fn how_to_connect(kind: Option<&KindDefinition>, service: &str, address: &str, port: u16, client: &str) -> String {
    const ANY_PROGRAM: &str = "{client} connects to {address}, port {port}, with the program this service \
        runs, through Tor (a SOCKS5 proxy at 127.0.0.1:9050, or torsocks). Their tor must know the key \
        first: the line of `tails-server client show {service} {client} --as auth-private`, saved as \
        {client}.auth_private in the folder named by their tor's ClientOnionAuthDir.";
    let text = kind.and_then(|k| k.connect.as_deref()).unwrap_or(ANY_PROGRAM);
    text.trim()
        .replace("{service}", service)
        .replace("{address}", address)
        .replace("{port}", &port.to_string())
        .replace("{client}", client)
}

impl KindDefinition {
    /// Parses and validates one definition; errors name the file and the field.
    pub fn parse(file: &str, text: &str) -> Result<Self> {
        let fail = |message: String| Error::Catalog { file: file.to_owned(), message };
        let def: KindDefinition = toml::from_str(text).map_err(|e| fail(e.to_string().trim_end().to_owned()))?;
        ServiceName::new(&def.name).map_err(|e| fail(format!("field `name`: {e}")))?;
        if def.name_in_gui.trim().is_empty() {
            return Err(fail("field `name-in-gui` is empty".into()));
        }
        for (field, port) in [("local-port", def.local_port), ("remote-port", def.remote_port)] {
            if port == Some(0) {
                return Err(fail(format!("field `{field}`: port 0 is not a port")));
            }
        }
        for pkg in &def.packages {
            let ok = !pkg.is_empty()
                && pkg.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
            if !ok {
                return Err(fail(format!("field `packages`: {pkg:?} is not a Debian package name")));
            }
        }
        if let Some(daemon) = &def.daemon {
            if !BUILTIN_DAEMONS.contains(&daemon.as_str()) {
                return Err(fail(format!(
                    "field `daemon`: {daemon:?} is not one tails-server runs ({})",
                    BUILTIN_DAEMONS.join(", ")
                )));
            }
        }
        for user in def.daemon_user.iter().chain(&def.folders_user) {
            let ok = !user.is_empty()
                && user.len() <= 32
                && user.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_".contains(c));
            if !ok {
                return Err(fail(format!("{user:?} is not a system user name (daemon-user, folders-user)")));
            }
        }
        for unit in &def.conflicts {
            let ok =
                unit.ends_with(".service") && unit.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
            if !ok {
                return Err(fail(format!("field `conflicts`: {unit:?} is not a systemd service name")));
            }
        }
        for path in &def.persistent_paths {
            if path.is_empty() || path.starts_with('/') || path.split('/').any(|p| p == ".." || p == ".") {
                return Err(fail(format!(
                    "field `persistent-paths`: {path:?} must be a folder inside the service's data directory \
                     (a relative path without '.' or '..')"
                )));
            }
        }
        let common = common_options();
        for (option, spec) in &def.options {
            ServiceName::new(option).map_err(|e| fail(format!("option `{option}`: {e}")))?;
            if common.contains_key(option) {
                return Err(fail(format!("option `{option}` is a common option and cannot be redefined")));
            }
            if spec.value_type != crate::options::OptionType::Integer && (spec.min.is_some() || spec.max.is_some()) {
                return Err(fail(format!("option `{option}`: only integer options have bounds (min, max)")));
            }
            if spec.value_type != crate::options::OptionType::String && spec.format.is_some() {
                return Err(fail(format!("option `{option}`: only string options have a format")));
            }
            // Only a yes/no value can be the side that opens: elsewhere it would be ignored,
            // and a change that lets more in would not ask for the person's presence.
            if spec.value_type != crate::options::OptionType::Bool && spec.widens_access_when.is_some() {
                return Err(fail(format!("option `{option}`: only yes/no (bool) options have widens-access-when")));
            }
            if let (Some(min), Some(max)) = (spec.min, spec.max) {
                if min > max {
                    return Err(fail(format!("option `{option}`: min {min} is above max {max}")));
                }
            }
            spec.check(option, &spec.default).map_err(|e| fail(format!("field `options.{option}.default`: {e}")))?;
        }
        Ok(def)
    }

    /// The common options followed by this kind's own.
    pub fn all_options(&self) -> BTreeMap<String, OptionSpec> {
        let mut all = common_options();
        all.extend(self.options.clone());
        all
    }
}

/// The kinds known to this run, and the drop-in files that were refused.
#[derive(Debug, Default)]
pub struct Catalog {
    kinds: BTreeMap<String, KindDefinition>,
    problems: Vec<Error>,
}

impl Catalog {
    pub fn builtin() -> Self {
        let mut catalog = Catalog::default();
        for (file, text) in BUILTIN {
            let def = KindDefinition::parse(file, text).expect("built-in definitions are tested");
            catalog.kinds.insert(def.name.clone(), def);
        }
        catalog
    }

    /// The built-in kinds plus every `*.toml` in `dir` (if it exists). A malformed or
    /// clashing file is left out and recorded in [`Catalog::problems`].
    pub fn load(extra_dir: Option<&Path>) -> Self {
        let mut catalog = Self::builtin();
        let Some(dir) = extra_dir else { return catalog };
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return catalog,
            Err(e) => {
                catalog.problems.push(Error::io("cannot read the catalog directory", dir, e));
                return catalog;
            }
        };
        let mut paths: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        for path in paths {
            match read_definition(&path) {
                Ok(def) if catalog.kinds.contains_key(&def.name) => catalog.problems.push(Error::Catalog {
                    file: path.display().to_string(),
                    message: format!("field `name`: a kind named {:?} is already defined", def.name),
                }),
                Ok(def) => {
                    catalog.kinds.insert(def.name.clone(), def);
                }
                Err(e) => catalog.problems.push(e),
            }
        }
        catalog
    }

    pub fn get(&self, kind: &str) -> Result<&KindDefinition> {
        self.kinds.get(kind).ok_or_else(|| Error::UnknownKind {
            kind: kind.to_owned(),
            known: self.kinds.keys().cloned().collect::<Vec<_>>().join(", "),
        })
    }

    pub fn kinds(&self) -> impl Iterator<Item = &KindDefinition> {
        self.kinds.values()
    }

    pub fn problems(&self) -> &[Error] {
        &self.problems
    }
}

fn read_definition(path: &Path) -> Result<KindDefinition> {
    let file = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| Error::io("cannot read", path, e))?;
    if meta.len() > MAX_DEFINITION_SIZE {
        return Err(Error::Catalog { file, message: format!("larger than {MAX_DEFINITION_SIZE} bytes") });
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("cannot read", path, e))?;
    KindDefinition::parse(&file, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_kinds_parse() {
        let catalog = Catalog::builtin();
        let names: Vec<_> = catalog.kinds().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["custom", "gobby", "mumble", "sftp", "web"]);
        assert_eq!(catalog.get("mumble").unwrap().local_port, Some(64738));
        assert_eq!(catalog.get("gobby").unwrap().local_port, Some(6523));
        assert!(catalog.get("mumble").unwrap().options.contains_key("server-password"));
        assert!(catalog.get("custom").unwrap().local_port.is_none());
        let err = catalog.get("irc").unwrap_err().to_string();
        assert!(err.contains("irc") && err.contains("mumble"), "{err}");
    }

    #[test]
    fn malformed_definitions_name_file_and_field() {
        let base = "name = \"x\"\nname-in-gui = \"X\"\ndescription = \"d\"\n";
        for (text, needle) in [
            ("name = \"x\"\n", "name-in-gui"),
            (&format!("{base}local-port = 70000\n"), "local-port"),
            (&format!("{base}local-port = 0\n"), "local-port"),
            (&format!("{base}colour = \"red\"\n"), "colour"),
            (&format!("{base}packages = [\"Bad Pkg\"]\n"), "packages"),
            (&format!("{base}persistent-paths = [\"/absolute\"]\n"), "persistent-paths"),
            (&format!("{base}persistent-paths = [\"a/../b\"]\n"), "persistent-paths"),
            (&format!("{base}daemon = \"sshd\"\n"), "field `daemon`"),
            (&format!("{base}conflicts = [\"x; rm\"]\n"), "field `conflicts`"),
            (&format!("{base}folders-user = \"root:root\"\n"), "not a system user name"),
            (
                &format!(
                    "{base}[options.n]\ntype=\"integer\"\ndefault=1\ndescription=\"\"\nformat=\"ssh-public-keys\"\n"
                ),
                "only string options have a format",
            ),
            (
                &format!(
                    "{base}[options.t]\ntype=\"string\"\ndefault=\"\"\ndescription=\"\"\nwidens-access-when=true\n"
                ),
                "only yes/no (bool) options have widens-access-when",
            ),
            (&format!("{base}[options.autostart]\ntype=\"bool\"\ndefault=true\ndescription=\"\"\n"), "common option"),
            (
                &format!("{base}[options.size]\ntype=\"port\"\ndefault=\"big\"\ndescription=\"\"\n"),
                "options.size.default",
            ),
            (&format!("{base}[options.size]\ntype=\"float\"\ndefault=1\ndescription=\"\"\n"), "float"),
            ("name = \"Bad/Name\"\nname-in-gui = \"X\"\ndescription = \"d\"\n", "field `name`"),
        ] {
            let err = KindDefinition::parse("kinds/x.toml", text).unwrap_err().to_string();
            assert!(err.contains("kinds/x.toml") && err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn drop_in_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("irc.toml"),
            "name = \"irc\"\nname-in-gui = \"IRC\"\ndescription = \"chat\"\nlocal-port = 6667\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("broken.toml"), "name = ").unwrap();
        std::fs::write(
            dir.path().join("mumble2.toml"),
            "name = \"mumble\"\nname-in-gui = \"M\"\ndescription = \"d\"\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("README"), "not a definition").unwrap();
        let catalog = Catalog::load(Some(dir.path()));
        assert_eq!(catalog.get("irc").unwrap().local_port, Some(6667));
        let problems: Vec<_> = catalog.problems().iter().map(|e| e.to_string()).collect();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("broken.toml"));
        assert!(problems[1].contains("mumble2.toml") && problems[1].contains("already defined"));
    }
}
