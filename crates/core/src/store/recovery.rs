//! sled itself: opening it (segment size, its lock, its panics), checking it against the
//! snapshots, migrating, rebuilding a damaged database, and the databases the service holds.

use super::*;

pub(super) enum CheckError {
    Damaged(String),
    Fatal(Error),
}

pub(super) enum SledOpenError {
    Damaged(String),
    Fatal(Error),
}

/// Schema migrations, one step at a time. Version 1 is the first; later versions add a step.
pub(super) fn migrate(store: &Store, trees: &Trees, from: u64) -> Result<()> {
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
pub(super) const SEGMENT_SIZE: usize = 32 * 1024;

/// The segment size an existing database was made with (sled refuses another).
pub(super) fn segment_size_of(db: &Path) -> Option<usize> {
    let conf = fs::read(db.join("conf")).ok()?;
    let text = String::from_utf8_lossy(&conf);
    text.lines().find_map(|line| line.strip_prefix("segment_size: ")?.trim().parse().ok())
}

/// Opens sled, waiting up to `lock_timeout` while another process holds it open (a
/// service keeping it between commands, see [`StoreOptions::hold_database`]).
pub(super) fn open_sled(path: &Path, options: &StoreOptions) -> std::result::Result<Trees, SledOpenError> {
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
pub(super) fn open_sled_once(path: &Path, options: &StoreOptions) -> std::result::Result<Option<Trees>, SledOpenError> {
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
    pub(super) fn rebuild(&self, snapshots: &[SnapshotFile], problem: String, keep_damaged: bool) -> Result<Trees> {
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

pub(super) fn open_error(dir: &Path, e: SledOpenError) -> Error {
    match e {
        SledOpenError::Fatal(e) => e,
        SledOpenError::Damaged(d) => Error::StoreCorrupt { dir: dir.to_owned(), detail: d },
    }
}

/// `db.damaged-<unix seconds>`, or with `.1`, `.2`, … when that name is taken (two
/// recoveries in the same second): a recovery never fails because of a name.
pub(super) fn free_damaged_copy_name(dir: &Path) -> PathBuf {
    let base = format!("{DAMAGED_PREFIX}{}", now_unix());
    (0u64..)
        .map(|n| dir.join(if n == 0 { base.clone() } else { format!("{base}.{n}") }))
        .find(|path| matches!(fs::symlink_metadata(path), Err(e) if e.kind() == std::io::ErrorKind::NotFound))
        .expect("some name is free")
}

/// The damaged copies in `dir`, newest first (by the time and counter in their names).
pub(super) fn damaged_copies(dir: &Path) -> Result<Vec<PathBuf>> {
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
pub(super) fn erase_old_damaged_copies(dir: &Path, keep: usize, fresh: Option<&Path>) -> Vec<PathBuf> {
    let others = damaged_copies(dir).unwrap_or_default().into_iter().filter(|p| Some(p.as_path()) != fresh);
    let old = others.skip(keep.saturating_sub(usize::from(fresh.is_some())));
    let erased: Vec<PathBuf> = old.filter(|path| scrub(path).is_ok()).collect();
    if !erased.is_empty() {
        let _ = sync_dir(dir);
    }
    erased
}

/// sled databases this process keeps open between commands (see
/// [`StoreOptions::hold_database`]), by store directory.
pub(super) mod held {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};
    use std::sync::{Mutex, MutexGuard};

    use super::Trees;

    static HELD: Mutex<BTreeMap<PathBuf, Trees>> = Mutex::new(BTreeMap::new());

    fn lock() -> MutexGuard<'static, BTreeMap<PathBuf, Trees>> {
        HELD.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(in crate::store) fn get(dir: &Path) -> Option<Trees> {
        lock().get(dir).cloned()
    }

    pub(in crate::store) fn keep(dir: &Path, trees: Trees) {
        lock().insert(dir.to_owned(), trees);
    }

    /// Flushes and closes the database of `dir` now, if held.
    pub(in crate::store) fn let_go(dir: &Path) {
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
