//! The sled-backed store of service records (and of the keys received from other services'
//! owners), with the guarantees the rest relies on:
//! - one process at a time (an advisory lock, waited for a bounded time), opened briefly;
//! - every change is first written as a checksummed snapshot (the records it changed, each
//!   in a file of its own, and the list naming every record's file), then applied to sled,
//!   records first and change counter last, flushed before `commit` returns (or later, by
//!   the service that holds sled, as the snapshot says);
//! - a command that only reads is answered from the newest snapshot and never opens sled
//!   (sled rewrites part of its log at every open: on a USB stick, a read must write
//!   nothing);
//! - the first write of a process opens sled and checks it against the snapshots: a change
//!   interrupted between its snapshot and sled is finished, and a database sled lost or
//!   damaged is rebuilt from the newest intact snapshot, with a message, instead of
//!   silently starting empty;
//! - private permissions, checked like tor checks its DataDirectory.
//!
//! Here: the store, its changes and purges. `snapshot`: the snapshot formats and record
//! files. `recovery`: sled's open, checks, migration and rebuilds, and the databases the
//! service holds. `across`: a change across the persistent and amnesic stores. `files`:
//! the lock, permissions, syncs and scrubbing.

use std::cell::{OnceCell, RefCell};
use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use std::collections::BTreeMap;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::model::{now_unix, ReceivedKey, ServiceRecord};
use crate::names::{KeyName, ServiceName};

mod across;
mod files;
mod recovery;
mod snapshot;

use self::{files::*, recovery::*, snapshot::*};
#[cfg(test)]
pub(crate) use across::interrupted_across_for_test;
pub use across::{commit_across, finish_across, Interrupted};
pub(crate) use files::{check_private, not_found_is_ok, scrub, write_atomically};

/// Version of the layout of records in the store. Bump it with a migration in [`migrate`].
/// 2: received keys (a tree of their own) beside the services.
pub const SCHEMA_VERSION: u64 = 2;

const DB_DIR: &str = "db";
/// A database being rebuilt without history, and the one it replaced (see `purge_history`).
const DB_NEW: &str = "db.new";
const DB_OLD: &str = "db.old";
/// Present while a change that destroys secrets is not yet followed by the purge.
const PURGE_MARKER: &str = "purge-pending";
const DAMAGED_PREFIX: &str = "db.damaged-";
/// Damaged databases kept for inspection after recoveries; older ones are erased.
pub const DAMAGED_COPIES_KEPT: usize = 2;
const SNAPSHOT_DIR: &str = "snapshots";
const LOCK_FILE: &str = "lock";
const SERVICES_TREE: &str = "services";
const KEYS_TREE: &str = "received-keys";
const META_TREE: &str = "meta";
const KEY_SCHEMA: &str = "schema-version";
const KEY_GENERATION: &str = "generation";
const SNAPSHOT_MAGIC: &str = "tails-server-snapshot";
/// A change across two stores, written down in the first one's directory before either
/// store is touched, and erased once both hold it (see [`commit_across`]).
const ACROSS_PENDING: &str = "across-stores.pending";
/// 1: a JSON array of services; 2: `{"services": [...], "keys": [...]}`; 3: the same body,
/// and a last header field saying whether sled is flushed before the change is reported
/// (`flushed`) or later (`deferred`, see [`StoreOptions::hold_database`]); 4: the same
/// header, and a body that names each record's file instead of holding it (see
/// [`Manifest`]), so that a change writes the records it changed, not every record. All
/// are read.
const SNAPSHOT_FORMAT: u64 = 4;
/// A record's file in the snapshot folder: `<sha256 of its content>.record`.
const RECORD_SUFFIX: &str = ".record";

#[derive(Clone)]
pub struct StoreOptions {
    /// How long to wait for another process to release the store.
    pub lock_timeout: Duration,
    /// sled's page cache; its default (1 GB) is absurd for a few kilobytes of records.
    pub cache_capacity: u64,
    pub snapshots_kept: usize,
    /// Keep sled open in this process between commands, until [`let_go_of_held_databases`]
    /// (a long-running service; false: closed with the store, as a command does). While it
    /// is held, a change is durable once its snapshot is on disk, and sled's log reaches
    /// the disk when the database is let go: sled's open and close cost a USB stick five
    /// fsync-class calls, a change then costs the snapshot's two. A crash in between loses
    /// nothing: the next open rolls sled forward from the snapshots.
    pub hold_database: bool,
    /// Called (once) when another process holds sled open, before waiting for it: a
    /// command asks the system service to let go (see [`StoreOptions::hold_database`]).
    pub ask_holder_to_let_go: Option<BusyHook>,
}

/// What a process does to make the one holding a store's database let go of it.
#[derive(Clone)]
pub struct BusyHook(pub std::sync::Arc<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOptions")
            .field("lock_timeout", &self.lock_timeout)
            .field("cache_capacity", &self.cache_capacity)
            .field("snapshots_kept", &self.snapshots_kept)
            .field("hold_database", &self.hold_database)
            .field("ask_holder_to_let_go", &self.ask_holder_to_let_go.is_some())
            .finish()
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            lock_timeout: Duration::from_secs(10),
            cache_capacity: 2 * 1024 * 1024,
            snapshots_kept: 3,
            hold_database: false,
            ask_holder_to_let_go: None,
        }
    }
}

/// What happened when a damaged store was recovered; callers must tell the user.
#[derive(Debug, Clone)]
pub struct Recovery {
    pub dir: PathBuf,
    pub problem: String,
    pub snapshot: PathBuf,
    pub generation: u64,
    pub damaged_copy: Option<PathBuf>,
    /// Older damaged copies erased to keep at most [`DAMAGED_COPIES_KEPT`].
    pub erased_copies: Vec<PathBuf>,
}

