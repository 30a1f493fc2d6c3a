//! The one place that makes tor run exactly what the store says, for every front end (the
//! CLI, the daemon, the D-Bus service).
//!
//! What we asked a tor instance to run is kept in a ledger in the runtime directory: per
//! onion service, a fingerprint of what was published (address, port mapping, flags,
//! client keys), keyed by tor's process identity. Every reconcile reads the store afresh and
//! compares: a service whose stored state differs from what tor runs is published again; a
//! service of ours that is no longer stored or no longer wanted is removed — also one removed
//! while tor was unreachable, because the ledger still names it (the ledger is the
//! tombstone). A new tor instance runs nothing of ours, so its ledger starts empty.
//!
//! The keys received from other services' owners (the friend's side) follow the same rule:
//! every kept key tor does not hold (ONION_CLIENT_AUTH_VIEW) is given to it with
//! ONION_CLIENT_AUTH_ADD (not `Permanent`: tor writes nothing), so a restarted tor gets them
//! all back, and the ledger names the ones we gave so that a key no longer kept is taken
//! back with ONION_CLIENT_AUTH_REMOVE.
//! Keys someone else gave tor (Tor Browser's prompt) are left alone.
//!
//! Processes take the ledger's lock for the whole of a reconcile and read the store under
//! it, so two reconciles never interleave and none acts on a copy read before another
//! process's change. The store's own lock is only held for reads and writes, never while
//! waiting for tor or for the ledger (the order is always ledger, then store).
//!
//! Here: the [`Publisher`] and its reconciles. `ledger`: what a tor instance was asked to
//! run, under its lock. `report`: what a reconcile did and what is pending.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, Result};
use crate::manager::{Config, Manager};
use crate::model::{now_unix, ReceivedKey, ServiceRecord};
use crate::names::ServiceName;
use crate::publish::{self, Target};
use crate::tor::{ControlConfig, TorControl, TorInstance};

mod ledger;
mod report;

use self::ledger::*;
pub use self::ledger::{fingerprint, KeyEntry, Ledger, LedgerEntry};
pub use self::report::*;

const LEDGER_FILE: &str = "tor-ledger.json";
/// Rewritten after every change to the store, so that a running daemon reconciles at once
/// (a stat of a tmpfs file, not a read of the store on the USB stick).
const CHANGED_FILE: &str = "store-changed";
const LEDGER_LOCK: &str = "tor-ledger.lock";
/// How long a reconcile waits for another one to finish.
const LEDGER_LOCK_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a store read for tor work is retried while another process holds the store.
const STORE_RETRY_FOR: Duration = Duration::from_secs(60);

/// Makes tor match the store. One per front end; cheap to build.
#[derive(Debug, Clone)]
pub struct Publisher {
    pub config: Config,
    pub control: ControlConfig,
    pub daemons: DaemonControl,
    /// Told once per read when the store is busy and tor work waits for it (the daemon
    /// logs it; the library itself never prints).
    pub on_store_busy: Option<fn(&str)>,
}

impl Publisher {
    pub fn new(config: Config, control: ControlConfig) -> Self {
        Self { config, control, daemons: DaemonControl::Manual, on_store_busy: None }
    }

    fn runtime_dir(&self) -> Result<&Path> {
        self.config.runtime_dir.as_deref().ok_or(Error::NoRuntimeDir { uid: crate::unix::euid() })
    }

    /// Connects to tor.
    pub async fn connect(&self) -> Result<TorControl> {
        TorControl::connect(&self.control).await
    }

