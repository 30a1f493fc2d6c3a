//! The operations behind every command: the one place that combines the catalog, the keys
//! and the stores. Persistent and amnesic services go through the same code; only the
//! store they are kept in differs.
//!
//! Here: the manager, its two stores and the changes across them. `services`: adding,
//! removing, options and clients. `transfer`: backups out and in. `received_keys`: the
//! friend's side.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::catalog::{Catalog, KindDefinition};
use crate::error::{Error, Result};
use crate::keys::{ClientPublicKey, ClientSecretKey, OnionAddress, OnionSecretKey};
use crate::model::{now_unix, ClientRecord, ReceivedKey, ServiceRecord, MAX_CLIENTS};
use crate::names::{ClientName, KeyName, ServiceName};
use crate::options::{common_options, OptionSpec, OptionType, OptionValue, PERSISTENCE};
use crate::store::{self, Change, Recovery, Store, StoreOptions};

mod kept;
mod received_keys;
mod services;
mod transfer;

pub use kept::KeptData;

#[derive(Debug, Clone)]
pub struct Config {
    /// The persistent store (on Tails: inside the Persistent Storage).
    pub state_dir: PathBuf,
    /// The amnesic store, for services with persistence=false. None: such services cannot
    /// be created, and none are listed.
    pub runtime_dir: Option<PathBuf>,
    /// Extra service definitions (`*.toml`).
    pub catalog_dir: Option<PathBuf>,
    pub store: StoreOptions,
}

impl Config {
    pub fn new(state_dir: PathBuf) -> Self {
        Self { state_dir, runtime_dir: None, catalog_dir: None, store: StoreOptions::default() }
    }
}

/// Everything `add` needs; `Default` gives the common case (client authorization on).
#[derive(Debug, Clone)]
pub struct AddRequest {
    pub kind: String,
    pub name: Option<ServiceName>,
    pub local_port: Option<u16>,
    pub remote_port: Option<u16>,
    /// OPTION=VALUE pairs as typed.
    pub options: Vec<(String, String)>,
    /// False only through the deliberately hidden opt-out.
    pub client_auth: bool,
    pub first_client: ClientName,
}

impl AddRequest {
    pub fn new(kind: &str) -> Self {
        Self {
            kind: kind.to_owned(),
            name: None,
            local_port: None,
            remote_port: None,
            options: Vec::new(),
            client_auth: true,
            first_client: ClientName::new("client-1").expect("valid"),
        }
    }
}

/// What `import` does with a service whose name (or address) already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnConflict {
    Fail,
    Skip,
    Replace,
}

/// What becomes of a removed service's data (its program's files, the folders' contents).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceData {
    /// Deleted with the service, its program's key material overwritten first.
    Destroy,
    /// Set aside in `kept-data/` (where is in [`Removed`]), never given to a later service.
    Keep,
}

/// A removed service, and where its data was kept if the person asked for it.
#[derive(Debug)]
pub struct Removed {
    pub record: ServiceRecord,
    pub data_kept_at: Option<std::path::PathBuf>,
}

/// What an import changed (or, dry, would change).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportReport {
    pub added: Vec<String>,
    pub replaced: Vec<String>,
    pub skipped: Vec<String>,
    /// For each service of the import whose name is taken here: what putting it in place
    /// of today's would let in that today's does not (`NAME: …`). Said whatever the rule,
    /// so a dry run that skips can tell what replacing would do.
    pub replacing_widens: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Location {
    Persistent,
    Amnesic,
}

impl Location {
    fn of_persistence(persistent: bool) -> Self {
        if persistent {
            Location::Persistent
        } else {
            Location::Amnesic
        }
    }
}

pub struct Manager {
    config: Config,
    persistent: Store,
    amnesic: Option<Store>,
    catalog: Catalog,
    recoveries: Vec<Recovery>,
}

