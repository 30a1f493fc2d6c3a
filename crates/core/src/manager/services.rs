//! Services: adding, removing, options and clients.

use super::*;

impl Manager {
    pub fn add(&mut self, request: AddRequest) -> Result<ServiceRecord> {
        let record = self.new_record(request, OnionSecretKey::generate()?, None)?;
        let location = Self::location_for(&record);
        self.store(location)?.commit(vec![Change::Put(record.clone())])?;
        Ok(record)
    }

    /// What the options of a service about to be added let in beyond its kind's defaults,
    /// which a plain `add` gives: an SSH key, the local network, write access where the kind
    /// is read-only by default; one line per option, naming it and how, never its value. An
    /// option `add` would refuse is left to `add` to name.
    pub fn widening_at_add(&self, request: &AddRequest) -> Vec<String> {
        let Ok(def) = self.catalog.get(&request.kind) else { return Vec::new() };
        let specs = def.all_options();
        let mut lines = Vec::new();
        for (option, raw) in &request.options {
            let Some(spec) = specs.get(option) else { continue };
            let Ok(value) = spec.parse(option, raw) else { continue };
            if let Some(how) = spec.widening(&spec.default, &value) {
                lines.push(format!("{option} ({how})"));
            }
        }
        lines
    }

    /// Builds a record the way `add` does, around a given key and, if given, clients
    /// (imports). With `clients` None, a first client is generated when client
    /// authorization is on. Nothing is stored.
    pub fn new_record(
        &self,
        request: AddRequest,
        key: OnionSecretKey,
        clients: Option<Vec<ClientRecord>>,
    ) -> Result<ServiceRecord> {
        let def = self.catalog.get(&request.kind)?.clone();
        let name = match request.name {
            Some(name) => name,
            None => ServiceName::new(&def.name)?,
        };
        if self.find(&name).is_ok() {
            return Err(Error::ServiceExists(name.to_string()));
        }
        let local_port =
            request.local_port.or(def.local_port).ok_or_else(|| Error::LocalPortRequired { kind: def.name.clone() })?;
        let remote_port = request.remote_port.or(def.remote_port).unwrap_or(local_port);
        for (what, port) in [("--local-port", local_port), ("--remote-port", remote_port)] {
            if port == 0 {
                return Err(Error::InvalidPort { what, value: "0".into() });
            }
        }
        let specs = def.all_options();
        let mut options: BTreeMap<String, OptionValue> =
            specs.iter().map(|(name, spec)| (name.clone(), spec.default.clone())).collect();
        for (option, raw) in &request.options {
            let spec = specs.get(option).ok_or_else(|| unknown_option(name.as_str(), option, &specs))?;
            options.insert(option.clone(), spec.parse(option, raw)?);
        }
        let now = now_unix();
        let clients = match clients {
            Some(clients) => clients,
            None if request.client_auth => {
                let secret = ClientSecretKey::generate()?;
                vec![ClientRecord {
                    name: request.first_client,
                    public_key: secret.public_key(),
                    secret_key: Some(secret),
                    created: now,
                }]
            }
            None => Vec::new(),
        };
        if clients.len() > MAX_CLIENTS {
            return Err(Error::TooManyClients { service: name.to_string(), limit: MAX_CLIENTS });
        }
        Ok(ServiceRecord {
            name,
            kind: def.name.clone(),
            local_port,
            remote_port,
            enabled: false,
            client_auth: request.client_auth,
            options,
            key,
            clients,
            created: now,
        })
    }

    /// Removes a service and destroys its key: no file of either store keeps a copy. Its
    /// data goes with it, or is set aside when the person asks (`data`).
    pub fn remove(&mut self, name: &ServiceName, data: ServiceData) -> Result<Removed> {
        let (location, record) = self.find(name)?;
        self.store_mut(location)?.commit_destroying(vec![Change::Delete(name.clone())])?;
        let blob = record.key.to_control_blob();
        self.destroy_traces_elsewhere(location, Some(&record), blob.as_bytes());
        let data_kept_at = self.dispose_of_data(location, &record, data);
        Ok(Removed { record, data_kept_at })
    }

