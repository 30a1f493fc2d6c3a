//! The sled-backed store of service records (and of the keys received from other services'
//! owners), with the guarantees the rest relies on:
//! - one process at a time (an advisory lock, waited for a bounded time), opened briefly;
//! - every change is first written as a checksummed snapshot of all records, then applied
//!   to sled in one transaction, flushed before `commit` returns;
//! - a command that only reads is answered from the newest snapshot and never opens sled
//!   (sled rewrites part of its log at every open: on a USB stick, a read must write
//!   nothing);
//! - the first write of a process opens sled and checks it against the snapshots: a change
//!   interrupted between its snapshot and its transaction is finished, and a database sled
//!   lost or damaged is rebuilt from the newest intact snapshot, with a message, instead of
//!   silently starting empty;
//! - private permissions, checked like tor checks its DataDirectory.

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

/// The snapshot body, formats 2 and 3 (records encoded one by one, see [`encode`]).
#[derive(Deserialize)]
struct SnapshotBody {
    services: Vec<ServiceRecord>,
    keys: Vec<ReceivedKey>,
}

/// The snapshot body, format 4: each record's name and the SHA-256 of its file's content,
/// which names the file. A record that did not change keeps its file; a file is written
/// once, before any snapshot names it, and never changed after.
#[derive(Default, Serialize, Deserialize)]
struct Manifest {
    services: Vec<(String, String)>,
    keys: Vec<(String, String)>,
}

impl Manifest {
    fn digests(&self) -> impl Iterator<Item = &str> {
        self.services.iter().chain(&self.keys).map(|(_, digest)| digest.as_str())
    }
}

fn record_file_name(digest: &str) -> String {
    format!("{digest}{RECORD_SUFFIX}")
}

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
        for old in list_snapshots(&snapshot_dir).unwrap_or_default().into_iter().skip(self.options.snapshots_kept) {
            let _ = fs::remove_file(&old.path);
        }
        remove_unnamed_records(&snapshot_dir);
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
        let current_records: Vec<PathBuf> = SnapshotFile { path: current.clone(), generation }
            .record_files()
            .unwrap_or_default()
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
        let newest = snapshots
            .iter()
            .filter(|s| s.generation >= generation)
            .find_map(|s| s.read().ok().map(|(contents, deferred)| (s.generation, contents, deferred)));
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

    /// Writes the snapshot of change `generation` (records in name order), durably;
    /// `deferred`: sled is not flushed before the change is reported. Only records whose
    /// file is not there yet are written: their content first (each synced), then the
    /// snapshot that names them, then the folder once for all of their names.
    fn write_snapshot(&self, generation: u64, contents: &Contents, deferred: bool) -> Result<()> {
        let dir = crate::secret_file::PrivateDir::open(&self.dir.join(SNAPSHOT_DIR))?;
        let mut manifest = Manifest::default();
        let file_for = |record: zeroize::Zeroizing<Vec<u8>>| -> Result<String> {
            let digest = data_encoding::HEXLOWER.encode(&Sha256::digest(&record));
            let name = record_file_name(&digest);
            // A file already there is reused only if intact: damaged, it would make every
            // later snapshot that names it unreadable.
            let intact = dir.entry_exists(name.as_ref())?
                && fs::read(dir.path().join(&name))
                    .map(zeroize::Zeroizing::new)
                    .is_ok_and(|bytes| Sha256::digest(&*bytes).as_slice() == Sha256::digest(&record).as_slice());
            if !intact {
                dir.write_leaving_dir_unsynced(name.as_ref(), &[&record], crate::secret_file::Replace::Always)?;
            }
            Ok(digest)
        };
        for (name, record) in &contents.services {
            manifest.services.push((name.clone(), file_for(encode(record)?)?));
        }
        for (name, key) in &contents.keys {
            manifest.keys.push((name.clone(), file_for(encode(key)?)?));
        }
        let body = serde_json::to_vec(&manifest).expect("a manifest always serializes");
        let digest = data_encoding::HEXLOWER.encode(&Sha256::digest(&body));
        let sled = if deferred { "deferred" } else { "flushed" };
        let header = format!("{SNAPSHOT_MAGIC} {SNAPSHOT_FORMAT} {generation} {} {digest} {sled}\n", now_unix());
        let name = format!("{generation:020}.snapshot");
        dir.write(name.as_ref(), &[header.as_bytes(), &body], crate::secret_file::Replace::Always)
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

/// A change across two stores, as written down by [`commit_across`]: both halves, the
/// second store's change number before it, and what undoes the first half.
#[derive(Serialize)]
struct AcrossPending<'a> {
    first: &'a [Change],
    second: &'a [Change],
    second_generation: u64,
    first_undo: &'a [Change],
}