impl Manager {
    /// Opens the stores (waiting a bounded time if another process has them).
    pub fn open(config: Config) -> Result<Self> {
        if crate::tails::persistent_storage_missing_for(&config.state_dir) {
            return Err(Error::PersistentStorageLocked);
        }
        let catalog = Catalog::load(config.catalog_dir.as_deref());
        let mut recoveries = Vec::new();
        let (persistent, recovery) =
            Store::open(&config.state_dir, config.store.clone(), true)?.expect("created when missing");
        recoveries.extend(recovery);
        let amnesic = match &config.runtime_dir {
            Some(dir) => Store::open(dir, config.store.clone(), false)?.map(|(store, recovery)| {
                recoveries.extend(recovery);
                store
            }),
            None => None,
        };
        if let Some(amnesic) = &amnesic {
            // Before anything is read: a change across both stores is whole or absent.
            let what = format!(
                "a change to both stores (an import, or a service moved between {} and {}) had been interrupted",
                config.state_dir.display(),
                amnesic.dir().display()
            );
            match store::finish_across(amnesic, &persistent) {
                Ok(None) => {}
                Ok(Some(store::Interrupted::Finished)) => persistent.warn(format!("{what}; it was finished now")),
                Ok(Some(store::Interrupted::Undone)) => persistent.warn(format!(
                    "{what}, and the persistent store was changed since by a process that did not know of it: \
                     what it had written to {} was undone. Check the services there (`tails-server list`) and \
                     make that change again",
                    amnesic.dir().display()
                )),
                // The stores can still be read; nothing is changed before it is finished
                // (the note counts on it), which every open tries again.
                Err(e) => {
                    let why = format!(
                        "{what}, and it could not be finished now ({e}); nothing can be changed until it is \
                         (tails-server tries again at every command)"
                    );
                    persistent.warn(why.clone());
                    persistent.refuse_changes(why.clone());
                    amnesic.refuse_changes(why);
                }
            }
        }
        Ok(Self { config, persistent, amnesic, catalog, recoveries })
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Damaged stores recovered while opening: the caller must tell the user.
    pub fn recoveries(&self) -> &[Recovery] {
        &self.recoveries
    }

    pub fn list(&self) -> Result<Vec<ServiceRecord>> {
        self.read_both_stores(Store::services, |r| r.name.clone())
    }

    /// Every record `read` gives from both stores, in name order. A name in both stores can
    /// only be the trace of a move interrupted by an older version (which wrote the
    /// persistent copy first): it wins.
    fn read_both_stores<T, K: Ord>(&self, read: fn(&Store) -> Result<Vec<T>>, name: fn(&T) -> K) -> Result<Vec<T>> {
        let mut all: BTreeMap<K, T> = BTreeMap::new();
        if let Some(amnesic) = &self.amnesic {
            all.extend(read(amnesic)?.into_iter().map(|r| (name(&r), r)));
        }
        all.extend(read(&self.persistent)?.into_iter().map(|r| (name(&r), r)));
        Ok(all.into_values().collect())
    }

    /// The record `get` finds, and the store it is in (the persistent one first).
    fn find_in_stores<T>(&self, get: impl Fn(&Store) -> Result<Option<T>>) -> Result<Option<(Location, T)>> {
        if let Some(record) = get(&self.persistent)? {
            return Ok(Some((Location::Persistent, record)));
        }
        Ok(self.amnesic.as_ref().map(&get).transpose()?.flatten().map(|r| (Location::Amnesic, r)))
    }

    fn find(&self, name: &ServiceName) -> Result<(Location, ServiceRecord)> {
        if let Some(found) = self.find_in_stores(|store| store.get(name))? {
            return Ok(found);
        }
        let known = self.list()?;
        let similar = crate::error::similar_name(name.as_str(), known.iter().map(|r| r.name.as_str()));
        Err(Error::NoSuchService { name: name.to_string(), similar })
    }

    pub fn get(&self, name: &ServiceName) -> Result<ServiceRecord> {
        self.find(name).map(|(_, record)| record)
    }

    fn store(&mut self, location: Location) -> Result<&Store> {
        match location {
            Location::Persistent => Ok(&self.persistent),
            Location::Amnesic => {
                if self.amnesic.is_none() {
                    let dir =
                        self.config.runtime_dir.clone().ok_or(Error::NoRuntimeDir { uid: crate::unix::euid() })?;
                    let (store, recovery) = Store::open(&dir, self.config.store.clone(), true)?.expect("created");
                    self.recoveries.extend(recovery);
                    self.amnesic = Some(store);
                }
                Ok(self.amnesic.as_ref().expect("just opened"))
            }
        }
    }

    fn location_for(record: &ServiceRecord) -> Location {
        if record.is_persistent() {
            Location::Persistent
        } else {
            Location::Amnesic
        }
    }

    /// Writes a record where its persistence option says it belongs (a move between the
    /// stores is one change across both).
    fn save(&mut self, from: Location, record: ServiceRecord) -> Result<()> {
        let to = Self::location_for(&record);
        if from == to {
            return self.store(to)?.commit(vec![Change::Put(record)]).map(drop);
        }
        let left = vec![Change::Delete(record.name.clone())];
        let moved = vec![Change::Put(record)];
        match to {
            Location::Persistent => self.commit_to_both(moved, left)?,
            Location::Amnesic => self.commit_to_both(left, moved)?,
        }
        // The store it left keeps no copy of its keys: moved to the amnesic one, it must be
        // gone from the stick, not merely unlisted there.
        self.store_mut(from)?.destroy_history();
        Ok(())
    }

    /// The option specs that apply to a service: its kind's, or, if that definition has
    /// since disappeared, the common ones plus types inferred from the stored values.
    pub fn option_specs(&self, record: &ServiceRecord) -> BTreeMap<String, OptionSpec> {
        match self.catalog.get(&record.kind) {
            Ok(def) => def.all_options(),
            Err(_) => {
                let mut specs = common_options();
                for (name, value) in &record.options {
                    specs.entry(name.clone()).or_insert_with(|| OptionSpec {
                        value_type: match value {
                            OptionValue::Bool(_) => OptionType::Bool,
                            OptionValue::Integer(_) => OptionType::Integer,
                            OptionValue::String(_) => OptionType::String,
                        },
                        default: value.clone(),
                        description: String::new(),
                        display_status: false,
                        secret: false,
                        min: None,
                        format: None,
                        max: None,
                        widens_access_when: None,
                    });
                }
                specs
            }
        }
    }

    /// Where a service's program keeps its data and the folders the user fills: with the store
    /// that holds the service ([`crate::system::files_root`]).
    pub fn data_dir(&self, record: &ServiceRecord) -> std::path::PathBuf {
        match (Self::location_for(record), &self.config.runtime_dir) {
            (Location::Amnesic, Some(dir)) => crate::system::service_data_dir(dir, false, &record.name),
            _ => crate::system::service_data_dir(&self.config.state_dir, true, &record.name),
        }
    }

    pub fn kind_of(&self, record: &ServiceRecord) -> Option<&KindDefinition> {
        self.catalog.get(&record.kind).ok()
    }
}

/// Helpers of `import`, `remove` and `remove_client`.
impl Manager {
    /// Problems met after changes were committed that did not undo them (a snapshot that
    /// could not be written, old copies of removed keys that could not be erased): the
    /// changes are stored; the caller must tell the user.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = self.persistent.warnings();
        warnings.extend(self.amnesic.iter().flat_map(Store::warnings));
        warnings
    }