    /// A removed service's data directory: its program's key material scrubbed and the rest
    /// deleted, or set aside whole. What cannot be done is a warning: the removal stands.
    fn dispose_of_data(&mut self, location: Location, record: &ServiceRecord, data: ServiceData) -> Option<PathBuf> {
        let dir = self.data_dir(record);
        let outcome = match data {
            _ if std::fs::symlink_metadata(&dir).is_err()
                && std::fs::symlink_metadata(crate::system::volume::image_of(&dir)).is_err() =>
            {
                // Nothing there (never started), but an owner may be recorded.
                let owner = crate::system::data_owner_file(&dir);
                std::fs::remove_file(&owner)
                    .or_else(crate::store::not_found_is_ok)
                    .map_err(|e| Error::io("cannot remove", &owner, e))
                    .map(|()| None)
            }
            ServiceData::Keep => crate::system::set_data_aside(&dir).map(Some),
            ServiceData::Destroy if std::fs::symlink_metadata(crate::system::volume::image_of(&dir)).is_ok() => {
                // Its program may be running still: the image waits for the next reconcile,
                // which stops the program, overwrites the keys inside and deletes it. Those
                // within reach (mounted) are overwritten now.
                self.destroy_program_secrets(location, record);
                let owner = crate::system::data_owner_file(&dir);
                crate::system::volume::destroy_later(&crate::system::volume::image_of(&dir))
                    .and_then(|()| {
                        std::fs::remove_file(&owner)
                            .or_else(crate::store::not_found_is_ok)
                            .map_err(|e| Error::io("cannot remove", &owner, e))
                    })
                    .map(|()| None)
            }
            ServiceData::Destroy => {
                self.destroy_program_secrets(location, record);
                let owner = crate::system::data_owner_file(&dir);
                // Never follows a symbolic link: what the program's user planted goes, not
                // what it points to.
                std::fs::remove_dir_all(&dir)
                    .and_then(|()| std::fs::remove_file(&owner).or_else(crate::store::not_found_is_ok))
                    .map_err(|e| Error::io("cannot delete", &dir, e))
                    .map(|()| None)
            }
        };
        outcome.unwrap_or_else(|e| {
            if let Ok(store) = self.store(location) {
                store.warn(format!("service {} was removed, but its data was not: {e}", record.name));
            }
            None
        })
    }

    /// The key material its program made (SFTP's host key, Mumble's certificate in its
    /// database), overwritten before its folder is deleted.
    pub(super) fn destroy_program_secrets(&mut self, location: Location, record: &ServiceRecord) {
        let Some(kind) = self.kind_of(record) else { return };
        let files = crate::system::secret_files(kind);
        let dir = self.data_dir(record);
        for file in files {
            let path = dir.join(file);
            if let Err(e) = crate::store::scrub(&path) {
                if let Ok(store) = self.store(location) {
                    store.warn(format!(
                        "service {} was removed, but {} could not be erased: {e}",
                        record.name,
                        path.display()
                    ));
                }
            }
        }
    }

    /// Records the enabled flag. Returns the record and whether anything changed.
    pub fn set_enabled(&mut self, name: &ServiceName, enabled: bool) -> Result<(ServiceRecord, bool)> {
        let (location, mut record) = self.find(name)?;
        if record.enabled == enabled {
            return Ok((record, false));
        }
        record.enabled = enabled;
        self.save(location, record.clone())?;
        Ok((record, true))
    }

    pub fn get_option(&self, name: &ServiceName, option: &str) -> Result<(OptionSpec, OptionValue)> {
        let record = self.get(name)?;
        let specs = self.option_specs(&record);
        let spec = specs.get(option).ok_or_else(|| unknown_option(name.as_str(), option, &specs))?;
        let value = record.options.get(option).cloned().unwrap_or_else(|| spec.default.clone());
        Ok((spec.clone(), value))
    }

    /// Parses and stores one option. Returns the record and the previous value.
    pub fn set_option(&mut self, name: &ServiceName, option: &str, raw: &str) -> Result<(ServiceRecord, OptionValue)> {
        let (location, mut record) = self.find(name)?;
        let specs = self.option_specs(&record);
        let spec = specs.get(option).ok_or_else(|| unknown_option(name.as_str(), option, &specs))?;
        let value = spec.parse(option, raw)?;
        if option == PERSISTENCE && value == OptionValue::Bool(false) && self.config.runtime_dir.is_none() {
            return Err(Error::NoRuntimeDir { uid: crate::unix::euid() });
        }
        let previous = record.options.insert(option.to_owned(), value).unwrap_or_else(|| spec.default.clone());
        self.save(location, record.clone())?;
        Ok((record, previous))
    }

