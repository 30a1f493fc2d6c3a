//! `tails-server setup`: makes tails-server come back at every login on Tails.
//!
//! Tails installs third-party programs only through Additional Software, which installs,
//! at each login and offline, the packages listed in `live-additional-software.conf` from
//! apt's persisted lists and cache. So setup (run once, as root) puts the .deb in a local
//! apt repository on the Persistent Storage, adds that repository to apt's sources through
//! the custom persistence feature Tails documents (`/etc/apt/sources.list.d
//! source=apt-sources.list.d,link`), fetches its index into the persisted lists, and lists
//! the package in Additional Software. At the next login Tails installs the package; its
//! system unit starts, waits for tor and republishes. Every step is idempotent; `undo`
//! takes them back and keeps the services' store.

use std::fmt::Write as _;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

pub const PACKAGE: &str = "tails-server";
/// The window, a package of its own so that a computer without a desktop needs no GTK.
pub const GUI_PACKAGE: &str = "tails-server-gui";
/// What setup puts in the repository and in Additional Software.
const OUR_PACKAGES: [&str; 2] = [PACKAGE, GUI_PACKAGE];
/// The local apt repository on the Persistent Storage.
const REPOSITORY_DIR: &str = "tails-server-apt";
/// Our sources entry.
const SOURCES_FILE: &str = "tails-server.list";
/// Where Tails' documentation keeps persistent apt sources.
const DEFAULT_SOURCES_DIR: &str = "apt-sources.list.d";
const SOURCES_DESTINATION: &str = "/etc/apt/sources.list.d";
const PERSISTENCE_CONF: &str = "persistence.conf";
const ADDITIONAL_SOFTWARE_CONF: &str = "live-additional-software.conf";
/// tps owns its configuration files and refuses others (persistence.conf is renamed
/// `.invalid` when not this user's, 0600).
const TPS_USER: &str = "tails-persistent-storage";
/// The Persistent Storage service on the system bus (its name is also its interface's).
const TPS_BUS_NAME: &str = "org.boum.tails.PersistentStorage";
const TPS_OBJECT: &str = "/org/boum/tails/PersistentStorage";

/// Where setup reads and writes: Tails' paths, or the same layout under a test root.
#[derive(Debug, Clone)]
pub struct SetupPaths {
    pub persistent_storage: PathBuf,
    /// What apt reads its sources from (`/etc/apt/sources.list.d`).
    pub etc_sources: PathBuf,
    /// apt's lists, persisted by the Additional Software feature.
    pub apt_lists: PathBuf,
    /// Tails' command-line client of the Persistent Storage service.
    pub tpscli: PathBuf,
    /// On Tails: the Persistent Storage and the Additional Software feature must be mounted,
    /// and tps's configuration files belong to tps's user.
    pub tails: bool,
}

impl SetupPaths {
    pub fn tails() -> Self {
        Self {
            persistent_storage: PathBuf::from(super::PERSISTENT_STORAGE),
            etc_sources: PathBuf::from(SOURCES_DESTINATION),
            apt_lists: PathBuf::from("/var/lib/apt/lists"),
            tpscli: PathBuf::from("/usr/local/lib/tpscli"),
            tails: true,
        }
    }

    /// The same layout under `root`, without Tails' mounts (tests, image builds).
    pub fn under(root: &Path) -> Self {
        Self {
            persistent_storage: root.join("live/persistence/TailsData_unlocked"),
            etc_sources: root.join("etc/apt/sources.list.d"),
            apt_lists: root.join("var/lib/apt/lists"),
            tpscli: root.join("usr/local/lib/tpscli"),
            tails: false,
        }
    }

    fn repository(&self) -> PathBuf {
        self.persistent_storage.join(REPOSITORY_DIR)
    }
}

/// One step and whether it changed anything (false: it was already so).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub what: String,
    pub changed: bool,
}

#[derive(Debug, Clone, Default)]
pub struct SetupReport {
    pub version: Option<String>,
    pub steps: Vec<Step>,
}

impl SetupReport {
    fn step(&mut self, what: impl Into<String>, changed: bool) {
        self.steps.push(Step { what: what.into(), changed });
    }
}

fn require_root() -> Result<()> {
    if crate::unix::euid() != 0 {
        return Err(Error::NotAuthorized(
            "setup changes apt's sources and the Persistent Storage's configuration, which only root may do".into(),
        ));
    }
    Ok(())
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |e| Error::io(action, path, e)
}

