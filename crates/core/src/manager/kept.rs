//! Data set aside in `kept-data/`: what `remove --keep-data` kept, and what was found under
//! a new service's name (an older version's leftover, a replaced or moved service's). No
//! program is given it again unless the person gives it to a service; it is listed so that
//! the person knows it is there, and deleted when they say so, its programs' keys overwritten
//! first, as `remove` does.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::*;

/// One folder of set-aside data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct KeptData {
    /// Its folder's name in `kept-data/` (`<service>-<unix time>`), under `amnesic/` for the
    /// amnesic store's: unique across both stores.
    pub id: String,
    /// The name of the service it was the data of.
    pub service: String,
    /// When it was set aside (Unix time).
    pub set_aside: u64,
    /// In the persistent store (false: the amnesic one, gone at shutdown anyway).
    pub persistent: bool,
    /// The bytes of its files (links not followed); for a persistent service's data image,
    /// the image's size.
    pub bytes: u64,
    pub path: PathBuf,
}

impl Manager {
    /// The stores' directories holding `kept-data/`, persistent first.
    fn kept_data_dirs(&self) -> Vec<(bool, PathBuf)> {
        let mut dirs = vec![(true, self.config.state_dir.join(crate::system::KEPT_DATA_DIR))];
        if let Some(runtime) = &self.config.runtime_dir {
            dirs.push((false, crate::system::files_root(runtime, false).join(crate::system::KEPT_DATA_DIR)));
        }
        dirs
    }

    /// Everything set aside, oldest first.
    pub fn kept_data(&self) -> Result<Vec<KeptData>> {
        let mut kept = Vec::new();
        for (persistent, dir) in self.kept_data_dirs() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("cannot read", &dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| Error::io("cannot read", &dir, e))?;
                let Ok(file_name) = entry.file_name().into_string() else { continue };
                // A persistent service's data image is named by its id, as a folder would be.
                let image = persistent && entry.file_type().is_ok_and(|t| t.is_file());
                let folder = match file_name.strip_suffix(crate::system::volume::IMAGE_EXTENSION) {
                    Some(stem) if image => stem.to_owned(),
                    _ => file_name,
                };
                let (service, set_aside) = parse_id(&folder);
                let id = if persistent { folder } else { format!("{AMNESIC_PREFIX}{folder}") };
                let path = entry.path();
                kept.push(KeptData { bytes: size_of(&path), id, service, set_aside, persistent, path });
            }
        }
        kept.sort_by(|a, b| (a.set_aside, &a.id).cmp(&(b.set_aside, &b.id)));
        Ok(kept)
    }

    /// Deletes folders of set-aside data (`ids` as [`Manager::kept_data`] lists them), each
    /// one's programs' key material overwritten, then everything removed, no link followed.
    /// Every id is checked before anything is deleted.
    pub fn delete_kept_data(&mut self, ids: &[String]) -> Result<Vec<KeptData>> {
        let listed = self.kept_data()?;
        let mut chosen = Vec::new();
        for id in ids {
            let kept = listed.iter().find(|k| k.id == *id).ok_or_else(|| Error::NoSuchKeptData(id.clone()))?;
            if !chosen.contains(kept) {
                chosen.push(kept.clone());
            }
        }
        for kept in &chosen {
            delete(kept)?;
        }
        Ok(chosen)
    }
}

impl Manager {
    /// Gives set-aside data to a service as its data from now on (a service removed by
    /// mistake and added again, at a new address): the folder moves, nothing is copied. The
    /// service must be off, so that its program starts again with the data, and have no data
    /// of its own; the data must be kept in the store the service is in.
    pub fn give_kept_data(&mut self, id: &str, service: &ServiceName) -> Result<(KeptData, ServiceRecord)> {
        let (kept, record, target) = self.judge_giving(id, service)?;
        let destination = if is_image(&kept) {
            // Mounted at the (empty) folder when its program starts.
            crate::system::volume::image_of(&target)
        } else {
            if std::fs::symlink_metadata(&target).is_ok() {
                // An empty folder (judge_giving refused any other).
                std::fs::remove_dir(&target).map_err(|e| Error::io("cannot remove", &target, e))?;
            }
            target.clone()
        };
        if let Some(parent) = destination.parent() {
            crate::secret_file::create_dir_all_private(parent)?;
        }
        std::fs::rename(&kept.path, &destination).map_err(|e| Error::io("cannot move", &kept.path, e))?;
        // Recorded as the service's: its program's start keeps it instead of setting it aside.
        let owner = crate::system::data_owner_file(&target);
        let line = format!("{}\n", record.address());
        crate::secret_file::write_secret_file(&owner, &[line.as_bytes()], crate::secret_file::Replace::Always)?;
        Ok((kept, record))
    }

