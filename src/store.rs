//! The sled-backed store of service records, with the guarantees the rest relies on:
//! - one process at a time (an advisory lock, waited for a bounded time), opened briefly;
//! - every change is one sled transaction, flushed before `commit` returns;
//! - after each change a checksummed snapshot is written beside the database, and opening
//!   verifies the database against the newest one, recovering from it if sled lost or
//!   damaged data instead of silently starting empty;
//! - private permissions, checked like tor checks its DataDirectory.

use std::cell::Cell;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::mem::ManuallyDrop;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::model::{now_unix, ServiceRecord};
use crate::names::ServiceName;

/// Version of the layout of records in the store. Bump it with a migration in [`migrate`].
pub const SCHEMA_VERSION: u64 = 1;

const DB_DIR: &str = "db";
const SNAPSHOT_DIR: &str = "snapshots";
const LOCK_FILE: &str = "lock";
const SERVICES_TREE: &str = "services";
const META_TREE: &str = "meta";
const KEY_SCHEMA: &str = "schema-version";
const KEY_GENERATION: &str = "generation";
const SNAPSHOT_MAGIC: &str = "tails-server-snapshot";

#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// How long to wait for another process to release the store.
    pub lock_timeout: Duration,
    /// sled's page cache; its default (1 GB) is absurd for a few kilobytes of records.
    pub cache_capacity: u64,
    pub snapshots_kept: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self { lock_timeout: Duration::from_secs(10), cache_capacity: 2 * 1024 * 1024, snapshots_kept: 3 }
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
            write!(f, " The damaged database was kept in {}.", copy.display())?;
        }
        Ok(())
    }
}

pub enum Change {
    Put(ServiceRecord),
    Delete(ServiceName),
}

pub struct Store {
    dir: PathBuf,
    db: ManuallyDrop<sled::Db>,
    services: ManuallyDrop<sled::Tree>,
    meta: ManuallyDrop<sled::Tree>,
    options: StoreOptions,
    /// Whether anything was written through this handle.
    wrote: Cell<bool>,
    // Held for the life of the Store: the advisory lock is released when this closes
    // (after sled, as fields drop after `Drop::drop`).
    lock: Option<File>,
}