impl std::fmt::Display for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the store in {} was damaged ({}). It was restored from the snapshot {} (change number {}).",
            self.dir.display(),
            self.problem,
            self.snapshot.display(),
            self.generation
        )?;
        if let Some(copy) = &self.damaged_copy {
            write!(
                f,
                " The damaged database was kept in {} (at most {DAMAGED_COPIES_KEPT} damaged copies are kept; \
                 removing a service or a client erases them).",
                copy.display()
            )?;
        }
        if !self.erased_copies.is_empty() {
            let names: Vec<String> = self.erased_copies.iter().map(|p| p.display().to_string()).collect();
            write!(f, " Older damaged copies were erased: {}.", names.join(", "))?;
        }
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
pub enum Change {
    Put(ServiceRecord),
    Delete(ServiceName),
    PutKey(ReceivedKey),
    DeleteKey(KeyName),
}

/// sled's handles; fields drop in order, the trees before the database.
#[derive(Clone)]
struct Trees {
    services: sled::Tree,
    keys: sled::Tree,
    meta: sled::Tree,
    db: sled::Db,
}

/// Everything a store holds, each kind of record by name.
#[derive(Default, Clone, PartialEq)]
struct Contents {
    services: BTreeMap<String, ServiceRecord>,
    keys: BTreeMap<String, ReceivedKey>,
}

impl Contents {
    fn new(services: Vec<ServiceRecord>, keys: Vec<ReceivedKey>) -> Self {
        Contents {
            services: services.into_iter().map(|r| (r.name.as_str().to_owned(), r)).collect(),
            keys: keys.into_iter().map(|k| (k.name.as_str().to_owned(), k)).collect(),
        }
    }

    /// Applies `changes`; returns, per change, the tree, the record's name in it and its
    /// encoding (None: deleted).
    fn apply(&mut self, changes: Vec<Change>) -> Result<Vec<Encoded>> {
        let mut encoded = Vec::with_capacity(changes.len());
        for change in changes {
            match change {
                Change::Put(record) => {
                    encoded.push((Tree::Services, record.name.as_str().to_owned(), Some(encode(&record)?)));
                    self.services.insert(record.name.as_str().to_owned(), record);
                }
                Change::Delete(name) => {
                    encoded.push((Tree::Services, name.as_str().to_owned(), None));
                    self.services.remove(name.as_str());
                }
                Change::PutKey(key) => {
                    encoded.push((Tree::Keys, key.name.as_str().to_owned(), Some(encode(&key)?)));
                    self.keys.insert(key.name.as_str().to_owned(), key);
                }
                Change::DeleteKey(name) => {
                    encoded.push((Tree::Keys, name.as_str().to_owned(), None));
                    self.keys.remove(name.as_str());
                }
            }
        }
        Ok(encoded)
    }