/// Makes tails-server permanent: see the module documentation. `debs`: tails-server's
/// package, and the window's if wanted (an upgrade may bring either alone, once both are
/// set up).
pub fn setup(paths: &SetupPaths, debs: &[PathBuf]) -> Result<SetupReport> {
    require_root()?;
    let mut report = SetupReport::default();
    if paths.tails && super::persistent_storage_missing_for(&paths.persistent_storage) {
        return Err(Error::PersistentStorageLocked);
    }
    // A folder of downloads may hold older versions beside the new one (`--deb
    // tails-server_*.deb`): of each package, the newest is set up and the others are said.
    let mut given: Vec<Package> = Vec::new();
    for deb in debs {
        given.push(Package::read(deb)?);
    }
    let mut packages: Vec<Package> = Vec::new();
    for package in &given {
        match packages.iter_mut().find(|p| p.name == package.name) {
            None => packages.push(package.clone()),
            Some(kept) if compare_versions(package, kept)? == std::cmp::Ordering::Greater => *kept = package.clone(),
            Some(_) => {}
        }
    }
    let mut left_out: Vec<(PathBuf, String)> = Vec::new();
    for package in given {
        let Some(chosen) = packages.iter().find(|p| p.name == package.name && p.path != package.path) else {
            continue;
        };
        let why = if compare_versions(&package, chosen)? == std::cmp::Ordering::Equal {
            format!("the same version as {}", chosen.path.display())
        } else {
            format!("{} {} is newer", chosen.name, chosen.version)
        };
        left_out.push((package.path, why));
    }
    let Some(first) = debs.first() else {
        return Ok(report); // nothing to set up
    };
    let server_set_up = installed_at_every_login(&paths.persistent_storage)?;
    if !server_set_up && !packages.iter().any(|p| p.name == PACKAGE) {
        return Err(Error::InvalidPackage {
            path: first.clone(),
            reason: format!("{GUI_PACKAGE} needs {PACKAGE}, which is not set up: give both packages (--deb tails-server_….deb tails-server-gui_….deb)"),
        });
    }
    report.version = packages.iter().find(|p| p.name == PACKAGE).or(packages.first()).map(|p| p.version.clone());
    for (path, why) in left_out {
        report.step(format!("{} left out: {why}", path.display()), false);
    }

    ensure_additional_software(paths, &mut report)?;

    let state = paths.persistent_storage.join("tails-server");
    let existed = state.is_dir();
    crate::secret_file::create_dir_all_private(&state)?;
    report.step(format!("the store's directory {}", state.display()), !existed);

    let changed = write_repository(paths, &packages)?;
    let held: Vec<String> = packages.iter().map(|p| format!("{} {}", p.name, p.version)).collect();
    report.step(
        format!("the local apt repository {} holds {}", paths.repository().display(), held.join(" and ")),
        changed,
    );

    let sources_dir = sources_dir(paths)?;
    let list = paths.persistent_storage.join(&sources_dir).join(SOURCES_FILE);
    let entry = format!("deb [trusted=yes] file:{} ./\n", paths.repository().display());
    public_dir(&paths.persistent_storage.join(&sources_dir))?;
    let changed = write_public_file(&list, entry.as_bytes())?;
    report.step(format!("apt's source for it, {}", list.display()), changed);

    let changed = add_persistence_line(paths, &sources_dir)?;
    if paths.tails {
        // Even when unchanged: tps may not have read the file since an earlier setup wrote it.
        reload_tps()?;
    }
    report.step(format!("the custom persistence feature \"{SOURCES_DESTINATION} source={sources_dir},link\""), changed);

    // What tps would do at the next activation, done now so that apt sees it at once.
    let link = paths.etc_sources.join(SOURCES_FILE);
    let changed = match std::fs::symlink_metadata(&link) {
        Ok(_) => false,
        Err(_) => {
            std::fs::create_dir_all(&paths.etc_sources).map_err(io("cannot create", &paths.etc_sources))?;
            std::os::unix::fs::symlink(&list, &link).map_err(io("cannot link", &link))?;
            true
        }
    };
    report.step(format!("{} for this session", link.display()), changed);

    update_index(paths, &link)?;
    report.step("apt's index of the local repository, in the persisted lists", true);

    let names: Vec<String> = packages.iter().map(|p| p.name.to_owned()).collect();
    let changed = edit_additional_software_list(paths, &names, true)?;
    report.step(format!("{} in Additional Software ({ADDITIONAL_SOFTWARE_CONF})", names.join(" and ")), changed);
    Ok(report)
}