#[derive(Deserialize)]
struct AcrossPendingOwned {
    first: Vec<Change>,
    second: Vec<Change>,
    second_generation: u64,
    first_undo: Vec<Change>,
}

/// Commits `first_changes` to `first` and `second_changes` to `second`: both or neither,
/// also when the process is killed in between. Both halves are first written down in
/// `first`'s directory; a process killed after that leaves them there, for
/// [`finish_across`]. An error undoes the first half.
///
/// The amnesic store goes first: its directory is in memory, so a shutdown takes the
/// written-down halves with the amnesic half they belong with, and the persistent half is
/// either committed already or never will be.
pub fn commit_across(
    first: &Store,
    first_changes: Vec<Change>,
    second: &Store,
    second_changes: Vec<Change>,
) -> Result<()> {
    let (pending, undo) = write_down(first, &first_changes, second, &second_changes)?;
    let outcome = match first.commit(first_changes) {
        // Applied at the next open after all: the note stays, for `finish_across`.
        Err(error @ Error::ChangeLeftPending { .. }) => return Err(error),
        Err(error) => Err(error),
        Ok(_) => match second.commit(second_changes) {
            Ok(_) => Ok(()),
            Err(error @ Error::ChangeLeftPending { .. }) => return Err(error),
            Err(error) => match first.commit(undo) {
                Ok(_) => Err(error),
                // Nothing can be taken back: the written-down change stays, to be finished.
                Err(undo_error) => {
                    return Err(Error::ChangeLeftPending {
                        dir: second.dir.clone(),
                        detail: format!(
                            "{error}; and what was already written to {} could not be undone ({undo_error}), so \
                             the whole change will be applied when tails-server next opens its stores",
                            first.dir.display()
                        ),
                    })
                }
            },
        },
    };
    match (outcome, forget_pending(&pending)) {
        (outcome, Ok(())) => outcome,
        // Found again at the next open, where it is seen to be done already.
        (Ok(()), Err(e)) => {
            first.warn(format!("the change was saved, but its record {} could not be erased ({e})", pending.display()));
            Ok(())
        }
        (Err(error), Err(e)) => Err(Error::ChangeLeftPending {
            dir: first.dir.clone(),
            detail: format!(
                "{error}; and its record {} could not be erased ({e}), so the change will be applied when \
                 tails-server next opens its stores",
                pending.display()
            ),
        }),
    }
}

/// Writes the note [`finish_across`] reads; returns its path and the first half's undo.
fn write_down(
    first: &Store,
    first_changes: &[Change],
    second: &Store,
    second_changes: &[Change],
) -> Result<(PathBuf, Vec<Change>)> {
    let pending = first.dir.join(ACROSS_PENDING);
    let undo = first.inverse(first_changes)?;
    let written = encode(&AcrossPending {
        first: first_changes,
        second: second_changes,
        second_generation: second.generation()?,
        first_undo: &undo,
    })?;
    write_atomically(&pending, &[&written])?;
    Ok((pending, undo))
}

/// Test hook: what a process killed after the first half of [`commit_across`] leaves
/// (`both`: after the second half too, before the note was erased).
#[cfg(test)]
pub(crate) fn interrupted_across_for_test(
    first: &Store,
    first_changes: Vec<Change>,
    second: &Store,
    second_changes: Vec<Change>,
    both: bool,
) {
    write_down(first, &first_changes, second, &second_changes).unwrap();
    first.commit(first_changes).unwrap();
    if both {
        second.commit(second_changes).unwrap();
    }
}

