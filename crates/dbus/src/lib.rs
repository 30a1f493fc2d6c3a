//! The D-Bus interface of the tails-server system service (`tails-server service`), version 1.
//!
//! One crate for everything a caller and the service must agree on: the bus name, object
//! path and interface name; the error names (one per [`ErrorKind`], mapped here and nowhere
//! else); the polkit actions; the proxy a client calls; and the JSON documents the methods
//! return, which are the same objects as the CLI's `--format json` output ([`views`]).
//! Changing any of these is a new interface version (`org.boum.tails.Server2`), never an
//! edit of this one; new methods and new keys in the documents may be added.

pub mod views;

use std::collections::HashMap;

pub use tails_server_core::ErrorKind;

/// The well-known name the service owns on the system bus.
pub const BUS_NAME: &str = "org.boum.tails.Server";
/// The one object the service exports.
pub const OBJECT_PATH: &str = "/org/boum/tails/Server";
/// The interface, versioned in its name.
pub const INTERFACE: &str = "org.boum.tails.Server1";
/// Prefix of every error name the interface returns.
pub const ERROR_PREFIX: &str = "org.boum.tails.Server1.Error";
/// The value of the `Version` property.
pub const API_VERSION: u32 = 1;

/// The polkit actions, checked per call (declared in
/// `persistence-hooks/polkit/org.boum.tails.server.policy`).
pub mod actions {
    /// Listing services, their status, options (secret ones hidden) and clients.
    pub const READ: &str = "org.boum.tails.server.read";
    /// Adding, removing, enabling, disabling, changing options and clients, importing.
    pub const CHANGE: &str = "org.boum.tails.server.change";
    /// Seeing a client's private key, a secret option's value, or exporting a backup.
    pub const REVEAL_SECRET: &str = "org.boum.tails.server.reveal-secret";
}

/// A failed call: the D-Bus error name says the kind (`org.boum.tails.Server1.Error.NotFound`),
/// the message is the text the CLI prints for the same failure.
#[derive(zbus::DBusError, Debug)]
#[zbus(prefix = "org.boum.tails.Server1.Error")]
pub enum ServiceError {
    #[zbus(error)]
    ZBus(zbus::Error),
    InvalidInput(String),
    NotFound(String),
    Conflict(String),
    Busy(String),
    Storage(String),
    Catalog(String),
    TorUnavailable(String),
    TorAuth(String),
    TorRefused(String),
    NotAuthorized(String),
    /// The call reveals a secret or widens access: the caller must first prove a person is
    /// there (`ProvePresence` with the Persistent Storage passphrase), then call again.
    PresenceRequired(String),
    PersistentStorageLocked(String),
    System(String),
    /// The change is stored, but tor could not be updated yet: the service applies it as
    /// soon as tor answers (the CLI's exit status 3).
    Pending(String),
    /// Anything without a kind (a bug, an internal failure); the message says what.
    Failed(String),
}

impl ServiceError {
    /// The one mapping from the library's error kinds to D-Bus errors.
    pub fn new(kind: ErrorKind, message: String) -> Self {
        match kind {
            ErrorKind::InvalidInput => ServiceError::InvalidInput(message),
            ErrorKind::NotFound => ServiceError::NotFound(message),
            ErrorKind::Conflict => ServiceError::Conflict(message),
            ErrorKind::Busy => ServiceError::Busy(message),
            ErrorKind::Storage => ServiceError::Storage(message),
            ErrorKind::Catalog => ServiceError::Catalog(message),
            ErrorKind::TorUnavailable => ServiceError::TorUnavailable(message),
            ErrorKind::TorAuth => ServiceError::TorAuth(message),
            ErrorKind::TorRefused => ServiceError::TorRefused(message),
            ErrorKind::NotAuthorized => ServiceError::NotAuthorized(message),
            ErrorKind::PersistentStorageLocked => ServiceError::PersistentStorageLocked(message),
            ErrorKind::System => ServiceError::System(message),
            _ => ServiceError::Failed(message),
        }
    }