    /// Adds a client: with a fresh key pair, or with a public key the client generated.
    pub fn add_client(
        &mut self,
        name: &ServiceName,
        client: ClientName,
        public_key: Option<ClientPublicKey>,
    ) -> Result<ClientRecord> {
        let (location, mut record) = self.find(name)?;
        if !record.client_auth {
            return Err(Error::ClientAuthDisabled { service: name.to_string() });
        }
        if record.client(&client).is_some() {
            return Err(Error::ClientExists { service: name.to_string(), client: client.to_string() });
        }
        if record.clients.len() >= MAX_CLIENTS {
            return Err(Error::TooManyClients { service: name.to_string(), limit: MAX_CLIENTS });
        }
        let (public_key, secret_key) = match public_key {
            Some(public) => (public, None),
            None => {
                let secret = ClientSecretKey::generate()?;
                (secret.public_key(), Some(secret))
            }
        };
        if let Some(existing) = record.clients.iter().find(|c| c.public_key == public_key) {
            return Err(Error::DuplicateClientKey { service: name.to_string(), existing: existing.name.to_string() });
        }
        let client = ClientRecord { name: client, public_key, secret_key, created: now_unix() };
        record.clients.push(client.clone());
        self.save(location, record)?;
        Ok(client)
    }

    pub fn remove_client(&mut self, name: &ServiceName, client: &ClientName) -> Result<ClientRecord> {
        let (location, mut record) = self.find(name)?;
        if !record.client_auth {
            return Err(Error::ClientAuthDisabled { service: name.to_string() });
        }
        let index = record
            .clients
            .iter()
            .position(|c| &c.name == client)
            .ok_or_else(|| Error::NoSuchClient { service: name.to_string(), client: client.to_string() })?;
        if record.clients.len() == 1 {
            return Err(Error::LastClient { service: name.to_string(), client: client.to_string() });
        }
        let removed = record.clients.remove(index);
        let Some(secret) = &removed.secret_key else {
            self.save(location, record)?;
            return Ok(removed);
        };
        // Its private key was stored: no file of either store may keep a copy.
        let to = Self::location_for(&record);
        if to == location {
            self.store_mut(location)?.commit_destroying(vec![Change::Put(record)])?;
        } else {
            // The trace of an interrupted move: `save` finishes it and purges the store it
            // left; the other one is purged here.
            self.save(location, record)?;
            self.store_mut(to)?.destroy_history();
        }
        let key = secret.to_base32();
        self.destroy_traces_elsewhere(location, None, key.as_bytes());
        Ok(removed)
    }

    pub fn client(&self, name: &ServiceName, client: &ClientName) -> Result<(ServiceRecord, ClientRecord)> {
        let record = self.get(name)?;
        if !record.client_auth {
            return Err(Error::ClientAuthDisabled { service: name.to_string() });
        }
        let found = record
            .client(client)
            .cloned()
            .ok_or_else(|| Error::NoSuchClient { service: name.to_string(), client: client.to_string() })?;
        Ok((record, found))
    }
}

pub(super) fn unknown_option(service: &str, option: &str, specs: &BTreeMap<String, OptionSpec>) -> Error {
    Error::UnknownOption {
        service: service.to_owned(),
        option: option.to_owned(),
        allowed: specs.keys().cloned().collect::<Vec<_>>().join(", "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new service is judged against its kind's defaults: a login key and the local
    /// network are ways in; a first password, SFTP's default write access (a plain add
    /// gives it), a closed value and an option `add` refuses are not (the last is `add`'s
    /// to name).
    #[test]
    fn a_new_service_widens_access_by_the_ways_in_it_comes_with() {
        let root = tempfile::tempdir().unwrap();
        let manager = Manager::open(Config::new(root.path().join("state"))).unwrap();
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEB";
        let with = |kind: &str, options: &[(&str, &str)]| {
            let mut request = AddRequest::new(kind);
            request.options = options.iter().map(|(o, v)| (o.to_string(), v.to_string())).collect();
            manager.widening_at_add(&request)
        };
        let said = with("sftp", &[("authorized-keys", key), ("read-only", "false"), ("allow-lan-connections", "yes")]);
        assert_eq!(
            said,
            [
                "authorized-keys (a new SSH key lets its holder log in)",
                "allow-lan-connections (it lets more people connect, or lets them do more)"
            ]
        );
        let listing = with("web", &[("directory-listing", "true")]);
        assert_eq!(listing, ["directory-listing (it lets more people connect, or lets them do more)"]);
        assert!(!said.iter().any(|line| line.contains("AAAA")), "never the key itself");
        assert_eq!(
            with("sftp", &[("read-only", "true"), ("allow-lan-connections", "no"), ("authorized-keys", "")]),
            [] as [&str; 0]
        );
        assert_eq!(with("mumble", &[("server-password", "first")]), [] as [&str; 0]);
        assert_eq!(with("sftp", &[("read-only", "maybe"), ("colour", "red")]), [] as [&str; 0]);
        assert_eq!(with("no-such-kind", &[("read-only", "false")]), [] as [&str; 0]);
    }
}
