//! The documents the interface carries: each service, its clients and status, as the CLI
//! prints them with `--format json` and as the D-Bus methods return them. The key names are
//! a stable interface ("Output keys" in docs/using.md): add keys, never rename or remove them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use tails_server_core::model::{ClientRecord, ReceivedKey, ServiceRecord};
use tails_server_core::options::OptionValue;
use tails_server_core::{tails, Manager};

pub const HIDDEN: &str = "(hidden)";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ServiceView {
    pub name: String,
    pub kind: String,
    pub address: String,
    pub local_port: u16,
    pub remote_port: u16,
    pub installed: bool,
    pub enabled: bool,
    pub client_authorization: bool,
    pub options: BTreeMap<String, OptionValue>,
    pub clients: Vec<ClientView>,
    /// The bytes its data may take (a persistent service's image), and those it takes while
    /// mounted; left out for data that is not bounded on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_used: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ClientView {
    pub name: String,
    pub created: String,
    pub private_key_stored: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct StatusView {
    pub name: String,
    pub address: String,
    pub installed: bool,
    pub enabled: bool,
    pub client_authorization: bool,
    pub clients: usize,
    pub options: BTreeMap<String, OptionValue>,
    #[serde(flatten)]
    pub tor: TorState,
}

/// What tor says about a service. `None` where it could not be known.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct TorState {
    /// tor accepted ADD_ONION: it is in `onions/detached`.
    pub registered: Option<bool>,
    /// tor reported the descriptor uploaded (HS_DESC UPLOADED seen by the daemon or `enable --wait`).
    pub uploaded: Option<bool>,
    pub uploaded_at: Option<String>,
    /// tor runs it with the stored clients and ports (false: an older version is
    /// published, to be republished at the next reconcile).
    pub published_as_stored: Option<bool>,
    /// A connection through tor reached it (only with --probe).
    pub reachable: Option<bool>,
    pub probe_detail: Option<String>,
    /// Why tor could not be asked.
    pub tor_error: Option<String>,
    /// Whether tor may use the network (on Tails, once the person has connected to Tor).
    #[serde(default)]
    pub network_enabled: Option<bool>,
    /// tor's bootstrap progress in percent (nothing is uploaded below 100).
    #[serde(default)]
    pub bootstrap: Option<u8>,
}

impl From<tails_server_core::reconcile::TorView> for TorState {
    fn from(view: tails_server_core::reconcile::TorView) -> Self {
        TorState {
            registered: view.registered,
            uploaded: view.uploaded,
            uploaded_at: view.uploaded_at.map(rfc3339),
            published_as_stored: view.published_as_stored,
            reachable: view.reachable,
            probe_detail: view.probe_detail,
            tor_error: view.tor_error,
            network_enabled: view.network_enabled,
            bootstrap: view.bootstrap,
        }
    }
}

pub fn status_view(manager: &Manager, record: &ServiceRecord) -> StatusView {
    StatusView {
        name: record.name.to_string(),
        address: record.address().to_string(),
        installed: installed(manager, record),
        enabled: record.enabled,
        client_authorization: record.client_auth,
        clients: record.clients.len(),
        options: shown_options(manager, record, true),
        tor: TorState::default(),
    }
}

pub fn installed(manager: &Manager, record: &ServiceRecord) -> bool {
    static INSTALLED: std::sync::OnceLock<tails::InstalledPackages> = std::sync::OnceLock::new();
    let packages = manager.kind_of(record).map(|k| k.packages.as_slice()).unwrap_or_default();
    // Kinds without packages (custom) never need dpkg's status file read at all.
    packages.is_empty()
        || INSTALLED
            .get_or_init(|| tails::InstalledPackages::read(std::path::Path::new(tails::DPKG_STATUS)))
            .all(packages)
}

/// Option values as shown: secret ones are never printed in listings.
pub fn shown_options(manager: &Manager, record: &ServiceRecord, only_status: bool) -> BTreeMap<String, OptionValue> {
    let specs = manager.option_specs(record);
    specs
        .iter()
        .filter(|(_, spec)| !only_status || spec.display_status)
        .map(|(name, spec)| {
            let value = record.options.get(name).cloned().unwrap_or_else(|| spec.default.clone());
            // An empty secret says "none set"; any other secret value, of any type, is hidden.
            let value = match (&value, spec.secret) {
                (OptionValue::String(s), true) if s.is_empty() => value,
                (_, true) => OptionValue::String(HIDDEN.into()),
                _ => value,
            };
            (name.clone(), value)
        })
        .collect()
}

pub fn client_view(client: &ClientRecord) -> ClientView {
    ClientView {
        name: client.name.to_string(),
        created: rfc3339(client.created),
        private_key_stored: client.secret_key.is_some(),
    }
}

pub fn service_view(manager: &Manager, record: &ServiceRecord) -> ServiceView {
    let data_space = tails_server_core::system::volume::space(&manager.data_dir(record));
    ServiceView {
        name: record.name.to_string(),
        kind: record.kind.clone(),
        address: record.address().to_string(),
        local_port: record.local_port,
        remote_port: record.remote_port,
        installed: installed(manager, record),
        enabled: record.enabled,
        client_authorization: record.client_auth,
        options: shown_options(manager, record, false),
        clients: record.clients.iter().map(client_view).collect(),
        data_size: data_space.map(|(size, _)| size),
        data_used: data_space.and_then(|(_, used)| used),
    }
}

/// A key received from a service's owner (the friend's side): never its secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct KeyView {
    pub name: String,
    /// The service it opens.
    pub address: String,
    /// False: forgotten at shutdown.
    pub persistent: bool,
    pub created: String,
}

pub fn key_view(key: &ReceivedKey) -> KeyView {
    KeyView {
        name: key.name.to_string(),
        address: key.address.to_string(),
        persistent: key.persistent,
        created: rfc3339(key.created),
    }
}

/// Seconds since the epoch as an RFC 3339 UTC timestamp.
pub fn rfc3339(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Written digit by digit: `format!` with padding cost more than the rest of a listing
    // with hundreds of clients.
    let secs = secs as i64;
    let mut text = String::with_capacity(20);
    for (value, width, after) in [
        (year, 4, '-'),
        (month, 2, '-'),
        (day, 2, 'T'),
        (secs / 3600, 2, ':'),
        (secs / 60 % 60, 2, ':'),
        (secs % 60, 2, 'Z'),
    ] {
        for position in (0..width).rev() {
            text.push(char::from(b'0' + (value / 10i64.pow(position) % 10) as u8));
        }
        text.push(after);
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(253_402_300_799), "9999-12-31T23:59:59Z");
    }
}