/// Takes back what [`setup`] did. The store (the services, their keys) is kept.
pub fn undo(paths: &SetupPaths) -> Result<SetupReport> {
    require_root()?;
    let mut report = SetupReport::default();
    if paths.tails && super::persistent_storage_missing_for(&paths.persistent_storage) {
        return Err(Error::PersistentStorageLocked);
    }
    let ours: Vec<String> = OUR_PACKAGES.iter().map(|p| p.to_string()).collect();
    let changed = edit_additional_software_list(paths, &ours, false)?;
    report.step(format!("{} taken out of Additional Software", OUR_PACKAGES.join(" and ")), changed);

    let sources_dir = sources_dir(paths)?;
    let dir = paths.persistent_storage.join(&sources_dir);
    let list = dir.join(SOURCES_FILE);
    let changed = remove_file(&list)? | remove_file(&paths.etc_sources.join(SOURCES_FILE))?;
    report.step(format!("apt's source {} removed", list.display()), changed);

    // The feature line goes only if it is the one setup adds and nothing else uses it.
    let empty = match std::fs::read_dir(&dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    };
    let mut changed = false;
    if sources_dir == DEFAULT_SOURCES_DIR && empty {
        changed = remove_persistence_line(paths, &sources_dir)?;
        let _ = std::fs::remove_dir(&dir);
        if changed && paths.tails {
            reload_tps()?;
        }
    }
    report.step("the custom persistence feature for apt's sources (when nothing else uses it) removed", changed);

    let repository = paths.repository();
    let changed = repository.exists();
    if changed {
        std::fs::remove_dir_all(&repository).map_err(io("cannot remove", &repository))?;
    }
    report.step(format!("the local apt repository {} removed", repository.display()), changed);
    Ok(report)
}

fn remove_file(path: &Path) -> Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("cannot remove", path, e)),
    }
}

/// How `a`'s version compares with `b`'s, as dpkg (which Tails has) orders Debian versions:
/// epochs, `~` before anything, revisions.
fn compare_versions(a: &Package, b: &Package) -> Result<std::cmp::Ordering> {
    let holds = |relation: &str| -> Result<bool> {
        let status = Command::new("dpkg")
            .args(["--compare-versions", &a.version, relation, &b.version])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .map_err(|e| Error::io("cannot run dpkg to compare versions", Path::new("dpkg"), e))?;
        match status.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(Error::InvalidPackage {
                path: a.path.clone(),
                reason: format!(
                    "dpkg cannot compare its version {:?} with {:?} ({})",
                    a.version,
                    b.version,
                    b.path.display()
                ),
            }),
        }
    };
    Ok(if holds("gt")? {
        std::cmp::Ordering::Greater
    } else if holds("eq")? {
        std::cmp::Ordering::Equal
    } else {
        std::cmp::Ordering::Less
    })
}

/// One of our .deb files, as its control data says.
#[derive(Clone)]
struct Package {
    path: PathBuf,
    name: &'static str,
    version: String,
    arch: String,
    control: String,
}

impl Package {
    /// Reads `deb`'s control data, through dpkg-deb (which Tails has); refuses a package
    /// that is not ours.
    fn read(deb: &Path) -> Result<Package> {
        let control = read_control(deb)?;
        let bad = |reason: String| Error::InvalidPackage { path: deb.to_owned(), reason };
        let found = field(&control, "Package").unwrap_or_default();
        let name = OUR_PACKAGES
            .iter()
            .copied()
            .find(|p| *p == found)
            .ok_or_else(|| bad(format!("it is the package {found:?}, not {}", OUR_PACKAGES.join(" or "))))?;
        let version = field(&control, "Version")
            .filter(|v| !v.is_empty())
            .ok_or_else(|| bad("its control data has no Version".into()))?;
        let arch = field(&control, "Architecture").unwrap_or_else(|| "amd64".into());
        Ok(Package { path: deb.to_owned(), name, version, arch, control })
    }

    /// Its name in the repository, as apt names downloaded packages.
    fn file_name(&self) -> String {
        format!("{}_{}_{}.deb", self.name, self.version.replace(':', "%3a"), self.arch)
    }
}

