//! The library's error type. Messages are written for the person at the keyboard:
//! each one names the problem and, where there is one, the way out.

use std::path::PathBuf;
use std::time::Duration;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Broad classes of failure: the contract with every front end. Each error has exactly one
/// kind; the CLI maps a kind to its exit status and the D-Bus service to an error name, once
/// each. A new kind is added only when a caller must act differently on it (retry, ask the
/// user for something, give up), never to tell two messages apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input (a name, a key, an option value) is not acceptable.
    InvalidInput,
    /// The named thing does not exist.
    NotFound,
    /// The request conflicts with what is already stored.
    Conflict,
    /// Another process holds the store.
    Busy,
    /// The store or a file on disk is damaged or unsafe.
    Storage,
    /// A service definition in the catalog is malformed.
    Catalog,
    /// tor cannot be reached, went away or did not answer in time: worth retrying.
    TorUnavailable,
    /// tor refused our credentials.
    TorAuth,
    /// tor refused a command.
    TorRefused,
    /// The caller may not do this (a D-Bus caller polkit did not authorize).
    NotAuthorized,
    /// The Persistent Storage is not unlocked yet, so persistent services cannot be reached.
    PersistentStorageLocked,
    /// This system lacks what the request needs (a package, a Tails helper), or a service's
    /// daemon could not be started: the user must change the system, not the request.
    System,
}