/// What [`finish_across`] did with a change across two stores a killed process left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupted {
    /// Both halves are in their stores now.
    Finished,
    /// `second` was changed since by a process that did not know (one with another
    /// amnesic store): finishing could have overwritten that, so the first half was undone
    /// (but for records that would then be in neither store).
    Undone,
}

/// Finishes a change across `first` and `second` that a killed process (or a failure that
/// could not be undone) left written down in `first`'s directory (see [`commit_across`]).
/// The change is finished when `second` is as the change left it: still at its change
/// number from before, or holding the second half's records (applied, the note not yet
/// erased). Otherwise someone changed `second` since, without knowing of the note (a
/// process with another amnesic store): finishing could overwrite that, so the first half
/// is undone instead, except where that would leave a record in neither store.
pub fn finish_across(first: &Store, second: &Store) -> Result<Option<Interrupted>> {
    let pending = first.dir.join(ACROSS_PENDING);
    let mut bytes = Vec::new();
    match OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(&pending) {
        Ok(mut file) => file.read_to_end(&mut bytes).map_err(|e| Error::io("cannot read", &pending, e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("cannot read", &pending, e)),
    };
    let bytes = zeroize::Zeroizing::new(bytes);
    if bytes.iter().all(|&b| b == 0) {
        // Killed while being erased (zeroed, not yet unlinked): the change was done.
        forget_pending(&pending)?;
        return Ok(None);
    }
    let note: AcrossPendingOwned = serde_json::from_slice(&bytes).map_err(|e| Error::StoreCorrupt {
        dir: first.dir.clone(),
        detail: format!("the interrupted change written down in {} cannot be decoded: {e}", pending.display()),
    })?;
    let second_untouched = second.generation()? == note.second_generation;
    let second_applied = second.holds(&note.second)?;
    let outcome = if second_untouched || second_applied {
        if !first.holds(&note.first)? {
            first.commit(note.first)?;
        }
        if !second_applied {
            second.commit(note.second)?;
        }
        Interrupted::Finished
    } else {
        let mut undo = Vec::new();
        for change in note.first_undo {
            let elsewhere = match &change {
                Change::Delete(name) => second.get(name)?.is_some(),
                Change::DeleteKey(name) => second.received_key(name)?.is_some(),
                Change::Put(_) | Change::PutKey(_) => true,
            };
            if elsewhere {
                undo.push(change);
            }
        }
        if !first.holds(&undo)? {
            first.commit(undo)?;
        }
        Interrupted::Undone
    };
    forget_pending(&pending)?;
    Ok(Some(outcome))
}

/// Erases the written-down change, durably: were it to come back after a later change, it
/// would be applied over that change.
fn forget_pending(pending: &Path) -> Result<()> {
    scrub(pending).map_err(|e| Error::io("cannot erase", pending, e))?;
    sync_dir(pending.parent().expect("in a store directory"))
}

enum CheckError {
    Damaged(String),
    Fatal(Error),
}

enum SledOpenError {
    Damaged(String),
    Fatal(Error),
}

/// Schema migrations, one step at a time. Version 1 is the first; later versions add a step.
fn migrate(store: &Store, trees: &Trees, from: u64) -> Result<()> {
    let mut version = from;
    while version < SCHEMA_VERSION {
        // 1 → 2 added the received keys' tree, which sled creates empty: nothing to move.
        // match version { 2 => migrate_2_to_3(store)?, ... }
        version += 1;
    }
    trees
        .meta
        .insert(KEY_SCHEMA, &version.to_be_bytes())
        .and_then(|_| trees.db.flush())
        .map_err(|e| store.sled_error(e))?;
    Ok(())
}

/// sled's log segment for new databases. At every open sled zeroes what follows the last
/// write in the current segment, and sled is opened at every change: its default (512 KiB)
/// made each change write half a megabyte to the stick; 32 KiB makes it 31 KiB in all
/// (`cargo bench --bench stick`). Log entries over a quarter of a segment go to a file of
/// their own (sled's blobs), which is what a store of many clients costs instead.
const SEGMENT_SIZE: usize = 32 * 1024;

/// The segment size an existing database was made with (sled refuses another).
fn segment_size_of(db: &Path) -> Option<usize> {
    let conf = fs::read(db.join("conf")).ok()?;
    let text = String::from_utf8_lossy(&conf);
    text.lines().find_map(|line| line.strip_prefix("segment_size: ")?.trim().parse().ok())
}

/// Opens sled, waiting up to `lock_timeout` while another process holds it open (a
/// service keeping it between commands, see [`StoreOptions::hold_database`]).
fn open_sled(path: &Path, options: &StoreOptions) -> std::result::Result<Trees, SledOpenError> {
    let start = Instant::now();
    let mut asked = false;
    loop {
        match open_sled_once(path, options)? {
            Some(trees) => return Ok(trees),
            None if start.elapsed() < options.lock_timeout => {
                if let Some(hook) = options.ask_holder_to_let_go.as_ref().filter(|_| !asked) {
                    asked = true;
                    (hook.0)();
                } else {
                    std::thread::sleep(Duration::from_millis(25));
                }
            }
            None => {
                let holder = File::open(path.join("db")).ok().and_then(|f| lock_holder(&f));
                return Err(SledOpenError::Fatal(Error::StoreBusy {
                    dir: path.parent().unwrap_or(path).to_owned(),
                    holder: holder
                        .map(|pid| {
                            format!(
                                " (pid {pid}, which keeps its database open: if it is the system service, run the \
                                 command as the logged-in user, which goes through it)"
                            )
                        })
                        .unwrap_or_default(),
                    waited: options.lock_timeout,
                }));
            }
        }
    }
}

/// None: another process has it open.
fn open_sled_once(path: &Path, options: &StoreOptions) -> std::result::Result<Option<Trees>, SledOpenError> {
    let config = sled::Config::new()
        .path(path)
        .segment_size(segment_size_of(path).unwrap_or(SEGMENT_SIZE))
        .cache_capacity(options.cache_capacity)
        .flush_every_ms(None)
        .use_compression(false)
        .mode(sled::Mode::LowSpace);
    // sled panics on some kinds of damage instead of returning an error.
    let opened = std::panic::catch_unwind(AssertUnwindSafe(|| -> sled::Result<_> {
        let db = config.open()?;
        let services = db.open_tree(SERVICES_TREE)?;
        let keys = db.open_tree(KEYS_TREE)?;
        let meta = db.open_tree(META_TREE)?;
        Ok(Trees { services, keys, meta, db })
    }));
    match opened {
        Ok(Ok(trees)) => Ok(Some(trees)),
        Ok(Err(sled::Error::Corruption { at, .. })) => Err(SledOpenError::Damaged(format!(
            "sled found corrupted data{}",
            at.map(|a| format!(" at {a}")).unwrap_or_default()
        ))),
        Ok(Err(sled::Error::Io(e)))
            if e.kind() == std::io::ErrorKind::InvalidData || e.kind() == std::io::ErrorKind::UnexpectedEof =>
        {
            Err(SledOpenError::Damaged(format!("sled could not read its files: {e}")))
        }
        // sled's own lock on its files (fs2's flock), held by another process.
        Ok(Err(sled::Error::Io(e))) if e.to_string().starts_with("could not acquire lock") => Ok(None),
        Ok(Err(e)) => Err(SledOpenError::Fatal(Error::store(path, e))),
        Err(_) => Err(SledOpenError::Damaged("sled crashed while reading it".into())),
    }
}

impl Store {
    /// Moves the damaged database aside (if `keep_damaged`) and rebuilds it from the newest
    /// intact snapshot; what happened goes to `recoveries`, for the user.
    fn rebuild(&self, snapshots: &[SnapshotFile], problem: String, keep_damaged: bool) -> Result<Trees> {
        let dir = &self.dir;
        let (snapshot, contents) = snapshots
            .iter()
            .find_map(|s| s.verify().ok().map(|contents| (s, contents)))
            .ok_or_else(|| Error::StoreCorrupt { dir: dir.to_owned(), detail: problem.clone() })?;
        let db_path = dir.join(DB_DIR);
        let damaged_copy = if keep_damaged && db_path.exists() {
            let copy = free_damaged_copy_name(dir);
            fs::rename(&db_path, &copy)
                .map_err(|e| Error::io("cannot move the damaged database aside", &db_path, e))?;
            Some(copy)
        } else {
            None
        };
        let trees = open_sled(&db_path, &self.options).map_err(|e| open_error(dir, e))?;
        let sled_err = |e| Error::store(dir, e);
        for (tree, name, value) in contents.encoded()? {
            let tree = if tree == Tree::Services { &trees.services } else { &trees.keys };
            tree.insert(name.as_str(), value.expect("every record").as_slice()).map_err(sled_err)?;
        }
        trees.meta.insert(KEY_SCHEMA, &SCHEMA_VERSION.to_be_bytes()).map_err(sled_err)?;
        trees.meta.insert(KEY_GENERATION, &snapshot.generation.to_be_bytes()).map_err(sled_err)?;
        trees.db.flush().map_err(sled_err)?;
        tighten(&db_path)?;
        // Each recovery keeps the damaged database; only the newest few stay.
        let erased_copies = erase_old_damaged_copies(dir, DAMAGED_COPIES_KEPT, damaged_copy.as_deref());
        self.recoveries.borrow_mut().push(Recovery {
            dir: dir.to_owned(),
            problem,
            snapshot: snapshot.path.clone(),
            generation: snapshot.generation,
            damaged_copy,
            erased_copies,
        });
        Ok(trees)
    }
}

fn open_error(dir: &Path, e: SledOpenError) -> Error {
    match e {
        SledOpenError::Fatal(e) => e,
        SledOpenError::Damaged(d) => Error::StoreCorrupt { dir: dir.to_owned(), detail: d },
    }
}

/// `db.damaged-<unix seconds>`, or with `.1`, `.2`, … when that name is taken (two
/// recoveries in the same second): a recovery never fails because of a name.
fn free_damaged_copy_name(dir: &Path) -> PathBuf {
    let base = format!("{DAMAGED_PREFIX}{}", now_unix());
    (0u64..)
        .map(|n| dir.join(if n == 0 { base.clone() } else { format!("{base}.{n}") }))
        .find(|path| matches!(fs::symlink_metadata(path), Err(e) if e.kind() == std::io::ErrorKind::NotFound))
        .expect("some name is free")
}

/// The damaged copies in `dir`, newest first (by the time and counter in their names).
fn damaged_copies(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io("cannot read", dir, e))? {
        let entry = entry.map_err(|e| Error::io("cannot read", dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(rest) = name.strip_prefix(DAMAGED_PREFIX) {
            let (time, counter) = rest.split_once('.').unwrap_or((rest, "0"));
            let order = (time.parse::<u64>().unwrap_or(0), counter.parse::<u64>().unwrap_or(0));
            found.push((order, entry.path()));
        }
    }
    found.sort_by(|a, b| b.cmp(a));
    Ok(found.into_iter().map(|(_, path)| path).collect())
}

/// Erases all but `keep` damaged copies: the one just made (`fresh`) and the newest others.
/// Returns those erased.
fn erase_old_damaged_copies(dir: &Path, keep: usize, fresh: Option<&Path>) -> Vec<PathBuf> {
    let others = damaged_copies(dir).unwrap_or_default().into_iter().filter(|p| Some(p.as_path()) != fresh);
    let old = others.skip(keep.saturating_sub(usize::from(fresh.is_some())));
    let erased: Vec<PathBuf> = old.filter(|path| scrub(path).is_ok()).collect();
    if !erased.is_empty() {
        let _ = sync_dir(dir);
    }
    erased
}

fn snapshot_path(snapshot_dir: &Path, generation: u64) -> PathBuf {
    snapshot_dir.join(format!("{generation:020}.snapshot"))
}

/// Overwrites every file under `path` (a file or a directory) with zeros, syncs it, then
/// removes it. Only the blocks that are not zeros already are written (sled's files are
/// mostly zeros). Symbolic links are removed, never followed. Nothing there is not an error.
pub(crate) fn scrub(path: &Path) -> std::io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if meta.is_dir() {
        for entry in fs::read_dir(path)? {
            scrub(&entry?.path())?;
        }
        fs::remove_dir(path)?;
        return Ok(());
    }
    if meta.is_file() && meta.len() > 0 {
        use std::os::unix::fs::FileExt;
        const BLOCK: usize = 4096;
        let file = OpenOptions::new().read(true).write(true).custom_flags(libc::O_NOFOLLOW).open(path)?;
        let zeros = [0u8; BLOCK];
        let mut block = [0u8; BLOCK];
        let mut offset = 0u64;
        let mut wrote = false;
        while offset < meta.len() {
            let n = (meta.len() - offset).min(BLOCK as u64) as usize;
            file.read_exact_at(&mut block[..n], offset)?;
            if block[..n].iter().any(|&b| b != 0) {
                file.write_all_at(&zeros[..n], offset)?;
                wrote = true;
            }
            offset += n as u64;
        }
        zeroize::Zeroize::zeroize(&mut block);
        if wrote {
            file.sync_all()?;
        }
    }
    fs::remove_file(path)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io("cannot sync", dir, e))
}

