//! A persistent service's data in a file system of its own, of bounded size: an ext4 image,
//! `data/<service>.img` beside the store, mounted (loop) at `data/<service>/` before its
//! program starts. What the service's friends upload (over SFTP, say) fills that image and
//! nothing else: the Persistent Storage, which holds the store and the rest of the person's
//! persistent files, keeps its room. Amnesic services' data stays in the runtime directory's
//! tmpfs, bounded as a whole by the service's unit.
//!
//! The service runs without capabilities: what needs root (making the file system, mounting
//! and unmounting it) is one fixed script run by systemd in a transient unit, its paths as
//! arguments, never part of its text. Everything else (scrubbing the program's keys at a
//! removal, setting data aside, giving it back) is a rename of the image or a write inside its
//! mount, as it was for folders.
//!
//! The image is preallocated (`fallocate`): a sparse one would take the stick's blocks only
//! as it fills and overcommit the stick; and made with `-E nodiscard`, as `mkfs.ext4`'s
//! discard would punch the preallocation out again (both measured on Tails 7's kernel, see
//! docs/threat-model.md).

use std::path::{Path, PathBuf};

use super::systemd::Systemd;
use crate::error::{Error, Result};
use crate::names::ServiceName;

/// The image holding the data mounted at `data_dir`.
pub fn image_of(data_dir: &Path) -> PathBuf {
    let mut name = data_dir.file_name().unwrap_or_default().to_owned();
    name.push(IMAGE_EXTENSION);
    data_dir.with_file_name(name)
}

/// How a data image's file name ends (in `data/` and in `kept-data/`).
pub const IMAGE_EXTENSION: &str = ".img";

/// Where images wait, beside `data/`, until the next reconcile has overwritten their
/// programs' keys and deleted them: a removed service's (its program may still be running
/// then) and deleted kept data.
pub const DESTROYING_DIR: &str = "destroying";

const MIB: u64 = 1 << 20;

/// The most a kind's data may take, whatever the room on the stick: enough for a shared
/// folder, a site, a chat server's database.
fn cap(daemon: &str) -> u64 {
    match daemon {
        "sftp" => 2048 * MIB,
        "web" => 1024 * MIB,
        _ => 256 * MIB,
    }
}

/// What the Persistent Storage keeps free for everything else (the store itself, Additional
/// Software's packages, the person's files) whatever the services take.
pub const RESERVE: u64 = 64 * MIB;

/// Below this an image is not made: the service is refused, saying why.
pub const SMALLEST: u64 = 16 * MIB;

/// The size of a new image for a `daemon` on a Persistent Storage with `available` bytes free:
/// the kind's cap, or half of what is free beyond [`RESERVE`] when that is less, so that the
/// next service still finds room.
pub fn bound(daemon: &str, available: u64) -> Option<u64> {
    let size = cap(daemon).min(available.saturating_sub(RESERVE) / 2) / MIB * MIB;
    (size >= SMALLEST).then_some(size)
}

/// The bytes free on the file system holding `dir` (without its reserve for root).
fn available(dir: &Path) -> std::io::Result<u64> {
    statvfs(dir).map(|s| s.f_bavail * s.f_frsize)
}

/// A file system's counts (in blocks of `f_frsize` bytes).
fn statvfs(dir: &Path) -> std::io::Result<libc::statvfs> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: a valid C string and a buffer statvfs fills on success.
    if unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: filled, statvfs having succeeded.
    Ok(unsafe { stat.assume_init() })
}

/// The size of a service's data image and, while it is mounted, the bytes used in it; none
/// for data that is not an image (an amnesic service's, an older version's folder).
pub fn space(data_dir: &Path) -> Option<(u64, Option<u64>)> {
    let image = std::fs::symlink_metadata(image_of(data_dir)).ok()?;
    let used =
        is_mounted(data_dir).then(|| statvfs(data_dir).ok()).flatten().map(|s| (s.f_blocks - s.f_bfree) * s.f_frsize);
    Some((image.len(), used))
}

/// Whether a file system other than its parent's is mounted at the folder `dir` (an image's
/// always is): the device numbers differ. No link is followed. Cheaper than reading
/// /proc/self/mountinfo ([`crate::tails::is_mount_point`]), which `info` would do per service.
pub(crate) fn is_mounted(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let parent = dir.parent().and_then(|p| std::fs::metadata(p).ok());
    std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir() && parent.is_some_and(|p| p.dev() != m.dev()))
}

