//! The ledger: what this tor instance was asked to run (per service a fingerprint, and the
//! received keys given to it), kept in the runtime directory under its own lock.

use super::*;

/// What one service looks like to tor. Two records with the same fingerprint produce the
/// same onion service; anything else must be published again.
pub fn fingerprint(record: &ServiceRecord, target: &Target) -> String {
    let mut clients: Vec<String> = record.clients.iter().map(|c| c.public_key.to_base32()).collect();
    clients.sort();
    // A loopback target keeps the first version's text: what ran before the doors existed
    // is not published again for nothing.
    let (version, mapping) = match target {
        Target::Loopback(port) => ("v1", format!("{}:{port}", record.remote_port)),
        Target::Door(_) => ("v2", target.port_mapping(record.remote_port)),
    };
    let text = format!(
        "{version}\n{}\n{}\n{mapping}\n{}\n",
        record.address().service_id(),
        if record.client_auth { "auth" } else { "open" },
        clients.join(",")
    );
    data_encoding::HEXLOWER.encode(&Sha256::digest(text.as_bytes())[..16])
}

/// Where tor sends a service's connections: the door of the program tails-server runs for it
/// (recorded in the ledger once started), else the loopback port of the person's own program.
pub(super) fn target(record: &ServiceRecord, ledger: &Ledger) -> Target {
    if ledger.daemons.contains_key(record.name.as_str()) {
        Target::Door(crate::system::door_path(&record.name))
    } else {
        Target::Loopback(record.local_port)
    }
}

/// Whether a stored service should be running in tor now.
pub(super) fn wanted(record: &ServiceRecord, ledger: &Ledger) -> bool {
    record.enabled && (autostart(record) || ledger.session.contains(&record.address().service_id()))
}

pub(super) fn autostart(record: &ServiceRecord) -> bool {
    record.options.get(crate::options::AUTOSTART).and_then(|v| v.as_bool()).unwrap_or(true)
}

/// What we asked one tor instance to run.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Ledger {
    /// The tor instance the entries concern.
    pub tor: Option<TorInstance>,
    /// Service id (no `.onion`) → what was published.
    pub published: BTreeMap<String, LedgerEntry>,
    /// Service ids of services without autostart that were enabled by hand since boot: they
    /// are kept published across tor restarts until shutdown (the runtime directory is a
    /// tmpfs). By id, not name: a service removed and another imported under its name is
    /// not the one that was enabled.
    pub session: BTreeSet<String>,
    /// Service name → the daemon tails-server started for it (kept across tor restarts:
    /// the daemons do not depend on tor).
    #[serde(default)]
    pub daemons: BTreeMap<String, crate::system::DaemonEntry>,
    /// The package units tails-server masked for its daemons (`mumble-server.service`…),
    /// unmasked once none of its daemons needs them masked.
    #[serde(default)]
    pub masked_units: BTreeSet<String>,
    /// Service id → the received key we gave this tor instance for it.
    #[serde(default)]
    pub keys: BTreeMap<String, KeyEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct KeyEntry {
    pub name: String,
    /// The public half of the key given (the ledger holds no secret).
    pub public_key: String,
    /// False between sending ONION_CLIENT_AUTH_ADD and tor's OK.
    #[serde(default)]
    pub confirmed: bool,
}

impl KeyEntry {
    pub(super) fn of(key: &ReceivedKey) -> Self {
        KeyEntry { name: key.name.to_string(), public_key: key.secret_key.public_key().to_base32(), confirmed: false }
    }

    /// Whether tor still holds the key this entry says was given for `id` (`held`: what
    /// ONION_CLIENT_AUTH_VIEW lists).
    pub(super) fn held_in(
        &self,
        id: &str,
        held: &std::collections::HashMap<String, crate::keys::ClientPublicKey>,
    ) -> bool {
        held.get(id).is_some_and(|key| key.to_base32() == self.public_key)
    }

    /// Whether this entry is for `key`, as stored now.
    pub(super) fn is_for(&self, key: &ReceivedKey) -> bool {
        self.name == key.name.as_str() && self.public_key == key.secret_key.public_key().to_base32()
    }
}

/// The kept keys by the service id they open.
pub(super) fn keys_by_id(keys: &[ReceivedKey]) -> BTreeMap<String, &ReceivedKey> {
    keys.iter().map(|k| (k.address.service_id(), k)).collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct LedgerEntry {
    pub name: String,
    pub fingerprint: String,
    /// False between sending ADD_ONION and tor's answer: an interrupted publish is
    /// checked against tor's list at the next reconcile.
    pub confirmed: bool,
    /// When this tor instance reported the descriptor uploaded (HS_DESC UPLOADED).
    pub uploaded_at: Option<u64>,
}

impl Ledger {
    pub fn path(runtime_dir: &Path) -> PathBuf {
        runtime_dir.join(LEDGER_FILE)
    }

    /// The ledger as last written; an absent or unreadable one is empty (the next
    /// reconcile rebuilds it from tor's list).
    pub fn load(runtime_dir: &Path) -> Self {
        std::fs::read(Self::path(runtime_dir)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    pub(super) fn save(&self, runtime_dir: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).expect("serializable");
        crate::store::write_atomically(&Self::path(runtime_dir), &[&bytes])
    }

    /// The entry for a service id, if it concerns `tor`.
    pub fn entry_for(&self, tor: &TorInstance, service_id: &str) -> Option<&LedgerEntry> {
        self.tor.filter(|t| t.same_as(tor)).and_then(|_| self.published.get(service_id))
    }

    /// Takes `tor` as the instance the entries concern. Entries tor no longer lists are
    /// dropped by the caller; here the question is whether those it still lists are ours as
    /// recorded. The same process whose start time seems to move is the same tor (the clock
    /// was set, as Tails' htpdate does after bootstrapping): nothing changes. Another process
    /// may list our ids with other clients: every entry must be republished to be sure, but
    /// none is forgotten, so services removed meanwhile are still taken off.
    pub(super) fn adopt_instance(&mut self, tor: &TorInstance) {
        match self.tor {
            Some(known) if known.same_as(tor) => {}
            Some(known) if known.pid == tor.pid => self.tor = Some(*tor),
            _ => {
                for entry in self.published.values_mut() {
                    entry.confirmed = false;
                    entry.uploaded_at = None;
                }
                // A new tor knows no client keys but those of its ClientOnionAuthDir.
                self.keys.clear();
                self.tor = Some(*tor);
            }
        }
    }
}

/// The ledger's lock, held for a whole reconcile.
pub(super) struct LedgerLock {
    pub(super) _file: File,
}

pub(super) async fn lock_ledger(runtime_dir: &Path) -> Result<LedgerLock> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(runtime_dir)
        .map_err(|e| Error::io("cannot create the runtime directory", runtime_dir, e))?;
    let path = runtime_dir.join(LEDGER_LOCK);
    let file = crate::secret_file::open_lock_file(&path)?;
    let start = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(LedgerLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) if start.elapsed() < LEDGER_LOCK_TIMEOUT => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Timeout {
                    what: format!("another tails-server process to finish talking to tor ({})", path.display()),
                    waited: LEDGER_LOCK_TIMEOUT,
                })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io("cannot lock", &path, e)),
        }
    }
}
