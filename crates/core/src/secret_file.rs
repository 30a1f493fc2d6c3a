//! The one writer for every file that holds a secret: store snapshots, the runtime log,
//! exported HiddenServiceDirs, credential files and backups.
//!
//! - Only into a directory that is ours and that nobody else can write to (directories we
//!   create are 0700), checked on the open directory itself, and every later step is
//!   relative to that open directory, so swapping a path component midway changes nothing.
//! - Never through a symbolic link: the content goes to a new temporary file (`O_CREAT |
//!   O_EXCL | O_NOFOLLOW`, random name, same directory), is fsynced, then renamed over the
//!   target. A rename replaces a planted link itself, never the file it points to.
//! - Mode 0600 whatever the umask, also when the file it replaces was readable by others.
//! - [`Replace::Never`] refuses any existing entry, a dangling symbolic link included, and
//!   still refuses one that appears while writing.
//! - The directory is fsynced, so a crash leaves the old content or the new, never a mix.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// What to do when the target already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replace {
    /// Refuse, whatever the existing entry is (file, directory, symbolic link).
    Never,
    /// Replace it atomically (a symbolic link is replaced, not followed).
    Always,
}

/// Writes `parts`, one after the other, as the file `path` (see the module documentation).
/// The directory holding it must exist, be ours and be writable by nobody else.
pub fn write_secret_file(path: &Path, parts: &[&[u8]], replace: Replace) -> Result<()> {
    let (dir, name) = split(path)?;
    PrivateDir::open(dir)?.write(name, parts, replace)
}

/// Checks, before any work is done (such as asking for a passphrase), that
/// [`write_secret_file`] could write `path`: its directory is safe and, with
/// [`Replace::Never`], nothing is there yet.
pub fn check_writable(path: &Path, replace: Replace) -> Result<()> {
    let (dir, name) = split(path)?;
    let dir = PrivateDir::open(dir)?;
    if replace == Replace::Never && dir.entry_exists(name)? {
        return Err(already_exists(path));
    }
    Ok(())
}

/// Removes the entries of directory `dir` (files and symbolic links, never directories)
/// whose names `is_stale` picks. Returns the names removed.
pub fn remove_stale_entries(dir: &Path, is_stale: impl Fn(&OsStr) -> bool) -> Result<Vec<OsString>> {
    PrivateDir::open(dir)?.remove_stale(is_stale)
}

/// An open directory that is ours and that nobody else can write to. Files are written and
/// removed relative to it.
#[derive(Debug)]
pub struct PrivateDir {
    fd: OwnedFd,
    path: PathBuf,
}

impl PrivateDir {
    /// Opens an existing directory (following symbolic links to it: what counts is the
    /// directory reached) and checks that it is ours and that nobody else can write to it.
    pub fn open(path: &Path) -> Result<Self> {
        let fd = open_dir(libc::AT_FDCWD, &cstring(path.as_os_str(), path)?, true)
            .map_err(|e| Error::io("cannot open the directory", path, e))?;
        let dir = PrivateDir { fd, path: path.to_owned() };
        dir.check()?;
        Ok(dir)
    }