    /// Every record, encoded, per tree: what a rebuilt database holds.
    fn encoded(&self) -> Result<Vec<Encoded>> {
        let services =
            self.services.values().map(|r| Ok((Tree::Services, r.name.as_str().to_owned(), Some(encode(r)?))));
        let keys = self.keys.values().map(|k| Ok((Tree::Keys, k.name.as_str().to_owned(), Some(encode(k)?))));
        services.chain(keys).collect()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tree {
    Services,
    Keys,
}

/// A record's tree, name and encoding (None: deleted), ready for a transaction.
type Encoded = (Tree, String, Option<zeroize::Zeroizing<Vec<u8>>>);

pub struct Store {
    dir: PathBuf,
    /// The committed records and their change number: every read is answered from here.
    view: RefCell<View>,
    /// Empty after `purge_history` swapped the database: reopened when next needed (every
    /// open of sled rewrites part of its log, so not opening it for nothing saves writes).
    trees: OnceCell<Trees>,
    options: StoreOptions,
    /// Damaged databases rebuilt from a snapshot when sled was opened (see [`Recovery`]).
    recoveries: RefCell<Vec<Recovery>>,
    /// What went wrong after a change was committed, without undoing it (see [`Store::warnings`]).
    warnings: RefCell<Vec<String>>,
    /// Why changes are refused (see [`Store::refuse_changes`]).
    refused: RefCell<Option<String>>,
    // Held for the life of the Store: the advisory lock is released when this closes
    // (after sled, which `Drop::drop` closes first).
    _lock: Option<File>,
}

impl Drop for Store {
    fn drop(&mut self) {
        // sled before the lock that protects it (a held database stays open, see `held`).
        drop(self.trees.take());
    }
}

/// The records as of the newest snapshot (which is also the database's content once sled
/// has been opened and checked), in name order.
#[derive(Default)]
struct View {
    generation: u64,
    contents: Contents,
}

/// What checking an opened database against the snapshots found.
enum Checked {
    /// The database holds the newest snapshot's change, or a newer one.
    Current,
    /// A newer snapshot: a change interrupted after its snapshot was written and before
    /// sled committed it, or changes made while sled was held and not yet flushed when the
    /// process died. Rolling sled forward to the snapshot finishes them.
    Behind(u64, Contents),
}

impl Store {
    /// Opens (creating it if `create`) the store in `dir`. Returns None when `create` is
    /// false and there is no store there.
    pub fn open(dir: &Path, options: StoreOptions, create: bool) -> Result<Option<(Store, Option<Recovery>)>> {
        if !dir.exists() {
            if !create {
                return Ok(None);
            }
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| Error::io("cannot create the store directory", dir, e))?;
        }
        check_private(dir, true)?;
        let lock = acquire_lock(dir, options.lock_timeout)?;
        let snapshot_dir = dir.join(SNAPSHOT_DIR);
        ensure_private_dir(&snapshot_dir)?;
        // A change that destroys secrets was interrupted before its purge finished: the
        // half-built or replaced databases go first (a crash between the two renames leaves
        // no database, which the snapshot recovery below rebuilds), then the purge is redone.
        let interrupted = clean_up_interrupted_purge(dir)?;
        let mut store = Store {
            dir: dir.to_owned(),
            view: RefCell::new(View::default()),
            trees: OnceCell::new(),
            options,
            recoveries: RefCell::new(Vec::new()),
            warnings: RefCell::new(Vec::new()),
            refused: RefCell::new(None),
            _lock: lock,
        };
        // A database made with sled's default segment (by earlier versions) is rebuilt once.
        let outdated = segment_size_of(&dir.join(DB_DIR)).is_some_and(|size| size != SEGMENT_SIZE);
        // The usual case, and all a read needs: the newest snapshot, intact, beside a database.
        if !interrupted && !outdated && dir.join(DB_DIR).exists() {
            if let Some(newest) = list_snapshots(&snapshot_dir)?.first() {
                if let Ok(contents) = newest.verify() {
                    *store.view.borrow_mut() = View { generation: newest.generation, contents };
                    return Ok(Some((store, None)));
                }
            }
        }
        // Otherwise sled is opened now, checked, and repaired if need be.
        store.trees()?;
        if interrupted || outdated {
            store.destroy_history();
        }
        let recovery = store.recoveries.borrow_mut().pop();
        Ok(Some((store, recovery)))
    }

    /// sled, opened at the first write (or when no snapshot can answer reads) and checked
    /// against the snapshots; the view then holds what the database holds.
    fn trees(&self) -> Result<&Trees> {
        if let Some(trees) = self.trees.get() {
            return Ok(trees);
        }
        let trees = match self.options.hold_database.then(|| held::get(&self.dir)).flatten() {
            // Still current: while this process holds sled, no other can change the store.
            Some(trees) => trees,
            None => {
                let trees = self.open_database()?;
                if self.options.hold_database {
                    held::keep(&self.dir, trees.clone());
                }
                trees
            }
        };
        *self.view.borrow_mut() = self.contents(&trees)?;
        Ok(self.trees.get_or_init(|| trees))
    }

    /// What the database holds: its change counter and its records.
    fn contents(&self, trees: &Trees) -> Result<View> {
        let services = self.decode_tree(&trees.services)?;
        let keys = self.decode_tree(&trees.keys)?;
        let generation = read_u64(&trees.meta, KEY_GENERATION)
            .map_err(|detail| Error::StoreCorrupt { dir: self.dir.clone(), detail })?
            .unwrap_or(0);
        Ok(View { generation, contents: Contents::new(services, keys) })
    }

    fn decode_tree<T: DeserializeOwned>(&self, tree: &sled::Tree) -> Result<Vec<T>> {
        tree.iter().map(|item| decode(&self.dir, item.map_err(|e| self.sled_error(e))?.1.as_ref())).collect()
    }

    /// Opens sled and checks it: finishes an interrupted change, rebuilds a missing or
    /// damaged database from the newest intact snapshot (kept in `recoveries`).
    fn open_database(&self) -> Result<Trees> {
        let db_path = self.dir.join(DB_DIR);
        let fresh = !db_path.exists();
        let snapshots = list_snapshots(&self.dir.join(SNAPSHOT_DIR))?;
        if fresh && !snapshots.is_empty() {
            return self.rebuild(&snapshots, "its database is missing".into(), false);
        }
        let problem = match open_sled(&db_path, &self.options) {
            Ok(trees) => match self.check(&trees, fresh, &snapshots) {
                Ok(Checked::Current) => {
                    if snapshots.is_empty() {
                        // A new store, or one whose snapshots are gone: reads need one.
                        let view = self.contents(&trees)?;
                        self.write_snapshot(view.generation, &view.contents, false)?;
                    }
                    tighten(&db_path)?;
                    return Ok(trees);
                }
                Ok(Checked::Behind(generation, contents)) => {
                    self.roll_forward(&trees, generation, &contents)?;
                    tighten(&db_path)?;
                    return Ok(trees);
                }
                Err(CheckError::Fatal(e)) => return Err(e),
                Err(CheckError::Damaged(problem)) => problem,
            },
            Err(SledOpenError::Damaged(problem)) => problem,
            Err(SledOpenError::Fatal(e)) => return Err(e),
        };
        self.rebuild(&snapshots, problem, true)
    }

    /// Makes the database hold exactly `contents` at change `generation`, in one transaction.
    fn roll_forward(&self, trees: &Trees, generation: u64, contents: &Contents) -> Result<()> {
        let encoded = contents.encoded()?;
        let keys_of = |tree: &sled::Tree| -> Result<Vec<sled::IVec>> {
            tree.iter().keys().collect::<std::result::Result<_, _>>().map_err(|e| self.sled_error(e))
        };
        let (stale_services, stale_keys) = (keys_of(&trees.services)?, keys_of(&trees.keys)?);
        use sled::transaction::{TransactionError, Transactional};
        let result: std::result::Result<(), TransactionError<()>> = (&trees.services, &trees.keys, &trees.meta)
            .transaction(|(services, keys, meta)| {
                for key in &stale_services {
                    services.remove(key.as_ref())?;
                }
                for key in &stale_keys {
                    keys.remove(key.as_ref())?;
                }
                for (tree, name, value) in &encoded {
                    let tree = if *tree == Tree::Services { services } else { keys };
                    tree.insert(name.as_bytes(), value.as_deref().expect("every record").as_slice())?;
                }
                meta.insert(KEY_GENERATION, &generation.to_be_bytes())?;
                Ok(())
            });
        match result {
            Ok(()) => {}
            Err(TransactionError::Storage(e)) => return Err(self.sled_error(e)),
            Err(TransactionError::Abort(())) => unreachable!("the transaction never aborts"),
        }
        trees.db.flush().map_err(|e| self.sled_error(e))?;
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn services(&self) -> Result<Vec<ServiceRecord>> {
        Ok(self.view.borrow().contents.services.values().cloned().collect())
    }

    pub fn get(&self, name: &ServiceName) -> Result<Option<ServiceRecord>> {
        Ok(self.view.borrow().contents.services.get(name.as_str()).cloned())
    }

    /// The keys received from other services' owners, in name order.
    pub fn received_keys(&self) -> Result<Vec<ReceivedKey>> {
        Ok(self.view.borrow().contents.keys.values().cloned().collect())
    }

    pub fn received_key(&self, name: &KeyName) -> Result<Option<ReceivedKey>> {
        Ok(self.view.borrow().contents.keys.get(name.as_str()).cloned())
    }

    /// The number of changes ever committed; also names the snapshots.
    pub fn generation(&self) -> Result<u64> {
        Ok(self.view.borrow().generation)
    }

    /// Problems met after a change was committed that did not undo it (a snapshot that
    /// could not be written, old copies of removed keys that could not be erased). The
    /// change is stored; the caller must tell the user.
    pub fn warnings(&self) -> Vec<String> {
        // Front ends print each warning as a WARNING.
        let mut all: Vec<String> = self.recoveries.borrow().iter().map(|r| r.to_string()).collect();
        all.extend(self.warnings.borrow().iter().cloned());
        all
    }

    /// From now on, every change is refused with `why` (reads still work): something the
    /// next changes must not go past is unfinished.
    pub fn refuse_changes(&self, why: String) {
        *self.refused.borrow_mut() = Some(why);
    }

    fn check_not_refused(&self) -> Result<()> {
        match self.refused.borrow().clone() {
            Some(why) => Err(Error::ChangeNotSaved { dir: self.dir.clone(), detail: why }),
            None => Ok(()),
        }
    }

    /// Adds to [`Store::warnings`].
    pub(crate) fn warn(&self, message: String) {
        self.warnings.borrow_mut().push(message);
    }

    /// Whether every one of `changes` is in effect (each record put as it is, or absent).
    pub fn holds(&self, changes: &[Change]) -> Result<bool> {
        for change in changes {
            let holds = match change {
                Change::Put(record) => self.get(&record.name)?.as_ref() == Some(record),
                Change::Delete(name) => self.get(name)?.is_none(),
                Change::PutKey(key) => self.received_key(&key.name)?.as_ref() == Some(key),
                Change::DeleteKey(name) => self.received_key(name)?.is_none(),
            };
            if !holds {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The changes that would undo `changes` on the store as it is now: the current record
    /// put back, or a record that does not exist yet deleted.
    pub fn inverse(&self, changes: &[Change]) -> Result<Vec<Change>> {
        changes
            .iter()
            .map(|change| {
                Ok(match change {
                    Change::Put(ServiceRecord { name, .. }) | Change::Delete(name) => match self.get(name)? {
                        Some(current) => Change::Put(current),
                        None => Change::Delete(name.clone()),
                    },
                    Change::PutKey(ReceivedKey { name, .. }) | Change::DeleteKey(name) => {
                        match self.received_key(name)? {
                            Some(current) => Change::PutKey(current),
                            None => Change::DeleteKey(name.clone()),
                        }
                    }
                })
            })
            .collect()
    }

    /// Stores all changes, or none: first the snapshot of the records with the changes
    /// applied (what makes the change durable and whole, and what reads and repairs rely
    /// on), then sled's records and change counter, flushed unless the database is held
    /// (see [`StoreOptions::hold_database`]). When this returns Ok the change is on disk,
    /// and the generation it returns names it.
    pub fn commit(&self, changes: Vec<Change>) -> Result<u64> {
        self.check_not_refused()?;
        let trees = self.trees()?;
        let (generation, mut contents) = {
            let view = self.view.borrow();
            (view.generation + 1, view.contents.clone())
        };
        let encoded = contents.apply(changes)?;
        let snapshot_dir = self.dir.join(SNAPSHOT_DIR);
        // A held database is flushed when let go; the snapshot says so (see `check`).
        let deferred = self.options.hold_database;
        self.write_snapshot(generation, &contents, deferred).map_err(|e| Error::ChangeNotSaved {
            dir: self.dir.clone(),
            detail: format!("its snapshot could not be written: {e}. Nothing was changed"),
        })?;
        // Not a sled transaction: sled writes each one apart from the changes around it
        // (two log writes, each synced), and the snapshot already makes the change whole.
        // The counter goes last: a database whose counter says this change holds all of
        // it; one interrupted before is behind its snapshot and rolled forward (`check`).
        let stored = match read_u64(&trees.meta, KEY_GENERATION) {
            Ok(Some(previous)) if previous == generation - 1 => (|| -> sled::Result<()> {
                for (tree, name, value) in &encoded {
                    let tree = if *tree == Tree::Services { &trees.services } else { &trees.keys };
                    match value {
                        Some(bytes) => tree.insert(name.as_bytes(), bytes.as_slice())?,
                        None => tree.remove(name.as_bytes())?,
                    };
                }
                trees.meta.insert(KEY_GENERATION, &generation.to_be_bytes())?;
                if !deferred {
                    trees.db.flush()?;
                }
                Ok(())
            })()
            .map_err(|e| {
                // Half written: this process must not go on from a database that differs
                // from the snapshots; the next open rolls it back to them.
                held::let_go(&self.dir);
                self.sled_error(e)
            }),
            _ => Err(Error::StoreCorrupt { dir: self.dir.clone(), detail: "its change counter is unreadable".into() }),
        };
        drop(encoded);
        if let Err(e) = stored {
            // The snapshot would otherwise apply the change at the next open.
            let path = snapshot_path(&snapshot_dir, generation);
            return Err(
                match scrub(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|()| sync_dir(&snapshot_dir).map_err(|e| e.to_string()))
                {
                    Ok(()) => e,
                    Err(why) => Error::ChangeLeftPending {
                        dir: self.dir.clone(),
                        detail: format!(
                            "{e}; and its snapshot {} could not be removed ({why}), so the change will be applied \
                         when tails-server next opens the store",
                            path.display()
                        ),
                    },
                },
            );
        }
        *self.view.borrow_mut() = View { generation, contents };
        // A removal's purge erases (zeros, then unlinks) what held the removed secrets: until
        // it has, nothing is merely unlinked, which would leave them in freed blocks.
        if !self.dir.join(PURGE_MARKER).exists() {
            for old in list_snapshots(&snapshot_dir).unwrap_or_default().into_iter().skip(self.options.snapshots_kept) {
                let _ = fs::remove_file(&old.path);
            }
            remove_unnamed_records(&snapshot_dir);
        }
        if let Err(e) = tighten(&self.dir.join(DB_DIR)) {
            self.warn(format!("the change was saved, but {e}"));
        }
        Ok(generation)
    }

    /// Commits changes that remove secret material (a service, a client's private key),
    /// then destroys every older copy of the store's content (see [`Store::purge_history`]).
    /// The change is stored when this returns Ok; a purge that could not finish is reported
    /// in [`Store::warnings`] and redone when the store is next opened.
    pub fn commit_destroying(&mut self, changes: Vec<Change>) -> Result<u64> {
        self.check_not_refused()?;
        // The marker makes the next open finish the purge if this process dies before it.
        self.mark_purge_pending()?;
        let generation = self.commit(changes)?;
        self.purge_or_warn(Ok(()));
        Ok(generation)
    }

    /// [`Store::purge_history`], its failure reported in [`Store::warnings`].
    pub fn destroy_history(&mut self) {
        let marked = self.mark_purge_pending();
        self.purge_or_warn(marked);
    }

    fn purge_or_warn(&mut self, marked: Result<()>) {
        if let Err(e) = marked.and_then(|()| self.purge_history()) {
            self.warn(format!(
                "older copies of the removed keys may remain in {}: they could not be erased ({e}). \
                 tails-server tries again the next time it opens this store",
                self.dir.display()
            ));
        }
    }

    /// Leaves nothing on disk but the current records: rebuilds the database from them in
    /// a fresh sled directory (sled's log keeps old versions of records until it reuses the
    /// space), swaps it in by renames, then erases (zeros, fsync, unlink) the old database,
    /// every snapshot but the current one, and the damaged copies kept by recoveries.
    pub fn purge_history(&mut self) -> Result<()> {
        let trees = self.trees()?;
        let generation = self.view.borrow().generation;
        let read =
            |tree: &sled::Tree| tree.iter().collect::<std::result::Result<Vec<_>, _>>().map_err(|e| self.sled_error(e));
        let (services, keys) = (read(&trees.services)?, read(&trees.keys)?);
        let db_path = self.dir.join(DB_DIR);
        let new_path = self.dir.join(DB_NEW);
        let old_path = self.dir.join(DB_OLD);
        for leftover in [&new_path, &old_path] {
            scrub(leftover).map_err(|e| Error::io("cannot erase", leftover, e))?;
        }

        // 1. A fresh database holding only the current records, on disk before it is used.
        {
            let fresh = open_sled(&new_path, &self.options).map_err(|e| open_error(&self.dir, e))?;
            let sled_err = |e| Error::store(&self.dir, e);
            for (tree, records) in [(&fresh.services, &services), (&fresh.keys, &keys)] {
                for (key, value) in records {
                    tree.insert(key, value.clone()).map_err(sled_err)?;
                }
            }
            fresh.meta.insert(KEY_SCHEMA, &SCHEMA_VERSION.to_be_bytes()).map_err(sled_err)?;
            fresh.meta.insert(KEY_GENERATION, &generation.to_be_bytes()).map_err(sled_err)?;
            fresh.db.flush().map_err(sled_err)?;
        }
        drop((services, keys));
        tighten(&new_path)?;
        // 2. The current snapshot, so that no older one is needed to recover.
        let snapshot_dir = self.dir.join(SNAPSHOT_DIR);
        // (Also when it is there but unreadable: what it names is kept below, and nothing else.)
        if (SnapshotFile { path: snapshot_path(&snapshot_dir, generation), generation }).verify().is_err() {
            if let Err(e) = self.write_snapshot(generation, &self.view.borrow().contents, false) {
                self.warn(format!(
                    "the snapshot of change {generation} in {} could not be written: {e}",
                    self.dir.display()
                ));
            }
        }

        // 3. The swap. sled is closed first so that nothing it does later lands in the
        // directory that takes its place.
        drop(self.trees.take());
        held::let_go(&self.dir);
        let swapped = fs::rename(&db_path, &old_path)
            .map_err(|e| Error::io("cannot move aside", &db_path, e))
            .and_then(|()| match fs::rename(&new_path, &db_path) {
                Ok(()) => Ok(()),
                Err(e) => {
                    let _ = fs::rename(&old_path, &db_path);
                    Err(Error::io("cannot move into place", &new_path, e))
                }
            })
            .and_then(|()| sync_dir(&self.dir));
        // Reopened only if this handle is used again (`trees`).
        swapped?;

        // 4. Erase what held the history.
        let erase = |path: &Path| scrub(path).map_err(|e| Error::io("cannot erase", path, e));
        erase(&old_path)?;
        let current = snapshot_path(&snapshot_dir, generation);
        // What the current snapshot names is kept; unreadable, it could name anything.
        let current_records: Vec<PathBuf> = SnapshotFile { path: current.clone(), generation }
            .record_files()
            .ok_or_else(|| {
                let unreadable = std::io::Error::new(std::io::ErrorKind::InvalidData, "it names no readable records");
                Error::io("cannot read", &current, unreadable)
            })?
            .into_iter()
            .map(|name| snapshot_dir.join(name))
            .collect();
        for entry in fs::read_dir(&snapshot_dir).map_err(|e| Error::io("cannot read", &snapshot_dir, e))? {
            let path = entry.map_err(|e| Error::io("cannot read", &snapshot_dir, e))?.path();
            if path != current && !current_records.contains(&path) {
                erase(&path)?;
            }
        }
        for copy in damaged_copies(&self.dir)? {
            erase(&copy)?;
        }
        sync_dir(&snapshot_dir)?;
        let marker = self.dir.join(PURGE_MARKER);
        fs::remove_file(&marker).or_else(not_found_is_ok).map_err(|e| Error::io("cannot remove", &marker, e))?;
        sync_dir(&self.dir)
    }

    fn mark_purge_pending(&self) -> Result<()> {
        let marker = self.dir.join(PURGE_MARKER);
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&marker)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io("cannot write", &marker, e))?;
        sync_dir(&self.dir)
    }

    /// Whether any file of this store (database, snapshots, damaged copies) contains one
    /// of `needles`: the trace of a record that once lived here.
    pub fn holds_any(&self, needles: &[&[u8]]) -> bool {
        fn search(path: &Path, needles: &[&[u8]]) -> bool {
            let Ok(meta) = fs::symlink_metadata(path) else { return false };
            if meta.is_dir() {
                let Ok(entries) = fs::read_dir(path) else { return false };
                return entries.flatten().any(|e| search(&e.path(), needles));
            }
            let Ok(mut bytes) = fs::read(path) else { return false };
            let found = needles.iter().any(|n| !n.is_empty() && bytes.windows(n.len()).any(|w| w == *n));
            zeroize::Zeroize::zeroize(&mut bytes);
            found
        }
        let Ok(entries) = fs::read_dir(&self.dir) else { return false };
        entries.flatten().any(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            (name == DB_DIR
                || name == SNAPSHOT_DIR
                || name == DB_OLD
                || name == ACROSS_PENDING
                || name.starts_with(DAMAGED_PREFIX))
                && search(&entry.path(), needles)
        })
    }

    fn sled_error(&self, source: sled::Error) -> Error {
        Error::store(&self.dir, source)
    }

    /// Verifies schema, records and change counter, against the snapshots. A damaged store
    /// is reported so it can be rebuilt; a store from a newer tails-server is refused
    /// untouched.
    fn check(
        &self,
        trees: &Trees,
        fresh: bool,
        snapshots: &[SnapshotFile],
    ) -> std::result::Result<Checked, CheckError> {
        let damaged = |p: String| CheckError::Damaged(p);
        let schema = read_u64(&trees.meta, KEY_SCHEMA).map_err(|e| damaged(format!("cannot read it: {e}")))?;
        match schema {
            None if fresh => {
                trees
                    .meta
                    .insert(KEY_SCHEMA, &SCHEMA_VERSION.to_be_bytes())
                    .and_then(|_| trees.meta.insert(KEY_GENERATION, &0u64.to_be_bytes()))
                    .and_then(|_| trees.db.flush())
                    .map_err(|e| CheckError::Fatal(self.sled_error(e)))?;
            }
            None => return Err(damaged("its schema version is missing".into())),
            Some(v) if v > SCHEMA_VERSION => {
                return Err(CheckError::Fatal(Error::NewerSchema {
                    dir: self.dir.clone(),
                    found: v,
                    supported: SCHEMA_VERSION,
                }))
            }
            Some(v) if v < SCHEMA_VERSION => migrate(self, trees, v).map_err(CheckError::Fatal)?,
            Some(_) => {}
        }
        let mut services = Vec::new();
        for item in trees.services.iter() {
            let (key, value) = item.map_err(|e| damaged(format!("cannot read a record: {e}")))?;
            let record: ServiceRecord = serde_json::from_slice(&value)
                .map_err(|e| damaged(format!("a service record cannot be decoded: {e}")))?;
            if key.as_ref() != record.name.as_str().as_bytes() {
                return Err(damaged(format!("the record of {:?} is filed under another name", record.name)));
            }
            services.push(record);
        }
        let mut keys = Vec::new();
        for item in trees.keys.iter() {
            let (key, value) = item.map_err(|e| damaged(format!("cannot read a received key: {e}")))?;
            let record: ReceivedKey = serde_json::from_slice(&value)
                .map_err(|e| damaged(format!("a received key cannot be decoded: {e}")))?;
            if key.as_ref() != record.name.as_str().as_bytes() {
                return Err(damaged(format!("the received key {:?} is filed under another name", record.name)));
            }
            keys.push(record);
        }
        let in_sled = Contents::new(services, keys);
        let generation = read_u64(&trees.meta, KEY_GENERATION)
            .map_err(|e| damaged(format!("cannot read its change counter: {e}")))?
            .ok_or_else(|| damaged("its change counter is missing".into()))?;
        // A snapshot newer than the database: one change newer is a change interrupted
        // before sled committed it; more, written while sled was held (`deferred`), are
        // changes whose sled writes a dead process never flushed; more otherwise, and sled
        // dropped writes it had acknowledged (it may, after a crash, without an error).
        let mut newest = None;
        let mut unreadable = None;
        for snapshot in snapshots.iter().filter(|s| s.generation >= generation) {
            match snapshot.read() {
                Ok((contents, deferred)) => {
                    newest = Some((snapshot.generation, contents, deferred));
                    break;
                }
                Err(why) if snapshot.generation > generation && unreadable.is_none() => {
                    unreadable = Some((snapshot, why));
                }
                Err(_) => {}
            }
        }
        // A change was reported saved with that snapshot, and neither it nor sled holds it
        // any longer: the person must hear it, not find a client missing later.
        if let Some((snapshot, why)) = unreadable {
            let kept = newest.as_ref().map_or(generation, |(g, ..)| *g);
            self.warn(format!(
                "the snapshot of change {} ({}) cannot be read ({why}); the store goes on from change {kept},                  so what was saved after it is lost: check the services and their clients (`tails-server list`)",
                snapshot.generation,
                snapshot.path.display(),
            ));
        }
        match newest {
            None => Ok(Checked::Current),
            // The same change: sled must hold exactly the snapshot's records (a change's
            // records are written before its counter; anything else is put right).
            Some((g, contents, _)) if g == generation && contents == in_sled => Ok(Checked::Current),
            Some((g, contents, _)) if g == generation => Ok(Checked::Behind(g, contents)),
            Some((g, contents, deferred)) if g == generation + 1 || deferred => Ok(Checked::Behind(g, contents)),
            Some((g, ..)) => {
                Err(damaged(format!("it holds change {generation} but change {g} was saved; recent changes were lost")))
            }
        }
    }

    /// Test hook: makes the change counter unreadable, so that the next commit fails.
    #[cfg(test)]
    pub(crate) fn break_change_counter_for_test(&self) {
        self.trees().unwrap().meta.insert(KEY_GENERATION, &[1u8, 2, 3][..]).unwrap();
    }
}

/// Scrubs what an interrupted purge left (`db.new`, `db.old`). Returns whether a purge was
/// interrupted, so that it is redone.
fn clean_up_interrupted_purge(dir: &Path) -> Result<bool> {
    let mut interrupted = dir.join(PURGE_MARKER).exists();
    for name in [DB_NEW, DB_OLD] {
        let path = dir.join(name);
        if fs::symlink_metadata(&path).is_ok() {
            interrupted = true;
            scrub(&path).map_err(|e| Error::io("cannot erase", &path, e))?;
        }
    }
    if interrupted {
        sync_dir(dir)?;
    }
    Ok(interrupted)
}

/// A record as stored. It holds a key: the buffer is zeroized when dropped, and sized up
/// front so that growing it leaves no stray copy behind.
fn encode<T: Serialize>(record: &T) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    /// Counts what is written: the size, found before anything holding a key exists.
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut size = Count(0);
    serde_json::to_writer(&mut size, record).expect("records always serialize");
    let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(size.0));
    serde_json::to_writer(&mut *bytes, record).expect("records always serialize");
    Ok(bytes)
}