fn not_found_is_ok(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

struct SnapshotFile {
    path: PathBuf,
    generation: u64,
}

impl SnapshotFile {
    /// Reads the snapshot and checks its checksum and every record in it.
    fn verify(&self) -> std::result::Result<Contents, String> {
        self.read().map(|(contents, _)| contents)
    }

    /// [`SnapshotFile::verify`], and whether sled's flush of this change was deferred.
    fn read(&self) -> std::result::Result<(Contents, bool), String> {
        let mut content = Vec::new();
        File::open(&self.path).and_then(|mut f| f.read_to_end(&mut content)).map_err(|e| e.to_string())?;
        let newline = content.iter().position(|&b| b == b'\n').ok_or("no header")?;
        let header = std::str::from_utf8(&content[..newline]).map_err(|_| "bad header")?;
        let body = &content[newline + 1..];
        let fields: Vec<&str> = header.split(' ').collect();
        let (&[magic, schema, generation, _written, digest], sled) = (&fields[..5.min(fields.len())], fields.get(5))
        else {
            return Err("bad header".into());
        };
        let format = schema.parse::<u64>().ok().filter(|f| (1..=SNAPSHOT_FORMAT).contains(f));
        let Some(format) = format.filter(|_| magic == SNAPSHOT_MAGIC) else {
            return Err("unknown snapshot format".into());
        };
        let deferred = match (format, sled.copied(), fields.len()) {
            (1 | 2, None, 5) => false,
            (3 | 4, Some("flushed"), 6) => false,
            (3 | 4, Some("deferred"), 6) => true,
            _ => return Err("bad header".into()),
        };
        if generation.parse::<u64>().ok() != Some(self.generation) {
            return Err("generation mismatch".into());
        }
        if data_encoding::HEXLOWER.encode(&Sha256::digest(body)) != digest {
            return Err("checksum mismatch".into());
        }
        let contents = match format {
            1 => serde_json::from_slice(body).map(|services| Contents::new(services, Vec::new())),
            2 | 3 => serde_json::from_slice(body).map(|b: SnapshotBody| Contents::new(b.services, b.keys)),
            _ => {
                let manifest: Manifest = serde_json::from_slice(body).map_err(|e| e.to_string())?;
                let dir = self.path.parent().ok_or("no folder")?;
                let services = manifest.services.iter().map(|(name, digest)| read_record(dir, name, digest));
                let keys = manifest.keys.iter().map(|(name, digest)| read_record(dir, name, digest));
                Ok(Contents::new(
                    services.collect::<std::result::Result<_, _>>()?,
                    keys.collect::<std::result::Result<_, _>>()?,
                ))
            }
        };
        zeroize::Zeroize::zeroize(&mut content);
        contents.map(|contents| (contents, deferred)).map_err(|e| e.to_string())
    }

    /// The record files this snapshot names (None: it is not readable, or names none
    /// because it holds its records itself).
    fn record_files(&self) -> Option<Vec<String>> {
        let content = fs::read(&self.path).ok()?;
        let newline = content.iter().position(|&b| b == b'\n')?;
        let header = std::str::from_utf8(&content[..newline]).ok()?;
        if header.split(' ').nth(1) != Some("4") {
            return Some(Vec::new());
        }
        let manifest: Manifest = serde_json::from_slice(&content[newline + 1..]).ok()?;
        Some(manifest.digests().map(record_file_name).collect())
    }
}

/// A record named by a format-4 snapshot: its file, checked against its digest and name.
fn read_record<T: DeserializeOwned + Named>(dir: &Path, name: &str, digest: &str) -> std::result::Result<T, String> {
    let path = dir.join(record_file_name(digest));
    let bytes = zeroize::Zeroizing::new(fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?);
    if data_encoding::HEXLOWER.encode(&Sha256::digest(&bytes)) != digest {
        return Err(format!("{}: checksum mismatch", path.display()));
    }
    let record: T = serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    if record.name() != name {
        return Err(format!("{}: the record of {:?} is filed under {name:?}", path.display(), record.name()));
    }
    Ok(record)
}

/// A record's name in its tree.
trait Named {
    fn name(&self) -> &str;
}
impl Named for ServiceRecord {
    fn name(&self) -> &str {
        self.name.as_str()
    }
}
impl Named for ReceivedKey {
    fn name(&self) -> &str {
        self.name.as_str()
    }
}

/// Removes the record files no kept snapshot names (those of snapshots let go, and of a
/// change that died before its snapshot). Nothing is removed while a snapshot cannot be
/// read: it might name any of them.
fn remove_unnamed_records(snapshot_dir: &Path) {
    let Ok(snapshots) = list_snapshots(snapshot_dir) else { return };
    let mut named = std::collections::HashSet::new();
    for snapshot in &snapshots {
        match snapshot.record_files() {
            Some(files) => named.extend(files),
            None => return,
        }
    }
    let _ = crate::secret_file::remove_stale_entries(snapshot_dir, |name| {
        name.to_str().is_some_and(|name| name.ends_with(RECORD_SUFFIX) && !named.contains(name))
    });
}

/// Snapshots in `dir`, newest first. Leftover temporary files from a crash are removed.
fn list_snapshots(dir: &Path) -> Result<Vec<SnapshotFile>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io("cannot read", dir, e))? {
        let path = entry.map_err(|e| Error::io("cannot read", dir, e))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.ends_with(".tmp") {
            // A snapshot that was being written: it holds keys too.
            let _ = scrub(&path);
        } else if let Some(generation) = name.strip_suffix(".snapshot").and_then(|g| g.parse().ok()) {
            found.push(SnapshotFile { path, generation });
        }
    }
    found.sort_by_key(|s| std::cmp::Reverse(s.generation));
    Ok(found)
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

