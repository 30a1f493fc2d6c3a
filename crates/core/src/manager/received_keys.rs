//! The friend's side: keys received from other services' owners.

use super::*;

impl Manager {
    /// The keys received from other services' owners (the friend's side), persistent and
    /// amnesic, in name order.
    pub fn received_keys(&self) -> Result<Vec<ReceivedKey>> {
        self.read_both_stores(Store::received_keys, |k| k.name.clone())
    }

    pub(super) fn find_key(&self, name: &KeyName) -> Result<(Location, ReceivedKey)> {
        self.find_in_stores(|store| store.received_key(name))?.ok_or_else(|| Error::NoSuchKey(name.to_string()))
    }

    pub fn received_key(&self, name: &KeyName) -> Result<ReceivedKey> {
        self.find_key(name).map(|(_, key)| key)
    }

    /// Keeps a key received from a service's owner: `text` in any form
    /// [`crate::keys::parse_received_key`] reads. tor takes one key per onion address, so a
    /// second key for the same address is refused, as is a key for one of our own services.
    pub fn add_received_key(
        &mut self,
        name: KeyName,
        text: &str,
        address: Option<OnionAddress>,
        persistent: bool,
    ) -> Result<ReceivedKey> {
        if self.find_key(&name).is_ok() {
            return Err(Error::KeyExists(name.to_string()));
        }
        let (address, secret_key) = crate::keys::parse_received_key(text, address)?;
        if let Some(existing) = self.received_keys()?.into_iter().find(|k| k.address == address) {
            return Err(Error::KeyForAddressExists {
                address: address.to_string(),
                existing: existing.name.to_string(),
            });
        }
        if let Some(own) = self.list()?.into_iter().find(|r| r.address() == address) {
            return Err(Error::InvalidKey {
                what: "received key",
                reason: format!(
                    "{address} is your own service {}: its clients' keys are managed with `tails-server client`",
                    own.name
                ),
            });
        }
        let key = ReceivedKey { name, address, secret_key, persistent, created: now_unix() };
        let location = Location::of_persistence(persistent);
        self.store(location)?.commit(vec![Change::PutKey(key.clone())])?;
        Ok(key)
    }

    /// Forgets a received key and destroys every stored copy of it.
    pub fn remove_received_key(&mut self, name: &KeyName) -> Result<ReceivedKey> {
        let (location, key) = self.find_key(name)?;
        self.store_mut(location)?.commit_destroying(vec![Change::DeleteKey(name.clone())])?;
        // A copy from before it moved between the stores (an import) goes too.
        let stored_form = key.secret_key.to_base32();
        self.destroy_traces_elsewhere(location, None, stored_form.as_bytes());
        Ok(key)
    }
}