    fn store_mut(&mut self, location: Location) -> Result<&mut Store> {
        self.store(location)?;
        Ok(match location {
            Location::Persistent => &mut self.persistent,
            Location::Amnesic => self.amnesic.as_mut().expect("opened by store()"),
        })
    }

    /// Commits changes to the stores, all or nothing, also across a kill (see
    /// [`store::commit_across`]): every store written to is opened (created) first.
    fn commit_to_both(&mut self, persistent: Vec<Change>, amnesic: Vec<Change>) -> Result<()> {
        if amnesic.is_empty() {
            return if persistent.is_empty() { Ok(()) } else { self.persistent.commit(persistent).map(drop) };
        }
        self.store(Location::Amnesic)?;
        let amnesic_store = self.amnesic.as_ref().expect("opened above");
        if persistent.is_empty() {
            return amnesic_store.commit(amnesic).map(drop);
        }
        store::commit_across(amnesic_store, amnesic, &self.persistent, persistent)
    }

    /// After a removal from the store at `removed_from`: the other store may still hold
    /// the secret (`needle`, as records store it) from before a move between the stores,
    /// or a second copy of the service (an interrupted move). Both go. The removal itself is
    /// already stored: what fails here is a warning.
    fn destroy_traces_elsewhere(&mut self, removed_from: Location, service: Option<&ServiceRecord>, needle: &[u8]) {
        let other = match removed_from {
            Location::Persistent => Location::Amnesic,
            Location::Amnesic => Location::Persistent,
        };
        let store = match other {
            Location::Persistent => &mut self.persistent,
            Location::Amnesic => match self.amnesic.as_mut() {
                Some(store) => store,
                None => return,
            },
        };
        if let Some(service) = service {
            let copy = store.get(&service.name).map(|copy| copy.is_some_and(|copy| copy.key == service.key));
            let deleted = match copy {
                Ok(true) => store.commit_destroying(vec![Change::Delete(service.name.clone())]).map(|_| true),
                Ok(false) => Ok(false),
                Err(e) => Err(e),
            };
            match deleted {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => store.warn(format!(
                    "service {} was removed, but a second copy of it in {} could not be: {e}",
                    service.name,
                    store.dir().display()
                )),
            }
        }
        if store.holds_any(&[needle]) {
            store.destroy_history();
        }
    }
}

