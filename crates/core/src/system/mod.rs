//! The daemons behind the catalog's kinds (Mumble, Gobby, a web site…): what each one is
//! given, and starting and stopping them through systemd. Like tor, they follow the store:
//! an enabled service's daemon runs, configured from its options; a disabled or removed
//! one's does not.
//!
//! Each daemon runs as a transient systemd unit `tails-server-<service>.service`: nothing
//! is written to /etc (Tails' root is a tmpfs overlay anyway), the unit is rebuilt from the
//! store at every start, and systemd sandboxes it. The daemon's data lives beside the store
//! that holds the service, `<store>/data/<service>/` (root-only, like the store; for an
//! amnesic service, below [`AMNESIC_FILES_DIR`] in the runtime directory), and is
//! bind-mounted into the unit at `/var/lib/tails-server/<service>`; its configuration is
//! written to the runtime directory and mounted read-only at `/etc/tails-server/<service>`.
//!
//! A persistent service's data directory is the mount point of an image of bounded size,
//! `data/<service>.img` (see [`volume`]): its friends cannot fill the Persistent Storage.
//!
//! A data directory belongs to a service, not to its name: `data/<service>.owner` records
//! the onion address of the service it is for, and a directory found there for another
//! address is set aside into `kept-data/` before the program starts, never handed over.
//!
//! Each program has a network namespace of its own (only a loopback, where nobody else can
//! listen, and no way out) and is reached through its door: a Unix socket systemd holds in
//! tor's data directory, given to tor as the onion service's target, whose connections
//! systemd's socket proxy carries to the program's port inside the namespace (see
//! [`systemd::Door`]). A local user who takes the program's port on the computer receives
//! nothing; with allow-lan-connections the door also listens on the port for the LAN.

pub mod configs;
pub mod lan;
pub mod systemd;
pub mod volume;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::catalog::{KindDefinition, BUILTIN_DAEMONS};
use crate::error::{Error, Result};
use crate::model::ServiceRecord;
use crate::names::ServiceName;
use crate::options::{OptionValue, ALLOW_LAN};
use crate::tails::InstalledPackages;
use serde::{Deserialize, Serialize};

use configs::{RenderInput, Rendered};
use systemd::{Door, Systemd, TransientService};

/// Where the programs' doors are: below tor's data directory, which only tor's user (and
/// root) may enter, and where tor's AppArmor profile lets tor connect to a socket it owns.
pub const DOORS_DIR: &str = "/var/lib/tor/tails-server";

/// The user tor runs as on Debian and Tails: it owns the doors.
pub const TOR_USER: &str = "debian-tor";

/// Files of a daemon's data directory that are key material, scrubbed (overwritten) before
/// the rest of the directory is deleted with the service: SFTP's host key, Mumble's database
/// (which holds the server certificate's private key).
pub fn secret_files(kind: &KindDefinition) -> &'static [&'static str] {
    match kind.daemon.as_deref() {
        Some("sftp") => SFTP_SECRETS,
        Some("mumble") => MUMBLE_SECRETS,
        _ => &[],
    }
}

const SFTP_SECRETS: &[&str] = &[configs::SSH_HOST_KEY, configs::SSH_HOST_KEY_PUB];
const MUMBLE_SECRETS: &[&str] = &[configs::MUMBLE_DATABASE, "mumble-server.sqlite-journal", "mumble-server.sqlite-wal"];

/// Every program's key material, whatever the kind: for data set aside, whose kind is not
/// recorded.
pub fn every_program_secret() -> impl Iterator<Item = &'static str> {
    SFTP_SECRETS.iter().chain(MUMBLE_SECRETS).copied()
}

/// The unit that runs a service's daemon.
pub fn unit_name(service: &ServiceName) -> String {
    format!("tails-server-{service}.service")
}

/// The Unix socket tor is given as a service's target when tails-server runs its program.
pub fn door_path(service: &ServiceName) -> PathBuf {
    Path::new(DOORS_DIR).join(format!("{service}.sock"))
}

/// The socket and proxy units of a service's door. A dot cannot appear in a service name, so
/// these never clash with a service's own unit.
pub fn door_units(service: &ServiceName) -> (String, String) {
    (format!("tails-server.door.{service}.socket"), format!("tails-server.door.{service}.service"))
}

/// What a service's door is opened with: while it stays the same, the door stays open through
/// the program's restarts.
pub fn door_configuration(plan: &DaemonPlan) -> String {
    let door = door(plan);
    format!("{} owned by {}, port {}, LAN {:?}", door.path.display(), door.path_owner, door.port, door.lan_port)
}

fn door(plan: &DaemonPlan) -> Door {
    let (socket_unit, proxy_unit) = door_units(&plan.service);
    Door {
        socket_unit,
        proxy_unit,
        program_unit: plan.unit.clone(),
        path: door_path(&plan.service),
        path_owner: TOR_USER.to_owned(),
        lan_port: plan.lan.then_some(plan.port),
        port: plan.port,
    }
}

/// Where a service's daemon keeps its data, in its store's [`files_root`].
pub fn data_dir(files_dir: &Path, service: &ServiceName) -> PathBuf {
    files_dir.join("data").join(service.as_str())
}

/// Where the amnesic services' data (`data/`, `kept-data/`) lives in the runtime directory.
/// On Tails the system service's unit mounts a tmpfs of its own there, of bounded size: what
/// an amnesic service's friends upload stays in memory, as it must, but cannot fill /run,
/// which tor, systemd and the session need, nor the runtime directory, which holds the
/// amnesic store and what tor was asked to run.
pub const AMNESIC_FILES_DIR: &str = "files";

/// The directory holding a store's `data/` and `kept-data/`: the persistent store's own, or
/// [`AMNESIC_FILES_DIR`] in the runtime directory (the amnesic store's).
pub fn files_root(store_dir: &Path, persistent: bool) -> PathBuf {
    if persistent {
        store_dir.to_path_buf()
    } else {
        store_dir.join(AMNESIC_FILES_DIR)
    }
}

/// Where a service's program keeps its data in the store at `store_dir`.
pub fn service_data_dir(store_dir: &Path, persistent: bool, service: &ServiceName) -> PathBuf {
    data_dir(&files_root(store_dir, persistent), service)
}

/// Where data directories that belong to no current service are set aside, beside `data/`:
/// one found under a new service's name, or a removed service's when the person kept it.
pub const KEPT_DATA_DIR: &str = "kept-data";