/// Makes sure the service's data is its image, mounted at `data_dir`: made on first use (of
/// [`bound`]'s size; an older version's folder found there is copied in), mounted when it is
/// not. A mount there of another image (set aside, destroyed) is let go first.
pub async fn mount(systemd: &Systemd, service: &ServiceName, daemon: &str, data_dir: &Path) -> Result<()> {
    let image = image_of(data_dir);
    let size = match std::fs::symlink_metadata(&image) {
        Ok(_) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = data_dir.parent().unwrap_or(Path::new("/"));
            crate::secret_file::create_dir_all_private(parent)?;
            let free = available(parent).map_err(|e| Error::io("cannot measure the free space of", parent, e))?;
            bound(daemon, free).ok_or_else(|| Error::Daemon {
                unit: super::unit_name(service),
                detail: format!(
                    "the Persistent Storage has {} MiB free, and this service's data needs {} MiB free to be made \
                     (it takes at most half of what is free beyond {} MiB kept for everything else, and at least {} \
                     MiB). Delete files, kept data (`tails-server kept-data list`) or services there, then enable it \
                     again",
                    free / MIB,
                    (RESERVE + 2 * SMALLEST) / MIB,
                    RESERVE / MIB,
                    SMALLEST / MIB
                ),
            })?
        }
        Err(e) => return Err(Error::io("cannot read", &image, e)),
    };
    let unit = format!("tails-server-volume-{service}.service");
    run(systemd, &unit, "mount", &image, data_dir, &[size.to_string()]).await.map_err(|e| Error::Daemon {
        unit: super::unit_name(service),
        detail: format!("its data's file system could not be made or mounted (`journalctl -u {unit}` says why): {e}"),
    })
}

/// Unmounts what is mounted at each of the store's data directories but is no longer that
/// service's image (set aside or destroyed), then overwrites the programs' keys in the images
/// waiting in [`DESTROYING_DIR`] and deletes them. Called once the programs that used them
/// are stopped; what fails is returned, and tried again at the next call.
pub async fn collect(systemd: &Systemd, store_dir: &Path) -> Vec<(PathBuf, Error)> {
    let mut failed = Vec::new();
    // No service's name is empty: these units are never a service's.
    let unit = "tails-server-volumes.service";
    for data_dir in stale_mounts(&store_dir.join("data")) {
        if let Err(e) = run(systemd, unit, "release", &image_of(&data_dir), &data_dir, &[]).await {
            failed.push((data_dir, e));
        }
    }
    let secrets: Vec<String> = super::every_program_secret().map(str::to_owned).collect();
    for image in waiting(store_dir) {
        if let Err(e) = run(systemd, unit, "destroy", &image, Path::new("-"), &secrets).await {
            failed.push((image, e));
        }
    }
    failed
}

/// Whether [`collect`] has anything to do in the store.
pub fn pending(store_dir: &Path) -> bool {
    !stale_mounts(&store_dir.join("data")).is_empty() || !waiting(store_dir).is_empty()
}

/// The data directories that are mount points (another device than `data/`'s) while their
/// image is gone from beside them.
fn stale_mounts(data: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(data) else { return Vec::new() };
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|path| is_mounted(path) && std::fs::symlink_metadata(image_of(path)).is_err())
        .collect()
}

fn waiting(store_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(store_dir.join(DESTROYING_DIR)) else { return Vec::new() };
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(IMAGE_EXTENSION))
        .collect()
}

/// Moves an image out of the way, to be destroyed by the next [`collect`]; its mount, if
/// any, keeps working until then (the loop device holds the file).
pub fn destroy_later(image: &Path) -> Result<()> {
    let store = image.parent().and_then(Path::parent).unwrap_or(Path::new("."));
    let dir = store.join(DESTROYING_DIR);
    crate::secret_file::create_dir_all_private(&dir)?;
    let name = image.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let mut target = dir.join(format!("{}-{name}", crate::model::now_unix()));
    for n in 2.. {
        if std::fs::symlink_metadata(&target).is_err() {
            break;
        }
        target = dir.join(format!("{}-{n}-{name}", crate::model::now_unix()));
    }
    std::fs::rename(image, &target).map_err(|e| Error::io("cannot move", image, e))
}

/// Runs [`SCRIPT`] as root, outside the service's sandbox.
async fn run(systemd: &Systemd, unit: &str, verb: &str, image: &Path, data_dir: &Path, rest: &[String]) -> Result<()> {
    let mut argv: Vec<String> = ["/bin/sh", "-c", SCRIPT, "sh", verb].map(str::to_owned).to_vec();
    argv.extend([image.display().to_string(), data_dir.display().to_string()]);
    argv.extend(rest.iter().cloned());
    let description = format!("tails-server: {verb} the data image {}", image.display());
    systemd.run_described(unit, &description, &argv).await
}

