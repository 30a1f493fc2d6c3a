//! Backups in and out: export, and import with its conflicts and rollback.

use super::*;

impl Manager {
    /// What to back up: the named services, or all of them and every received key.
    pub fn export(&self, names: &[ServiceName]) -> Result<crate::backup::BackupDocument> {
        if names.is_empty() {
            return Ok(crate::backup::BackupDocument::new(self.list()?, self.received_keys()?));
        }
        let services = names.iter().map(|name| self.get(name)).collect::<Result<_>>()?;
        Ok(crate::backup::BackupDocument::new(services, Vec::new()))
    }

    /// Imports records all-or-nothing: everything is validated and every conflict resolved
    /// before anything is written; then each store gets one transaction. With `dry_run`,
    /// returns what would change and writes nothing.
    pub fn import(
        &mut self,
        records: Vec<ServiceRecord>,
        on_conflict: OnConflict,
        dry_run: bool,
    ) -> Result<ImportReport> {
        self.import_with_keys(records, Vec::new(), on_conflict, dry_run)
    }

    /// What `new` lets in that `old`, the service it would replace, does not: clients
    /// whose keys are not among today's, and options set wider (see
    /// [`crate::options::OptionSpec::widening`]). Less protection in itself (no client
    /// authorization, enabled, LAN) is [`crate::backup::BackupDocument::lowered_protection`]'s.
    fn widening_by_replacement(&self, old: &ServiceRecord, new: &ServiceRecord) -> Vec<String> {
        let mut lines = Vec::new();
        let newcomers: Vec<&str> = new
            .clients
            .iter()
            .filter(|c| !old.clients.iter().any(|o| o.public_key == c.public_key))
            .map(|c| c.name.as_str())
            .collect();
        if !newcomers.is_empty() && new.client_auth {
            lines.push(format!("{}: clients whose keys it does not have today: {}", new.name, newcomers.join(", ")));
        }
        if old.kind != new.kind {
            lines.push(format!(
                "{}: another kind of service ({} today, {} in the backup)",
                new.name, old.kind, new.kind
            ));
        }
        let old_specs = self.option_specs(old);
        for (option, spec) in self.option_specs(new) {
            let before = old.options.get(&option).or_else(|| old_specs.get(&option).map(|s| &s.default));
            let after = new.options.get(&option).unwrap_or(&spec.default);
            // An option today's kind does not have granted nothing: compared with its closed
            // value (a web site replaced by SFTP file sharing that is not read-only lets
            // friends write).
            let before = before.cloned().unwrap_or_else(|| spec.closed_value());
            if let Some(how) = spec.widening(&before, after) {
                lines.push(format!("{}: {option} ({how})", new.name));
            }
        }
        lines
    }