    /// The library error's kind, when it has one (None: [`ServiceError::Pending`],
    /// [`ServiceError::Failed`] or a D-Bus transport error).
    pub fn kind(&self) -> Option<ErrorKind> {
        Some(match self {
            ServiceError::InvalidInput(_) => ErrorKind::InvalidInput,
            ServiceError::NotFound(_) => ErrorKind::NotFound,
            ServiceError::Conflict(_) => ErrorKind::Conflict,
            ServiceError::Busy(_) => ErrorKind::Busy,
            ServiceError::Storage(_) => ErrorKind::Storage,
            ServiceError::Catalog(_) => ErrorKind::Catalog,
            ServiceError::TorUnavailable(_) => ErrorKind::TorUnavailable,
            ServiceError::TorAuth(_) => ErrorKind::TorAuth,
            ServiceError::TorRefused(_) => ErrorKind::TorRefused,
            ServiceError::NotAuthorized(_) | ServiceError::PresenceRequired(_) => ErrorKind::NotAuthorized,
            ServiceError::PersistentStorageLocked(_) => ErrorKind::PersistentStorageLocked,
            ServiceError::System(_) => ErrorKind::System,
            ServiceError::Pending(_) | ServiceError::Failed(_) | ServiceError::ZBus(_) => return None,
        })
    }

    /// The message as the CLI would print it.
    pub fn message(&self) -> String {
        match self {
            ServiceError::ZBus(e) => e.to_string(),
            ServiceError::InvalidInput(m)
            | ServiceError::NotFound(m)
            | ServiceError::Conflict(m)
            | ServiceError::Busy(m)
            | ServiceError::Storage(m)
            | ServiceError::Catalog(m)
            | ServiceError::TorUnavailable(m)
            | ServiceError::TorAuth(m)
            | ServiceError::TorRefused(m)
            | ServiceError::NotAuthorized(m)
            | ServiceError::PresenceRequired(m)
            | ServiceError::PersistentStorageLocked(m)
            | ServiceError::System(m)
            | ServiceError::Pending(m)
            | ServiceError::Failed(m) => m.clone(),
        }
    }
}

impl From<tails_server_core::Error> for ServiceError {
    fn from(e: tails_server_core::Error) -> Self {
        ServiceError::new(e.kind(), e.to_string())
    }
}

/// The service as a client sees it. Every method returns a JSON document (see [`views`]
/// and "Output keys" in docs/using.md), or a [`ServiceError`].
#[zbus::proxy(
    interface = "org.boum.tails.Server1",
    default_service = "org.boum.tails.Server",
    default_path = "/org/boum/tails/Server"
)]
pub trait Server {
    /// The kinds of service that can be added.
    fn catalog(&self) -> Result<String, ServiceError>;
    /// Every service (`list`).
    fn list(&self) -> Result<String, ServiceError>;
    /// One service (`info`).
    fn info(&self, name: &str) -> Result<String, ServiceError>;
    /// One service as stored and as tor runs it (`status [--probe]`).
    fn status(&self, name: &str, probe: bool) -> Result<String, ServiceError>;
    /// Adds a service (`add`). `options`: `name`, `local-port`, `remote-port`,
    /// `first-client`, and `option.NAME` → value. An option that lets more in than the
    /// kind's default (an SSH key, the local network) takes the caller's presence first
    /// (`PresenceRequired`).
    fn add(&self, kind: &str, options: HashMap<String, String>) -> Result<String, ServiceError>;
    /// Removes a service and destroys its keys (`remove`); its data is deleted, or set aside
    /// when `keep_data` (`remove --keep-data`).
    fn remove(&self, name: &str, keep_data: bool) -> Result<String, ServiceError>;
    fn enable(&self, name: &str) -> Result<String, ServiceError>;
    fn disable(&self, name: &str) -> Result<String, ServiceError>;
    fn get_option(&self, name: &str, option: &str) -> Result<String, ServiceError>;
    fn set_option(&self, name: &str, option: &str, value: &str) -> Result<String, ServiceError>;
    fn clients(&self, name: &str) -> Result<String, ServiceError>;
    /// `public_key` empty: a new key pair is made and its private key kept.
    fn add_client(&self, name: &str, client: &str, public_key: &str) -> Result<String, ServiceError>;
    fn remove_client(&self, name: &str, client: &str) -> Result<String, ServiceError>;
    /// A client's credential: `form` is `auth-private`, `key` or `auth`.
    fn credential(&self, name: &str, client: &str, form: &str) -> Result<String, ServiceError>;
    /// Proves a person is at the computer: the Persistent Storage passphrase, checked
    /// against the volume without unlocking anything. Returns how many seconds this caller's
    /// connection may then reveal secrets and widen access (0: this system asks for no such
    /// step, polkit alone decides).
    fn prove_presence(&self, passphrase: &str) -> Result<u32, ServiceError>;
    /// The data set aside (`kept-data list`): removed services' kept data, and data found
    /// under a new service's name.
    fn kept_data(&self) -> Result<String, ServiceError>;
    /// Deletes data set aside for good (`kept-data delete`), every id checked first; returns
    /// what was deleted.
    fn delete_kept_data(&self, ids: &[&str]) -> Result<String, ServiceError>;
    /// Gives kept data to a disabled service without data of its own, as its data from now
    /// on (`kept-data give`); takes the caller's presence: the service's friends get to see it.
    fn give_kept_data(&self, id: &str, service: &str) -> Result<String, ServiceError>;
    /// Reconciles now (`restore`).
    fn restore(&self) -> Result<String, ServiceError>;
    /// Flushes and closes the store's database, which the service keeps open between
    /// changes, so that another process (a command run as root) can open it; the service
    /// opens it again at its next change.
    fn close_store(&self) -> Result<(), ServiceError>;
    /// Waits until tor reports the service's descriptor uploaded (`enable --wait`):
    /// `{name, address, uploaded-at}`, or a `TorUnavailable` error after `timeout_s`.
    fn wait_uploaded(&self, name: &str, timeout_s: u32) -> Result<String, ServiceError>;
    /// An encrypted backup (age with the passphrase, ASCII-armored) of the named services,
    /// every one when `services` is empty (`export`).
    fn export(&self, services: Vec<String>, passphrase: &str) -> Result<Vec<u8>, ServiceError>;
    /// Imports an encrypted backup (`import`): `on_conflict` is `fail`, `skip` or `replace`.
    fn import(
        &self,
        backup: Vec<u8>,
        passphrase: &str,
        on_conflict: &str,
        dry_run: bool,
    ) -> Result<String, ServiceError>;