fn current_uid() -> u32 {
    crate::unix::euid()
}

/// Refuses a directory (or file) that others can read or that someone else owns.
pub(crate) fn check_private(path: &Path, is_dir: bool) -> Result<()> {
    let meta = fs::metadata(path).map_err(|e| Error::io("cannot read", path, e))?;
    let me = current_uid();
    if meta.uid() != me {
        return Err(Error::WrongOwner { path: path.to_owned(), owner: meta.uid(), me });
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::UnsafePermissions { path: path.to_owned(), mode, fix: if is_dir { 0o700 } else { 0o600 } });
    }
    Ok(())
}

fn ensure_private_dir(path: &Path) -> Result<()> {
    match fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => check_private(path, true),
        Err(e) => Err(Error::io("cannot create", path, e)),
    }
}

/// sled creates its files with the process umask; make them private whatever it was.
fn tighten(path: &Path) -> Result<()> {
    let Ok(entries) = fs::read_dir(path) else {
        return Ok(());
    };
    // Only what needs it: a chmod is a write to the stick too.
    if fs::metadata(path).is_ok_and(|m| m.mode() & 0o077 != 0) {
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io("cannot protect", path, e))?;
    }
    for entry in entries.flatten() {
        let p = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            tighten(&p)?;
        } else if meta.mode() & 0o077 != 0 {
            fs::set_permissions(&p, fs::Permissions::from_mode(0o600))
                .map_err(|e| Error::io("cannot protect", &p, e))?;
        }
    }
    Ok(())
}