/// The file beside a data directory naming the service it belongs to (its onion address): a
/// name is reused, an address never.
pub fn data_owner_file(data_dir: &Path) -> PathBuf {
    let mut name = data_dir.file_name().unwrap_or_default().to_owned();
    name.push(".owner");
    data_dir.with_file_name(name)
}

/// Moves a data directory into [`KEPT_DATA_DIR`] (`<name>-<unix time>`, root-only like the
/// store) and forgets its owner; returns where it went. A persistent service's data is its
/// image, which moves (`<name>-<unix time>.img`); its mount point stays, let go by the next
/// reconcile ([`volume::collect`]).
pub fn set_data_aside(data_dir: &Path) -> Result<PathBuf> {
    let store = data_dir.parent().and_then(Path::parent).unwrap_or(Path::new("."));
    let kept = store.join(KEPT_DATA_DIR);
    crate::secret_file::create_dir_all_private(&kept)?;
    let name = data_dir.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let image = volume::image_of(data_dir);
    let (source, extension) = if std::fs::symlink_metadata(&image).is_ok() {
        (image.as_path(), volume::IMAGE_EXTENSION)
    } else {
        (data_dir, "")
    };
    let now = crate::model::now_unix();
    let taken = |stem: &str| {
        [stem.to_owned(), format!("{stem}{}", volume::IMAGE_EXTENSION)]
            .iter()
            .any(|n| std::fs::symlink_metadata(kept.join(n)).is_ok())
    };
    let mut stem = format!("{name}-{now}");
    for n in 2.. {
        if !taken(&stem) {
            break;
        }
        stem = format!("{name}-{now}-{n}");
    }
    let target = kept.join(format!("{stem}{extension}"));
    std::fs::rename(source, &target).map_err(|e| Error::io("cannot set aside", source, e))?;
    let owner = data_owner_file(data_dir);
    std::fs::remove_file(&owner)
        .or_else(crate::store::not_found_is_ok)
        .map_err(|e| Error::io("cannot remove", &owner, e))?;
    Ok(target)
}

/// Makes the data directory the service's at `address` before its program gets it. One
/// that belongs to another service of the same name (removed by an older version, replaced
/// by an import, left in this store when the service moved) is set aside, and nothing of it
/// reaches this one; one without an owner (made before owners were recorded) was this
/// name's, as names were then, and is taken. Returns where a directory was set aside.
pub fn claim_data_dir(data_dir: &Path, address: &str) -> Result<Option<PathBuf>> {
    let owner_file = data_owner_file(data_dir);
    let owner = match std::fs::read_to_string(&owner_file) {
        Ok(text) => Some(text.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io("cannot read", &owner_file, e)),
    };
    if owner.as_deref() == Some(address) {
        return Ok(None);
    }
    // A mount point whose image has gone (set aside, destroyed) holds nothing of its own: the
    // image's mount is let go before this service's is made.
    let found = std::fs::symlink_metadata(volume::image_of(data_dir)).is_ok()
        || std::fs::symlink_metadata(data_dir)
            .is_ok_and(|m| !is_empty_dir(data_dir, &m) && !volume::is_mounted(data_dir));
    let set_aside = match owner {
        Some(_) if found => Some(set_data_aside(data_dir)?),
        _ => None,
    };
    if let Some(parent) = data_dir.parent() {
        crate::secret_file::create_dir_all_private(parent)?;
    }
    let line = format!("{address}\n");
    crate::secret_file::write_secret_file(&owner_file, &[line.as_bytes()], crate::secret_file::Replace::Always)?;
    Ok(set_aside)
}

/// An empty folder, such as a data image's mount point with nothing mounted: nothing to keep.
fn is_empty_dir(path: &Path, meta: &std::fs::Metadata) -> bool {
    meta.is_dir() && std::fs::read_dir(path).is_ok_and(|mut entries| entries.next().is_none())
}

/// Where the system service (on Tails) keeps a service's data: in the Persistent Storage's
/// store, or in its runtime directory for an amnesic service.
pub fn system_service_data_dir(service: &ServiceName, persistent: bool) -> PathBuf {
    let store = if persistent { crate::tails::PERSISTENT_STATE_DIR } else { crate::tails::SERVICE_RUNTIME_DIR };
    service_data_dir(Path::new(store), persistent, service)
}

/// Everything needed to start one service's daemon.
#[derive(Debug, Clone)]
pub struct DaemonPlan {
    pub service: ServiceName,
    /// The service's onion address: its data directory is recorded as that address's.
    pub address: String,
    /// The kind of the service, for messages (`setup --with KIND`).
    pub kind: String,
    /// Which of [`BUILTIN_DAEMONS`] it is.
    pub daemon: String,
    pub unit: String,
    /// Units to stop first: the package's own (the same server, as the same user).
    pub conflicts: Vec<String>,
    pub packages: Vec<String>,
    pub config_dir: PathBuf,
    pub data_dir: PathBuf,
    pub rendered: Rendered,
    /// The kind's folders inside the data directory (its `persistent-paths`).
    pub folders: Vec<String>,
    pub user: Option<String>,
    /// Who owns the folders when the daemon's user does not (see the catalog's field).
    pub folders_user: Option<String>,
    /// What the program must not see at all (the stores, tor's files, the Persistent
    /// Storage): its own data reaches it only through its bind mounts.
    pub hidden: Vec<PathBuf>,
    /// The port the program listens on in its own network (and its door on the LAN's).
    pub port: u16,
    /// allow-lan-connections: the door also listens on the computer's port, open to the LAN.
    pub lan: bool,
    /// The data is an image of bounded size, mounted at `data_dir` ([`volume`]): a persistent
    /// service's (an amnesic one's is in the runtime directory's tmpfs, bounded as a whole).
    pub bounded: bool,
}