    /// [`Manager::import`] of services and received keys together (a backup): keys are
    /// reported as `key NAME`.
    pub fn import_with_keys(
        &mut self,
        records: Vec<ServiceRecord>,
        keys: Vec<ReceivedKey>,
        on_conflict: OnConflict,
        dry_run: bool,
    ) -> Result<ImportReport> {
        crate::backup::validate_records(&records, &self.catalog)?;
        let existing = self.list()?;
        let mut report = ImportReport::default();
        let mut conflicts = Vec::new();
        let mut plan = Vec::new();
        // Kept keys are looked at first: a service imported at an address a kept key opens
        // would be both ours and someone else's.
        let existing_keys = self.received_keys()?;
        for record in records {
            let same_name = existing.iter().find(|e| e.name == record.name);
            if let Some(kept) = existing_keys.iter().find(|k| k.address == record.address()) {
                match on_conflict {
                    OnConflict::Skip => report.skipped.push(record.name.to_string()),
                    _ => conflicts.push(format!(
                        "{}: its address is a service you reach with the kept key {}",
                        record.name, kept.name
                    )),
                }
                continue;
            }
            let same_address = existing.iter().find(|e| e.address() == record.address() && e.name != record.name);
            if let Some(other) = same_address {
                match on_conflict {
                    OnConflict::Skip => {
                        report.skipped.push(record.name.to_string());
                        continue;
                    }
                    _ => {
                        conflicts.push(format!(
                            "{}: its address already belongs to service {} here",
                            record.name, other.name
                        ));
                        continue;
                    }
                }
            }
            if let Some(old) = same_name {
                report.replacing_widens.extend(self.widening_by_replacement(old, &record));
            }
            match (same_name, on_conflict) {
                (None, _) => {
                    report.added.push(record.name.to_string());
                    plan.push((record, None));
                }
                (Some(_), OnConflict::Skip) => report.skipped.push(record.name.to_string()),
                (Some(old), OnConflict::Replace) => {
                    report.replaced.push(record.name.to_string());
                    let old_location = Self::location_for(old);
                    plan.push((record, Some(old_location)));
                }
                (Some(_), OnConflict::Fail) => {
                    conflicts.push(format!("{}: a service of that name exists", record.name))
                }
            }
        }
        let mut key_plan = Vec::new();
        for key in keys {
            let label = format!("key {}", key.name);
            if existing.iter().any(|s| s.address() == key.address) {
                match on_conflict {
                    OnConflict::Skip => report.skipped.push(label),
                    _ => conflicts.push(format!("{label}: it is for your own service at {}", key.address)),
                }
                continue;
            }
            let same_name = existing_keys.iter().find(|k| k.name == key.name);
            let same_address = existing_keys.iter().find(|k| k.address == key.address && k.name != key.name);
            match (same_name, same_address, on_conflict) {
                (_, Some(_), OnConflict::Skip) | (Some(_), _, OnConflict::Skip) => report.skipped.push(label),
                (_, Some(other), _) => {
                    conflicts.push(format!("{label}: a key for its service is kept here as {}", other.name))
                }
                (Some(_), None, OnConflict::Fail) => conflicts.push(format!("{label}: a key of that name is kept")),
                (Some(old), None, _) => {
                    report.replaced.push(label);
                    key_plan.push((key, Some(old.persistent)));
                }
                (None, None, _) => {
                    report.added.push(label);
                    key_plan.push((key, None));
                }
            }
        }
        if !conflicts.is_empty() {
            return Err(Error::ImportConflict(format!("nothing was imported: {}", conflicts.join("; "))));
        }
        let amnesic_wanted =
            plan.iter().any(|(r, _)| !r.is_persistent()) || key_plan.iter().any(|(k, _)| !k.persistent);
        if amnesic_wanted && self.config.runtime_dir.is_none() {
            return Err(Error::NoRuntimeDir { uid: crate::unix::euid() });
        }
        if dry_run {
            return Ok(report);
        }
        // A replaced service or key may have held keys its replacement does not (another
        // onion key, removed clients' private keys): the stores it was in keep no copy.
        let mut replaced_in: Vec<Location> = plan.iter().filter_map(|(_, old)| *old).collect();
        replaced_in.extend(key_plan.iter().filter_map(|(_, old)| old.map(Location::of_persistence)));
        let mut persistent = Vec::new();
        let mut amnesic = Vec::new();
        for (record, old_location) in plan {
            let to = Self::location_for(&record);
            if let Some(from) = old_location.filter(|from| *from != to) {
                let delete = Change::Delete(record.name.clone());
                match from {
                    Location::Persistent => persistent.push(delete),
                    Location::Amnesic => amnesic.push(delete),
                }
            }
            match to {
                Location::Persistent => persistent.push(Change::Put(record)),
                Location::Amnesic => amnesic.push(Change::Put(record)),
            }
        }
        for (key, old_persistent) in key_plan {
            if let Some(was) = old_persistent.filter(|was| *was != key.persistent) {
                let delete = Change::DeleteKey(key.name.clone());
                if was {
                    persistent.push(delete)
                } else {
                    amnesic.push(delete)
                }
            }
            if key.persistent {
                persistent.push(Change::PutKey(key));
            } else {
                amnesic.push(Change::PutKey(key));
            }
        }
        self.commit_to_both(persistent, amnesic)?;
        for location in [Location::Persistent, Location::Amnesic] {
            if replaced_in.contains(&location) {
                self.store_mut(location)?.destroy_history();
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A web site replaced by SFTP file sharing of the same name: the other kind is said,
    /// and write access (read-only off, which a web site never had) too.
    #[test]
    fn a_replacement_of_another_kind_says_so_and_what_it_opens() {
        let root = tempfile::tempdir().unwrap();
        let mut manager = Manager::open(Config::new(root.path().join("state"))).unwrap();
        let mut site = AddRequest::new("web");
        site.name = Some(ServiceName::new("share").unwrap());
        let today = manager.add(site).unwrap();
        let mut backup = today.clone();
        backup.kind = "sftp".into();
        backup.options.clear();
        let said = manager.widening_by_replacement(&today, &backup);
        assert_eq!(
            said,
            [
                "share: another kind of service (web today, sftp in the backup)",
                "share: read-only (it lets more people connect, or lets them do more)"
            ]
        );
        backup.options.insert("read-only".into(), OptionValue::Bool(true));
        assert_eq!(said[..1], manager.widening_by_replacement(&today, &backup)[..]);
    }
}