/// Writes a 0600 file by way of a temporary file, fsync and rename, so that a crash leaves
/// either the old content or the new, never a mix.
pub(crate) fn write_atomically(path: &Path, parts: &[&[u8]]) -> Result<()> {
    crate::secret_file::write_secret_file(path, parts, crate::secret_file::Replace::Always)
}

fn acquire_lock(dir: &Path, timeout: Duration) -> Result<Option<File>> {
    let path = dir.join(LOCK_FILE);
    let file = match crate::secret_file::open_lock_file(&path) {
        Ok(file) => file,
        // A medium gone read-only: nothing can change the store, so reads need no lock
        // (the lock file, when there, is still taken: a writer on another mount waits).
        Err(Error::ReadOnlyMedium { .. }) => {
            match OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(&path) {
                Ok(file) => file,
                Err(_) => return Ok(None),
            }
        }
        Err(e) => return Err(e),
    };
    let start = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(fs::TryLockError::WouldBlock) if start.elapsed() < timeout => {
                std::thread::sleep(Duration::from_millis(25));
            }
            Err(fs::TryLockError::WouldBlock) => {
                let holder = lock_holder(&file).map(|pid| format!(" (pid {pid})")).unwrap_or_default();
                return Err(Error::StoreBusy { dir: dir.to_owned(), holder, waited: timeout });
            }
            Err(fs::TryLockError::Error(e)) => return Err(Error::io("cannot lock", &path, e)),
        }
    }
    Ok(Some(file))
}