/// The daemon a service needs, if its kind has one tails-server runs. `files_dir` holds its
/// store's data directories ([`files_root`]).
pub fn plan(
    kind: &KindDefinition,
    record: &ServiceRecord,
    files_dir: &Path,
    runtime_dir: &Path,
) -> Result<Option<DaemonPlan>> {
    let Some(daemon) = kind.daemon.as_deref() else { return Ok(None) };
    let specs = kind.all_options();
    let option = |name: &str| -> Option<OptionValue> {
        record.options.get(name).cloned().or_else(|| specs.get(name).map(|s| s.default.clone()))
    };
    let allow_lan = option(ALLOW_LAN).and_then(|v| v.as_bool()) == Some(true);
    // Inside its own namespace: the LAN reaches it through its door.
    let listen = Ipv4Addr::LOCALHOST;
    let seen_data = format!("/var/lib/tails-server/{}", record.name);
    let seen_config = format!("/etc/tails-server/{}", record.name);
    let input = RenderInput {
        port: record.local_port,
        listen,
        data_dir: &seen_data,
        config_dir: &seen_config,
        folders_user: kind.folders_user.as_deref(),
        option: &option,
    };
    let rendered = match daemon {
        "mumble" => configs::mumble(&input)?,
        "web" => configs::web(&input)?,
        "gobby" => configs::gobby(&input)?,
        "sftp" => configs::sftp(&input)?,
        other => {
            return Err(Error::Daemon {
                unit: unit_name(&record.name),
                detail: format!(
                    "tails-server cannot run the {other:?} daemon of kind {} yet; it knows {}",
                    kind.name,
                    BUILTIN_DAEMONS.join(", ")
                ),
            })
        }
    };
    Ok(Some(DaemonPlan {
        service: record.name.clone(),
        address: record.address().to_string(),
        kind: kind.name.clone(),
        daemon: daemon.to_owned(),
        unit: unit_name(&record.name),
        conflicts: kind.conflicts.clone(),
        packages: kind.packages.clone(),
        config_dir: runtime_dir.join("daemons").join(record.name.as_str()),
        data_dir: data_dir(files_dir, &record.name),
        rendered,
        folders: kind.persistent_paths.clone(),
        lan: allow_lan,
        user: kind.daemon_user.clone(),
        folders_user: kind.folders_user.clone(),
        port: record.local_port,
        hidden: Vec::new(),
        bounded: record.is_persistent(),
    }))
}

/// Refuses to start a daemon whose package is missing, saying how to get it on Tails.
pub fn check_packages(plan: &DaemonPlan, installed: &InstalledPackages) -> Result<()> {
    let missing: Vec<&String> = plan.packages.iter().filter(|p| !installed.all(std::slice::from_ref(p))).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let names = missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ");
    Err(Error::MissingPackage { packages: names, kind: plan.kind.clone() })
}

/// Points the plan's command at the program its package installed on this Debian release
/// (mumble-server installs /usr/bin/mumble-server on Debian 13, /usr/sbin/murmurd on Debian
/// 12), from the packages' file lists (`files_of`: a package's installed paths).
pub fn resolve_program(plan: &mut DaemonPlan, files_of: impl Fn(&str) -> Option<Vec<PathBuf>>) -> Result<()> {
    let candidates = configs::program_candidates(&plan.daemon);
    let installed: Vec<PathBuf> = plan.packages.iter().filter_map(|p| files_of(p)).flatten().collect();
    let Some(program) = candidates.iter().find(|c| installed.iter().any(|f| f == Path::new(c))) else {
        return Err(Error::Daemon {
            unit: plan.unit.clone(),
            detail: format!(
                "the installed {} provides none of the programs tails-server knows for it ({}); this version of \
                 the package is not supported",
                plan.packages.join(" "),
                candidates.join(", ")
            ),
        });
    };
    if let Some(first) = plan.rendered.exec.first_mut() {
        *first = (*program).to_owned();
    }
    Ok(())
}

/// Writes the daemon's files and prepares its data directory (created root-only; the unit
/// hands it to the daemon's user before starting), once it is the service's
/// ([`claim_data_dir`]) and, bounded, mounted.
fn prepare(plan: &DaemonPlan) -> Result<()> {
    use crate::secret_file::{create_dir_all_private, write_secret_file, Replace};
    use std::os::unix::fs::PermissionsExt;
    create_dir_all_private(&plan.config_dir)?;
    // The daemon's user reads its files through the read-only bind mount; nobody else can
    // reach them, the runtime directory above being root's (0700).
    let shared = plan.user.is_some() || plan.folders_user.is_some();
    let readable = |path: &Path, mode: u32| {
        let wanted = if shared { mode } else { mode & 0o700 };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(wanted))
            .map_err(|e| Error::io("cannot set the permissions of", path, e))
    };
    readable(&plan.config_dir, 0o755)?;
    for (name, contents) in &plan.rendered.files {
        let path = plan.config_dir.join(name);
        write_secret_file(&path, &[contents.as_bytes()], Replace::Always)?;
        readable(&path, 0o644)?;
    }
    // Once handed to the daemon's user, only systemd (as root, below) looks inside it.
    create_dir_all_private(&plan.data_dir)?;
    for (folder, _) in &plan.rendered.binds {
        // A bind mount's source must exist before the unit's namespace is built.
        create_dir_all_private(&plan.data_dir.join(folder))?;
    }
    check_bind_sources(plan)?;
    if let Some(name) = &plan.rendered.ssh_host_key {
        make_ssh_host_key(&plan.unit, &plan.data_dir.join(name))?;
    }
    Ok(())
}

/// Refuses a data directory or mounted folder that is not a plain directory: systemd follows
/// a symbolic link when it mounts a folder into the unit. Owners are not checked: only root
/// and the program's users can make entries below `data/` (root's), and a program's uid may
/// differ from one session to the next on Tails (Additional Software installs its package
/// again), which the hand-over then puts right. The folders inside a data directory already
/// handed to the program's user are out of this service's sight (it runs without
/// capabilities): they are that program's own, and its hand-over never follows a link.
fn check_bind_sources(plan: &DaemonPlan) -> Result<()> {
    let folders = plan.rendered.binds.iter().map(|(f, _)| f).chain(&plan.folders).map(|f| plan.data_dir.join(f));
    for dir in std::iter::once(plan.data_dir.clone()).chain(folders) {
        let meta = match std::fs::symlink_metadata(&dir) {
            Ok(meta) => meta,
            // A kind's folder is made by the unit when missing.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir != plan.data_dir => continue,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && dir != plan.data_dir => continue,
            Err(e) => return Err(Error::io("cannot read", &dir, e)),
        };
        if !meta.file_type().is_dir() {
            let what = if meta.file_type().is_symlink() { "a symbolic link" } else { "not a folder" };
            return Err(Error::Daemon {
                unit: plan.unit.clone(),
                detail: format!(
                    "{} is {what}: its program's data is mounted from there, so it is not started. Move it \
                     away (as root) and the folder is made again",
                    dir.display()
                ),
            });
        }
    }
    Ok(())
}