fn decode<T: DeserializeOwned>(dir: &Path, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::StoreCorrupt { dir: dir.to_owned(), detail: format!("a record cannot be decoded: {e}") })
}

fn u64_from(bytes: &[u8]) -> Option<u64> {
    bytes.try_into().ok().map(u64::from_be_bytes)
}

fn read_u64(tree: &sled::Tree, key: &str) -> std::result::Result<Option<u64>, String> {
    match tree.get(key).map_err(|e| e.to_string())? {
        None => Ok(None),
        Some(bytes) => u64_from(&bytes).map(Some).ok_or_else(|| format!("{key} is not a number")),
    }
}

pub use recovery::held::let_go_of_all as let_go_of_held_databases;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_overwrites_what_it_removes_and_never_follows_a_link() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("db.old");
        fs::create_dir_all(dir.join("blobs")).unwrap();
        let mut content = vec![0u8; 3 * 4096 + 100];
        content[5000..5064].copy_from_slice(&[0xa5; 64]);
        *content.last_mut().unwrap() = 1;
        fs::write(dir.join("blobs/db"), &content).unwrap();
        // A second name for the same file shows what its blocks hold after the scrub.
        fs::hard_link(dir.join("blobs/db"), root.path().join("witness")).unwrap();
        fs::write(root.path().join("elsewhere"), b"not ours").unwrap();
        std::os::unix::fs::symlink(root.path().join("elsewhere"), dir.join("link")).unwrap();

        scrub(&dir).unwrap();
        assert!(!dir.exists());
        let witness = fs::read(root.path().join("witness")).unwrap();
        assert_eq!(witness.len(), content.len());
        assert!(witness.iter().all(|&b| b == 0), "the file's bytes were overwritten");
        assert_eq!(fs::read(root.path().join("elsewhere")).unwrap(), b"not ours");
        scrub(&dir).unwrap();
    }

    #[test]
    fn damaged_copies_get_free_names_and_the_oldest_go_first() {
        let root = tempfile::tempdir().unwrap();
        let first = free_damaged_copy_name(root.path());
        fs::create_dir(&first).unwrap();
        let second = free_damaged_copy_name(root.path());
        assert_ne!(first, second);
        assert_eq!(second, PathBuf::from(format!("{}.1", first.display())));
        fs::create_dir(&second).unwrap();
        fs::create_dir(root.path().join("db.damaged-1")).unwrap();
        let copies = damaged_copies(root.path()).unwrap();
        assert_eq!(copies, [second.clone(), first.clone(), root.path().join("db.damaged-1")]);

        let erased = erase_old_damaged_copies(root.path(), 2, Some(&first));
        assert_eq!(erased, [root.path().join("db.damaged-1")]);
        assert_eq!(damaged_copies(root.path()).unwrap(), [second, first]);
    }
}