#[cfg(test)]
mod import_rollback_tests {
    use super::*;

    /// A move from the persistent store to the amnesic one, killed after its amnesic half
    /// (`both`: after both halves, before the note was erased); then `change` on the
    /// persistent store by a process that did not see the note.
    fn interrupted_move(both: bool, change: impl FnOnce(&mut Manager)) -> (tempfile::TempDir, ServiceRecord) {
        let root = tempfile::tempdir().unwrap();
        let mut config = Config::new(root.path().join("state"));
        config.runtime_dir = Some(root.path().join("run"));
        let mut manager = Manager::open(config.clone()).unwrap();
        let mut blog = AddRequest::new("custom");
        blog.name = Some(ServiceName::new("blog").unwrap());
        blog.local_port = Some(8080);
        let blog = manager.add(blog).unwrap();
        let mut moved = blog.clone();
        moved.options.insert(PERSISTENCE.into(), OptionValue::Bool(false));
        manager.store(Location::Amnesic).unwrap();
        store::interrupted_across_for_test(
            manager.amnesic.as_ref().unwrap(),
            vec![Change::Put(moved)],
            &manager.persistent,
            vec![Change::Delete(blog.name.clone())],
            both,
        );
        drop(manager);
        // Another process, whose amnesic store is elsewhere: it does not see the note.
        let mut elsewhere = config.clone();
        elsewhere.runtime_dir = Some(root.path().join("elsewhere"));
        change(&mut Manager::open(elsewhere).unwrap());
        (root, blog)
    }

    fn reopen(root: &tempfile::TempDir) -> Manager {
        let mut config = Config::new(root.path().join("state"));
        config.runtime_dir = Some(root.path().join("run"));
        Manager::open(config).unwrap()
    }

    #[test]
    fn an_interrupted_move_is_finished_at_the_next_open() {
        let (root, blog) = interrupted_move(false, |_| {});
        let manager = reopen(&root);
        let (location, record) = manager.find(&blog.name).unwrap();
        assert_eq!(location, Location::Amnesic, "moved");
        assert!(!record.is_persistent());
        assert!(manager.persistent.get(&blog.name).unwrap().is_none(), "no copy left behind");
        assert!(manager.warnings().iter().any(|w| w.contains("it was finished now")), "{:?}", manager.warnings());
    }

