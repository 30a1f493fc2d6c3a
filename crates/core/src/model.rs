//! The records kept in the store. A service carries everything needed to publish it again:
//! its key, its port mapping and its clients; the address is always derived from the key.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::keys::{ClientPublicKey, ClientSecretKey, OnionAddress, OnionSecretKey};
use crate::names::{ClientName, KeyName, ServiceName};
use crate::options::{OptionValue, PERSISTENCE};

/// Tor fits about 32 clients in one descriptor (tor#40455) and gives no clear error past it.
pub const MAX_CLIENTS: usize = 32;

/// Debug (below) never shows option values (a password) nor keys.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ServiceRecord {
    pub name: ServiceName,
    pub kind: String,
    pub local_port: u16,
    pub remote_port: u16,
    pub enabled: bool,
    /// False only when the owner explicitly opted out of client authorization.
    pub client_auth: bool,
    pub options: BTreeMap<String, OptionValue>,
    pub key: OnionSecretKey,
    pub clients: Vec<ClientRecord>,
    /// Seconds since the Unix epoch.
    pub created: u64,
}

impl ServiceRecord {
    pub fn address(&self) -> OnionAddress {
        self.key.address()
    }

    pub fn is_persistent(&self) -> bool {
        self.options.get(PERSISTENCE).and_then(OptionValue::as_bool).unwrap_or(true)
    }

    pub fn client(&self, name: &ClientName) -> Option<&ClientRecord> {
        self.clients.iter().find(|c| &c.name == name)
    }
}

/// Option values shown by name only: the record does not know which ones are secret.
struct RedactedOptions<'a>(&'a BTreeMap<String, OptionValue>);

impl fmt::Debug for RedactedOptions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.keys().map(|k| (k, format_args!("[redacted]")))).finish()
    }
}

impl fmt::Debug for ServiceRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Destructured so that a new field cannot be added without deciding how it is shown.
        let ServiceRecord { name, kind, local_port, remote_port, enabled, client_auth, options, key, clients, created } =
            self;
        f.debug_struct("ServiceRecord")
            .field("name", name)
            .field("kind", kind)
            .field("local_port", local_port)
            .field("remote_port", remote_port)
            .field("enabled", enabled)
            .field("client_auth", client_auth)
            .field("options", &RedactedOptions(options))
            .field("key", key)
            .field("clients", clients)
            .field("created", created)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ClientRecord {
    pub name: ClientName,
    pub public_key: ClientPublicKey,
    /// Kept so the owner can share it again; None when the client sent only its public key.
    pub secret_key: Option<ClientSecretKey>,
    pub created: u64,
}

/// The friend's side: a key received from the owner of a service, kept so that it can be
/// given to the local tor again after every restart (tor on Tails forgets client keys).
/// Debug shows the key's public half only (see [`ClientSecretKey`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ReceivedKey {
    pub name: KeyName,
    /// The service it opens.
    pub address: OnionAddress,
    pub secret_key: ClientSecretKey,
    /// False: kept only until shutdown (the amnesic store).
    pub persistent: bool,
    pub created: u64,
}

pub(crate) fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub fn arb_record() -> impl Strategy<Value = ServiceRecord> {
        (
            "[a-z0-9][a-z0-9-]{0,31}",
            "[a-z]{1,10}",
            1u16..,
            1u16..,
            any::<bool>(),
            any::<bool>(),
            proptest::collection::btree_map(
                "[a-z][a-z-]{0,15}",
                prop_oneof![
                    any::<bool>().prop_map(OptionValue::Bool),
                    any::<i64>().prop_map(OptionValue::Integer),
                    "[ -~]{0,30}".prop_map(OptionValue::String),
                ],
                0..5,
            ),
            proptest::collection::vec(("[a-z0-9]{1,10}", any::<[u8; 32]>(), any::<bool>()), 0..5),
            any::<u64>(),
        )
            .prop_map(|(name, kind, local, remote, enabled, auth, options, clients, created)| ServiceRecord {
                name: ServiceName::new(&name).unwrap(),
                kind,
                local_port: local,
                remote_port: remote,
                enabled,
                client_auth: auth,
                options,
                key: OnionSecretKey::generate().unwrap(),
                clients: clients
                    .into_iter()
                    .map(|(n, bytes, keep_secret)| {
                        let secret = ClientSecretKey::from_bytes(bytes);
                        ClientRecord {
                            name: ClientName::new(&n).unwrap(),
                            public_key: secret.public_key(),
                            secret_key: keep_secret.then_some(secret),
                            created,
                        }
                    })
                    .collect(),
                created,
            })
    }

    #[test]
    fn debug_shows_no_option_value_and_no_key() {
        use proptest::strategy::ValueTree;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let mut record = arb_record().new_tree(&mut runner).unwrap().current();
        record.options.insert("server-password".into(), OptionValue::String("correct horse battery".into()));
        let secret = ClientSecretKey::from_bytes([7; 32]);
        record.clients.push(ClientRecord {
            name: ClientName::new("alice").unwrap(),
            public_key: secret.public_key(),
            secret_key: Some(secret.clone()),
            created: 0,
        });
        for shown in [format!("{record:?}"), format!("{record:#?}"), format!("{:?}", vec![record.clone()])] {
            assert!(!shown.contains("correct horse"), "{shown}");
            assert!(shown.contains("server-password") && shown.contains("[redacted]"), "{shown}");
            assert!(shown.contains(&record.address().to_string()), "{shown}");
            let blob = record.key.to_control_blob();
            for key in [&blob["ED25519-V3:".len()..], secret.to_base32().as_str()] {
                assert!(!shown.contains(key), "{shown}");
            }
        }
    }

    proptest! {
        #[test]
        fn record_serde_round_trip(record in arb_record()) {
            let json = serde_json::to_vec(&record).unwrap();
            let back: ServiceRecord = serde_json::from_slice(&json).unwrap();
            prop_assert_eq!(&back, &record);
            prop_assert_eq!(back.address(), record.address());
        }
    }
}
