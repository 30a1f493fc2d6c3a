//! The store's files: the lock, private permissions (checked as tor checks its
//! DataDirectory), directory syncs, and scrubbing what held secrets.

use super::*;

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

pub(super) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io("cannot sync", dir, e))
}

pub(crate) fn not_found_is_ok(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

pub(super) fn current_uid() -> u32 {
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

pub(super) fn ensure_private_dir(path: &Path) -> Result<()> {
    match fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => check_private(path, true),
        Err(e) => Err(Error::io("cannot create", path, e)),
    }
}

/// sled creates its files with the process umask; make them private whatever it was.
pub(super) fn tighten(path: &Path) -> Result<()> {
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

pub(super) fn acquire_lock(dir: &Path, timeout: Duration) -> Result<Option<File>> {
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
pub(super) fn lock_holder(file: &File) -> Option<u32> {
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
