//! Everything that knows where Tails (and Debian) keep things. No other module hard-codes
//! a system path: they receive paths from here, or from the caller.

pub mod setup;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where Tails mounts the unlocked Persistent Storage.
pub const PERSISTENT_STORAGE: &str = "/live/persistence/TailsData_unlocked";
/// Our directory inside it.
pub const PERSISTENT_STATE_DIR: &str = "/live/persistence/TailsData_unlocked/tails-server";
/// The system service's runtime directory (its unit's RuntimeDirectory): amnesic services.
pub const SERVICE_RUNTIME_DIR: &str = "/run/tails-server";
/// tor's control socket and cookie on Debian (and Tails, once the person has connected).
pub const TOR_CONTROL_SOCKET: &str = "/run/tor/control";
/// Tails' ControlPort (root only, by its firewall): the way in until the socket exists.
pub const TOR_CONTROL_PORT: &str = "127.0.0.1:9052";
pub const TOR_CONTROL_COOKIE: &str = "/run/tor/control.authcookie";
/// The system service's bus policy, installed with it: where it exists, the service is the
/// only way to the stores for anyone but root.
pub const SERVICE_BUS_POLICY: &str = "/usr/share/dbus-1/system.d/org.boum.tails.Server.conf";
/// dpkg's database of installed packages.
pub const DPKG_STATUS: &str = "/var/lib/dpkg/status";
/// dpkg's lists of the files each installed package put on the system.
pub const DPKG_INFO: &str = "/var/lib/dpkg/info";

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

/// Whether `dir` lies under Tails' Persistent Storage mount point while the volume is not
/// mounted there: what is written would land on the amnesic filesystem underneath and be
/// gone at shutdown, while the user believes it persistent.
pub fn persistent_storage_missing_for(dir: &Path) -> bool {
    dir.starts_with(PERSISTENT_STORAGE)
        && !std::fs::read_to_string("/proc/self/mountinfo")
            .is_ok_and(|mounts| is_mount_point(&mounts, Path::new(PERSISTENT_STORAGE)))
}

/// Whether `path` is a mount point in a /proc/self/mountinfo text (field 5).
pub(crate) fn is_mount_point(mountinfo: &str, path: &Path) -> bool {
    mountinfo
        .lines()
        .any(|line| line.split(' ').nth(4).map(unescape_mountinfo).is_some_and(|mount| Path::new(&mount) == path))
}

/// mountinfo escapes space, tab, newline and backslash as octal `\NNN`.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            if let Ok(v) = u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("x"), 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where services with `persistence=false` live: a tmpfs that is gone at shutdown (and
/// everything in Tails is gone at shutdown anyway). For root, the system service's own
/// folder, so that a root command and the service see the same amnesic services; for
/// anyone else, their runtime directory.
pub fn default_runtime_dir() -> Result<PathBuf> {
    let uid = crate::unix::euid();
    runtime_dir_for(uid, |var| std::env::var_os(var), Path::new(&format!("/run/user/{uid}")).is_dir())
}

fn runtime_dir_for(
    uid: u32,
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
    run_user_exists: bool,
) -> Result<PathBuf> {
    let set = |var: &str| env(var).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = set("TAILS_SERVER_RUNTIME_DIR") {
        return Ok(dir);
    }
    if uid == 0 {
        return Ok(PathBuf::from(SERVICE_RUNTIME_DIR));
    }
    if let Some(dir) = set("XDG_RUNTIME_DIR") {
        return Ok(dir.join(APP_DIR));
    }
    if run_user_exists {
        Ok(PathBuf::from(format!("/run/user/{uid}")).join(APP_DIR))
    } else {
        Err(Error::NoRuntimeDir { uid })
    }
}

/// The paths an installed package put on the system (dpkg's `<package>.list`, or
/// `<package>:<arch>.list` for a package installable for several architectures), or None when
/// dpkg has no list for it.
pub fn package_files(package: &str) -> Option<Vec<PathBuf>> {
    package_files_in(Path::new(DPKG_INFO), package)
}

fn package_files_in(info: &Path, package: &str) -> Option<Vec<PathBuf>> {
    let plain = info.join(format!("{package}.list"));
    let text = std::fs::read_to_string(&plain).ok().or_else(|| {
        let entries = std::fs::read_dir(info).ok()?;
        entries.flatten().find_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let arch = name.strip_prefix(&format!("{package}:"))?.strip_suffix(".list")?;
            (!arch.is_empty() && !arch.contains(['/', '.'])).then(|| std::fs::read_to_string(e.path()).ok())?
        })
    })?;
    Some(text.lines().filter(|l| !l.is_empty()).map(PathBuf::from).collect())
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
    #[test]
    fn root_s_amnesic_services_live_where_the_system_service_keeps_them() {
        use std::ffi::OsString;
        let none = |_: &str| None;
        let session = |var: &str| (var == "XDG_RUNTIME_DIR").then(|| OsString::from("/run/user/1000"));
        // root in a container or on a plain Debian: no variable, no /run/user/0.
        assert_eq!(super::runtime_dir_for(0, none, false).unwrap(), std::path::Path::new("/run/tails-server"));
        assert_eq!(super::runtime_dir_for(0, session, true).unwrap(), std::path::Path::new("/run/tails-server"));
        assert_eq!(
            super::runtime_dir_for(1000, session, true).unwrap(),
            std::path::Path::new("/run/user/1000/tails-server")
        );
        assert_eq!(
            super::runtime_dir_for(1000, none, true).unwrap(),
            std::path::Path::new("/run/user/1000/tails-server")
        );
        let error = super::runtime_dir_for(1000, none, false).unwrap_err();
        assert!(error.to_string().contains("TAILS_SERVER_RUNTIME_DIR"), "{error}");
        let explicit = |var: &str| (var == "TAILS_SERVER_RUNTIME_DIR").then(|| OsString::from("/tmp/x"));
        assert_eq!(super::runtime_dir_for(0, explicit, false).unwrap(), std::path::Path::new("/tmp/x"));
    }

    #[test]
    fn the_persistent_storage_is_there_only_when_mounted() {
        let mounted = "36 25 0:32 / / rw,relatime - overlay overlay rw\n\
                       40 36 253:1 / /live/persistence/TailsData_unlocked rw,noatime - ext4 /dev/mapper/TailsData_unlocked rw\n";
        let unmounted = "36 25 0:32 / / rw,relatime - overlay overlay rw\n";
        let path = std::path::Path::new(super::PERSISTENT_STORAGE);
        assert!(super::is_mount_point(mounted, path));
        assert!(!super::is_mount_point(unmounted, path));
        assert!(super::is_mount_point("1 2 0:1 / /a\\040b rw - x y rw\n", std::path::Path::new("/a b")));
    }

    use super::*;

    #[test]
    fn a_package_s_files_come_from_its_dpkg_list_with_or_without_an_architecture() {
        let info = tempfile::tempdir().unwrap();
        std::fs::write(info.path().join("mumble-server.list"), "/.\n/usr/bin/mumble-server\n/etc/mumble\n").unwrap();
        std::fs::write(info.path().join("libfoo1:amd64.list"), "/usr/lib/libfoo.so.1\n").unwrap();
        let files = package_files_in(info.path(), "mumble-server").unwrap();
        assert!(files.contains(&PathBuf::from("/usr/bin/mumble-server")));
        assert_eq!(package_files_in(info.path(), "libfoo1").unwrap(), vec![PathBuf::from("/usr/lib/libfoo.so.1")]);
        assert_eq!(package_files_in(info.path(), "lighttpd"), None);
    }

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