/// Makes the SSH host key once; it stays with the service's data, so clients that
/// remember the server keep recognising it after every reboot.
fn make_ssh_host_key(unit: &str, path: &Path) -> Result<()> {
    if path.exists() {
        return Ok(());
    }
    let failed = |detail: String| Error::Daemon { unit: unit.to_owned(), detail };
    // A half-made key from an interrupted attempt would make ssh-keygen ask to overwrite.
    let _ = std::fs::remove_file(path.with_extension("pub"));
    let output = std::process::Command::new("/usr/bin/ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "", "-f"])
        .arg(path)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| failed(format!("cannot run ssh-keygen to make the SSH host key: {e}")))?;
    if !output.status.success() {
        return Err(failed(format!(
            "ssh-keygen could not make the SSH host key {}: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

/// Starts the daemon (again, if it runs) and waits until it accepts connections on its port
/// in its own network, then opens its door. `keep_door`: the door is open already, as this
/// plan would open it (see [`door_configuration`]): it stays open while the program restarts,
/// so that nobody can take its port meanwhile. `masked`: the package units tails-server
/// masked, to which it adds those it masks now.
pub async fn start(
    systemd: &Systemd,
    plan: &DaemonPlan,
    keep_door: bool,
    masked: &mut BTreeSet<String>,
) -> Result<Option<PathBuf>> {
    // The package's own unit would run the same server, as the same user: stopped, and kept
    // from starting again while ours runs (an upgrade's maintainer script restarts it). One
    // masked already stays as it is: for another program of ours (recorded then), or by
    // someone else, whose mask is never recorded as ours nor taken back.
    for conflict in &plan.conflicts {
        if !systemd.is_masked(conflict).await {
            masked.insert(conflict.clone());
            systemd.mask_at_runtime(conflict).await?;
        }
        systemd.stop(conflict).await?;
    }
    // Restarted every time: the configuration may have changed, and a restart of these
    // daemons costs clients a reconnection only. A door kept open keeps its proxy, and with it
    // the namespace the new program joins (connections meanwhile find nobody there, and
    // close); a door that changes closes first, and is opened on the new program.
    if keep_door {
        systemd.stop(&plan.unit).await?;
    } else {
        stop(systemd, &plan.service).await?;
    }
    // With the program stopped: an older version's folder is copied into the new image whole.
    let set_aside = claim_data_dir(&plan.data_dir, &plan.address)?;
    if plan.bounded {
        volume::mount(systemd, &plan.service, &plan.daemon, &plan.data_dir).await?;
    }
    prepare(plan)?;
    check_user(plan)?;
    if plan.lan && !keep_door {
        check_port_free(plan)?;
    }
    let seen_data = format!("/var/lib/tails-server/{}", plan.service);
    let seen_config = format!("/etc/tails-server/{}", plan.service);
    let mut pre = plan.rendered.pre_privileged.clone();
    if !plan.folders.is_empty() {
        let mut mkdir = vec!["/bin/mkdir".to_owned(), "-p".to_owned()];
        mkdir.extend(plan.folders.iter().map(|f| plan.data_dir.join(f).display().to_string()));
        pre.push(mkdir);
    }
    // The user's uid can change between sessions (Additional Software installs the package
    // again at each login): the data is handed over when its top levels are not the user's —
    // a new folder, another uid — never walked and chowned file by file at every start,
    // which with many files would outlast the start timeout. Run by systemd as root outside
    // the unit's namespace, hence the host paths (ours, of validated names).
    if let Some(user) = &plan.user {
        pre.push(hand_over(user, std::slice::from_ref(&plan.data_dir)));
    } else if let Some(user) = &plan.folders_user {
        // Only the folders: the data directory itself stays root's (the SSH host key).
        let folders: Vec<PathBuf> = plan.folders.iter().map(|f| plan.data_dir.join(f)).collect();
        pre.push(hand_over(user, &folders));
    }
    let mut binds = vec![
        (plan.data_dir.display().to_string(), seen_data, false),
        (plan.config_dir.display().to_string(), seen_config, true),
    ];
    for (folder, seen) in &plan.rendered.binds {
        binds.push((plan.data_dir.join(folder).display().to_string(), seen.clone(), false));
    }
    let service = TransientService {
        description: format!("tails-server: the program of onion service {}", plan.service),
        exec: plan.rendered.exec.clone(),
        exec_start_pre_privileged: pre,
        user: plan.user.clone(),
        binds,
        capabilities: plan.rendered.capabilities.clone(),
        extra_syscalls: plan.rendered.extra_syscalls.clone(),
        hidden: plan.hidden.clone(),
        port: plan.port,
        joins_namespace_of: Some(door_units(&plan.service).1),
    };
    // Done once the program listens, inside its namespace.
    systemd.start_transient(&plan.unit, &service).await.map_err(|e| match e {
        // The job failed: the program stopped, or did not listen in time.
        Error::Daemon { unit, detail } if detail.starts_with(systemd::JOB_FAILED) => Error::Daemon {
            unit,
            detail: format!(
                "{detail} (it stopped, or did not listen on port {} of its own network within {} s)",
                plan.port,
                systemd::PROGRAM_START_TIMEOUT.as_secs()
            ),
        },
        other => other,
    })?;
    if !keep_door {
        systemd.open_door(&door(plan)).await?;
    }
    Ok(set_aside)
}

/// The program's user must exist (its package makes it, or tails-server's).
fn check_user(plan: &DaemonPlan) -> Result<()> {
    match &plan.user {
        None => Ok(()),
        Some(user) => crate::unix::uid_of(user).map(|_| ()).ok_or_else(|| Error::Daemon {
            unit: plan.unit.clone(),
            detail: format!(
                "there is no user {user:?} on this computer (the program's package, {}, or tails-server's \
                 makes it): install them again",
                plan.packages.join(" ")
            ),
        }),
    }
}

/// With allow-lan-connections, refuses to open the door on the LAN's port when someone
/// already listens on it, naming them (tor's connections never go there: they take the door's
/// Unix socket).
fn check_port_free(plan: &DaemonPlan) -> Result<()> {
    match in_the_way(plan).first() {
        None => Ok(()),
        Some(holder) => Err(port_taken(plan, holder)),
    }
}

/// The listeners of the computer that keep the door from listening on the port of every
/// IPv4 address: any IPv4 one, and an IPv6 one on every address (which takes IPv4 too).
fn in_the_way(plan: &DaemonPlan) -> Vec<crate::sockets::Listener> {
    crate::sockets::listeners(plan.port)
        .into_iter()
        .filter(|l| match l.address.ip() {
            std::net::IpAddr::V4(_) => true,
            std::net::IpAddr::V6(ip) => ip.is_unspecified(),
        })
        .collect()
}

fn port_taken(plan: &DaemonPlan, holder: &crate::sockets::Listener) -> Error {
    Error::Daemon {
        unit: plan.unit.clone(),
        detail: format!(
            "port {} is already taken by a program of {} (listening on {}), so the local network cannot reach \
             this service there; stop that program, or turn allow-lan-connections off, then enable the service \
             again",
            plan.port,
            crate::unix::describe_uid(holder.uid),
            holder.address
        ),
    }
}

/// A command (for root, before the program starts) that gives `dirs` to `user` when anything
/// in their top two levels is someone else's. The user and the folders are the script's
/// arguments, never part of its text.
fn hand_over(user: &str, dirs: &[PathBuf]) -> Vec<String> {
    const SCRIPT: &str = "u=$(id -u -- \"$1\") || exit 1; user=$1; shift; \
        if [ -n \"$(find \"$@\" -maxdepth 2 ! -user \"$u\" -print -quit)\" ]; then chown -R -- \"$user:\" \"$@\"; fi";
    let mut argv = vec!["/bin/sh".to_owned(), "-c".to_owned(), SCRIPT.to_owned(), "sh".to_owned(), user.to_owned()];
    argv.extend(dirs.iter().map(|d| d.display().to_string()));
    argv
}

/// Stops a service's daemon and closes its door (nothing when it does not run): the door
/// first (its socket, then a proxy it started), then the program.
pub async fn stop(systemd: &Systemd, service: &ServiceName) -> Result<()> {
    let (socket, proxy) = door_units(service);
    systemd.stop(&socket).await?;
    systemd.stop(&proxy).await?;
    systemd.stop(&unit_name(service)).await
}

/// Where the stores are: a service's data lives beside the store that holds it.
#[derive(Debug, Clone, Copy)]
pub struct StoreDirs<'a> {
    pub persistent: &'a Path,
    /// The amnesic store, also the runtime directory holding the daemons' configurations.
    pub amnesic: &'a Path,
}

/// A daemon tails-server started, as the reconcile ledger remembers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DaemonEntry {
    pub unit: String,
    /// Of the configuration it was started with: a change restarts it.
    pub configuration: String,
    /// The port opened to the LAN in Tails' firewall, if any.
    #[serde(default)]
    pub lan_port: Option<u16>,
    /// The package's own units it keeps masked (its kind's `conflicts`).
    #[serde(default)]
    pub conflicts: Vec<String>,
    /// Of the door opened for it ([`door_configuration`]); none while a start is under way,
    /// or when an older version opened it (its proxy joined the program, not the other way).
    #[serde(default)]
    pub door: Option<String>,
}

/// What one daemon reconcile did.
#[derive(Debug, Default)]
pub struct DaemonReport {
    pub started: Vec<String>,
    pub stopped: Vec<String>,
    pub failed: Vec<(String, Error)>,
    /// Data found under a service's name that belonged to another service, and where it
    /// was set aside.
    pub set_aside: Vec<(String, PathBuf)>,
    /// Data images that could not be let go or destroyed yet (tried again at the next sync).
    pub data_failed: Vec<(PathBuf, Error)>,
}

impl DaemonReport {
    pub fn failure(&self, service: &str) -> Option<&Error> {
        self.failed.iter().find(|(n, _)| n == service).map(|(_, e)| e)
    }
}

impl DaemonPlan {
    /// A digest of everything the daemon is started with.
    pub fn configuration(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        for (name, contents) in &self.rendered.files {
            hash.update(name.as_bytes());
            hash.update([0]);
            hash.update(contents.as_bytes());
            hash.update([0]);
        }
        hash.update(self.rendered.exec.join("\0").as_bytes());
        let r = &self.rendered;
        hash.update(
            format!(
                "{:?}{:?}{:?}{:?}{:?}{:?}{:?}",
                self.user, self.folders_user, self.data_dir, self.folders, r.binds, r.pre_privileged, self.bounded
            )
            .as_bytes(),
        );
        // A program started by an older version in the computer's network is started again
        // in its own, behind its door.
        hash.update(format!("own network, door {}", door_path(&self.service).display()).as_bytes());
        data_encoding::HEXLOWER.encode(&hash.finalize()[..16])
    }
}

/// What no program sees: both stores (every service's keys), tor's state and control
/// cookie, and the whole Persistent Storage. sshd runs as root, so file permissions alone
/// would not keep it out. (systemd takes the bind mounts' sources from outside the unit's
/// namespace, so a program's own folders below the store still reach it.)
fn hidden_from_programs(dirs: &StoreDirs<'_>) -> Vec<PathBuf> {
    let mut hidden = vec![dirs.persistent.to_path_buf(), dirs.amnesic.to_path_buf()];
    hidden.extend([crate::tails::PERSISTENT_STORAGE, "/var/lib/tor", "/run/tor"].map(PathBuf::from));
    hidden
}

/// Makes the running daemons match `wanted` (the services that should run now): starts
/// missing ones, restarts those whose configuration changed, stops those of services no
/// longer wanted. Failures are per service, in the report.
pub async fn sync(
    catalog: &crate::catalog::Catalog,
    wanted: &[&ServiceRecord],
    dirs: &StoreDirs<'_>,
    started: &mut std::collections::BTreeMap<String, DaemonEntry>,
    masked: &mut BTreeSet<String>,
    report: &mut DaemonReport,
) {
    let plans: Vec<(&ServiceRecord, Result<Option<DaemonPlan>>)> = wanted
        .iter()
        .filter_map(|record| {
            let kind = catalog.get(&record.kind).ok()?;
            let store = if record.is_persistent() { dirs.persistent } else { dirs.amnesic };
            let files = files_root(store, record.is_persistent());
            let plan = plan(kind, record, &files, dirs.amnesic).map(|plan| {
                plan.map(|mut plan| {
                    plan.hidden = hidden_from_programs(dirs);
                    plan
                })
            });
            Some((*record, plan))
        })
        .collect();
    let needed = plans.iter().any(|(_, p)| !matches!(p, Ok(None)))
        || !started.is_empty()
        || !masked.is_empty()
        || volume::pending(dirs.persistent);
    if !needed {
        return;
    }
    let systemd = match Systemd::connect().await {
        Ok(systemd) => systemd,
        Err(e) => {
            for (record, _) in plans.iter().filter(|(_, p)| !matches!(p, Ok(None))) {
                report.failed.push((record.name.to_string(), clone_system_error(&e)));
            }
            return;
        }
    };
    let installed = InstalledPackages::read(Path::new(crate::tails::DPKG_STATUS));
    let mut keep = BTreeSet::new();
    for (record, plan) in plans {
        let name = record.name.to_string();
        let mut plan = match plan {
            Ok(Some(plan)) => plan,
            Ok(None) => continue,
            Err(e) => {
                report.failed.push((name, e));
                continue;
            }
        };
        keep.insert(name.clone());
        // A package missing is reported below, with nothing started.
        let resolved =
            check_packages(&plan, &installed).and_then(|()| resolve_program(&mut plan, crate::tails::package_files));
        let configuration = plan.configuration();
        let lan_port = plan.lan.then_some(plan.port);
        let door = door_configuration(&plan);
        let door_open = systemd.active_state(&door_units(&record.name).0).await.is_ok_and(|s| s == "active");
        let running = door_open && systemd.active_state(&plan.unit).await.is_ok_and(|s| s == "active");
        if running && started.get(&name).is_some_and(|e| e.configuration == configuration && e.lan_port == lan_port) {
            continue;
        }
        let keep_door = door_open && started.get(&name).is_some_and(|e| e.door.as_ref() == Some(&door));
        let previous = started.get(&name).and_then(|e| e.lan_port);
        let outcome = async {
            resolved?;
            if lan_port.is_some() {
                lan::check_supported(Path::new(lan::SESSION_FIREWALL_HELPER))?;
            }
            // Recorded before anything runs, so that a failure half-way is undone by the
            // next reconcile even if the cleanup below fails too.
            started.insert(
                name.clone(),
                DaemonEntry {
                    unit: plan.unit.clone(),
                    configuration: String::new(),
                    lan_port: previous.or(lan_port),
                    conflicts: plan.conflicts.clone(),
                    door: None,
                },
            );
            if let Some(at) = start(&systemd, &plan, keep_door, masked).await? {
                report.set_aside.push((name.clone(), at));
            }
            if previous != lan_port {
                if let Some(port) = previous {
                    lan::close(&systemd, &record.name, port).await?;
                }
                if let Some(port) = lan_port {
                    lan::open(&systemd, &record.name, port).await?;
                }
            }
            Ok::<_, Error>(())
        }
        .await;
        match outcome {
            Ok(()) => {
                let (unit, conflicts, door) = (plan.unit.clone(), plan.conflicts.clone(), Some(door));
                started.insert(name.clone(), DaemonEntry { unit, configuration, lan_port, conflicts, door });
                report.started.push(name);
            }
            Err(e) => {
                // Nothing half-started stays: the program stops, the ports close. What
                // cannot be undone now stays recorded, for the next reconcile.
                let mut undone = stop(&systemd, &record.name).await.is_ok();
                for port in [previous, lan_port].into_iter().flatten().collect::<BTreeSet<_>>() {
                    undone &= lan::close(&systemd, &record.name, port).await.is_ok();
                }
                if undone {
                    started.remove(&name);
                }
                report.failed.push((name, e));
            }
        }
    }
    let unwanted: Vec<(String, DaemonEntry)> =
        started.iter().filter(|(n, _)| !keep.contains(*n)).map(|(n, e)| (n.clone(), e.clone())).collect();
    for (name, entry) in unwanted {
        let mut outcome = match ServiceName::new(&name) {
            Ok(service) => stop(&systemd, &service).await,
            Err(_) => systemd.stop(&entry.unit).await,
        };
        if let (Ok(()), Some(port), Ok(service)) = (&outcome, entry.lan_port, ServiceName::new(&name)) {
            outcome = lan::close(&systemd, &service, port).await;
        }
        match outcome {
            Ok(()) => {
                started.remove(&name);
                report.stopped.push(name);
            }
            Err(e) => report.failed.push((name, e)),
        }
    }
    release_masks(&systemd, started, masked).await;
    report.data_failed = volume::collect(&systemd, dirs.persistent).await;
}

/// Unmasks the package units tails-server masked once none of its programs that would share
/// their port runs: off Tails, the person's own server of that kind may start again (it is not
/// started here). One systemd refuses to unmask stays recorded, tried again at the next sync.
async fn release_masks(
    systemd: &Systemd,
    started: &std::collections::BTreeMap<String, DaemonEntry>,
    masked: &mut BTreeSet<String>,
) {
    let held: BTreeSet<&String> = started.values().flat_map(|entry| &entry.conflicts).collect();
    let free: Vec<String> = masked.iter().filter(|unit| !held.contains(unit)).cloned().collect();
    for unit in free {
        if systemd.unmask_at_runtime(&unit).await.is_ok() {
            masked.remove(&unit);
        }
    }
}

/// The hidden subcommand of the tails-server binary that makes one SOCKS connection: reads
/// `PROXY HOST PORT` on stdin, prints [`crate::publish::socks_probe_line`]'s answer.
pub const SOCKS_PROBE_COMMAND: &str = "socks-probe";

/// Runs tails-server's own [`SOCKS_PROBE_COMMAND`] as `nobody` in a transient
/// unit, `request` on its standard input (an onion address on the command line would be
/// visible to every local user); returns its one line. Another process of nobody's could read
/// the address or write to the probe's output: it gets an address, not a key, and an answer it
/// forges can only make `status` wrong.
pub async fn socks_probe_as_nobody(request: &str, timeout: Duration) -> Result<String> {
    let exe = std::env::current_exe().map_err(|e| Error::Daemon {
        unit: "tails-server-probe".into(),
        detail: format!("cannot find tails-server's own program: {e}"),
    })?;
    // An upgrade replaces the program under the running service: the new one at the same path.
    let exe = exe.display().to_string();
    let exe = exe.strip_suffix(" (deleted)").unwrap_or(&exe).to_owned();
    let mut suffix = [0u8; 4];
    crate::keys::os_random(&mut suffix)?;
    let unit = format!("tails-server-probe-{}.service", data_encoding::HEXLOWER.encode(&suffix));
    let argv = vec![exe, SOCKS_PROBE_COMMAND.to_owned()];
    let systemd = Systemd::connect().await?;
    systemd.run_as(&unit, "nobody", &argv, request.as_bytes(), timeout + Duration::from_secs(5)).await
}

fn clone_system_error(e: &Error) -> Error {
    match e {
        Error::Daemon { unit, detail } => Error::Daemon { unit: unit.clone(), detail: detail.clone() },
        other => Error::Daemon { unit: "systemd".into(), detail: other.to_string() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use crate::keys::OnionSecretKey;

    fn record(kind: &str, name: &str, options: &[(&str, OptionValue)]) -> ServiceRecord {
        ServiceRecord {
            name: ServiceName::new(name).unwrap(),
            kind: kind.into(),
            local_port: 64738,
            remote_port: 64738,
            enabled: true,
            client_auth: true,
            options: options.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            key: OnionSecretKey::generate().unwrap(),
            clients: vec![],
            created: 0,
        }
    }

    #[test]
    fn a_missing_package_is_named_with_the_way_to_add_it() {
        let catalog = Catalog::builtin();
        let dir = tempfile::tempdir().unwrap();
        let plan = plan(catalog.get("mumble").unwrap(), &record("mumble", "chat", &[]), dir.path(), dir.path())
            .unwrap()
            .expect("mumble has a program");
        let status = dir.path().join("status");
        std::fs::write(&status, "Package: tor\nStatus: install ok installed\n").unwrap();
        let error = check_packages(&plan, &InstalledPackages::read(&status)).unwrap_err();
        assert_eq!(error.kind(), crate::ErrorKind::System);
        let text = error.to_string();
        assert!(text.starts_with("mumble-server is not installed") && text.contains("Additional Software"), "{text}");
        assert!(text.contains("tails-server setup --with mumble"), "{text}");
        std::fs::write(&status, "Package: mumble-server\nStatus: install ok installed\n").unwrap();
        check_packages(&plan, &InstalledPackages::read(&status)).unwrap();
    }

    #[test]
    fn a_data_directory_goes_only_to_the_service_it_belongs_to() {
        let store = tempfile::tempdir().unwrap();
        let data = data_dir(store.path(), &ServiceName::new("chat").unwrap());
        let (first, second) = ("a".repeat(56) + ".onion", "b".repeat(56) + ".onion");
        // Made before owners were recorded: the service of that name takes it as it is.
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join(configs::MUMBLE_DATABASE), "first's users and certificate").unwrap();
        assert_eq!(claim_data_dir(&data, &first).unwrap(), None);
        assert_eq!(std::fs::read_to_string(data_owner_file(&data)).unwrap().trim(), first);
        assert!(data.join(configs::MUMBLE_DATABASE).exists());
        assert_eq!(claim_data_dir(&data, &first).unwrap(), None, "its own: nothing moves");
        // Another service of the same name: the first one's data is set aside, whole.
        let aside = claim_data_dir(&data, &second).unwrap().expect("set aside");
        assert!(aside.starts_with(store.path().join(KEPT_DATA_DIR)), "{}", aside.display());
        assert_eq!(
            std::fs::read_to_string(aside.join(configs::MUMBLE_DATABASE)).unwrap(),
            "first's users and certificate"
        );
        assert!(!data.exists(), "the second service starts with nothing of the first's");
        assert_eq!(std::fs::read_to_string(data_owner_file(&data)).unwrap().trim(), second);
        // Set aside twice in the same second: two places.
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join(configs::MUMBLE_DATABASE), "second's").unwrap();
        let again = claim_data_dir(&data, &first).unwrap().expect("set aside");
        assert_ne!(again, aside);
        // An empty folder (a data image's mount point) holds nothing to keep: taken.
        std::fs::create_dir_all(&data).unwrap();
        assert_eq!(claim_data_dir(&data, &second).unwrap(), None);
    }

    /// A persistent service's data is its image: the image is set aside whole, under a name
    /// no folder set aside in the same second has, while its mount point stays for the next
    /// reconcile to let go.
    #[test]
    fn a_data_image_is_set_aside_whole_and_its_mount_point_stays() {
        let store = tempfile::tempdir().unwrap();
        let data = data_dir(store.path(), &ServiceName::new("share").unwrap());
        let image = volume::image_of(&data);
        let (first, second) = ("a".repeat(56) + ".onion", "b".repeat(56) + ".onion");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(&image, "first's file system").unwrap();
        assert_eq!(claim_data_dir(&data, &first).unwrap(), None);
        let aside = claim_data_dir(&data, &second).unwrap().expect("set aside");
        assert!(aside.to_string_lossy().ends_with(".img"), "{}", aside.display());
        assert_eq!(std::fs::read_to_string(&aside).unwrap(), "first's file system");
        assert!(!image.exists(), "the second service gets an image of its own");
        assert!(data.is_dir(), "the mount point stays");
        // A folder then an image set aside in the same second: each has a name of its own.
        std::fs::write(&image, "second's file system").unwrap();
        let again = set_data_aside(&data).unwrap();
        assert_ne!(again.with_extension(""), aside.with_extension(""));
        assert_eq!(std::fs::read_to_string(&again).unwrap(), "second's file system");
    }

    #[test]
    fn a_folder_mounted_into_a_program_is_a_plain_folder() {
        let catalog = Catalog::builtin();
        let dir = tempfile::tempdir().unwrap();
        let keys = OptionValue::String(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl".into(),
        );
        let share = record("sftp", "share", &[("authorized-keys", keys)]);
        let plan =
            plan(catalog.get("sftp").unwrap(), &share, dir.path(), dir.path()).unwrap().expect("sftp has a program");
        std::fs::create_dir_all(plan.data_dir.join("files")).unwrap();
        check_bind_sources(&plan).unwrap();
        // Planted by a program's user: systemd would mount what it points to.
        std::fs::remove_dir(plan.data_dir.join("files")).unwrap();
        std::os::unix::fs::symlink("/etc", plan.data_dir.join("files")).unwrap();
        let text = check_bind_sources(&plan).unwrap_err().to_string();
        assert!(text.contains("files is a symbolic link") && text.contains("not started"), "{text}");
        std::fs::remove_file(plan.data_dir.join("files")).unwrap();
        std::fs::write(plan.data_dir.join("files"), "").unwrap();
        let text = check_bind_sources(&plan).unwrap_err().to_string();
        assert!(text.contains("files is not a folder"), "{text}");
    }

    #[test]
    fn data_is_handed_over_only_when_its_top_levels_are_someone_else_s() {
        if crate::unix::euid() != 0 {
            return; // chown needs root
        }
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        // A name a shell would read as code and as two words: given as arguments, it is neither.
        let data = dir.path().join("it's $(touch pwned) data");
        let deep = data.join("a/b/c");
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("file"), "x").unwrap();
        let nobody = crate::unix::uid_of("nobody").unwrap();
        let owner = |p: &Path| std::fs::symlink_metadata(p).unwrap().uid();
        let run = || {
            let argv = hand_over("root", std::slice::from_ref(&data));
            assert!(std::process::Command::new(&argv[0]).args(&argv[1..]).status().unwrap().success());
        };
        // Deep down, someone else's file: the top levels are right, nothing is walked.
        std::os::unix::fs::lchown(deep.join("file"), Some(nobody), None).unwrap();
        run();
        assert_eq!(owner(&deep.join("file")), nobody, "not chowned at every start");
        // A top level that is not the user's (a new folder, another uid): all handed over.
        std::os::unix::fs::lchown(data.join("a"), Some(nobody), None).unwrap();
        run();
        assert_eq!((owner(&data.join("a")), owner(&deep.join("file"))), (0, 0));
        assert!(!Path::new("pwned").exists() && !dir.path().join("pwned").exists());
    }

    #[test]
    fn a_lan_port_someone_already_listens_on_is_refused_naming_them() {
        let catalog = Catalog::builtin();
        let dir = tempfile::tempdir().unwrap();
        let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut web = record("web", "www", &[(ALLOW_LAN, OptionValue::Bool(true))]);
        web.local_port = squatter.local_addr().unwrap().port();
        let plan = plan(catalog.get("web").unwrap(), &web, dir.path(), dir.path()).unwrap().unwrap();
        let error = check_port_free(&plan).unwrap_err().to_string();
        let me = crate::unix::describe_uid(crate::unix::euid());
        assert!(error.contains(&format!("port {} is already taken by a program of {me}", web.local_port)), "{error}");
        assert!(error.contains("allow-lan-connections"), "{error}");
        drop(squatter);
        check_port_free(&plan).unwrap();
        // The door listens on every IPv4 address: any of them is in the way; an IPv6 one
        // that is not every address is not.
        let elsewhere = std::net::TcpListener::bind(("127.0.0.2", web.local_port)).unwrap();
        check_port_free(&plan).unwrap_err();
        drop(elsewhere);
        if let Ok(v6) = std::net::TcpListener::bind(("::1", web.local_port)) {
            check_port_free(&plan).unwrap();
            drop(v6);
        }
        let everywhere = std::net::TcpListener::bind(("0.0.0.0", web.local_port)).unwrap();
        check_port_free(&plan).unwrap_err();
        drop(everywhere);
    }

    #[test]
    fn the_program_is_the_one_the_installed_package_provides_on_this_release() {
        let catalog = Catalog::builtin();
        let dir = tempfile::tempdir().unwrap();
        let chat = || {
            plan(catalog.get("mumble").unwrap(), &record("mumble", "chat", &[]), dir.path(), dir.path())
                .unwrap()
                .unwrap()
        };
        let listing = |paths: &'static [&'static str]| {
            move |package: &str| (package == "mumble-server").then(|| paths.iter().map(PathBuf::from).collect())
        };
        let mut trixie = chat();
        resolve_program(&mut trixie, listing(&["/usr/bin/mumble-server", "/etc/mumble/mumble-server.ini"])).unwrap();
        assert_eq!(trixie.rendered.exec[0], "/usr/bin/mumble-server");
        let mut bookworm = chat();
        resolve_program(&mut bookworm, listing(&["/usr/sbin/murmurd", "/etc/mumble-server.ini"])).unwrap();
        assert_eq!(bookworm.rendered.exec[0], "/usr/sbin/murmurd");
        assert_eq!(bookworm.rendered.exec[1..], trixie.rendered.exec[1..], "the same options either way");
        let error = resolve_program(&mut chat(), listing(&["/usr/bin/something-else"])).unwrap_err();
        assert!(error.to_string().contains("/usr/bin/mumble-server, /usr/sbin/murmurd"), "{error}");
    }

    #[test]
    fn plans_follow_the_options_and_name_units_and_folders_by_service() {
        let catalog = Catalog::builtin();
        let dir = tempfile::tempdir().unwrap();
        let (store, run) = (dir.path().join("store"), dir.path().join("run"));
        let web =
            plan(catalog.get("web").unwrap(), &record("web", "tails-server-x", &[]), &store, &run).unwrap().unwrap();
        assert_eq!(web.unit, "tails-server-tails-server-x.service");
        assert_eq!(web.data_dir, store.join("data/tails-server-x"));
        assert_eq!(web.config_dir, run.join("daemons/tails-server-x"));
        assert_eq!(
            (web.folders.clone(), web.user.as_deref(), web.lan),
            (vec!["site".to_owned()], Some("www-data"), false)
        );
        assert!(web.rendered.files[0].1.contains("/var/lib/tails-server/tails-server-x/site"));
        let lan = record("web", "w", &[(ALLOW_LAN, OptionValue::Bool(true))]);
        let lan = plan(catalog.get("web").unwrap(), &lan, &store, &run).unwrap().unwrap();
        // On its own network's loopback either way: the LAN comes in through its door.
        assert!(lan.lan && lan.rendered.files[0].1.contains("server.bind = \"127.0.0.1\""));
        assert!(web.rendered.files[0].1.contains("server.bind = \"127.0.0.1\""));
        assert_eq!(door(&lan).lan_port, Some(lan.port));
        assert_eq!(door(&web).lan_port, None);
        assert_eq!(door(&web).path, Path::new("/var/lib/tor/tails-server/tails-server-x.sock"));
        assert_eq!(door(&web).program_unit, web.unit);
        assert_ne!(lan.configuration(), web.configuration(), "a changed option restarts the program");
        assert!(plan(catalog.get("custom").unwrap(), &record("custom", "c", &[]), &store, &run).unwrap().is_none());
    }

    #[test]
    fn a_door_stays_open_through_a_changed_option_and_changes_with_the_lan_or_the_port() {
        let catalog = Catalog::builtin();
        let dir = tempfile::tempdir().unwrap();
        let (store, run) = (dir.path().join("store"), dir.path().join("run"));
        let web = |options: &[(&str, OptionValue)], port: u16| {
            let mut record = record("web", "www", options);
            record.local_port = port;
            plan(catalog.get("web").unwrap(), &record, &store, &run).unwrap().unwrap()
        };
        let lan = (ALLOW_LAN, OptionValue::Bool(true));
        let listing = ("directory-listing", OptionValue::Bool(true));
        let (before, after) = (web(std::slice::from_ref(&lan), 8080), web(&[lan.clone(), listing], 8080));
        assert_ne!(before.configuration(), after.configuration(), "the program restarts");
        assert_eq!(door_configuration(&before), door_configuration(&after), "its door stays open");
        assert_ne!(door_configuration(&before), door_configuration(&web(&[], 8080)), "the LAN's port closes");
        assert_ne!(door_configuration(&before), door_configuration(&web(&[lan], 8081)), "another port");
    }
}