    /// Opens the directory `path`, creating it (and any missing parent) with mode 0700, and
    /// makes it 0700 if it existed: for directories that hold nothing but secrets, such as a
    /// HiddenServiceDir. An existing one that is not ours or that others can write to is
    /// refused (someone else could have put files in it, or could swap them).
    pub fn create(path: &Path) -> Result<Self> {
        create_dir_all_private(path)?;
        let dir = Self::open(path)?;
        dir.make_private()?;
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The subdirectory `name`, created 0700 if missing, made 0700 if not. A symbolic link
    /// in its place is refused, not followed.
    pub fn subdir(&self, name: &str) -> Result<PrivateDir> {
        let path = self.path.join(name);
        let c_name = component(OsStr::new(name), &path)?;
        // SAFETY: valid descriptor and NUL-terminated name.
        if unsafe { libc::mkdirat(self.fd.as_raw_fd(), c_name.as_ptr(), 0o700) } != 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::AlreadyExists {
                return Err(Error::io("cannot create", &path, e));
            }
        }
        let fd = open_dir(self.fd.as_raw_fd(), &c_name, false).map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) | Some(libc::ENOTDIR) => Error::io(
                "refusing to use",
                &path,
                io::Error::other("it is not a directory (a symbolic link or a file is in its place); remove it"),
            ),
            _ => Error::io("cannot open the directory", &path, e),
        })?;
        let dir = PrivateDir { fd, path };
        dir.check()?;
        dir.make_private()?;
        Ok(dir)
    }

    /// Writes the file `name` in this directory (see the module documentation).
    pub fn write(&self, name: &OsStr, parts: &[&[u8]], replace: Replace) -> Result<()> {
        self.write_file(name, parts, replace)?;
        self.sync()
    }

    /// [`PrivateDir::write`] without the directory's sync: the file's content is on disk, its
    /// name only once the caller syncs the directory (after writing more files into it).
    pub fn write_leaving_dir_unsynced(&self, name: &OsStr, parts: &[&[u8]], replace: Replace) -> Result<()> {
        self.write_file(name, parts, replace)
    }

    fn write_file(&self, name: &OsStr, parts: &[&[u8]], replace: Replace) -> Result<()> {
        let target = self.path.join(name);
        let c_name = component(name, &target)?;
        if replace == Replace::Never && self.entry_exists(name)? {
            return Err(already_exists(&target));
        }
        let tmp_name = temp_name(name)?;
        let c_tmp = component(&tmp_name, &target)?;
        let tmp_path = self.path.join(&tmp_name);
        // SAFETY: valid descriptor and NUL-terminated name; the returned descriptor is owned below.
        let raw = unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                c_tmp.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o600 as libc::c_uint,
            )
        };
        if raw < 0 {
            return Err(Error::io("cannot create", &tmp_path, io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a descriptor we just opened and nobody else owns.
        let mut file = File::from(unsafe { OwnedFd::from_raw_fd(raw) });
        let written = (|| -> io::Result<()> {
            // The umask may have taken bits away, never added any: this makes it exactly 0600.
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            for part in parts {
                file.write_all(part)?;
            }
            file.sync_all()
        })();
        drop(file);
        let result = written.map_err(|e| Error::io("cannot write", &tmp_path, e)).and_then(|()| {
            self.rename_into_place(&c_tmp, &c_name, replace).map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    already_exists(&target)
                } else {
                    Error::io("cannot write", &target, e)
                }
            })
        });
        if result.is_err() {
            // SAFETY: valid descriptor and NUL-terminated name.
            unsafe { libc::unlinkat(self.fd.as_raw_fd(), c_tmp.as_ptr(), 0) };
        }
        result
    }

    /// Removes the entries (files and symbolic links, never directories) whose names
    /// `is_stale` picks, then syncs the directory. Returns the names removed.
    pub fn remove_stale(&self, is_stale: impl Fn(&OsStr) -> bool) -> Result<Vec<OsString>> {
        let mut removed = Vec::new();
        for name in self.entries()? {
            if !is_stale(&name) {
                continue;
            }
            let path = self.path.join(&name);
            let c_name = component(&name, &path)?;
            match self.lstat(&c_name) {
                Ok(Some(st)) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => continue,
                Ok(None) => continue,
                Ok(Some(_)) => {}
                Err(e) => return Err(Error::io("cannot read", &path, e)),
            }
            // SAFETY: valid descriptor and NUL-terminated name.
            if unsafe { libc::unlinkat(self.fd.as_raw_fd(), c_name.as_ptr(), 0) } != 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::NotFound {
                    return Err(Error::io("cannot remove", &path, e));
                }
            }
            removed.push(name);
        }
        if !removed.is_empty() {
            self.sync()?;
        }
        Ok(removed)
    }

    /// Whether anything (a dangling symbolic link included) is called `name` here.
    pub(crate) fn entry_exists(&self, name: &OsStr) -> Result<bool> {
        let path = self.path.join(name);
        let c_name = component(name, &path)?;
        self.lstat(&c_name).map(|st| st.is_some()).map_err(|e| Error::io("cannot read", &path, e))
    }

    fn lstat(&self, name: &CStr) -> io::Result<Option<libc::stat>> {
        // SAFETY: an all-zero `stat` is a valid value to be overwritten.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid descriptor, NUL-terminated name, and a `stat` to fill.
        if unsafe { libc::fstatat(self.fd.as_raw_fd(), name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } == 0 {
            return Ok(Some(st));
        }
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::NotFound {
            Ok(None)
        } else {
            Err(e)
        }
    }

    fn rename_into_place(&self, tmp: &CStr, name: &CStr, replace: Replace) -> io::Result<()> {
        let fd = self.fd.as_raw_fd();
        match replace {
            Replace::Always => {
                // SAFETY: valid descriptors and NUL-terminated names.
                if unsafe { libc::renameat(fd, tmp.as_ptr(), fd, name.as_ptr()) } == 0 {
                    return Ok(());
                }
                Err(io::Error::last_os_error())
            }
            Replace::Never => {
                // SAFETY: valid descriptors and NUL-terminated names.
                if unsafe { libc::renameat2(fd, tmp.as_ptr(), fd, name.as_ptr(), libc::RENAME_NOREPLACE) } == 0 {
                    return Ok(());
                }
                let e = io::Error::last_os_error();
                if !matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) {
                    return Err(e);
                }
                // A file system without RENAME_NOREPLACE: a hard link also never replaces.
                // SAFETY: valid descriptors and NUL-terminated names.
                if unsafe { libc::linkat(fd, tmp.as_ptr(), fd, name.as_ptr(), 0) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                // SAFETY: valid descriptor and NUL-terminated name.
                unsafe { libc::unlinkat(fd, tmp.as_ptr(), 0) };
                Ok(())
            }
        }
    }

    /// Refuses a directory that is not ours or that others can write to.
    fn check(&self) -> Result<()> {
        let st = self.fstat()?;
        let me = crate::unix::euid();
        if st.st_uid != me {
            return Err(Error::WrongOwner { path: self.path.clone(), owner: st.st_uid, me });
        }
        let mode = st.st_mode & 0o7777;
        if mode & 0o022 != 0 {
            return Err(Error::io(
                "refusing to write secrets into",
                &self.path,
                io::Error::other(format!(
                    "other users can write to this directory (mode {mode:o}) and could replace or redirect \
                     what is written there; choose a directory only you can write to"
                )),
            ));
        }
        Ok(())
    }

    fn make_private(&self) -> Result<()> {
        let st = self.fstat()?;
        if st.st_mode & 0o7777 != 0o700 {
            // SAFETY: valid descriptor.
            if unsafe { libc::fchmod(self.fd.as_raw_fd(), 0o700) } != 0 {
                return Err(Error::io("cannot protect", &self.path, io::Error::last_os_error()));
            }
        }
        Ok(())
    }

    fn fstat(&self) -> Result<libc::stat> {
        // SAFETY: an all-zero `stat` is a valid value to be overwritten.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid descriptor and a `stat` to fill.
        if unsafe { libc::fstat(self.fd.as_raw_fd(), &mut st) } != 0 {
            return Err(Error::io("cannot read", &self.path, io::Error::last_os_error()));
        }
        Ok(st)
    }

    fn sync(&self) -> Result<()> {
        // SAFETY: valid descriptor.
        if unsafe { libc::fsync(self.fd.as_raw_fd()) } != 0 {
            return Err(Error::io("cannot sync", &self.path, io::Error::last_os_error()));
        }
        Ok(())
    }

    /// The names in this directory, except `.` and `..`.
    fn entries(&self) -> Result<Vec<OsString>> {
        let read_error = |e| Error::io("cannot read", &self.path, e);
        // A descriptor of its own for the directory stream, which closedir closes.
        // SAFETY: valid descriptor.
        let dup = unsafe { libc::fcntl(self.fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return Err(read_error(io::Error::last_os_error()));
        }
        // SAFETY: `dup` is ours; on success the stream owns it.
        let stream = unsafe { libc::fdopendir(dup) };
        if stream.is_null() {
            let e = io::Error::last_os_error();
            // SAFETY: fdopendir failed, so `dup` is still ours to close.
            unsafe { libc::close(dup) };
            return Err(read_error(e));
        }
        // The duplicate shares its position with our descriptor: start from the beginning.
        // SAFETY: `stream` is a valid directory stream until closedir below.
        unsafe { libc::rewinddir(stream) };
        let mut names = Vec::new();
        let outcome = loop {
            // SAFETY: errno is thread-local; clearing it tells the end from an error.
            unsafe { *libc::__errno_location() = 0 };
            // SAFETY: valid stream.
            let entry = unsafe { libc::readdir(stream) };
            if entry.is_null() {
                let e = io::Error::last_os_error();
                break if e.raw_os_error().unwrap_or(0) == 0 { Ok(()) } else { Err(e) };
            }
            // SAFETY: readdir returned an entry whose d_name is NUL-terminated.
            let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) }.to_bytes();
            if name != b"." && name != b".." {
                names.push(OsString::from_vec(name.to_vec()));
            }
        };
        // SAFETY: valid stream, closed once.
        unsafe { libc::closedir(stream) };
        outcome.map_err(read_error)?;
        Ok(names)
    }
}