impl Drop for Store {
    fn drop(&mut self) {
        // SAFETY: each is dropped exactly once, here, and never used again.
        unsafe {
            ManuallyDrop::drop(&mut self.services);
            ManuallyDrop::drop(&mut self.meta);
            ManuallyDrop::drop(&mut self.db);
        }
        if self.wrote.get() {
            // sled brings its page-table snapshot up to date at the first open after a
            // write. Do it now, while we hold the lock, so that a later process that only
            // reads (or refuses bad input) leaves every byte as it found it.
            let path = self.dir.join(DB_DIR);
            if let Ok((db, services, meta)) = open_sled(&path, &self.options) {
                drop((services, meta, db));
            }
        }
    }
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
                .map_err(|e| Error::io("cannot create the state directory", dir, e))?;
        }
        check_private(dir, true)?;
        let lock = acquire_lock(dir, options.lock_timeout)?;
        let snapshot_dir = dir.join(SNAPSHOT_DIR);
        ensure_private_dir(&snapshot_dir)?;
        let db_path = dir.join(DB_DIR);

        let fresh = !db_path.exists();
        let snapshots = list_snapshots(&snapshot_dir)?;
        if fresh && !snapshots.is_empty() {
            let (store, recovery) = recover(dir, lock, options, &snapshots, "its database is missing".into(), false)?;
            return Ok(Some((store, Some(recovery))));
        }

        let opened = open_sled(&db_path, &options);
        let problem = match opened {
            Ok((db, services, meta)) => {
                let store = Store::new(dir, db, services, meta, options.clone(), lock);
                match store.check(fresh, &snapshots) {
                    Ok(()) => {
                        if fresh {
                            store.write_snapshot(0)?;
                        }
                        store.tighten_permissions()?;
                        return Ok(Some((store, None)));
                    }
                    Err(CheckError::Fatal(e)) => return Err(e),
                    Err(CheckError::Damaged(problem)) => {
                        let lock = store.close_keeping_lock();
                        return recover(dir, lock, options, &snapshots, problem, true).map(|(s, r)| Some((s, Some(r))));
                    }
                }
            }
            Err(SledOpenError::Damaged(problem)) => problem,
            Err(SledOpenError::Fatal(e)) => return Err(e),
        };
        recover(dir, lock, options, &snapshots, problem, true).map(|(s, r)| Some((s, Some(r))))
    }

    fn new(
        dir: &Path,
        db: sled::Db,
        services: sled::Tree,
        meta: sled::Tree,
        options: StoreOptions,
        lock: File,
    ) -> Self {
        Store {
            dir: dir.to_owned(),
            db: ManuallyDrop::new(db),
            services: ManuallyDrop::new(services),
            meta: ManuallyDrop::new(meta),
            options,
            wrote: Cell::new(false),
            lock: Some(lock),
        }
    }

    /// Closes sled but keeps holding the lock (to repair the store).
    fn close_keeping_lock(mut self) -> File {
        self.lock.take().expect("held until drop")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn services(&self) -> Result<Vec<ServiceRecord>> {
        self.services.iter().map(|item| decode(&self.dir, item.map_err(|e| self.sled_error(e))?.1.as_ref())).collect()
    }

    pub fn get(&self, name: &ServiceName) -> Result<Option<ServiceRecord>> {
        match self.services.get(name.as_str()).map_err(|e| self.sled_error(e))? {
            Some(bytes) => Ok(Some(decode(&self.dir, &bytes)?)),
            None => Ok(None),
        }
    }

    /// The number of changes ever committed; also names the snapshots.
    pub fn generation(&self) -> Result<u64> {
        read_u64(&self.meta, KEY_GENERATION)
            .map_err(|detail| Error::StoreCorrupt { dir: self.dir.clone(), detail })
            .map(|g| g.unwrap_or(0))
    }

    /// Applies all changes in one transaction, flushes them to disk, then writes a snapshot.
    pub fn commit(&self, changes: Vec<Change>) -> Result<u64> {
        self.wrote.set(true);
        let mut encoded = Vec::with_capacity(changes.len());
        for change in &changes {
            match change {
                Change::Put(record) => encoded.push((record.name.as_str().to_owned(), Some(encode(record)?))),
                Change::Delete(name) => encoded.push((name.as_str().to_owned(), None)),
            }
        }
        use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
        let result: std::result::Result<u64, TransactionError<()>> =
            (&*self.services, &*self.meta).transaction(|(services, meta)| {
                for (key, value) in &encoded {
                    match value {
                        Some(bytes) => services.insert(key.as_bytes(), bytes.as_slice())?,
                        None => services.remove(key.as_bytes())?,
                    };
                }
                let generation = match meta.get(KEY_GENERATION)? {
                    Some(bytes) => u64_from(&bytes).ok_or(ConflictableTransactionError::Abort(()))? + 1,
                    None => 1,
                };
                meta.insert(KEY_GENERATION, &generation.to_be_bytes())?;
                Ok(generation)
            });
        let generation = match result {
            Ok(g) => g,
            Err(TransactionError::Storage(e)) => return Err(self.sled_error(e)),
            Err(TransactionError::Abort(())) => {
                return Err(Error::StoreCorrupt {
                    dir: self.dir.clone(),
                    detail: "its change counter is unreadable".into(),
                })
            }
        };
        self.db.flush().map_err(|e| self.sled_error(e))?;
        self.write_snapshot(generation)?;
        self.tighten_permissions()?;
        Ok(generation)
    }

    fn sled_error(&self, source: sled::Error) -> Error {
        Error::Store { dir: self.dir.clone(), source }
    }

    /// Verifies schema, records and change counter. A damaged store is reported so it can be
    /// recovered; a store from a newer tails-server is refused untouched.
    fn check(&self, fresh: bool, snapshots: &[SnapshotFile]) -> std::result::Result<(), CheckError> {
        let damaged = |p: String| CheckError::Damaged(p);
        let schema = read_u64(&self.meta, KEY_SCHEMA).map_err(|e| damaged(format!("cannot read it: {e}")))?;
        match schema {
            None if fresh => {
                self.wrote.set(true);
                self.meta
                    .insert(KEY_SCHEMA, &SCHEMA_VERSION.to_be_bytes())
                    .and_then(|_| self.meta.insert(KEY_GENERATION, &0u64.to_be_bytes()))
                    .and_then(|_| self.db.flush())
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
            Some(v) if v < SCHEMA_VERSION => migrate(self, v).map_err(CheckError::Fatal)?,
            Some(_) => {}
        }
        for item in self.services.iter() {
            let (key, value) = item.map_err(|e| damaged(format!("cannot read a record: {e}")))?;
            let record: ServiceRecord = serde_json::from_slice(&value)
                .map_err(|e| damaged(format!("a service record cannot be decoded: {e}")))?;
            if key.as_ref() != record.name.as_str().as_bytes() {
                return Err(damaged(format!("the record of {:?} is filed under another name", record.name)));
            }
        }
        let generation = read_u64(&self.meta, KEY_GENERATION)
            .map_err(|e| damaged(format!("cannot read its change counter: {e}")))?
            .ok_or_else(|| damaged("its change counter is missing".into()))?;
        // sled may drop the last writes after a crash without an error: a snapshot newer
        // than the database is the evidence.
        for snap in snapshots.iter().filter(|s| s.generation > generation) {
            if snap.verify().is_ok() {
                return Err(damaged(format!(
                    "it holds change {generation} but change {} was saved; recent changes were lost",
                    snap.generation
                )));
            }
        }
        Ok(())
    }

    fn write_snapshot(&self, generation: u64) -> Result<()> {
        let mut body = Vec::new();
        body.push(b'[');
        for (i, item) in self.services.iter().enumerate() {
            let (_, value) = item.map_err(|e| self.sled_error(e))?;
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(&value);
        }
        body.push(b']');
        let digest = data_encoding::HEXLOWER.encode(&Sha256::digest(&body));
        let header = format!("{SNAPSHOT_MAGIC} {SCHEMA_VERSION} {generation} {} {digest}\n", now_unix());
        let dir = self.dir.join(SNAPSHOT_DIR);
        let path = dir.join(format!("{generation:020}.snapshot"));
        write_atomically(&path, &[header.as_bytes(), &body])?;
        zeroize::Zeroize::zeroize(&mut body);
        for old in list_snapshots(&dir)?.into_iter().skip(self.options.snapshots_kept) {
            let _ = fs::remove_file(&old.path);
        }
        Ok(())
    }

    fn tighten_permissions(&self) -> Result<()> {
        tighten(&self.dir.join(DB_DIR))
    }
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
fn migrate(store: &Store, from: u64) -> Result<()> {
    store.wrote.set(true);
    let mut version = from;
    while version < SCHEMA_VERSION {
        // match version { 1 => migrate_1_to_2(store)?, ... }
        version += 1;
    }
    store
        .meta
        .insert(KEY_SCHEMA, &version.to_be_bytes())
        .and_then(|_| store.db.flush())
        .map_err(|e| store.sled_error(e))?;
    Ok(())
}

fn open_sled(
    path: &Path,
    options: &StoreOptions,
) -> std::result::Result<(sled::Db, sled::Tree, sled::Tree), SledOpenError> {
    let config = sled::Config::new()
        .path(path)
        .cache_capacity(options.cache_capacity)
        .flush_every_ms(None)
        .use_compression(false)
        .mode(sled::Mode::LowSpace);
    // sled panics on some kinds of damage instead of returning an error.
    let opened = std::panic::catch_unwind(AssertUnwindSafe(|| -> sled::Result<_> {
        let db = config.open()?;
        let services = db.open_tree(SERVICES_TREE)?;
        let meta = db.open_tree(META_TREE)?;
        Ok((db, services, meta))
    }));
    match opened {
        Ok(Ok(trees)) => Ok(trees),
        Ok(Err(sled::Error::Corruption { at, .. })) => Err(SledOpenError::Damaged(format!(
            "sled found corrupted data{}",
            at.map(|a| format!(" at {a}")).unwrap_or_default()
        ))),
        Ok(Err(sled::Error::Io(e)))
            if e.kind() == std::io::ErrorKind::InvalidData || e.kind() == std::io::ErrorKind::UnexpectedEof =>
        {
            Err(SledOpenError::Damaged(format!("sled could not read its files: {e}")))
        }
        Ok(Err(e)) => Err(SledOpenError::Fatal(Error::Store { dir: path.to_owned(), source: e })),
        Err(_) => Err(SledOpenError::Damaged("sled crashed while reading it".into())),
    }
}

/// Moves the damaged database aside and rebuilds it from the newest intact snapshot.
fn recover(
    dir: &Path,
    lock: File,
    options: StoreOptions,
    snapshots: &[SnapshotFile],
    problem: String,
    keep_damaged: bool,
) -> Result<(Store, Recovery)> {
    let (snapshot, records) = snapshots
        .iter()
        .find_map(|s| s.verify().ok().map(|records| (s, records)))
        .ok_or_else(|| Error::StoreCorrupt { dir: dir.to_owned(), detail: problem.clone() })?;
    let db_path = dir.join(DB_DIR);
    let damaged_copy = if keep_damaged && db_path.exists() {
        let copy = dir.join(format!("{DB_DIR}.damaged-{}", now_unix()));
        fs::rename(&db_path, &copy).map_err(|e| Error::io("cannot move the damaged database aside", &db_path, e))?;
        Some(copy)
    } else {
        None
    };
    let (db, services, meta) = open_sled(&db_path, &options).map_err(|e| match e {
        SledOpenError::Fatal(e) => e,
        SledOpenError::Damaged(d) => Error::StoreCorrupt { dir: dir.to_owned(), detail: d },
    })?;
    let store = Store::new(dir, db, services, meta, options, lock);
    store.wrote.set(true);
    let sled_err = |e| Error::Store { dir: dir.to_owned(), source: e };
    for record in &records {
        store.services.insert(record.name.as_str(), encode(record)?).map_err(sled_err)?;
    }
    store.meta.insert(KEY_SCHEMA, &SCHEMA_VERSION.to_be_bytes()).map_err(sled_err)?;
    store.meta.insert(KEY_GENERATION, &snapshot.generation.to_be_bytes()).map_err(sled_err)?;
    store.db.flush().map_err(sled_err)?;
    store.tighten_permissions()?;
    let recovery = Recovery {
        dir: dir.to_owned(),
        problem,
        snapshot: snapshot.path.clone(),
        generation: snapshot.generation,
        damaged_copy,
    };
    Ok((store, recovery))
}

struct SnapshotFile {
    path: PathBuf,
    generation: u64,
}

impl SnapshotFile {
    /// Reads the snapshot and checks its checksum and every record in it.
    fn verify(&self) -> std::result::Result<Vec<ServiceRecord>, String> {
        let mut content = Vec::new();
        File::open(&self.path).and_then(|mut f| f.read_to_end(&mut content)).map_err(|e| e.to_string())?;
        let newline = content.iter().position(|&b| b == b'\n').ok_or("no header")?;
        let header = std::str::from_utf8(&content[..newline]).map_err(|_| "bad header")?;
        let body = &content[newline + 1..];
        let fields: Vec<&str> = header.split(' ').collect();
        let [magic, schema, generation, _written, digest] = fields[..] else {
            return Err("bad header".into());
        };
        if magic != SNAPSHOT_MAGIC || schema.parse::<u64>().ok() != Some(SCHEMA_VERSION) {
            return Err("unknown snapshot format".into());
        }
        if generation.parse::<u64>().ok() != Some(self.generation) {
            return Err("generation mismatch".into());
        }
        if data_encoding::HEXLOWER.encode(&Sha256::digest(body)) != digest {
            return Err("checksum mismatch".into());
        }
        let records: Vec<ServiceRecord> = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        zeroize::Zeroize::zeroize(&mut content);
        Ok(records)
    }
}

/// Snapshots in `dir`, newest first. Leftover temporary files from a crash are removed.
fn list_snapshots(dir: &Path) -> Result<Vec<SnapshotFile>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io("cannot read", dir, e))? {
        let path = entry.map_err(|e| Error::io("cannot read", dir, e))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.ends_with(".tmp") {
            let _ = fs::remove_file(&path);
        } else if let Some(generation) = name.strip_suffix(".snapshot").and_then(|g| g.parse().ok()) {
            found.push(SnapshotFile { path, generation });
        }
    }
    found.sort_by_key(|s| std::cmp::Reverse(s.generation));
    Ok(found)
}

fn encode(record: &ServiceRecord) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(record).expect("service records always serialize"))
}

fn decode(dir: &Path, bytes: &[u8]) -> Result<ServiceRecord> {
    serde_json::from_slice(bytes).map_err(|e| Error::StoreCorrupt {
        dir: dir.to_owned(),
        detail: format!("a service record cannot be decoded: {e}"),
    })
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
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
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
    fs::set_permissions(path, fs::Permissions::from_mode(0o700)).map_err(|e| Error::io("cannot protect", path, e))?;
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
    let tmp = path.with_extension("tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Error::io("cannot write", &tmp, e))?;
    for part in parts {
        file.write_all(part).map_err(|e| Error::io("cannot write", &tmp, e))?;
    }
    file.sync_all().map_err(|e| Error::io("cannot write", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| Error::io("cannot write", path, e))?;
    if let Some(parent) = path.parent() {
        File::open(parent).and_then(|d| d.sync_all()).map_err(|e| Error::io("cannot sync", parent, e))?;
    }
    Ok(())
}

fn acquire_lock(dir: &Path, timeout: Duration) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::io("cannot open the lock file", &path, e))?;
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
    Ok(file)
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
