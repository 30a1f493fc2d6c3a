//! Everything that knows where Tails (and Debian) keep things. No other module hard-codes
//! a system path: they receive paths from here, or from the caller.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where Tails mounts the unlocked Persistent Storage.
pub const PERSISTENT_STORAGE: &str = "/live/persistence/TailsData_unlocked";
/// Our directory inside it.
pub const PERSISTENT_STATE_DIR: &str = "/live/persistence/TailsData_unlocked/tails-server";
/// tor's control socket and cookie on Debian (and Tails).
pub const TOR_CONTROL_SOCKET: &str = "/run/tor/control";
pub const TOR_CONTROL_COOKIE: &str = "/run/tor/control.authcookie";
/// dpkg's database of installed packages.
pub const DPKG_STATUS: &str = "/var/lib/dpkg/status";

const APP_DIR: &str = "tails-server";

/// The persistent state directory: on Tails with Persistent Storage unlocked, inside it;
/// elsewhere the XDG data directory.
pub fn default_state_dir() -> PathBuf {
    if Path::new(PERSISTENT_STORAGE).is_dir() {
        return PathBuf::from(PERSISTENT_STATE_DIR);
    }
    if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(data).join(APP_DIR);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".local/share").join(APP_DIR)
}

/// Where services with `persistence=false` live: the per-user runtime directory, a tmpfs
/// that is gone at shutdown (and everything in Tails is gone at shutdown anyway).
pub fn default_runtime_dir() -> Result<PathBuf> {
    for var in ["TAILS_SERVER_RUNTIME_DIR", "XDG_RUNTIME_DIR"] {
        if let Some(dir) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            let dir = PathBuf::from(dir);
            return Ok(if var == "XDG_RUNTIME_DIR" { dir.join(APP_DIR) } else { dir });
        }
    }
    let uid = crate::unix::euid();
    let run_user = PathBuf::from(format!("/run/user/{uid}"));
    if run_user.is_dir() {
        Ok(run_user.join(APP_DIR))
    } else {
        Err(Error::NoRuntimeDir { uid })
    }
}

/// The packages dpkg reports installed. Read once per command: the status file is large
/// and every listed service asks about its packages.
#[derive(Debug, Default)]
pub struct InstalledPackages(std::collections::HashSet<String>);

impl InstalledPackages {
    /// Reads a dpkg status file; an unreadable one means nothing is installed.
    pub fn read(status_file: &Path) -> Self {
        let Ok(status) = std::fs::read_to_string(status_file) else { return Self::default() };
        let mut installed = std::collections::HashSet::new();
        for stanza in status.split("\n\n") {
            let mut name = None;
            let mut ok = false;
            for line in stanza.lines() {
                if let Some(p) = line.strip_prefix("Package: ") {
                    name = Some(p.trim());
                } else if let Some(s) = line.strip_prefix("Status: ") {
                    ok = s.trim().ends_with(" installed");
                }
            }
            if let (Some(name), true) = (name, ok) {
                installed.insert(name.to_owned());
            }
        }
        Self(installed)
    }

    /// Whether every one of `packages` is installed (true for none).
    pub fn all(&self, packages: &[String]) -> bool {
        packages.iter().all(|p| self.0.contains(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_status_parsing() {
        let dir = tempfile::tempdir().unwrap();
        let status = dir.path().join("status");
        std::fs::write(
            &status,
            "Package: tor\nStatus: install ok installed\nVersion: 1\n\n\
             Package: mumble-server\nStatus: deinstall ok config-files\n\n\
             Package: lighttpd\nStatus: install ok installed\n",
        )
        .unwrap();
        let pkgs = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let installed = InstalledPackages::read(&status);
        assert!(installed.all(&pkgs(&["tor", "lighttpd"])));
        assert!(!installed.all(&pkgs(&["mumble-server"])));
        assert!(!installed.all(&pkgs(&["infinoted"])));
        assert!(installed.all(&[]));
        assert!(!InstalledPackages::read(&dir.path().join("missing")).all(&pkgs(&["tor"])));
    }
}