impl ErrorKind {
    /// Every kind, for tables that must cover them all (error names, exit statuses).
    pub const ALL: &'static [ErrorKind] = &[
        ErrorKind::InvalidInput,
        ErrorKind::NotFound,
        ErrorKind::Conflict,
        ErrorKind::Busy,
        ErrorKind::Storage,
        ErrorKind::Catalog,
        ErrorKind::TorUnavailable,
        ErrorKind::TorAuth,
        ErrorKind::TorRefused,
        ErrorKind::NotAuthorized,
        ErrorKind::PersistentStorageLocked,
        ErrorKind::System,
    ];

    /// A stable name, used in D-Bus error names and JSON.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "InvalidInput",
            ErrorKind::NotFound => "NotFound",
            ErrorKind::Conflict => "Conflict",
            ErrorKind::Busy => "Busy",
            ErrorKind::Storage => "Storage",
            ErrorKind::Catalog => "Catalog",
            ErrorKind::TorUnavailable => "TorUnavailable",
            ErrorKind::TorAuth => "TorAuth",
            ErrorKind::TorRefused => "TorRefused",
            ErrorKind::NotAuthorized => "NotAuthorized",
            ErrorKind::PersistentStorageLocked => "PersistentStorageLocked",
            ErrorKind::System => "System",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.name() == name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid {what} name {name:?}: {reason}")]
    InvalidName { what: &'static str, name: String, reason: String },

    #[error("invalid {what}: {reason}")]
    InvalidKey { what: &'static str, reason: String },

    #[error("invalid onion address {address:?}: {reason}")]
    InvalidAddress { address: String, reason: String },

    #[error("there is no service named {name:?}{} (`tails-server list` shows your services)",
            did_you_mean(.similar))]
    NoSuchService { name: String, similar: Option<String> },

    #[error("a service named {0:?} already exists; choose another name with --name")]
    ServiceExists(String),

    #[error(
        "service {service:?} has no client named {client:?} (`tails-server client list {service}` shows its clients)"
    )]
    NoSuchClient { service: String, client: String },

    #[error("service {service:?} already has a client named {client:?}")]
    ClientExists { service: String, client: String },

    #[error("there is no kept key named {0:?} (`tails-server key list` shows the keys you keep)")]
    NoSuchKey(String),

    #[error("there is no kept data named {0:?} (`tails-server kept-data list` shows what is kept)")]
    NoSuchKeptData(String),

    #[error("the kept data {id} cannot be given to {service}: {reason}")]
    KeptDataNotGiven { id: String, service: String, reason: String },

    #[error(
        "a key named {0:?} is already kept; choose another name, or remove it first (`tails-server key remove {0}`)"
    )]
    KeyExists(String),

    #[error(
        "a key for {address} is already kept as {existing:?}; tor takes one key per onion service: remove that \
         one first (`tails-server key remove {existing}`)"
    )]
    KeyForAddressExists { address: String, existing: String },

    #[error("service {service:?} already has a client with this public key (client {existing:?})")]
    DuplicateClientKey { service: String, existing: String },

    #[error(
        "service {service:?} already has {limit} clients, the most tor can fit in one onion service descriptor; \
         remove a client first (`tails-server client remove {service} NAME`)"
    )]
    TooManyClients { service: String, limit: usize },

    #[error(
        "{client:?} is the last client of service {service:?}; without any client nobody could reach it. \
         Add another client first, or remove the whole service"
    )]
    LastClient { service: String, client: String },

    #[error(
        "service {service:?} was created without client authorization: anyone with its address can connect, \
         so it has no clients to manage"
    )]
    ClientAuthDisabled { service: String },

    #[error(
        "client {client:?} of service {service:?} was added with its public key only; tails-server never had its \
         private key. Only `--as auth` (the service side) can be shown"
    )]
    NoPrivateKey { service: String, client: String },

    #[error("unknown service kind {kind:?}; known kinds: {known}")]
    UnknownKind { kind: String, known: String },

    #[error("{kind} services have no default local port; give one with --local-port")]
    LocalPortRequired { kind: String },

    #[error("invalid port {value:?} for {what}: expected a number from 1 to 65535")]
    InvalidPort { what: &'static str, value: String },

    #[error("service {service:?} has no option {option:?}; its options are: {allowed}")]
    UnknownOption { service: String, option: String, allowed: String },

    #[error("invalid value {value:?} for option {option:?}: expected {expected}")]
    InvalidOptionValue { option: String, value: String, expected: String },

    #[error("malformed service definition {file}: {message}")]
    Catalog { file: String, message: String },

    #[error(
        "the tails-server store in {dir} is in use by another tails-server process{holder}; \
         gave up after waiting {waited:?}. Try again when it has finished"
    )]
    StoreBusy { dir: PathBuf, holder: String, waited: Duration },

    #[error(
        "refusing to use {path}: it is accessible to other users (mode {mode:o}). \
         It holds secret keys; fix it with `chmod {fix:o} {path}`"
    )]
    UnsafePermissions { path: PathBuf, mode: u32, fix: u32 },

    #[error("refusing to use {path}: it belongs to user id {owner}, not to you (user id {me})")]
    WrongOwner { path: PathBuf, owner: u32, me: u32 },

    #[error(
        "the store in {dir} was written by a newer tails-server (schema version {found}; this one knows up to \
         {supported}). Upgrade tails-server; nothing was changed"
    )]
    NewerSchema { dir: PathBuf, found: u64, supported: u64 },

    #[error(
        "the store in {dir} is damaged ({detail}) and no intact snapshot was found to recover from. \
         Nothing was changed or deleted; restore it from a backup, or seek help"
    )]
    StoreCorrupt { dir: PathBuf, detail: String },

    #[error("the change was not saved in {dir}: {detail}")]
    ChangeNotSaved { dir: PathBuf, detail: String },

    /// A change that failed, but whose snapshot could not be taken back: it will be
    /// applied when the store is next opened (and reads already show it).
    #[error("the change could not be completed in {dir}: {detail}")]
    ChangeLeftPending { dir: PathBuf, detail: String },

    #[error("store error in {dir}: {source}")]
    Store {
        dir: PathBuf,
        #[source]
        source: sled::Error,
    },

    #[error("{action} {path}: there is no space left on its device. Free some space there, then try again")]
    NoSpace { action: &'static str, path: PathBuf },

    #[error(
        "{action} {path}: its file system is read-only (a USB stick is switched to read-only after an I/O \
         error: check it before changing anything; what is stored can still be read)"
    )]
    ReadOnlyMedium { action: &'static str, path: PathBuf },

    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "no place for amnesic (non-persistent) services: neither TAILS_SERVER_RUNTIME_DIR nor XDG_RUNTIME_DIR \
         is set and /run/user/{uid} does not exist"
    )]
    NoRuntimeDir { uid: u32 },

    #[error("the operating system's random number generator failed: {0}")]
    Random(String),

    #[error(
        "cannot reach tor's control port at {target}: {source}. Is tor running, and is this its control \
         port (--control-port HOST:PORT or --control-socket PATH)?"
    )]
    TorConnect {
        target: String,
        #[source]
        source: std::io::Error,
    },

    #[error("tor's control port at {target} closed the connection (tor stopped or restarted)")]
    TorGone { target: String },

    #[error("cannot authenticate to tor at {target}: {reason}")]
    TorAuth { target: String, reason: String },

    #[error(
        "refusing to send {what} to the control port at {target}: {reason}. Secrets go only to a control \
         port whose socket, for this very connection, belongs to root or to tor's own user"
    )]
    TorUntrusted { target: String, what: String, reason: String },

    #[error("unexpected answer from tor at {target}: {detail}")]
    TorProtocol { target: String, detail: String },

    #[error("tor refused `{command}`: {code} {message}{}", if hint.is_empty() { String::new() } else { format!(" ({hint})") })]
    TorRejected { command: String, code: u16, message: String, hint: String },

    #[error("refusing to send {what} to tor: {reason}")]
    InvalidControlArgument { what: &'static str, reason: String },

    #[error("tor published {service} at {got} instead of {expected}; it was removed again")]
    WrongAddress { service: String, expected: String, got: String },

    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout { what: String, waited: Duration },

    #[error("cannot use this backup: {reason}")]
    InvalidBackup { reason: String },

    #[error("cannot encrypt the backup: {0}")]
    Encryption(String),

    #[error("cannot import {source_path}: {reason}")]
    InvalidImport { source_path: String, reason: String },

    #[error("{0}")]
    ImportConflict(String),

    #[error("not authorized: {0}")]
    NotAuthorized(String),

    #[error(
        "the Persistent Storage is not unlocked: unlock it in the Welcome Screen (or in the Persistent Storage \
         settings), then try again"
    )]
    PersistentStorageLocked,

    #[error(
        "{packages} is not installed; add it with Additional Software: connected to Tor, with an administration \
         password, run `sudo tails-server setup --with {kind}` (it is then installed again at every login, \
         offline)"
    )]
    MissingPackage { packages: String, kind: String },

    #[error("{path} is not a package setup can use: {reason}")]
    InvalidPackage { path: PathBuf, reason: String },

    #[error("{unit}: {detail}")]
    Daemon { unit: String, detail: String },

    #[error("{what} is not supported here: {reason}")]
    NotSupported { what: String, reason: String },
}

