//! The encrypted backup of everything: a versioned serde document holding service records
//! (keys, clients, options), encrypted with age to a passphrase (scrypt recipient, ASCII
//! armor), so that it opens with the `age` command-line tool as well.

use std::collections::HashSet;
use std::io::{Read, Write};

use age::secrecy::SecretString;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::model::{now_unix, ReceivedKey, ServiceRecord, MAX_CLIENTS};

pub const FORMAT: &str = "tails-server-backup";
/// Versions of the document this build reads (1: services; 2: and received keys); it writes
/// the last.
pub const VERSION: u32 = 2;
/// scrypt work factor (log2 N) for new backups: about a second on a laptop, like `age -p`.
pub const SCRYPT_WORK_FACTOR: u8 = 18;
/// The largest work factor accepted when decrypting: one step above what export writes (and
/// what `age -p` writes, 18). The system service decrypts as root: each step doubles the time
/// and the memory (128 × 8 × 2^N bytes: 256 MiB at 18, 512 MiB at 19, 4 GiB at 22), so a
/// hostile file gets no more than twice an ordinary backup's cost.
pub const MAX_SCRYPT_WORK_FACTOR: u8 = 19;
/// Refused before reading: 20 services with 32 clients each take about 200 KB.
pub const MAX_BACKUP_SIZE: u64 = 4 * 1024 * 1024;
pub const MAX_SERVICES: usize = 256;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct BackupDocument {
    pub format: String,
    pub version: u32,
    /// Seconds since the Unix epoch.
    pub created: u64,
    pub services: Vec<ServiceRecord>,
    /// Keys received for other people's services (version 2).
    #[serde(default)]
    pub keys: Vec<ReceivedKey>,
}

impl BackupDocument {
    pub fn new(services: Vec<ServiceRecord>, keys: Vec<ReceivedKey>) -> Self {
        Self { format: FORMAT.into(), version: VERSION, created: now_unix(), services, keys }
    }

    /// Decodes the plaintext, checking the format and version before anything else.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        #[derive(Deserialize)]
        struct Envelope {
            format: Option<String>,
            version: Option<serde_json::Value>,
        }
        let invalid = |reason: String| Error::InvalidBackup { reason };
        let envelope: Envelope = serde_json::from_slice(bytes)
            .map_err(|e| invalid(format!("it is not a tails-server backup document ({e})")))?;
        if envelope.format.as_deref() != Some(FORMAT) {
            return Err(invalid(format!("it is not a tails-server backup document (format {:?})", envelope.format)));
        }
        match envelope.version.as_ref().and_then(|v| v.as_u64()) {
            Some(v) if (1..=u64::from(VERSION)).contains(&v) => {}
            Some(v) => {
                return Err(invalid(format!(
                    "it is version {v} of the backup format; this tails-server reads version {VERSION}. \
                     Use a tails-server at least as new as the one that wrote it"
                )))
            }
            None => return Err(invalid("its version is missing or not a number".into())),
        }
        serde_json::from_slice(bytes).map_err(|e| invalid(format!("a field is invalid: {e}")))
    }

    pub fn to_json(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(serde_json::to_vec_pretty(self).expect("documents serialize"))
    }

    /// What importing this document would make less protected than adding the services by
    /// hand, each in words a person can weigh: a service open to anyone with its address, one
    /// published at once, one reachable from the local network.
    pub fn lowered_protection(&self) -> Vec<String> {
        let mut lowered = Vec::new();
        for service in &self.services {
            let name = &service.name;
            if !service.client_auth {
                lowered.push(format!("{name} has no client authorization: anyone who learns its address can reach it"));
            }
            if service.enabled {
                lowered.push(format!("{name} is enabled: it is published as soon as it is imported"));
            }
            if service.options.get(crate::options::ALLOW_LAN).and_then(|v| v.as_bool()) == Some(true) {
                lowered.push(format!("{name} allows connections from the local network"));
            }
        }
        lowered
    }

    /// Takes back what an import may not grant unasked (see [`BackupDocument::lowered_protection`]):
    /// services are imported disabled and without LAN access, to be turned on one by one; a
    /// service without client authorization is refused. Returns what was held back.
    pub fn hold_back_lowered_protection(&mut self) -> Result<Vec<String>> {
        if let Some(open) = self.services.iter().find(|s| !s.client_auth) {
            return Err(Error::InvalidBackup {
                reason: format!(
                    "service {} in it has no client authorization (anyone with its address could reach it); such a \
                     service is imported only by root, after seeing this (tails-server import … \
                     --accept-lower-protection)",
                    open.name
                ),
            });
        }
        let mut held = Vec::new();
        for service in &mut self.services {
            if service.enabled {
                service.enabled = false;
                held.push(format!("{}: imported disabled (enable it to publish it)", service.name));
            }
            let lan = crate::options::ALLOW_LAN;
            if service.options.get(lan).and_then(|v| v.as_bool()) == Some(true) {
                service.options.insert(lan.to_owned(), crate::options::OptionValue::Bool(false));
                held.push(format!("{}: imported without access from the local network", service.name));
            }
        }
        Ok(held)
    }

    /// Checks everything an import relies on, so that it can be written in one go or not at all.
    pub fn validate(&self, catalog: &Catalog) -> Result<()> {
        validate_records(&self.services, catalog)?;
        let invalid = |reason: String| Error::InvalidBackup { reason };
        if self.keys.len() > MAX_SERVICES {
            return Err(invalid(format!(
                "it holds {} received keys; at most {MAX_SERVICES} are accepted",
                self.keys.len()
            )));
        }
        let own: HashSet<_> = self.services.iter().map(|s| s.address()).collect();
        let (mut names, mut addresses) = (HashSet::new(), HashSet::new());
        for key in &self.keys {
            if !names.insert(&key.name) {
                return Err(invalid(format!("received key {} appears twice", key.name)));
            }
            if !addresses.insert(key.address) || own.contains(&key.address) {
                return Err(invalid(format!("received key {} is for a service that has another key in it", key.name)));
            }
        }
        Ok(())
    }
}