    /// Whether the kept data `id` can be given to `service`, judged as
    /// [`Manager::give_kept_data`] judges it and changing nothing: a front end says the
    /// refusal before it asks for the person's presence.
    pub fn check_giving_kept_data(&self, id: &str, service: &ServiceName) -> Result<()> {
        self.judge_giving(id, service).map(drop)
    }

    /// The kept data, the service and where its data goes, or why it cannot be given.
    fn judge_giving(&self, id: &str, service: &ServiceName) -> Result<(KeptData, ServiceRecord, PathBuf)> {
        let kept = self.kept_data()?.into_iter().find(|k| k.id == id);
        let kept = kept.ok_or_else(|| Error::NoSuchKeptData(id.to_owned()))?;
        let record = self.get(service)?;
        let refused =
            |reason: String| Error::KeptDataNotGiven { id: id.to_owned(), service: service.to_string(), reason };
        if record.enabled {
            return Err(refused(format!(
                "it is enabled: disable it first (`tails-server disable {service}`), so that its program starts again \
                 with the data"
            )));
        }
        if kept.persistent != record.is_persistent() {
            let (from, to) = if kept.persistent { ("persistent", "amnesic") } else { ("amnesic", "persistent") };
            return Err(refused(format!("the data is kept in the {from} store and {service} is {to}")));
        }
        let image = is_image(&kept);
        if !image && !std::fs::symlink_metadata(&kept.path).is_ok_and(|m| m.is_dir()) {
            return Err(refused("it is not a folder".into()));
        }
        let target = self.data_dir(&record);
        if image && !record.is_persistent() {
            return Err(refused(format!("{service} is amnesic and the data is a persistent service's image")));
        }
        let target_image = crate::system::volume::image_of(&target);
        if std::fs::symlink_metadata(&target_image).is_ok() {
            return Err(refused(format!(
                "it has data of its own ({}); remove the service with its data, add it again, then give it this",
                target_image.display()
            )));
        }
        // Never through a link: what the program's user planted there is not looked into.
        let empty = |dir: &Path| std::fs::read_dir(dir).map(|mut entries| entries.next().is_none());
        match std::fs::symlink_metadata(&target) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("cannot read", &target, e)),
            Ok(meta) if meta.is_dir() && empty(&target).map_err(|e| Error::io("cannot read", &target, e))? => {}
            Ok(_) => {
                return Err(refused(format!(
                    "it has data of its own ({}); remove the service with its data, add it again, then give it this",
                    target.display()
                )))
            }
        }
        Ok((kept, record, target))
    }
}

/// A persistent service's data image (not a folder).
fn is_image(kept: &KeptData) -> bool {
    kept.persistent
        && kept.path.to_string_lossy().ends_with(crate::system::volume::IMAGE_EXTENSION)
        && std::fs::symlink_metadata(&kept.path).is_ok_and(|m| m.is_file())
}

fn delete(kept: &KeptData) -> Result<()> {
    let path = kept.path.as_path();
    if is_image(kept) {
        // Its programs' keys are inside: overwritten by the next reconcile, which mounts it
        // (as root), then deletes it.
        return crate::system::volume::destroy_later(path);
    }
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        for secret in crate::system::every_program_secret() {
            let file = path.join(secret);
            crate::store::scrub(&file).map_err(|e| Error::io("cannot erase", &file, e))?;
        }
        std::fs::remove_dir_all(path).map_err(|e| Error::io("cannot delete", path, e))
    } else {
        // Not a folder (a link, a file): removed itself, never what it points to.
        std::fs::remove_file(path).map_err(|e| Error::io("cannot delete", path, e))
    }
}

/// Before the ids of the amnesic store's kept data: a folder of the same name may be kept in
/// both stores.
const AMNESIC_PREFIX: &str = "amnesic/";

/// Any time a folder was set aside is after this (and no `-<n>` suffix reaches it).
const SECOND_IN_2001: u64 = 1_000_000_000;

/// The service's name and the time in `<service>-<unix time>[-<n>]`; a name that is not of
/// that form is all service, set aside at time 0.
fn parse_id(id: &str) -> (String, u64) {
    let mut parts: Vec<&str> = id.rsplitn(3, '-').collect();
    parts.reverse();
    let number = |s: &str| s.chars().all(|c| c.is_ascii_digit()).then(|| s.parse::<u64>().ok()).flatten();
    match parts.as_slice() {
        // A second folder set aside in the same second: `-2`, `-3`…
        [service, time, n]
            if number(n).is_some_and(|n| n < SECOND_IN_2001) && number(time).is_some_and(|t| t >= SECOND_IN_2001) =>
        {
            (service.to_string(), number(time).unwrap_or(0))
        }
        [.., service, time] if number(time).is_some_and(|t| t >= SECOND_IN_2001) => {
            let prefix = id.strip_suffix(&format!("-{time}")).unwrap_or(service);
            (prefix.to_owned(), number(time).unwrap_or(0))
        }
        _ => (id.to_owned(), 0),
    }
}