    #[test]
    fn an_interrupted_move_is_undone_when_the_persistent_store_changed_since() {
        let (root, blog) = interrupted_move(false, |manager| {
            manager.add_client(&ServiceName::new("blog").unwrap(), ClientName::new("alice").unwrap(), None).unwrap();
        });
        let manager = reopen(&root);
        let (location, record) = manager.find(&blog.name).unwrap();
        assert_eq!(location, Location::Persistent, "the later change stands");
        assert!(record.clients.iter().any(|c| c.name.as_str() == "alice"), "alice was not lost");
        assert!(manager.amnesic.as_ref().unwrap().get(&blog.name).unwrap().is_none(), "the amnesic half undone");
        assert!(manager.warnings().iter().any(|w| w.contains("was undone")), "{:?}", manager.warnings());
        assert!(!root.path().join("run/across-stores.pending").exists());
    }

    #[test]
    fn a_move_done_but_for_its_note_stays_done_whatever_changed_since() {
        let (root, blog) = interrupted_move(true, |manager| {
            let mut other = AddRequest::new("custom");
            other.name = Some(ServiceName::new("other").unwrap());
            other.local_port = Some(8081);
            manager.add(other).unwrap();
        });
        let manager = reopen(&root);
        let (location, _) = manager.find(&blog.name).expect("the moved service is not lost");
        assert_eq!(location, Location::Amnesic);
        assert!(manager.find(&ServiceName::new("other").unwrap()).is_ok());
        assert!(!root.path().join("run/across-stores.pending").exists());
    }

    #[test]
    fn a_note_that_cannot_be_finished_lets_reads_through_and_refuses_changes() {
        let (root, blog) = interrupted_move(false, |_| {});
        // The note cannot be decoded: nothing can tell what it would have done.
        std::fs::write(root.path().join("run/across-stores.pending"), b"{").unwrap();
        let mut manager = reopen(&root);
        assert!(manager.find(&blog.name).is_ok(), "reads work");
        let refused = manager.set_option(&blog.name, "autostart", "false").unwrap_err();
        assert!(refused.to_string().contains("nothing can be changed until it is"), "{refused}");
    }

    #[test]
    fn a_failed_second_commit_undoes_the_first() {
        let root = tempfile::tempdir().unwrap();
        let mut config = Config::new(root.path().join("state"));
        config.runtime_dir = Some(root.path().join("run"));
        let mut manager = Manager::open(config).unwrap();
        let mut blog = AddRequest::new("custom");
        blog.name = Some(ServiceName::new("blog").unwrap());
        blog.local_port = Some(8080);
        let blog = manager.add(blog).unwrap();
        let mut web = AddRequest::new("web");
        web.options.push(("persistence".into(), "false".into()));
        manager.add(web).unwrap();
        let before = manager.list().unwrap();

        // A backup replacing blog (persistent) and adding an amnesic service.
        let replacement = ServiceRecord { key: OnionSecretKey::generate().unwrap(), ..blog.clone() };
        let mut fresh = AddRequest::new("custom");
        fresh.name = Some(ServiceName::new("fresh").unwrap());
        fresh.local_port = Some(9000);
        fresh.options.push(("persistence".into(), "false".into()));
        let fresh = manager.new_record(fresh, OnionSecretKey::generate().unwrap(), None).unwrap();

        // The amnesic half is committed first; the persistent one then fails.
        manager.persistent.break_change_counter_for_test();
        let amnesic_before = manager.amnesic.as_ref().unwrap().services().unwrap();
        let error = manager.import(vec![replacement, fresh], OnConflict::Replace, false).unwrap_err();
        assert!(error.to_string().contains(&root.path().join("state").display().to_string()), "{error}");
        let amnesic = manager.amnesic.as_ref().unwrap();
        assert_eq!(amnesic.services().unwrap(), amnesic_before, "the amnesic half was undone");
        assert!(!amnesic.dir().join("across-stores.pending").exists(), "nothing is left to finish");
        assert_eq!(manager.list().unwrap(), before);
    }
}