    /// What tor says about `record`; with `probe`, a connection through tor's SocksPort
    /// too (a stored client key lent to tor for it). tor being unreachable is part of the
    /// answer, not an error.
    pub async fn tor_view(&self, record: &ServiceRecord, probe: bool) -> Result<TorView> {
        let mut view = TorView::default();
        let mut tor = match self.connect().await {
            Ok(tor) => tor,
            Err(e) => {
                view.tor_error = Some(e.to_string());
                return Ok(view);
            }
        };
        let id = record.address().service_id();
        let registered = tor.detached_onions().await?.contains(&id);
        view.registered = Some(registered);
        // Behind a filter (onion-grater) these may be refused: unknown, not an error.
        view.network_enabled = tor.network_enabled().await.ok();
        view.bootstrap = tor.bootstrap_progress().await.ok();
        let instance = tor.instance().await?;
        let ledger = self.config.runtime_dir.as_deref().map(Ledger::load).unwrap_or_default();
        let entry = ledger.entry_for(&instance, &id).cloned();
        view.uploaded_at = if registered { entry.as_ref().and_then(|e| e.uploaded_at) } else { None };
        view.uploaded = if !registered { Some(false) } else { view.uploaded_at.map(|_| true) };
        view.published_as_stored = if registered {
            entry.map(|e| e.fingerprint == fingerprint(record, &target(record, &ledger)))
        } else {
            Some(false)
        };
        if probe {
            let who = match self.daemons {
                DaemonControl::Systemd => publish::ProbeAs::Nobody,
                DaemonControl::Manual => publish::ProbeAs::ThisProcess,
            };
            let (reachable, detail) = publish::probe(&mut tor, record, who).await?;
            view.reachable = reachable;
            view.probe_detail = Some(detail);
        }
        Ok(view)
    }