/// The bytes of the files under `path`, without following links.
fn size_of(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else { return 0 };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path).map(|entries| entries.filter_map(|e| e.ok()).map(|e| size_of(&e.path())).sum()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same folder name kept in both stores (one service's data set aside from each in
    /// the same second): each has an id of its own, and deleting one leaves the other.
    #[test]
    fn kept_data_of_the_same_name_in_both_stores_is_told_apart() {
        let root = tempfile::tempdir().unwrap();
        let mut config = Config::new(root.path().join("state"));
        config.runtime_dir = Some(root.path().join("run"));
        let mut manager = Manager::open(config).unwrap();
        for store in ["state", "run/files"] {
            let kept = root.path().join(store).join(crate::system::KEPT_DATA_DIR).join("web-1765000000");
            std::fs::create_dir_all(&kept).unwrap();
            std::fs::write(kept.join("index.html"), store).unwrap();
        }
        let ids: Vec<String> = manager.kept_data().unwrap().into_iter().map(|k| k.id).collect();
        assert_eq!(ids, ["amnesic/web-1765000000", "web-1765000000"]);
        let deleted = manager.delete_kept_data(&["amnesic/web-1765000000".to_owned()]).unwrap();
        assert!(!deleted[0].persistent);
        let left = manager.kept_data().unwrap();
        assert_eq!((left.len(), left[0].persistent), (1, true));
        assert_eq!(std::fs::read_to_string(left[0].path.join("index.html")).unwrap(), "state");
    }

    /// A persistent service's kept image: listed by its id (the `.img` left out), given back
    /// to a service that is off as its image, and, deleted, left for the programs' reconcile
    /// (which overwrites its keys as root) in `destroying/`, no longer listed.
    #[test]
    fn a_kept_data_image_is_listed_given_and_left_to_be_destroyed() {
        let root = tempfile::tempdir().unwrap();
        let state = root.path().join("state");
        let mut manager = Manager::open(Config::new(state.clone())).unwrap();
        let mut request = AddRequest::new("custom");
        request.name = Some(ServiceName::new("share").unwrap());
        request.local_port = Some(8080);
        let share = manager.add(request).unwrap();
        manager.set_enabled(&share.name, false).unwrap();
        let kept_dir = state.join(crate::system::KEPT_DATA_DIR);
        std::fs::create_dir_all(&kept_dir).unwrap();
        std::fs::write(kept_dir.join("share-1765000000.img"), "a file system").unwrap();
        let kept = manager.kept_data().unwrap();
        assert_eq!((kept[0].id.as_str(), kept[0].service.as_str(), kept[0].bytes), ("share-1765000000", "share", 13));

        manager.give_kept_data("share-1765000000", &share.name).unwrap();
        let image = crate::system::volume::image_of(&manager.data_dir(&share));
        assert_eq!(std::fs::read_to_string(&image).unwrap(), "a file system");
        assert!(manager.kept_data().unwrap().is_empty());
        // It has an image now: no other is given to it.
        std::fs::write(kept_dir.join("share-1765000001.img"), "another").unwrap();
        let refused = manager.give_kept_data("share-1765000001", &share.name).unwrap_err().to_string();
        assert!(refused.contains("has data of its own"), "{refused}");

        assert!(!crate::system::volume::pending(&state));
        manager.delete_kept_data(&["share-1765000001".to_owned()]).unwrap();
        assert!(manager.kept_data().unwrap().is_empty());
        let waiting: Vec<_> = std::fs::read_dir(state.join(crate::system::volume::DESTROYING_DIR)).unwrap().collect();
        assert_eq!(waiting.len(), 1);
        assert!(crate::system::volume::pending(&state), "the next reconcile destroys it");
        // Removed with its data: its image waits there too, its owner forgotten.
        manager.remove(&share.name, ServiceData::Destroy).unwrap();
        assert!(!image.exists() && !crate::system::data_owner_file(&manager.data_dir(&share)).exists());
        assert_eq!(std::fs::read_dir(state.join(crate::system::volume::DESTROYING_DIR)).unwrap().count(), 2);
    }

    #[test]
    fn a_kept_folders_name_says_whose_and_when() {
        assert_eq!(parse_id("web-1765000000"), ("web".into(), 1765000000));
        assert_eq!(parse_id("my-site-1765000000"), ("my-site".into(), 1765000000));
        assert_eq!(parse_id("web-1765000000-2"), ("web".into(), 1765000000));
        assert_eq!(parse_id("web2-1765000000"), ("web2".into(), 1765000000));
        assert_eq!(parse_id("a-12-1765000000"), ("a-12".into(), 1765000000));
        assert_eq!(parse_id("stray"), ("stray".into(), 0));
        assert_eq!(parse_id("web-2"), ("web-2".into(), 0), "not a time");
    }
}