/// `mkdir -p` with mode 0700 for every directory created (whatever the umask).
pub(crate) fn create_dir_all_private(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_all_private(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io("cannot protect", path, e)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(Error::io("cannot create", path, e)),
    }
}

fn open_dir(at: libc::c_int, path: &CStr, follow: bool) -> io::Result<OwnedFd> {
    let nofollow = if follow { 0 } else { libc::O_NOFOLLOW };
    // SAFETY: `at` is AT_FDCWD or a valid descriptor; NUL-terminated path.
    let raw =
        unsafe { libc::openat(at, path.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC | nofollow) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a descriptor we just opened and nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// The directory (`.` for a bare name) and the file name of `path`.
fn split(path: &Path) -> Result<(&Path, &OsStr)> {
    let name = path.file_name().ok_or_else(|| {
        Error::io("cannot write", path, io::Error::new(io::ErrorKind::InvalidInput, "it does not name a file"))
    })?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    Ok((dir, name))
}

fn cstring(text: &OsStr, path: &Path) -> Result<CString> {
    CString::new(text.as_bytes()).map_err(|_| {
        Error::io("cannot use", path, io::Error::new(io::ErrorKind::InvalidInput, "the name holds a NUL byte"))
    })
}

/// A single path component: no `/`, not `.` or `..`, not empty.
fn component(name: &OsStr, path: &Path) -> Result<CString> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.contains(&b'/') {
        return Err(Error::io(
            "cannot use",
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "not a plain file name"),
        ));
    }
    cstring(name, path)
}