/// The checks every imported service passes, whatever it came from.
pub fn validate_records(services: &[ServiceRecord], catalog: &Catalog) -> Result<()> {
    let invalid = |reason: String| Error::InvalidBackup { reason };
    if services.len() > MAX_SERVICES {
        return Err(invalid(format!("it holds {} services; at most {MAX_SERVICES} are accepted", services.len())));
    }
    let mut names = HashSet::new();
    let mut addresses = HashSet::new();
    for service in services {
        let name = &service.name;
        if !names.insert(name.clone()) {
            return Err(invalid(format!("service {name} appears twice")));
        }
        if !addresses.insert(service.address()) {
            return Err(invalid(format!("service {name} has the same onion key as another service in it")));
        }
        let kind = catalog.get(&service.kind).map_err(|e| invalid(format!("service {name}: {e}")))?;
        if service.local_port == 0 || service.remote_port == 0 {
            return Err(invalid(format!("service {name}: port 0 is not a port")));
        }
        let specs = kind.all_options();
        for (option, value) in &service.options {
            let spec = specs.get(option).ok_or_else(|| {
                invalid(format!(
                    "service {name}: unknown option {option:?} for kind {} (options: {})",
                    kind.name,
                    specs.keys().cloned().collect::<Vec<_>>().join(", ")
                ))
            })?;
            spec.check(option, value).map_err(|e| invalid(format!("service {name}: {e}")))?;
        }
        if service.clients.len() > MAX_CLIENTS {
            return Err(invalid(format!(
                "service {name} has {} clients; tor fits at most {MAX_CLIENTS} in a descriptor",
                service.clients.len()
            )));
        }
        if service.client_auth && service.clients.is_empty() {
            return Err(invalid(format!("service {name} has client authorization but no client")));
        }
        if !service.client_auth && !service.clients.is_empty() {
            return Err(invalid(format!("service {name} has clients but client authorization is off")));
        }
        let mut client_names = HashSet::new();
        let mut client_keys = HashSet::new();
        for client in &service.clients {
            if !client_names.insert(&client.name) {
                return Err(invalid(format!("service {name}: client {} appears twice", client.name)));
            }
            if !client_keys.insert(client.public_key) {
                return Err(invalid(format!("service {name}: client {} has another client's key", client.name)));
            }
            if let Some(secret) = &client.secret_key {
                if secret.public_key() != client.public_key {
                    return Err(invalid(format!(
                        "service {name}: the private and public keys of client {} do not match",
                        client.name
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Encrypts to a passphrase, ASCII-armored (`-----BEGIN AGE ENCRYPTED FILE-----`).
pub fn encrypt(document: &BackupDocument, passphrase: &str) -> Result<Vec<u8>> {
    let mut recipient = age::scrypt::Recipient::new(SecretString::from(passphrase.to_owned()));
    recipient.set_work_factor(SCRYPT_WORK_FACTOR);
    let encryptor = age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
        .map_err(|e| Error::Encryption(e.to_string()))?;
    let plaintext = document.to_json();
    let mut out = Vec::new();
    let failed = |e: std::io::Error| Error::Encryption(e.to_string());
    let armor = age::armor::ArmoredWriter::wrap_output(&mut out, age::armor::Format::AsciiArmor).map_err(failed)?;
    let mut writer = encryptor.wrap_output(armor).map_err(failed)?;
    writer.write_all(&plaintext).map_err(failed)?;
    writer.finish().and_then(|armor| armor.finish()).map_err(failed)?;
    Ok(out)
}

/// Decrypts a backup (armored or binary age) and decodes the document inside.
pub fn decrypt(encrypted: &[u8], passphrase: &str) -> Result<BackupDocument> {
    if encrypted.len() as u64 > MAX_BACKUP_SIZE {
        return Err(Error::InvalidBackup { reason: format!("it is larger than {MAX_BACKUP_SIZE} bytes") });
    }
    let reader = age::armor::ArmoredReader::new(encrypted);
    let decryptor = age::Decryptor::new(reader).map_err(decrypt_error)?;
    if !decryptor.is_scrypt() {
        return Err(Error::InvalidBackup {
            reason: "it is encrypted to age recipients (public keys), not to a passphrase".into(),
        });
    }
    let mut identity = age::scrypt::Identity::new(SecretString::from(passphrase.to_owned()));
    identity.set_max_work_factor(MAX_SCRYPT_WORK_FACTOR);
    let mut reader = decryptor.decrypt(std::iter::once(&identity as &dyn age::Identity)).map_err(decrypt_error)?;
    let mut plaintext = Zeroizing::new(Vec::new());
    (&mut reader)
        .take(MAX_BACKUP_SIZE + 1)
        .read_to_end(&mut plaintext)
        .map_err(|e| Error::InvalidBackup { reason: format!("it is damaged ({e})") })?;
    if plaintext.len() as u64 > MAX_BACKUP_SIZE {
        return Err(Error::InvalidBackup { reason: format!("its content is larger than {MAX_BACKUP_SIZE} bytes") });
    }
    BackupDocument::from_json(&plaintext)
}

fn decrypt_error(e: age::DecryptError) -> Error {
    use age::DecryptError::*;
    let reason = match e {
        NoMatchingKeys | DecryptionFailed | KeyDecryptionFailed => {
            "the passphrase is wrong (or the file was not encrypted with one)".to_owned()
        }
        ExcessiveWork { required, .. } => format!(
            "its scrypt work factor ({required}) is above the {MAX_SCRYPT_WORK_FACTOR} we accept (backups made by \
             tails-server and by `age -p` use {SCRYPT_WORK_FACTOR}): it would take too much time and memory"
        ),
        InvalidHeader | UnknownFormat => "it is not an age-encrypted file, or its header is damaged".to_owned(),
        InvalidMac => "its header was tampered with or damaged".to_owned(),
        Io(e) => format!("it is truncated or damaged ({e})"),
        other => other.to_string(),
    };
    Error::InvalidBackup { reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::arb_record;

    #[test]
    fn a_work_factor_above_the_bound_is_refused_before_any_work() {
        // A real backup at a low factor, whose header then asks for 2^20: refused at once,
        // before the key derivation (which would need 1 GiB), never "wrong passphrase".
        let mut recipient = age::scrypt::Recipient::new(SecretString::from("pass".to_owned()));
        recipient.set_work_factor(10);
        let encryptor = age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient)).unwrap();
        let mut file = Vec::new();
        let mut writer = encryptor.wrap_output(&mut file).unwrap();
        writer.write_all(b"{}").unwrap();
        writer.finish().unwrap();
        let text = String::from_utf8_lossy(&file).into_owned();
        let stanza = text.lines().find(|l| l.starts_with("-> scrypt ")).unwrap().to_owned();
        let hostile = file
            .windows(stanza.len())
            .position(|w| w == stanza.as_bytes())
            .map(|at| [&file[..at], stanza.replace(" 10", " 20").as_bytes(), &file[at + stanza.len()..]].concat())
            .unwrap();
        let error = decrypt(&hostile, "pass").unwrap_err().to_string();
        assert!(error.contains("work factor (20) is above the 19 we accept"), "{error}");
        let honest = decrypt(&file, "pass").unwrap_err().to_string();
        assert!(!honest.contains("work factor"), "a backup at 10 is read (its content is not a document): {honest}");
    }
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;

    fn records(n: usize) -> Vec<ServiceRecord> {
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        (0..n)
            .map(|i| {
                let mut r = arb_record().new_tree(&mut runner).unwrap().current();
                r.name = crate::names::ServiceName::new(&format!("svc{i}")).unwrap();
                r
            })
            .collect()
    }

    #[test]
    fn round_trip_through_age() {
        let doc = BackupDocument::new(records(3), Vec::new());
        let encrypted = encrypt(&doc, "correct horse").unwrap();
        assert!(encrypted.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----"));
        let back = decrypt(&encrypted, "correct horse").unwrap();
        assert_eq!(back.services, doc.services);
        let err = decrypt(&encrypted, "wrong").unwrap_err().to_string();
        assert!(err.contains("passphrase is wrong"), "{err}");
    }

    #[test]
    fn versions_and_formats_are_checked_first() {
        let err = BackupDocument::from_json(br#"{"format":"tails-server-backup","version":3,"services":"x"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("version 3"), "{err}");
        let err = BackupDocument::from_json(br#"{"format":"other","version":1}"#).unwrap_err().to_string();
        assert!(err.contains("not a tails-server backup"), "{err}");
        assert!(BackupDocument::from_json(b"not json").is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn document_json_round_trip(rs in proptest::collection::vec(arb_record(), 0..4)) {
            let doc = BackupDocument::new(rs, Vec::new());
            let back = BackupDocument::from_json(&doc.to_json()).unwrap();
            prop_assert_eq!(back.services, doc.services);
        }
    }
}