#[cfg(test)]
mod received_key_tests {
    use super::*;
    use crate::keys::{ClientSecretKey, OnionPublicKey};
    use proptest::strategy::{Strategy, ValueTree};

    fn service() -> ServiceRecord {
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        crate::model::tests::arb_record().new_tree(&mut runner).unwrap().current()
    }

    fn key(name: &str) -> ReceivedKey {
        ReceivedKey {
            name: KeyName::new(name).unwrap(),
            address: OnionPublicKey::from_bytes([7; 32]).address(),
            secret_key: ClientSecretKey::generate().unwrap(),
            persistent: true,
            created: 1,
        }
    }

    fn open(dir: &Path) -> Store {
        Store::open(dir, StoreOptions::default(), true).unwrap().unwrap().0
    }

    #[test]
    fn a_database_whose_records_differ_from_the_snapshot_of_its_own_change_is_put_right() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state");
        let record = service();
        {
            let store = open(&dir);
            store.commit(vec![Change::Put(record.clone())]).unwrap();
            // As a change interrupted between its records and its counter would leave it,
            // were sled to keep a later write and lose an earlier one.
            let trees = store.trees().unwrap();
            let other = ServiceRecord { created: record.created + 1, ..record.clone() };
            trees.services.insert(record.name.as_str(), encode(&other).unwrap().as_slice()).unwrap();
            trees.keys.insert("stray", encode(&key("stray")).unwrap().as_slice()).unwrap();
            trees.db.flush().unwrap();
        }
        let store = open(&dir);
        let trees = store.trees().unwrap();
        let view = store.contents(trees).unwrap();
        assert_eq!(view.contents.services.values().cloned().collect::<Vec<_>>(), vec![record]);
        assert!(view.contents.keys.is_empty());
        assert!(store.recoveries.borrow().is_empty());
    }

    #[test]
    fn changes_a_held_database_never_flushed_are_rolled_forward_quietly_lost_flushed_ones_are_not() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state");
        let store = open(&dir);
        store.commit(vec![Change::Put(service())]).unwrap();
        let flushed = store.generation().unwrap();
        // As a service holding sled leaves it when killed: two changes in snapshots that
        // say sled's flush was deferred, none of them in sled.
        let mut contents = store.view.borrow().contents.clone();
        for (generation, name) in [(flushed + 1, "alice"), (flushed + 2, "bob")] {
            contents.apply(vec![Change::PutKey(key(name))]).unwrap();
            store.write_snapshot(generation, &contents, true).unwrap();
        }
        drop(store);
        let store = open(&dir);
        store.trees().unwrap();
        assert!(store.recoveries.borrow().is_empty(), "not a damaged store: {}", store.warnings().join("; "));
        assert_eq!(store.generation().unwrap(), flushed + 2);
        assert_eq!(store.received_keys().unwrap().len(), 2, "rolled forward from the snapshots");
        drop(store);

        // The same lag with snapshots that say sled was flushed: sled lost acknowledged writes.
        let store = open(&dir);
        let mut contents = store.view.borrow().contents.clone();
        let at = store.generation().unwrap();
        for generation in [at + 1, at + 2] {
            contents.apply(vec![Change::DeleteKey(KeyName::new("alice").unwrap())]).unwrap();
            store.write_snapshot(generation, &contents, false).unwrap();
        }
        drop(store);
        let store = open(&dir);
        store.trees().unwrap();
        assert_eq!(store.recoveries.borrow().len(), 1, "reported as damage");
        assert_eq!(store.received_keys().unwrap().len(), 1);
    }

    #[test]
    fn received_keys_are_kept_beside_the_services_through_reopening_and_recovery() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state");
        let (service, alice) = (service(), key("alice"));
        {
            let store = open(&dir);
            store.commit(vec![Change::Put(service.clone()), Change::PutKey(alice.clone())]).unwrap();
        }
        // Answered from the snapshot.
        let store = open(&dir);
        assert_eq!(store.received_keys().unwrap(), vec![alice.clone()]);
        assert_eq!(store.services().unwrap(), vec![service.clone()]);
        drop(store);
        // sled lost: rebuilt from the snapshot, keys included.
        fs::remove_dir_all(dir.join(DB_DIR)).unwrap();
        let store = open(&dir);
        store.commit(vec![Change::DeleteKey(KeyName::new("nobody").unwrap())]).unwrap();
        assert_eq!(store.received_key(&alice.name).unwrap(), Some(alice.clone()));
        let view = store.contents(store.trees().unwrap()).unwrap();
        assert_eq!(view.contents.keys.values().cloned().collect::<Vec<_>>(), vec![alice.clone()], "in sled too");
        // Undo of a key change puts the key back as it was.
        let undo = store.inverse(&[Change::DeleteKey(alice.name.clone())]).unwrap();
        assert!(matches!(&undo[..], [Change::PutKey(k)] if *k == alice));
    }

    #[test]
    fn a_store_of_the_previous_version_is_read_then_upgraded_at_its_first_change() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state");
        let service = service();
        let generation = {
            let store = open(&dir);
            store.commit(vec![Change::Put(service.clone())]).unwrap();
            // As version 1 left it: schema 1, and a snapshot whose body is an array of services.
            store.trees().unwrap().meta.insert(KEY_SCHEMA, &1u64.to_be_bytes()).unwrap();
            store.trees().unwrap().db.flush().unwrap();
            store.generation().unwrap()
        };
        let body = format!("[{}]", String::from_utf8(encode(&service).unwrap().to_vec()).unwrap());
        let digest = data_encoding::HEXLOWER.encode(&Sha256::digest(body.as_bytes()));
        let path = snapshot_path(&dir.join(SNAPSHOT_DIR), generation);
        fs::write(&path, format!("{SNAPSHOT_MAGIC} 1 {generation} 0 {digest}\n{body}")).unwrap();

        let store = open(&dir);
        assert_eq!(store.services().unwrap(), vec![service.clone()]);
        assert!(store.trees.get().is_none(), "read from the old snapshot, without opening sled");
        assert!(store.received_keys().unwrap().is_empty());
        store.commit(vec![Change::PutKey(key("alice"))]).unwrap();
        assert_eq!(read_u64(&store.trees().unwrap().meta, KEY_SCHEMA).unwrap(), Some(SCHEMA_VERSION));
        let newest = list_snapshots(&dir.join(SNAPSHOT_DIR)).unwrap().remove(0);
        let header = fs::read_to_string(&newest.path).unwrap().lines().next().unwrap().to_owned();
        assert!(header.starts_with(&format!("{SNAPSHOT_MAGIC} {SNAPSHOT_FORMAT} ")), "{header}");
        let contents = newest.verify().unwrap();
        assert_eq!(contents.services.values().cloned().collect::<Vec<_>>(), vec![service]);
        assert_eq!(contents.keys.len(), 1);
    }
}
