//! What a reconcile did and what is left for later: the reports front ends print.

use super::*;

/// What a reconcile did to one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Added to tor.
    Published,
    /// tor ran it with other clients or ports: removed and added again, so connected
    /// clients reconnect.
    Republished,
    /// tor already ran it as stored.
    Unchanged,
    /// Removed from tor: no longer stored, disabled, or not to be started.
    Removed,
}

/// What a reconcile did with one received key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAction {
    /// Given to tor (ONION_CLIENT_AUTH_ADD).
    Registered,
    /// tor already had it from us.
    Unchanged,
    /// Taken back from tor: no longer kept.
    Removed,
}

/// What a change recorded by the publisher produced: the reconcile that went with it (None
/// when tor could not be reached) and the store's warnings (the change stands).
#[derive(Debug, Default)]
pub struct Changed {
    pub report: Option<SyncReport>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Default)]
pub struct SyncReport {
    pub tor: Option<TorInstance>,
    /// By service name (removed services keep the name the ledger knew them by).
    pub actions: BTreeMap<String, Action>,
    pub failed: Vec<(String, Error)>,
    /// By received key name: what was done with it.
    pub keys: BTreeMap<String, KeyAction>,
    /// Received keys tor refused, by name.
    pub failed_keys: Vec<(String, Error)>,
    /// What was done to the services' daemons (empty with [`DaemonControl::Manual`]).
    pub daemons: crate::system::DaemonReport,
    pub elapsed: Duration,
}

impl SyncReport {
    pub fn names(&self, action: Action) -> Vec<String> {
        self.actions.iter().filter(|(_, a)| **a == action).map(|(n, _)| n.clone()).collect()
    }

    pub fn action(&self, name: &str) -> Option<Action> {
        self.actions.get(name).copied()
    }

    pub fn failure(&self, name: &str) -> Option<&Error> {
        self.failed.iter().find(|(n, _)| n == name).map(|(_, e)| e)
    }
}

/// A difference between the store and tor that is still to be applied, known without
/// asking tor (from the ledger): what front ends tell the user when tor is unreachable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    /// tor may still run a service we removed or disabled (or that must not autostart).
    StillRunning { name: String, service_id: String },
    /// tor runs a service with an older client list or port mapping.
    Outdated { name: String },
    /// A wanted service that tor does not run yet.
    NotPublished { name: String },
    /// A kept key tor does not have from us yet.
    KeyNotGiven { name: String },
    /// A key we gave tor that is no longer kept (or kept with another secret).
    KeyStillGiven { name: String },
}

impl Pending {
    pub fn name(&self) -> &str {
        match self {
            Pending::StillRunning { name, .. }
            | Pending::Outdated { name }
            | Pending::NotPublished { name }
            | Pending::KeyNotGiven { name }
            | Pending::KeyStillGiven { name } => name,
        }
    }
}

/// Who runs the programs behind the services (Mumble, a web server…).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DaemonControl {
    /// The user does (a developer's machine, a CLI without root): tails-server only
    /// publishes.
    #[default]
    Manual,
    /// tails-server starts and stops the catalog's daemons as systemd units, configured
    /// from the services' options (the system service, root on a systemd system).
    Systemd,
}

/// What tor says about one stored service (`status`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TorView {
    /// tor accepted ADD_ONION: it is in `onions/detached`.
    pub registered: Option<bool>,
    /// tor reported the descriptor uploaded (seen by a daemon or `enable --wait`).
    pub uploaded: Option<bool>,
    pub uploaded_at: Option<u64>,
    /// tor runs it with the stored clients and ports.
    pub published_as_stored: Option<bool>,
    /// A connection through tor reached it (only when probed).
    pub reachable: Option<bool>,
    pub probe_detail: Option<String>,
    /// Why tor could not be asked; everything above is then unknown.
    pub tor_error: Option<String>,
    /// Whether tor may use the network (on Tails, once the person has connected).
    pub network_enabled: Option<bool>,
    /// tor's bootstrap progress, in percent: below 100 nothing is uploaded yet.
    pub bootstrap: Option<u8>,
}

impl DaemonControl {
    /// [`DaemonControl::Systemd`] when this process may start system units: root, on a
    /// system booted with systemd.
    pub fn detect() -> Self {
        if crate::unix::euid() == 0 && Path::new("/run/systemd/system").is_dir() {
            DaemonControl::Systemd
        } else {
            DaemonControl::Manual
        }
    }
}