/// The .deb's control fields, through dpkg-deb (which Tails has).
fn read_control(deb: &Path) -> Result<String> {
    let bad = |reason: String| Error::InvalidPackage { path: deb.to_owned(), reason };
    let output = Command::new("dpkg-deb")
        .arg("--field")
        .arg(deb)
        .output()
        .map_err(|e| bad(format!("cannot run dpkg-deb: {e}")))?;
    if !output.status.success() {
        return Err(bad(format!(
            "not a Debian package: {}",
            String::from_utf8_lossy(&output.stderr).trim().trim_start_matches("dpkg-deb: error: ")
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn field(control: &str, name: &str) -> Option<String> {
    control.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':').map(|v| v.trim().to_owned()))
}

/// Additional Software keeps apt's lists and cache on the Persistent Storage: without it
/// the index setup writes, and so the offline install at login, would be gone at shutdown.
fn ensure_additional_software(paths: &SetupPaths, report: &mut SetupReport) -> Result<()> {
    if !paths.tails {
        return Ok(());
    }
    let mounted =
        || std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|m| super::is_mount_point(&m, &paths.apt_lists));
    if mounted() {
        report.step("the Additional Software feature of the Persistent Storage is on", false);
        return Ok(());
    }
    let turned_on = paths.tpscli.is_file()
        && Command::new(&paths.tpscli)
            .args(["ensure-is-active", "AdditionalSoftware"])
            .status()
            .is_ok_and(|s| s.success());
    if turned_on && mounted() {
        report.step("the Additional Software feature of the Persistent Storage turned on", true);
        return Ok(());
    }
    Err(Error::NotSupported {
        what: "setup".into(),
        reason: "the Additional Software feature of the Persistent Storage is off and could not be turned on; \
                 turn it on in Applications ▸ Tails ▸ Persistent Storage, then run setup again"
            .into(),
    })
}

fn public_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o755).create(dir).map_err(io("cannot create", dir))
}

/// Writes a file others may read (apt's sources and repository), atomically; returns
/// whether its contents changed.
fn write_public_file(path: &Path, contents: &[u8]) -> Result<bool> {
    if std::fs::read(path).is_ok_and(|old| old == contents) {
        return Ok(false);
    }
    replace_file(path, contents, 0o644, None)?;
    Ok(true)
}

/// Writes `path` through a new temporary file beside it (created exclusively, never through
/// a link), given its mode and owner on the open file, fsynced, renamed over `path`, and the
/// directory fsynced. A failure removes the temporary file and leaves `path` as it was.
fn replace_file(path: &Path, contents: &[u8], mode: u32, owner: Option<(u32, u32)>) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut suffix = [0u8; 6];
    getrandom::fill(&mut suffix).map_err(|e| Error::Random(e.to_string()))?;
    let tmp = path.with_extension(format!("tails-server-{}", data_encoding::HEXLOWER.encode(&suffix)));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
        }
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io("cannot write", path, e)
    })
}

/// The .debs, their `Packages` index and a `Release` file: a flat repository apt reads
/// offline. A package given replaces its earlier versions; one set up before and not given
/// now (the window's, in an upgrade of tails-server alone) stays, and stays in the index.
fn write_repository(paths: &SetupPaths, packages: &[Package]) -> Result<bool> {
    let repository = paths.repository();
    public_dir(&repository)?;
    let mut changed = false;
    for package in packages {
        let bytes = std::fs::read(&package.path).map_err(io("cannot read", &package.path))?;
        let file_name = package.file_name();
        changed |= write_public_file(&repository.join(&file_name), &bytes)?;
        for entry in std::fs::read_dir(&repository).map_err(io("cannot read", &repository))? {
            let name = entry.map_err(io("cannot read", &repository))?.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(&format!("{}_", package.name)) && name.ends_with(".deb") && name != file_name {
                changed |= remove_file(&repository.join(name.as_ref()))?;
            }
        }
    }
    let mut held: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(&repository).map_err(io("cannot read", &repository))? {
        let name = entry.map_err(io("cannot read", &repository))?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".deb") {
            held.push(name);
        }
    }
    held.sort();
    let mut index = String::new();
    for file_name in &held {
        let path = repository.join(file_name);
        let package = Package::read(&path)?;
        let bytes = std::fs::read(&path).map_err(io("cannot read", &path))?;
        if !index.is_empty() {
            index.push('\n');
        }
        let _ = write!(
            index,
            "{}\nFilename: ./{file_name}\nSize: {}\nSHA256: {}\n",
            package.control.trim_end(),
            bytes.len(),
            data_encoding::HEXLOWER.encode(&Sha256::digest(&bytes))
        );
    }
    changed |= write_public_file(&repository.join("Packages"), index.as_bytes())?;
    let release = format!(
        // Long past: a Release dated "now" would be "not valid yet" to apt whenever Tails'
        // clock is behind (before it is set once tor is connected).
        "Origin: tails-server\nLabel: tails-server (local, written by tails-server setup)\n\
         Date: Thu, 01 Jan 1970 00:00:00 UTC\nSHA256:\n {} {} Packages\n",
        data_encoding::HEXLOWER.encode(&Sha256::digest(index.as_bytes())),
        index.len()
    );
    changed |= write_public_file(&repository.join("Release"), release.as_bytes())?;
    Ok(changed)
}