fn did_you_mean(similar: &Option<String>) -> String {
    similar.as_ref().map(|s| format!("; did you mean {s:?}?")).unwrap_or_default()
}

/// The name among `known` that `wanted` is most likely a typo of: at most two letters
/// added, removed, changed or swapped (and fewer than half of it).
pub fn similar_name<'a>(wanted: &str, known: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let limit = 2.min(wanted.chars().count() / 2);
    known
        .into_iter()
        .map(|name| (edit_distance(wanted, name), name))
        .filter(|(distance, _)| *distance <= limit)
        .min()
        .map(|(_, name)| name.to_owned())
}

/// Optimal string alignment distance (Levenshtein plus swaps of neighbours).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        use Error::*;
        match self {
            InvalidName { .. }
            | InvalidKey { .. }
            | InvalidAddress { .. }
            | UnknownKind { .. }
            | LocalPortRequired { .. }
            | InvalidPort { .. }
            | UnknownOption { .. }
            | InvalidOptionValue { .. }
            | NoPrivateKey { .. }
            | ClientAuthDisabled { .. } => ErrorKind::InvalidInput,
            NoSuchService { .. } | NoSuchClient { .. } | NoSuchKey(_) | NoSuchKeptData(_) => ErrorKind::NotFound,
            ServiceExists(_)
            | KeyExists(_)
            | KeyForAddressExists { .. }
            | ClientExists { .. }
            | DuplicateClientKey { .. }
            | TooManyClients { .. }
            | LastClient { .. } => ErrorKind::Conflict,
            StoreBusy { .. } => ErrorKind::Busy,
            Catalog { .. } => ErrorKind::Catalog,
            UnsafePermissions { .. }
            | WrongOwner { .. }
            | NewerSchema { .. }
            | StoreCorrupt { .. }
            | ChangeNotSaved { .. }
            | ChangeLeftPending { .. }
            | Store { .. }
            | Io { .. }
            | NoSpace { .. }
            | ReadOnlyMedium { .. }
            | NoRuntimeDir { .. }
            | Random(_) => ErrorKind::Storage,
            TorConnect { .. } | TorGone { .. } | Timeout { .. } => ErrorKind::TorUnavailable,
            TorAuth { .. } | TorUntrusted { .. } => ErrorKind::TorAuth,
            TorProtocol { .. } | TorRejected { .. } | WrongAddress { .. } => ErrorKind::TorRefused,
            InvalidControlArgument { .. } => ErrorKind::InvalidInput,
            InvalidBackup { .. } | InvalidImport { .. } => ErrorKind::InvalidInput,
            ImportConflict(_) | KeptDataNotGiven { .. } => ErrorKind::Conflict,
            Encryption(_) => ErrorKind::Storage,
            NotAuthorized(_) => ErrorKind::NotAuthorized,
            PersistentStorageLocked => ErrorKind::PersistentStorageLocked,
            InvalidPackage { .. } => ErrorKind::InvalidInput,
            MissingPackage { .. } | Daemon { .. } | NotSupported { .. } => ErrorKind::System,
        }
    }

    /// An I/O error; a full or read-only medium gets an error that says so, and what to do.
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        match source.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT) => Error::NoSpace { action, path },
            Some(libc::EROFS) => Error::ReadOnlyMedium { action, path },
            _ => Error::Io { action, path, source },
        }
    }

    /// An error of sled's, on the store in `dir` (its I/O errors as [`Error::io`] words them).
    pub(crate) fn store(dir: impl Into<PathBuf>, source: sled::Error) -> Self {
        match source {
            sled::Error::Io(io) if matches!(io.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT | libc::EROFS)) => {
                Error::io("cannot write the store in", dir, io)
            }
            source => Error::Store { dir: dir.into(), source },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::similar_name;

    #[test]
    fn a_typo_of_a_known_name_is_suggested_and_nothing_else() {
        let known = ["mumble", "blog", "web", "sftp-share"];
        for (typo, meant) in [("mumbel", "mumble"), ("blgo", "blog"), ("bog", "blog"), ("sftp-shar", "sftp-share")] {
            assert_eq!(similar_name(typo, known).as_deref(), Some(meant), "{typo}");
        }
        for unrelated in ["gobby", "x", "wiki", ""] {
            assert_eq!(similar_name(unrelated, known), None, "{unrelated}");
        }
    }
}