    /// The keys received from other services' owners (`key list`): [`views::KeyView`]s.
    fn keys(&self) -> Result<String, ServiceError>;
    /// Keeps a received key and gives it to tor (`key add`). `text`: the `.auth_private`
    /// line, or the address and the key; `address`: the service's address when `text`
    /// holds only the key, else empty.
    fn add_key(&self, name: &str, text: &str, address: &str, persistent: bool) -> Result<String, ServiceError>;
    /// Forgets a received key, destroys its stored copies and takes it back from tor.
    fn remove_key(&self, name: &str) -> Result<String, ServiceError>;

    /// Emitted after any change: to the stores, or to what tor runs (tor found or lost, a
    /// service published again, a descriptor uploaded, bootstrap progress), so a front end
    /// never polls. Broadcast to every user of the bus, so it names nothing (the argument is
    /// always empty): a front end asks `List`, which needs the read action.
    #[zbus(signal)]
    fn changed(&self, names: Vec<String>) -> zbus::Result<()>;

    /// [`API_VERSION`].
    #[zbus(property)]
    fn version(&self) -> zbus::Result<u32>;

    /// Whether the Persistent Storage is unlocked (persistent services reachable).
    #[zbus(property)]
    fn persistent_storage_unlocked(&self) -> zbus::Result<bool>;

    /// Whether tails-server is installed again at every login (on Tails: `tails-server
    /// setup` done, Additional Software lists it; elsewhere always). Read at each get, no
    /// PropertiesChanged: ask again after `Changed` or when the window comes back to view.
    #[zbus(property(emits_changed_signal = "false"))]
    fn installed_at_every_login(&self) -> zbus::Result<bool>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_error_name() {
        let mut names = std::collections::BTreeSet::new();
        for kind in ErrorKind::ALL {
            let error = ServiceError::new(*kind, "m".into());
            assert_eq!(error.kind(), Some(*kind), "{kind:?} maps back to itself");
            let name = zbus::DBusError::name(&error).to_string();
            assert_eq!(name, format!("{ERROR_PREFIX}.{}", kind.name()));
            assert!(names.insert(name));
        }
    }
}