/// persistence.conf's lines: (destination, options) for the ones tps can read.
fn persistence_lines(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (dest, options) = (fields.next()?, fields.next()?);
            (fields.next().is_none() && !dest.starts_with('#')).then(|| (dest.to_owned(), options.to_owned()))
        })
        .collect()
}

fn source_of(options: &str) -> Option<&str> {
    options.split(',').find_map(|o| o.strip_prefix("source="))
}

/// The persistent directory linked to /etc/apt/sources.list.d: an existing custom feature's
/// (Tails' documentation and its Dangerzone instructions use different ones), else ours.
fn sources_dir(paths: &SetupPaths) -> Result<String> {
    let text = read_optional(&paths.persistent_storage.join(PERSISTENCE_CONF))?;
    let existing = persistence_lines(&text).into_iter().find_map(|(dest, options)| {
        (dest == SOURCES_DESTINATION && options.split(',').any(|o| o == "link"))
            .then(|| source_of(&options).map(str::to_owned))?
    });
    match existing {
        Some(dir) if !dir.is_empty() && !dir.starts_with('/') && !dir.split('/').any(|p| p == "..") => Ok(dir),
        Some(dir) => Err(Error::NotSupported {
            what: "setup".into(),
            reason: format!("persistence.conf links {SOURCES_DESTINATION} to {dir:?}, which setup does not understand"),
        }),
        None => Ok(DEFAULT_SOURCES_DIR.to_owned()),
    }
}

fn read_optional(path: &Path) -> Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(Error::io("cannot read", path, e)),
    }
}

fn our_line(sources_dir: &str) -> String {
    format!("{SOURCES_DESTINATION}\tsource={sources_dir},link")
}

fn add_persistence_line(paths: &SetupPaths, sources_dir: &str) -> Result<bool> {
    let path = paths.persistent_storage.join(PERSISTENCE_CONF);
    let text = read_optional(&path)?;
    if persistence_lines(&text).iter().any(|(dest, options)| {
        dest == SOURCES_DESTINATION
            && source_of(options) == Some(sources_dir)
            && options.split(',').any(|o| o == "link")
    }) {
        return Ok(false);
    }
    let mut new = text.clone();
    if !new.is_empty() && !new.ends_with('\n') {
        new.push('\n');
    }
    new.push_str(&our_line(sources_dir));
    new.push('\n');
    write_tps_file(paths, &path, new.as_bytes(), 0o600)?;
    Ok(true)
}

/// tps (the Persistent Storage service) reads persistence.conf at unlock and keeps its
/// features in memory; the next time any feature is turned on or off it rewrites the file
/// from memory, dropping a line added behind its back. Asked to read the file again, it
/// keeps it.
fn reload_tps() -> Result<()> {
    let failed = |e: &dyn std::fmt::Display| Error::NotSupported {
        what: "setup".into(),
        reason: format!(
            "the Persistent Storage service did not read persistence.conf again ({e}): it would drop the line \
             setup added at the next change of a Persistent Storage feature; run setup again"
        ),
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| failed(&e))?;
    runtime.block_on(async {
        let connection = zbus::Connection::system().await.map_err(|e| failed(&e))?;
        connection
            .call_method(Some(TPS_BUS_NAME), TPS_OBJECT, Some(TPS_BUS_NAME), "Reload", &())
            .await
            .map_err(|e| failed(&e))?;
        Ok(())
    })
}