    /// Waits until tor has reported `record`'s descriptor uploaded, as a running daemon
    /// records it in the ledger (the system service's loop does). Returns when.
    pub async fn wait_recorded_upload(&self, record: &ServiceRecord, timeout: Duration) -> Result<u64> {
        let runtime_dir = self.runtime_dir()?.to_owned();
        let id = record.address().service_id();
        let deadline = Instant::now() + timeout;
        loop {
            let ledger = Ledger::load(&runtime_dir);
            let uploaded = ledger.tor.and_then(|tor| ledger.entry_for(&tor, &id)).and_then(|e| e.uploaded_at);
            if let Some(at) = uploaded {
                return Ok(at);
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    what: format!("tor to upload the descriptor of {}", record.name),
                    waited: timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Reads every stored service, waiting (bounded) while another process holds the
    /// store: a busy store delays tor work, it never skips it.
    pub async fn read_services(&self) -> Result<Vec<ServiceRecord>> {
        self.read_store(|manager| manager.list()).await
    }

    /// Every stored service and received key, read at once (see [`Publisher::read_services`]).
    async fn read_all(&self) -> Result<(Vec<ServiceRecord>, Vec<ReceivedKey>)> {
        self.read_store(|manager| Ok((manager.list()?, manager.received_keys()?))).await
    }

    async fn read_store<T: Send + 'static>(&self, read: fn(&Manager) -> Result<T>) -> Result<T> {
        let start = Instant::now();
        let mut told = false;
        loop {
            let config = self.config.clone();
            let read = tokio::task::spawn_blocking(move || read(&Manager::open(config)?))
                .await
                .map_err(|e| Error::TorProtocol { target: "the store".into(), detail: e.to_string() })?;
            match read {
                Err(e) if e.kind() == ErrorKind::Busy && start.elapsed() < STORE_RETRY_FOR => {
                    if let (Some(notice), false) = (self.on_store_busy, told) {
                        notice(&format!("{e}; waiting for it before talking to tor"));
                        told = true;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                other => return other,
            }
        }
    }

    /// Makes tor run exactly the wanted services: publishes missing ones, republishes
    /// changed ones, removes ours that are no longer wanted. Failures of one service do
    /// not stop the others; losing tor or the store is an error.
    pub async fn sync(&self, tor: &mut TorControl) -> Result<SyncReport> {
        let runtime_dir = self.runtime_dir()?.to_owned();
        let _lock = lock_ledger(&runtime_dir).await?;
        self.sync_locked(tor, &runtime_dir, None).await
    }

    async fn sync_locked(
        &self,
        tor: &mut TorControl,
        runtime_dir: &Path,
        also_wanted: Option<&ServiceName>,
    ) -> Result<SyncReport> {
        let start = Instant::now();
        // What an unverified peer says about onion services is worth nothing, and what it
        // would be sent must not be sent: no reconcile over such a connection.
        tor.require_verified("onion keys")?;
        let instance = tor.instance().await?;
        let detached = tor.detached_onions().await?;
        let (records, keys) = self.read_all().await?;
        let mut ledger = Ledger::load(runtime_dir);
        ledger.adopt_instance(&instance);
        // Entries tor no longer lists are gone (deleted by someone, or never added).
        ledger.published.retain(|id, _| detached.contains(id));
        // Hand-enabled services no longer stored or enabled leave the session.
        ledger.session.retain(|id| records.iter().any(|r| r.enabled && &r.address().service_id() == id));
        let mut report = SyncReport { tor: Some(instance), ..SyncReport::default() };

        let mut desired: BTreeMap<String, &ServiceRecord> = records
            .iter()
            .filter(|r| wanted(r, &ledger) || also_wanted == Some(&r.name))
            .map(|r| (r.address().service_id(), r))
            .collect();

        // The programs behind the services first, so that a published service answers. One
        // whose program cannot run (its package not installed yet, the LAN's port taken) is
        // not published, and taken off tor if it was: nothing would answer behind its door.
        // The next reconcile tries again (the daemon's comes when dpkg installs something).
        if self.daemons == DaemonControl::Systemd {
            let wanted: Vec<&ServiceRecord> = desired.values().copied().collect();
            self.run_daemons(&wanted, runtime_dir, &mut ledger, &mut report.daemons).await?;
            let failed: Vec<String> = report.daemons.failed.iter().map(|(n, _)| n.clone()).collect();
            desired.retain(|_, r| !failed.contains(&r.name.to_string()));
        }

        // Ours, no longer wanted: remove. This is what finishes a removal that happened
        // while tor was unreachable.
        let unwanted: Vec<(String, String)> = ledger
            .published
            .iter()
            .filter(|(id, _)| !desired.contains_key(*id))
            .map(|(id, e)| (id.clone(), e.name.clone()))
            .collect();
        for (id, name) in unwanted {
            match publish::unpublish_id(tor, &id).await {
                Ok(_) => {
                    ledger.published.remove(&id);
                    ledger.save(runtime_dir)?;
                    report.actions.insert(name, Action::Removed);
                }
                Err(e) if is_connection_loss(&e) => return Err(e),
                Err(e) => report.failed.push((name, e)),
            }
        }

        for (id, record) in desired {
            let name = record.name.to_string();
            let target = target(record, &ledger);
            let print = fingerprint(record, &target);
            let current = ledger.published.get(&id).filter(|e| e.confirmed).map(|e| e.fingerprint == print);
            let action = match (detached.contains(&id), current) {
                (true, Some(true)) => {
                    report.actions.insert(name, Action::Unchanged);
                    continue;
                }
                // Running, but not as stored (or we cannot tell what it runs): tor cannot
                // change an onion service in place.
                (true, _) => {
                    match publish::unpublish_id(tor, &id).await {
                        Ok(_) => {}
                        Err(e) if is_connection_loss(&e) => return Err(e),
                        Err(e) => {
                            report.failed.push((name, e));
                            continue;
                        }
                    }
                    Action::Republished
                }
                (false, _) => Action::Published,
            };
            ledger.published.insert(
                id.clone(),
                LedgerEntry { name: name.clone(), fingerprint: print, confirmed: false, uploaded_at: None },
            );
            ledger.save(runtime_dir)?;
            match publish::add(tor, record, &target).await {
                Ok(()) => {
                    if let Some(entry) = ledger.published.get_mut(&id) {
                        entry.confirmed = true;
                    }
                    ledger.save(runtime_dir)?;
                    report.actions.insert(name, action);
                }
                Err(e) if is_connection_loss(&e) => return Err(e),
                // tor said no: it does not run it. Any other answer leaves the entry
                // unconfirmed, for the next reconcile to check against tor's list.
                Err(e) => {
                    if matches!(e, Error::TorRejected { .. } | Error::WrongAddress { .. } | Error::LastClient { .. }) {
                        ledger.published.remove(&id);
                        ledger.save(runtime_dir)?;
                    }
                    report.failed.push((name, e));
                }
            }
        }
        self.register_keys(tor, &keys, runtime_dir, &mut ledger, &mut report).await?;
        report.elapsed = start.elapsed();
        Ok(report)
    }

    /// Gives tor every kept key it does not have from us, and takes back those we gave it
    /// that are no longer kept.
    async fn register_keys(
        &self,
        tor: &mut TorControl,
        keys: &[ReceivedKey],
        runtime_dir: &Path,
        ledger: &mut Ledger,
        report: &mut SyncReport,
    ) -> Result<()> {
        if keys.is_empty() && ledger.keys.is_empty() {
            return Ok(()); // nothing to give or take back: no round trip to tor
        }
        let kept = keys_by_id(keys);
        // What tor holds is the truth, as `onions/detached` is for services: a tor restarted
        // in a container has the same pid and start time to the second, yet no key.
        let held = publish::held_client_keys(tor).await?;
        ledger.keys.retain(|id, entry| entry.held_in(id, &held));
        let gone: Vec<(String, KeyEntry)> = ledger
            .keys
            .iter()
            .filter(|(id, entry)| kept.get(*id).is_none_or(|k| !entry.is_for(k)))
            .map(|(id, entry)| (id.clone(), entry.clone()))
            .collect();
        for (id, entry) in gone {
            match publish::forget_client_key(tor, &id).await {
                Ok(()) => {
                    ledger.keys.remove(&id);
                    ledger.save(runtime_dir)?;
                    if !kept.contains_key(&id) {
                        report.keys.insert(entry.name, KeyAction::Removed);
                    }
                }
                Err(e) if is_connection_loss(&e) => return Err(e),
                Err(e) => report.failed_keys.push((entry.name, e)),
            }
        }
        for (id, key) in kept {
            let entry = KeyEntry::of(key);
            if ledger.keys.get(&id).is_some_and(|e| e.confirmed && e.is_for(key)) {
                report.keys.insert(entry.name, KeyAction::Unchanged);
                continue;
            }
            // Noted before it is sent: an interrupted reconcile must still take it back.
            ledger.keys.insert(id.clone(), entry.clone());
            ledger.save(runtime_dir)?;
            match publish::give_client_key(tor, key).await {
                Ok(()) => {
                    if let Some(given) = ledger.keys.get_mut(&id) {
                        given.confirmed = true;
                    }
                    ledger.save(runtime_dir)?;
                    report.keys.insert(entry.name, KeyAction::Registered);
                }
                Err(e) if is_connection_loss(&e) => return Err(e),
                Err(e) => {
                    ledger.keys.remove(&id);
                    ledger.save(runtime_dir)?;
                    report.failed_keys.push((entry.name, e));
                }
            }
        }
        Ok(())
    }

    /// Enables a service: publishes it, then records it as enabled, so that a refusal by
    /// tor changes nothing. Returns the report of the reconcile that published it.
    /// `tor` None means tor is unreachable: the service is recorded as enabled and is
    /// published by the next reconcile (the daemon's, or the next login's).
    pub async fn enable(&self, tor: Option<&mut TorControl>, name: &ServiceName) -> Result<Changed> {
        let runtime_dir = self.runtime_dir()?.to_owned();
        let _lock = lock_ledger(&runtime_dir).await?;
        let Some(tor) = tor else {
            let warnings = self.record_enabled(name, true, &runtime_dir).await?;
            return Ok(Changed { report: None, warnings });
        };
        // Fails early (no such service, not tor) before anything is sent or recorded.
        self.read_one(name).await?;
        tor.require_verified("onion keys")?;
        let report = self.sync_locked(tor, &runtime_dir, Some(name)).await?;
        if let Some(error) = report.daemons.failure(name.as_str()).or_else(|| report.failure(name.as_str())) {
            // Not enabled: a program started for it stops again.
            let error = clone_error(error);
            let _ = self.sync_daemons_locked(&runtime_dir).await;
            return Err(error);
        }
        match self.record_enabled(name, true, &runtime_dir).await {
            Ok(warnings) => Ok(Changed { report: Some(report), warnings }),
            Err(e) => {
                let _ = self.sync_daemons_locked(&runtime_dir).await;
                // Not recorded, so not published: take it off again.
                let id = self.read_one(name).await.map(|r| r.address().service_id());
                if let Ok(id) = id {
                    if publish::unpublish_id(tor, &id).await.is_ok() {
                        let mut ledger = Ledger::load(&runtime_dir);
                        ledger.published.remove(&id);
                        let _ = ledger.save(&runtime_dir);
                    }
                }
                Err(e)
            }
        }
    }

    /// Records a service as disabled: the reconcile that follows (the caller's, or a
    /// running daemon's, told by the change notice) removes it from tor. Returns the
    /// store's warnings.
    pub async fn disable(&self, name: &ServiceName) -> Result<Vec<String>> {
        let runtime_dir = self.runtime_dir()?.to_owned();
        let _lock = lock_ledger(&runtime_dir).await?;
        let mut warnings = self.record_enabled(name, false, &runtime_dir).await?;
        // Its program stops now, whether tor can be told or not. The change is stored:
        // what goes wrong here is a warning.
        match self.sync_daemons_locked(&runtime_dir).await {
            Ok(report) => warnings.extend(report.failed.iter().map(|(n, e)| format!("{n}: {e}"))),
            Err(e) => warnings.push(format!("the services' programs could not be checked: {e}")),
        }
        Ok(warnings)
    }

    /// Makes the services' daemons match the store, without tor (for when tor cannot be
    /// reached: a removed or disabled service's program stops all the same).
    pub async fn sync_daemons(&self) -> Result<crate::system::DaemonReport> {
        let runtime_dir = self.runtime_dir()?.to_owned();
        let _lock = lock_ledger(&runtime_dir).await?;
        self.sync_daemons_locked(&runtime_dir).await
    }

    async fn sync_daemons_locked(&self, runtime_dir: &Path) -> Result<crate::system::DaemonReport> {
        let mut report = crate::system::DaemonReport::default();
        if self.daemons != DaemonControl::Systemd {
            return Ok(report);
        }
        let records = self.read_services().await?;
        let mut ledger = Ledger::load(runtime_dir);
        let wanted_now: Vec<&ServiceRecord> = records.iter().filter(|r| wanted(r, &ledger)).collect();
        self.run_daemons(&wanted_now, runtime_dir, &mut ledger, &mut report).await?;
        Ok(report)
    }

    /// Makes the programs of `wanted` run (and only theirs), recording them in the ledger.
    async fn run_daemons(
        &self,
        wanted: &[&ServiceRecord],
        runtime_dir: &Path,
        ledger: &mut Ledger,
        report: &mut crate::system::DaemonReport,
    ) -> Result<()> {
        let dirs = crate::system::StoreDirs { persistent: &self.config.state_dir, amnesic: runtime_dir };
        let catalog = crate::catalog::Catalog::load(self.config.catalog_dir.as_deref());
        crate::system::sync(&catalog, wanted, &dirs, &mut ledger.daemons, &mut ledger.masked_units, report).await;
        ledger.save(runtime_dir)
    }

    async fn read_one(&self, name: &ServiceName) -> Result<ServiceRecord> {
        let records = self.read_services().await?;
        records
            .into_iter()
            .find(|r| &r.name == name)
            .ok_or_else(|| Error::NoSuchService { name: name.to_string(), similar: None })
    }

    /// Stores the enabled flag. Once the store has it, the rest (the session mark, the
    /// change notice) can only add warnings: the change stands.
    async fn record_enabled(&self, name: &ServiceName, enabled: bool, runtime_dir: &Path) -> Result<Vec<String>> {
        let config = self.config.clone();
        let owned = name.clone();
        let (record, mut warnings) = tokio::task::spawn_blocking(move || {
            let mut manager = Manager::open(config)?;
            let (record, _) = manager.set_enabled(&owned, enabled)?;
            Ok::<_, Error>((record, manager.warnings()))
        })
        .await
        .map_err(|e| Error::TorProtocol { target: "the store".into(), detail: e.to_string() })??;
        // A service enabled by hand without autostart stays up until shutdown.
        let mut ledger = Ledger::load(runtime_dir);
        let id = record.address().service_id();
        let changed =
            if enabled && !autostart(&record) { ledger.session.insert(id) } else { ledger.session.remove(&id) };
        if changed {
            if let Err(e) = ledger.save(runtime_dir) {
                warnings.push(format!("cannot note that {name} was enabled by hand: {e}"));
            }
        }
        if let Err(e) = self.note_change() {
            warnings.push(format!("cannot tell a running daemon about the change: {e}"));
        }
        Ok(warnings)
    }

    /// What is still to be applied, judged from the ledger and the store without asking
    /// tor (which may be unreachable): for messages that say what is true.
    pub async fn pending(&self) -> Result<Vec<Pending>> {
        let runtime_dir = self.runtime_dir()?.to_owned();
        let (records, keys) = self.read_all().await?;
        let ledger = Ledger::load(&runtime_dir);
        let mut pending = Vec::new();
        let kept = keys_by_id(&keys);
        for (id, entry) in &ledger.keys {
            if kept.get(id).is_none_or(|k| !entry.is_for(k)) {
                pending.push(Pending::KeyStillGiven { name: entry.name.clone() });
            }
        }
        for (id, key) in &kept {
            if !ledger.keys.get(id).is_some_and(|e| e.confirmed && e.is_for(key)) {
                pending.push(Pending::KeyNotGiven { name: key.name.to_string() });
            }
        }
        let by_id: BTreeMap<String, &ServiceRecord> = records.iter().map(|r| (r.address().service_id(), r)).collect();
        for (id, entry) in &ledger.published {
            match by_id.get(id) {
                Some(record) if wanted(record, &ledger) => {
                    if entry.fingerprint != fingerprint(record, &target(record, &ledger)) {
                        pending.push(Pending::Outdated { name: record.name.to_string() });
                    }
                }
                _ => pending.push(Pending::StillRunning { name: entry.name.clone(), service_id: id.clone() }),
            }
        }
        for record in records.iter().filter(|r| wanted(r, &ledger)) {
            if !ledger.published.contains_key(&record.address().service_id()) {
                pending.push(Pending::NotPublished { name: record.name.to_string() });
            }
        }
        Ok(pending)
    }

    /// Keeps an enabled service published until shutdown even without `autostart` (set
    /// when autostart is turned off on a service that is enabled now).
    pub async fn keep_for_session(&self, name: &ServiceName) -> Result<()> {
        let record = self.read_one(name).await?;
        let runtime_dir = self.runtime_dir()?.to_owned();
        let _lock = lock_ledger(&runtime_dir).await?;
        let mut ledger = Ledger::load(&runtime_dir);
        if ledger.session.insert(record.address().service_id()) {
            ledger.save(&runtime_dir)?;
        }
        Ok(())
    }

    /// Whether tor lost a key the ledger says we gave it. tor drops them all on NEWNYM, a
    /// reload and every SETCONF, and a SETCONF that changes nothing sends no event. One
    /// ONION_CLIENT_AUTH_VIEW, only when keys were given; no store read, no lock.
    pub async fn given_keys_missing(&self, tor: &mut TorControl) -> Result<bool> {
        let ledger = Ledger::load(self.runtime_dir()?);
        if ledger.keys.is_empty() {
            return Ok(false);
        }
        // Its answer carries the private keys.
        tor.require_verified("client keys")?;
        let held = publish::held_client_keys(tor).await?;
        Ok(ledger.keys.iter().any(|(id, given)| !given.held_in(id, &held)))
    }

    /// Tells a running daemon that the store changed: it reconciles within a second, even
    /// if this process could not reach tor.
    pub fn note_change(&self) -> Result<()> {
        let runtime_dir = self.runtime_dir()?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(runtime_dir)
            .map_err(|e| Error::io("cannot create the runtime directory", runtime_dir, e))?;
        let stamp = format!("{} {}", std::process::id(), now_nanos());
        crate::store::write_atomically(&runtime_dir.join(CHANGED_FILE), &[stamp.as_bytes()])
    }

    /// The last change notice (None: none since boot), to compare with an earlier one.
    pub fn last_change(&self) -> Option<String> {
        std::fs::read_to_string(self.runtime_dir().ok()?.join(CHANGED_FILE)).ok()
    }

    /// Notes that `tor` reported a descriptor of ours uploaded; returns the service's
    /// name when it is ours.
    pub async fn record_upload(&self, tor: &TorInstance, service_id: &str) -> Result<Option<String>> {
        let runtime_dir = self.runtime_dir()?.to_owned();
        let _lock = lock_ledger(&runtime_dir).await?;
        let mut ledger = Ledger::load(&runtime_dir);
        if !ledger.tor.is_some_and(|t| t.same_as(tor)) {
            return Ok(None);
        }
        let Some(entry) = ledger.published.get_mut(service_id) else { return Ok(None) };
        let first = entry.uploaded_at.is_none();
        entry.uploaded_at = Some(now_unix());
        let name = entry.name.clone();
        ledger.save(&runtime_dir)?;
        Ok(first.then_some(name))
    }
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

/// Whether the connection to tor is gone (the reconcile cannot go on).
fn is_connection_loss(e: &Error) -> bool {
    matches!(e, Error::TorGone { .. } | Error::TorConnect { .. })
}

/// Errors hold io::Error sources and cannot be cloned; keep the message and kind.
fn clone_error(e: &Error) -> Error {
    match e {
        Error::TorRejected { command, code, message, hint } => {
            Error::TorRejected { command: command.clone(), code: *code, message: message.clone(), hint: hint.clone() }
        }
        Error::WrongAddress { service, expected, got } => {
            Error::WrongAddress { service: service.clone(), expected: expected.clone(), got: got.clone() }
        }
        Error::TorUntrusted { target, what, reason } => {
            Error::TorUntrusted { target: target.clone(), what: what.clone(), reason: reason.clone() }
        }
        Error::MissingPackage { packages, kind } => {
            Error::MissingPackage { packages: packages.clone(), kind: kind.clone() }
        }
        Error::Daemon { unit, detail } => Error::Daemon { unit: unit.clone(), detail: detail.clone() },
        Error::NotSupported { what, reason } => Error::NotSupported { what: what.clone(), reason: reason.clone() },
        Error::Timeout { what, waited } => Error::Timeout { what: what.clone(), waited: *waited },
        other => Error::TorProtocol { target: "tor".into(), detail: other.to_string() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{ClientSecretKey, OnionSecretKey};
    use crate::model::ClientRecord;
    use crate::names::ClientName;

    fn record() -> ServiceRecord {
        let secret = ClientSecretKey::generate().unwrap();
        ServiceRecord {
            name: ServiceName::new("web").unwrap(),
            kind: "web".into(),
            local_port: 8080,
            remote_port: 80,
            enabled: true,
            client_auth: true,
            options: Default::default(),
            key: OnionSecretKey::generate().unwrap(),
            clients: vec![ClientRecord {
                name: ClientName::new("a").unwrap(),
                public_key: secret.public_key(),
                secret_key: Some(secret),
                created: 0,
            }],
            created: 0,
        }
    }

    #[test]
    fn fingerprint_changes_with_everything_tor_sees_and_nothing_else() {
        let base = record();
        let print = fingerprint(&base, &Target::Loopback(base.local_port));
        let mut other = base.clone();
        other.created = 99;
        other.clients[0].secret_key = None;
        other.options.insert("welcome".into(), crate::options::OptionValue::String("hi".into()));
        assert_eq!(
            fingerprint(&other, &Target::Loopback(other.local_port)),
            print,
            "stored-only details do not change what tor runs"
        );
        let mut ports = base.clone();
        ports.local_port = 8081;
        assert_ne!(fingerprint(&ports, &Target::Loopback(ports.local_port)), print);
        let mut clients = base.clone();
        let extra = ClientSecretKey::generate().unwrap();
        clients.clients.push(ClientRecord {
            name: ClientName::new("b").unwrap(),
            public_key: extra.public_key(),
            secret_key: None,
            created: 0,
        });
        assert_ne!(fingerprint(&clients, &Target::Loopback(clients.local_port)), print);
        let mut reordered = clients.clone();
        reordered.clients.reverse();
        assert_eq!(
            fingerprint(&reordered, &Target::Loopback(reordered.local_port)),
            fingerprint(&clients, &Target::Loopback(clients.local_port)),
            "client order does not matter to tor"
        );
        let mut open = base.clone();
        open.client_auth = false;
        assert_ne!(fingerprint(&open, &Target::Loopback(open.local_port)), print);
        // A loopback target's fingerprint is the one versions without doors recorded: an
        // upgrade does not publish the services of the person's own programs again.
        let mut keys: Vec<String> = base.clients.iter().map(|c| c.public_key.to_base32()).collect();
        keys.sort();
        let v1 = format!(
            "v1\n{}\nauth\n{}:{}\n{}\n",
            base.address().service_id(),
            base.remote_port,
            base.local_port,
            keys.join(",")
        );
        assert_eq!(print, data_encoding::HEXLOWER.encode(&Sha256::digest(v1.as_bytes())[..16]));
        // The program tails-server runs moving behind its door is published again.
        let door = Target::Door(crate::system::door_path(&base.name));
        assert_ne!(fingerprint(&base, &door), print);
        let mut ledger = Ledger::default();
        assert_eq!(target(&base, &ledger), Target::Loopback(base.local_port), "the person's own program");
        let entry = crate::system::DaemonEntry {
            unit: "tails-server-x.service".into(),
            configuration: String::new(),
            lan_port: None,
            conflicts: Vec::new(),
            door: None,
        };
        ledger.daemons.insert(base.name.to_string(), entry);
        assert_eq!(target(&base, &ledger), door, "a program tails-server runs: its door");
    }

    #[test]
    fn another_tor_process_makes_every_entry_unconfirmed_but_forgets_none() {
        let mut ledger = Ledger::default();
        let first = TorInstance { pid: 10, started: 1000 };
        ledger.adopt_instance(&first);
        ledger.published.insert(
            "abc".into(),
            LedgerEntry { name: "web".into(), fingerprint: "f".into(), confirmed: true, uploaded_at: Some(5) },
        );
        ledger.session.insert("abc".into());
        ledger.adopt_instance(&TorInstance { pid: 10, started: 1001 });
        assert!(ledger.published["abc"].confirmed, "the same instance (uptime is coarse)");
        ledger.adopt_instance(&TorInstance { pid: 10, started: 1100 });
        assert!(ledger.published["abc"].confirmed, "the same process after the clock was set");
        ledger.adopt_instance(&TorInstance { pid: 11, started: 1100 });
        let entry = &ledger.published["abc"];
        assert!(!entry.confirmed && entry.uploaded_at.is_none(), "to be republished, not forgotten");
        assert!(ledger.session.contains("abc"));
    }

    #[test]
    fn services_without_autostart_are_wanted_only_when_enabled_by_hand_this_session() {
        let mut r = record();
        r.options.insert(crate::options::AUTOSTART.into(), crate::options::OptionValue::Bool(false));
        let mut ledger = Ledger::default();
        assert!(!wanted(&r, &ledger));
        ledger.session.insert(r.address().service_id());
        assert!(wanted(&r, &ledger));
        r.enabled = false;
        assert!(!wanted(&r, &ledger));
    }
}