/// The process holding a flock on `file`, from /proc/locks (read-only: nothing is written
/// to the lock file, so the store's files stay byte-for-byte as they were).
fn lock_holder(file: &File) -> Option<u32> {
    let inode = file.metadata().ok()?.ino();
    let locks = fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"; waiters have "->" after the id.
        if fields.get(1) != Some(&"FLOCK") {
            return None;
        }
        let ino = fields.get(5)?.rsplit(':').next()?.parse::<u64>().ok()?;
        (ino == inode).then(|| fields.get(4)?.parse().ok()).flatten()
    })
}

/// sled databases this process keeps open between commands (see
/// [`StoreOptions::hold_database`]), by store directory.
mod held {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};
    use std::sync::{Mutex, MutexGuard};

    use super::Trees;

    static HELD: Mutex<BTreeMap<PathBuf, Trees>> = Mutex::new(BTreeMap::new());

    fn lock() -> MutexGuard<'static, BTreeMap<PathBuf, Trees>> {
        HELD.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn get(dir: &Path) -> Option<Trees> {
        lock().get(dir).cloned()
    }

    pub(super) fn keep(dir: &Path, trees: Trees) {
        lock().insert(dir.to_owned(), trees);
    }

    /// Flushes and closes the database of `dir` now, if held.
    pub(super) fn let_go(dir: &Path) {
        let trees = lock().remove(dir);
        trees.into_iter().for_each(close);
    }

    /// Flushes and closes every held database (the volume locked, a service stopping,
    /// another process asking for it).
    pub fn let_go_of_all() {
        let all = std::mem::take(&mut *lock());
        all.into_values().for_each(close);
    }

    fn close(trees: Trees) {
        // A failed flush loses nothing: the snapshots hold every change, and the next open
        // rolls sled forward (the change's snapshot says its flush was deferred).
        let _ = trees.db.flush();
    }
}

pub use held::let_go_of_all as let_go_of_held_databases;

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