/// The one privileged script: `mount IMAGE DIR SIZE`, `release IMAGE DIR`, `destroy IMAGE -
/// SECRET…`. Never follows a link into or out of an image; stops at the first failure.
const SCRIPT: &str = r#"set -eu
verb=$1 image=$2 dir=$3
shift 3
options=loop,nosuid,nodev,noexec
# The file behind what is mounted at $1 (nothing when not a loop device).
backing() {
    source=$(findmnt -n -o SOURCE --mountpoint "$1") || return 0
    cat "/sys/block/${source#/dev/}/loop/backing_file" 2>/dev/null || true
}
# A mount at $dir that is not $image's (set aside, destroyed) is let go.
let_go_stale() {
    mountpoint -q -- "$dir" || return 0
    want=$(realpath -e -- "$image" 2>/dev/null || true)
    if [ -n "$want" ] && [ "$(backing "$dir")" = "$want" ]; then return 0; fi
    umount -- "$dir"
}
case $verb in
release)
    let_go_stale
    if ! mountpoint -q -- "$dir" && [ ! -e "$image" ]; then rmdir -- "$dir" 2>/dev/null || true; fi
    ;;
mount)
    size=$1
    let_go_stale
    if mountpoint -q -- "$dir"; then exit 0; fi
    staging=$image.staging
    if mountpoint -q -- "$staging"; then umount -- "$staging"; fi
    if [ -L "$dir" ] || { [ -e "$dir" ] && [ ! -d "$dir" ]; }; then
        echo "$dir is not a folder: move it away" >&2; exit 1
    fi
    fresh=
    if [ ! -e "$image" ]; then
        fresh=1
        rm -f -- "$image.new"
        used=0
        if [ -d "$dir" ]; then used=$(du -sxb -- "$dir" | cut -f1); fi
        # An older version's folder goes in whole, with room to spare.
        need=$((used + used / 4 + 16777216))
        if [ "$need" -gt "$size" ]; then size=$need; fi
        fallocate -l "$size" -- "$image.new"
        mkfs.ext4 -q -F -m 0 -E nodiscard -L tails-server "$image.new"
        if [ -d "$dir" ] && [ -n "$(ls -A -- "$dir")" ]; then
            mkdir -p -m 0700 -- "$staging"
            mount -o "$options" -- "$image.new" "$staging"
            cp -a -- "$dir"/. "$staging"/ || { umount -- "$staging"; exit 1; }
            umount -- "$staging"
        fi
        rmdir -- "$staging" 2>/dev/null || true
        sync -- "$image.new"
        mv -- "$image.new" "$image"
        sync -- "$(dirname -- "$image")"
    fi
    # What is left below the mount point was copied in when the image was made.
    if [ -d "$dir" ]; then find "$dir" -xdev -mindepth 1 -delete; else mkdir -m 0700 -- "$dir"; fi
    mount -o "$options" -- "$image" "$dir"
    if [ -n "$fresh" ]; then
        rmdir -- "$dir/lost+found" 2>/dev/null || true
        chmod 0700 -- "$dir"
    fi
    ;;
destroy)
    for device in $(losetup -n -O NAME -j "$image"); do
        for at in $(findmnt -n -o TARGET --source "$device"); do umount -- "$at"; done
    done
    staging=$image.staging
    mkdir -p -m 0700 -- "$staging"
    if mount -o "$options" -- "$image" "$staging"; then
        for secret; do
            file=$staging/$secret
            if [ -f "$file" ] && [ ! -L "$file" ]; then shred -n 1 -z -u -- "$file"; fi
        done
        umount -- "$staging"
    fi
    rmdir -- "$staging"
    rm -f -- "$image"
    ;;
*)
    echo "unknown verb $verb" >&2; exit 2
    ;;
esac
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_is_named_after_its_folder() {
        assert_eq!(image_of(Path::new("/s/data/share")), Path::new("/s/data/share.img"));
    }

    /// Only an image has a bound; what it holds is known while it is mounted (`vm-tests` g).
    #[test]
    fn only_an_image_has_a_size() {
        let store = tempfile::tempdir().unwrap();
        let data = store.path().join("data").join("share");
        std::fs::create_dir_all(&data).unwrap();
        assert_eq!(space(&data), None, "a folder");
        std::fs::write(image_of(&data), [0; 100]).unwrap();
        assert_eq!(space(&data), Some((100, None)), "an image not mounted");
    }

    /// The cap on a roomy stick; half of what is free beyond the reserve on a small one;
    /// nothing below the smallest size.
    #[test]
    fn the_bound_leaves_room_for_the_next_service_and_the_rest() {
        assert_eq!(bound("sftp", 20_000 * MIB), Some(2048 * MIB));
        assert_eq!(bound("mumble", 20_000 * MIB), Some(256 * MIB));
        assert_eq!(bound("sftp", 264 * MIB), Some(100 * MIB));
        assert_eq!(bound("web", 264 * MIB + 12345), Some(100 * MIB));
        assert_eq!(bound("sftp", RESERVE + 2 * SMALLEST), Some(SMALLEST));
        assert_eq!(bound("sftp", RESERVE + 2 * SMALLEST - 1), None);
        assert_eq!(bound("sftp", 0), None);
    }
}