fn remove_persistence_line(paths: &SetupPaths, sources_dir: &str) -> Result<bool> {
    let path = paths.persistent_storage.join(PERSISTENCE_CONF);
    let text = read_optional(&path)?;
    let ours = our_line(sources_dir);
    let kept: Vec<&str> =
        text.lines().filter(|l| l.split_whitespace().collect::<Vec<_>>().join("\t") != ours).collect();
    if kept.len() == text.lines().count() {
        return Ok(false);
    }
    let mut new = kept.join("\n");
    if !new.is_empty() {
        new.push('\n');
    }
    write_tps_file(paths, &path, new.as_bytes(), 0o600)?;
    Ok(true)
}

/// Adds or removes packages in Additional Software's list, written as Tails writes it
/// (sorted, one per line, no final newline, tps's user, 0644); returns whether it changed.
fn edit_additional_software_list(paths: &SetupPaths, names: &[String], present: bool) -> Result<bool> {
    let path = paths.persistent_storage.join(ADDITIONAL_SOFTWARE_CONF);
    let text = read_optional(&path)?;
    let mut packages: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect();
    // Tails compares names without their /release, =version or :arch.
    let bare = |p: &str| p.split(['/', ':', '=']).next().unwrap_or_default().to_owned();
    let before = packages.clone();
    for name in names {
        let listed = packages.iter().any(|p| bare(p) == *name);
        if present && !listed {
            packages.push(name.clone());
        } else if !present {
            packages.retain(|p| bare(p) != *name);
        }
    }
    if packages == before {
        return Ok(false);
    }
    packages.sort();
    packages.dedup();
    write_tps_file(paths, &path, packages.join("\n").as_bytes(), 0o644)?;
    Ok(true)
}