/// `.NAME.RANDOM.tmp`: hidden, unguessable, and recognisable as a leftover (the store
/// removes `*.tmp` files it finds in its snapshot directory).
fn temp_name(name: &OsStr) -> Result<OsString> {
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(|e| Error::Random(e.to_string()))?;
    let mut out = b".".to_vec();
    out.extend_from_slice(&name.as_bytes()[..name.len().min(200)]);
    out.push(b'.');
    out.extend_from_slice(data_encoding::HEXLOWER.encode(&random).as_bytes());
    out.extend_from_slice(b".tmp");
    Ok(OsString::from_vec(out))
}

fn already_exists(path: &Path) -> Error {
    Error::io(
        "refusing to overwrite",
        path,
        io::Error::new(
            io::ErrorKind::AlreadyExists,
            "it already exists (a file, a directory or a symbolic link); nothing was written",
        ),
    )
}

/// Opens (creating it 0600) a lock file without following a link planted in its place.
pub(crate) fn open_lock_file(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| Error::io("cannot open the lock file", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, MetadataExt};

    fn private_tempdir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        dir
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn writes_0600_whatever_the_umask_and_replaces_atomically() {
        let dir = private_tempdir();
        let path = dir.path().join("secret");
        // A file others could read is replaced by a new one that they cannot.
        fs::write(&path, b"old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write_secret_file(&path, &[b"new ", b"content"], Replace::Always).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new content");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file is left");
    }

    #[test]
    fn a_planted_symlink_is_replaced_never_followed() {
        let dir = private_tempdir();
        let elsewhere = private_tempdir();
        let victim = elsewhere.path().join("victim");
        fs::write(&victim, b"untouched").unwrap();
        let path = dir.path().join("secret");
        symlink(&victim, &path).unwrap();
        write_secret_file(&path, &[b"key"], Replace::Always).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"untouched");
        assert!(fs::symlink_metadata(&path).unwrap().file_type().is_file());
        assert_eq!(fs::read(&path).unwrap(), b"key");
    }

    #[test]
    fn never_refuses_any_existing_entry_even_a_dangling_link() {
        let dir = private_tempdir();
        let file = dir.path().join("file");
        fs::write(&file, b"mine").unwrap();
        let dangling = dir.path().join("dangling");
        symlink(dir.path().join("nowhere"), &dangling).unwrap();
        for path in [&file, &dangling] {
            let err = write_secret_file(path, &[b"x"], Replace::Never).unwrap_err().to_string();
            assert!(err.contains("refusing to overwrite") && err.contains("already exists"), "{err}");
            assert_eq!(check_writable(path, Replace::Never).unwrap_err().to_string(), err);
        }
        assert_eq!(fs::read(&file).unwrap(), b"mine");
        assert!(!dir.path().join("nowhere").exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
        write_secret_file(&dir.path().join("new"), &[b"x"], Replace::Never).unwrap();
        assert_eq!(mode(&dir.path().join("new")), 0o600);
    }

    #[test]
    fn a_directory_others_can_write_to_is_refused() {
        let dir = private_tempdir();
        for bad in [0o770, 0o707, 0o1777] {
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(bad)).unwrap();
            let err = write_secret_file(&dir.path().join("secret"), &[b"x"], Replace::Always).unwrap_err();
            assert!(err.to_string().contains("other users can write to this directory"), "{err}");
            assert!(PrivateDir::create(dir.path()).is_err());
        }
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        // Readable by others is not a reason to refuse a file that is 0600 itself.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        write_secret_file(&dir.path().join("secret"), &[b"x"], Replace::Always).unwrap();
    }

    #[test]
    fn created_directories_are_0700_and_existing_ones_become_0700() {
        let root = private_tempdir();
        let deep = root.path().join("a/b/c");
        let created = PrivateDir::create(&deep).unwrap();
        for d in [root.path().join("a"), root.path().join("a/b"), deep.clone()] {
            assert_eq!(mode(&d), 0o700, "{}", d.display());
        }
        let sub = created.subdir("authorized_clients").unwrap();
        assert_eq!(mode(sub.path()), 0o700);
        fs::set_permissions(&deep, fs::Permissions::from_mode(0o755)).unwrap();
        PrivateDir::create(&deep).unwrap();
        assert_eq!(mode(&deep), 0o700);
        // A symbolic link in place of a subdirectory is refused.
        let other = private_tempdir();
        symlink(other.path(), deep.join("linked")).unwrap();
        let err = PrivateDir::open(&deep).unwrap().subdir("linked").unwrap_err().to_string();
        assert!(err.contains("not a directory"), "{err}");
    }

    #[test]
    fn stale_entries_are_removed_and_links_not_followed() {
        let dir = private_tempdir();
        let outside = private_tempdir();
        fs::write(outside.path().join("target.auth"), b"keep me").unwrap();
        fs::write(dir.path().join("old.auth"), b"x").unwrap();
        fs::write(dir.path().join("kept.auth"), b"x").unwrap();
        fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        symlink(outside.path().join("target.auth"), dir.path().join("link.auth")).unwrap();
        fs::create_dir(dir.path().join("sub.auth")).unwrap();
        let mut removed =
            remove_stale_entries(dir.path(), |n| n.as_bytes().ends_with(b".auth") && n != OsStr::new("kept.auth"))
                .unwrap();
        removed.sort();
        assert_eq!(removed, [OsString::from("link.auth"), OsString::from("old.auth")]);
        let mut left: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        left.sort();
        assert_eq!(left, ["kept.auth", "notes.txt", "sub.auth"]);
        assert_eq!(fs::read(outside.path().join("target.auth")).unwrap(), b"keep me");
    }
}
