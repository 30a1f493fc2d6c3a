//! Snapshots: what makes a change durable and whole, and what reads are answered from.
//! Format 4 names each record's file (`SHA256.record`, written once), so that a change
//! writes only the records it changed.

use super::*;

/// The snapshot body, formats 2 and 3 (records encoded one by one, see [`encode`]).
#[derive(Deserialize)]
pub(super) struct SnapshotBody {
    services: Vec<ServiceRecord>,
    keys: Vec<ReceivedKey>,
}

/// The snapshot body, format 4: each record's name and the SHA-256 of its file's content,
/// which names the file. A record that did not change keeps its file; a file is written
/// once, before any snapshot names it, and never changed after.
#[derive(Default, Serialize, Deserialize)]
pub(super) struct Manifest {
    services: Vec<(String, String)>,
    keys: Vec<(String, String)>,
}

impl Manifest {
    pub(super) fn digests(&self) -> impl Iterator<Item = &str> {
        self.services.iter().chain(&self.keys).map(|(_, digest)| digest.as_str())
    }
}

pub(super) fn record_file_name(digest: &str) -> String {
    format!("{digest}{RECORD_SUFFIX}")
}

pub(super) fn snapshot_path(snapshot_dir: &Path, generation: u64) -> PathBuf {
    snapshot_dir.join(format!("{generation:020}.snapshot"))
}

pub(super) struct SnapshotFile {
    pub(super) path: PathBuf,
    pub(super) generation: u64,
}

impl SnapshotFile {
    /// Reads the snapshot and checks its checksum and every record in it.
    pub(super) fn verify(&self) -> std::result::Result<Contents, String> {
        self.read().map(|(contents, _)| contents)
    }

    /// [`SnapshotFile::verify`], and whether sled's flush of this change was deferred.
    pub(super) fn read(&self) -> std::result::Result<(Contents, bool), String> {
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
    pub(super) fn record_files(&self) -> Option<Vec<String>> {
        let content = fs::read(&self.path).ok()?;
        let newline = content.iter().position(|&b| b == b'\n')?;
        let header = std::str::from_utf8(&content[..newline]).ok()?;
        match header.split(' ').nth(1) {
            Some("4") => {}
            // Older formats hold their records themselves.
            Some("1" | "2" | "3") => return Some(Vec::new()),
            // A newer tails-server's: it may name any of them.
            _ => return None,
        }
        let manifest: Manifest = serde_json::from_slice(&content[newline + 1..]).ok()?;
        Some(manifest.digests().map(record_file_name).collect())
    }
}

/// A record named by a format-4 snapshot: its file, checked against its digest and name.
pub(super) fn read_record<T: DeserializeOwned + Named>(
    dir: &Path,
    name: &str,
    digest: &str,
) -> std::result::Result<T, String> {
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
pub(super) trait Named {
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
pub(super) fn remove_unnamed_records(snapshot_dir: &Path) {
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
pub(super) fn list_snapshots(dir: &Path) -> Result<Vec<SnapshotFile>> {
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

impl Store {
    /// Writes the snapshot of change `generation` (records in name order), durably;
    /// `deferred`: sled is not flushed before the change is reported. Only records whose
    /// file is not there yet are written: their content first (each synced), then the
    /// snapshot that names them, then the folder once for all of their names.
    pub(super) fn write_snapshot(&self, generation: u64, contents: &Contents, deferred: bool) -> Result<()> {
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
}