/// Whether Additional Software installs tails-server at every login, offline: its list on
/// the Persistent Storage mounted at `persistent_storage` names it (with or without a
/// `/release`, `=version` or `:arch`, as Tails reads it) and setup's repository there holds
/// it. The list alone is not enough: Tails' own "Install Every Time", answered after `apt
/// install ./….deb`, lists a package whose file no login can find again.
pub fn installed_at_every_login(persistent_storage: &Path) -> Result<bool> {
    let text = read_optional(&persistent_storage.join(ADDITIONAL_SOFTWARE_CONF))?;
    if !text.lines().map(str::trim).any(|p| p.split(['/', ':', '=']).next() == Some(PACKAGE)) {
        return Ok(false);
    }
    let repository = persistent_storage.join(REPOSITORY_DIR);
    let held = match std::fs::read_dir(&repository) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io("cannot read", &repository, e)),
    };
    for entry in held {
        let name = entry.map_err(io("cannot read", &repository))?.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&format!("{PACKAGE}_")) && name.ends_with(".deb") {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The packages Additional Software installs at every login.
pub fn additional_software(paths: &SetupPaths) -> Result<Vec<String>> {
    let text = read_optional(&paths.persistent_storage.join(ADDITIONAL_SOFTWARE_CONF))?;
    Ok(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect())
}

/// Installs the programs of the catalog's kinds the person chose (their packages, e.g.
/// mumble-server), through Additional Software: listed first (so that Tails does not ask
/// whether to install them every time, and installs them again at every login, offline, from
/// the Persistent Storage's copy of apt's cache), then installed now with apt, which needs
/// the network (on Tails, through tor). A failed installation takes the new entries back out,
/// so that no login tries to install what was never downloaded.
pub fn install_programs(paths: &SetupPaths, programs: &[(String, Vec<String>)]) -> Result<SetupReport> {
    require_root()?;
    let mut report = SetupReport::default();
    if paths.tails && super::persistent_storage_missing_for(&paths.persistent_storage) {
        return Err(Error::PersistentStorageLocked);
    }
    if programs.is_empty() {
        return Ok(report);
    }
    ensure_additional_software(paths, &mut report)?;
    let packages: Vec<String> = programs.iter().flat_map(|(_, p)| p.iter().cloned()).collect();
    let listed_before = additional_software(paths)?;
    let new: Vec<String> = packages
        .iter()
        .filter(|p| !listed_before.iter().any(|l| l.split(['/', ':', '=']).next() == Some(p.as_str())))
        .cloned()
        .collect();
    let kinds = programs.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(", ");
    let changed = edit_additional_software_list(paths, &packages, true)?;
    report.step(format!("{} in Additional Software ({kinds})", packages.join(" ")), changed);
    if !paths.tails {
        // Under a test root: the files only; apt would change this computer.
        return Ok(report);
    }
    let installed = run_apt(&["update"]).and_then(|()| {
        let mut install = vec!["install", "--yes", "--no-install-recommends"];
        install.extend(packages.iter().map(String::as_str));
        run_apt(&install)
    });
    if let Err(e) = installed {
        let _ = edit_additional_software_list(paths, &new, false);
        return Err(e);
    }
    report.step(format!("{} installed now (and at every login, offline)", packages.join(" ")), true);
    Ok(report)
}

/// Runs apt-get as Tails' own tools do, without questions; its error output in the error.
fn run_apt(args: &[&str]) -> Result<()> {
    let mut apt = Command::new("apt-get");
    apt.env("LC_ALL", "C").env("DEBIAN_FRONTEND", "noninteractive").arg("--quiet").args(args);
    let output = apt
        .output()
        .map_err(|e| Error::Daemon { unit: format!("apt-get {}", args[0]), detail: format!("cannot run it: {e}") })?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    // A warning (a legacy keyring, a source listed twice) is not a failure; an index that
    // could not be fetched is, even when apt-get exits 0 about it.
    let fatal =
        |l: &&str| l.starts_with("E:") || l.contains("Failed to fetch") || l.contains("Some index files failed");
    let failed = !output.status.success() || stderr.lines().any(|l| fatal(&l));
    if failed {
        let errors: Vec<&str> = stderr.lines().filter(fatal).collect();
        let hint = if args[0] == "update" {
            "; installing a program needs the network: connect to Tor, then run setup again"
        } else {
            ""
        };
        return Err(Error::Daemon {
            unit: format!("apt-get {}", args[0]),
            detail: format!(
                "it failed: {}{hint}",
                if errors.is_empty() { stderr.trim().to_owned() } else { errors.join(" ") }
            ),
        });
    }
    Ok(())
}

/// Writes one of tps's files as tps does: a temporary file beside it, tps's user, then a
/// rename over it.
fn write_tps_file(paths: &SetupPaths, path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let owner = match crate::unix::ids_of(TPS_USER) {
        Some(ids) => ids,
        None if !paths.tails => (0, 0),
        None => {
            return Err(Error::NotSupported {
                what: "setup".into(),
                reason: format!("there is no user {TPS_USER}: this does not look like Tails"),
            })
        }
    };
    replace_file(path, contents, mode, Some(owner))
}

/// Fetches the local repository's index into apt's lists, and only it (Tails may be
/// offline; the other sources' lists are left as they are).
fn update_index(paths: &SetupPaths, list: &Path) -> Result<()> {
    let mut apt = Command::new("apt-get");
    apt.env("LC_ALL", "C")
        .args(["--quiet", "update"])
        .arg(format!("-oDir::Etc::SourceList={}", list.display()))
        .arg("-oDir::Etc::SourceParts=-")
        .arg("-oAPT::Get::List-Cleanup=0")
        // The repository is in root's Persistent Storage, which apt's _apt user cannot
        // read; the only source here is that local directory.
        .arg("-oAPT::Sandbox::User=root");
    if !paths.tails {
        std::fs::create_dir_all(paths.apt_lists.join("partial")).map_err(io("cannot create", &paths.apt_lists))?;
        apt.arg(format!("-oDir::State::Lists={}", paths.apt_lists.display()));
    }
    let output =
        apt.output().map_err(|e| Error::Daemon { unit: "apt-get".into(), detail: format!("cannot run it: {e}") })?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() || stderr.lines().any(|l| l.starts_with("E:") || l.starts_with("W:")) {
        return Err(Error::Daemon {
            unit: "apt-get update".into(),
            detail: format!("it could not read the local repository: {}", stderr.trim()),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_existing_sources_feature_is_reused() {
        let lines = persistence_lines(
            "/home/amnesia/Persistent\tsource=Persistent\n/etc/apt/sources.list.d\tsource=apt/sources,link\n",
        );
        assert_eq!(lines[1], ("/etc/apt/sources.list.d".to_owned(), "source=apt/sources,link".to_owned()));
        assert_eq!(source_of(&lines[1].1), Some("apt/sources"));
    }
}
