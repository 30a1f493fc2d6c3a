//! Putting stored services on tor and taking them off: ADD_ONION with the stored key,
//! `Flags=Detach` (so a service outlives our connection) and one `ClientAuthV3` per client;
//! idempotent, because tor answers a second ADD_ONION for a live address with a collision.

use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::keys::OnionAddress;
use crate::model::{now_unix, ServiceRecord};
use crate::tor::{CommandLine, TorControl, TorEvent, TorInstance};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publication {
    /// tor accepted ADD_ONION just now.
    Added,
    /// tor already ran it (detached): nothing to do.
    AlreadyPublished,
}

/// The ADD_ONION line for a service. The key is a secret argument: never shown.
pub fn add_onion_command(record: &ServiceRecord) -> Result<CommandLine> {
    let flags = if record.client_auth { "Flags=Detach,V3Auth" } else { "Flags=Detach" };
    let mut command = CommandLine::new("ADD_ONION")
        .secret_arg("onion key", &record.key.to_control_blob())?
        .arg("flags", flags)?
        .arg("port mapping", &format!("Port={},127.0.0.1:{}", record.remote_port, record.local_port))?;
    if record.client_auth {
        if record.clients.is_empty() {
            return Err(Error::LastClient { service: record.name.to_string(), client: String::new() });
        }
        for client in &record.clients {
            command = command.arg("client key", &format!("ClientAuthV3={}", client.public_key.to_base32()))?;
        }
    }
    Ok(command)
}

/// Publishes one service unless tor already runs it. `detached` is tor's current list, when
/// the caller has it (one GETINFO for many services).
pub async fn publish(
    tor: &mut TorControl,
    record: &ServiceRecord,
    detached: Option<&HashSet<String>>,
) -> Result<Publication> {
    let id = record.address().service_id();
    let live = match detached {
        Some(set) => set.contains(&id),
        None => tor.detached_onions().await?.contains(&id),
    };
    if live {
        return Ok(Publication::AlreadyPublished);
    }
    let reply = tor.execute(&add_onion_command(record)?).await?;
    let got = reply.values("ServiceID").next().unwrap_or_default().to_owned();
    if got != id {
        // Never leave an unexpected service running.
        if !got.is_empty() {
            let _ = tor.send(&CommandLine::new("DEL_ONION").arg("service id", &got)?).await;
        }
        return Err(Error::WrongAddress { service: record.name.to_string(), expected: id, got });
    }
    Ok(Publication::Added)
}

/// Removes a service from tor. Returns whether it was running.
pub async fn unpublish(tor: &mut TorControl, address: &OnionAddress) -> Result<bool> {
    let command = CommandLine::new("DEL_ONION").arg("service id", &address.service_id())?;
    let reply = tor.send(&command).await?;
    match reply.code {
        250 => Ok(true),
        552 => Ok(false),
        _ => Err(crate::tor::control::rejected(&command, &reply)),
    }
}

/// Publishes again with the current clients: tor cannot change them in place, so the
/// service is removed and added, and connected clients have to reconnect.
pub async fn republish(tor: &mut TorControl, record: &ServiceRecord) -> Result<()> {
    unpublish(tor, &record.address()).await?;
    publish(tor, record, Some(&HashSet::new())).await.map(|_| ())
}

/// What happened to each service during a restore.
#[derive(Debug, Default)]
pub struct RestoreReport {
    pub added: Vec<String>,
    pub already: Vec<String>,
    pub failed: Vec<(String, Error)>,
    pub elapsed: Duration,
}

/// Publishes every enabled service with `autostart`; one failure does not stop the others.
pub async fn restore(tor: &mut TorControl, records: &[ServiceRecord]) -> Result<RestoreReport> {
    let start = Instant::now();
    let detached = tor.detached_onions().await?;
    let mut report = RestoreReport::default();
    for record in records.iter().filter(|r| r.enabled && autostart(r)) {
        match publish(tor, record, Some(&detached)).await {
            Ok(Publication::Added) => report.added.push(record.name.to_string()),
            Ok(Publication::AlreadyPublished) => report.already.push(record.name.to_string()),
            Err(e @ (Error::TorGone { .. } | Error::TorConnect { .. })) => return Err(e),
            Err(e) => report.failed.push((record.name.to_string(), e)),
        }
    }
    report.elapsed = start.elapsed();
    Ok(report)
}

fn autostart(record: &ServiceRecord) -> bool {
    record.options.get(crate::options::AUTOSTART).and_then(|v| v.as_bool()).unwrap_or(true)
}

/// Waits until tor reports the service's descriptor uploaded to at least one HSDir. The
/// caller must have subscribed to HS_DESC before publishing.
pub async fn wait_uploaded(
    tor: &mut TorControl,
    address: &OnionAddress,
    timeout: Duration,
    mut progress: impl FnMut(&str),
) -> Result<()> {
    let id = address.service_id();
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Timeout { what: format!("tor to upload the descriptor of {address}"), waited: timeout });
        }
        if let Some(TorEvent::HsDesc { action, service_id, .. }) = tor.next_event(Some(left)).await? {
            if service_id == id {
                match action.as_str() {
                    "UPLOADED" => return Ok(()),
                    "UPLOAD" => progress("uploading the descriptor"),
                    "CREATED" => progress("descriptor built"),
                    "FAILED" => progress("an upload failed; tor retries"),
                    _ => {}
                }
            }
        }
    }
}

/// Which descriptors were seen uploaded, by which tor instance. Written by whoever
/// watches HS_DESC (the daemon, `enable --wait`) in the runtime directory, so that `status`
/// can tell "uploaded" from merely "registered".
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct UploadLog {
    pub tor: Option<TorInstance>,
    pub uploaded: BTreeMap<String, u64>,
}

impl UploadLog {
    pub fn path(runtime_dir: &Path) -> PathBuf {
        runtime_dir.join("uploads.json")
    }

    pub fn load(runtime_dir: &Path) -> Self {
        std::fs::read(Self::path(runtime_dir)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    /// When this tor instance was last seen uploading `service_id`'s descriptor.
    pub fn uploaded_at(&self, tor: &TorInstance, service_id: &str) -> Option<u64> {
        self.tor.filter(|t| t.same_as(tor)).and_then(|_| self.uploaded.get(service_id).copied())
    }

    pub fn record(runtime_dir: &Path, tor: &TorInstance, service_id: &str) -> Result<()> {
        let mut log = Self::load(runtime_dir);
        if !log.tor.is_some_and(|t| t.same_as(tor)) {
            log = UploadLog { tor: Some(*tor), uploaded: BTreeMap::new() };
        }
        log.uploaded.insert(service_id.to_owned(), now_unix());
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(runtime_dir)
            .map_err(|e| Error::io("cannot create", runtime_dir, e))?;
        let bytes = serde_json::to_vec(&log).expect("serializable");
        crate::store::write_atomically(&Self::path(runtime_dir), &[&bytes])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{ClientSecretKey, OnionSecretKey};
    use crate::model::ClientRecord;
    use crate::names::{ClientName, ServiceName};

    fn record(clients: usize, auth: bool) -> ServiceRecord {
        ServiceRecord {
            name: ServiceName::new("web").unwrap(),
            kind: "web".into(),
            local_port: 8080,
            remote_port: 80,
            enabled: true,
            client_auth: auth,
            options: Default::default(),
            key: OnionSecretKey::generate().unwrap(),
            clients: (0..clients)
                .map(|i| {
                    let s = ClientSecretKey::generate().unwrap();
                    ClientRecord {
                        name: ClientName::new(&format!("c{i}")).unwrap(),
                        public_key: s.public_key(),
                        secret_key: Some(s),
                        created: 0,
                    }
                })
                .collect(),
            created: 0,
        }
    }

    #[test]
    fn add_onion_line_has_every_client_and_hides_the_key() {
        let r = record(3, true);
        let cmd = add_onion_command(&r).unwrap();
        let shown = cmd.to_string();
        assert_eq!(shown.matches("ClientAuthV3=").count(), 3);
        assert!(shown.starts_with("ADD_ONION [secret] Flags=Detach,V3Auth Port=80,127.0.0.1:8080 "));
        let wire = String::from_utf8(cmd.wire_bytes().to_vec()).unwrap();
        assert!(wire.contains(r.key.to_control_blob().as_str()));
        assert!(wire.ends_with("\r\n") && wire.matches("\r\n").count() == 1);
        for c in &r.clients {
            assert!(wire.contains(&format!("ClientAuthV3={}", c.public_key.to_base32())));
        }
    }

    #[test]
    fn no_client_auth_means_no_v3auth_flag() {
        let cmd = add_onion_command(&record(0, false)).unwrap().to_string();
        assert!(cmd.contains("Flags=Detach ") && !cmd.contains("V3Auth") && !cmd.contains("ClientAuthV3"));
        assert!(add_onion_command(&record(0, true)).is_err());
    }

    #[test]
    fn upload_log_forgets_previous_tor_instances() {
        let dir = tempfile::tempdir().unwrap();
        let first = TorInstance { pid: 1, started: 1000 };
        let restarted = TorInstance { pid: 1, started: 1060 };
        UploadLog::record(dir.path(), &first, "abc").unwrap();
        let log = UploadLog::load(dir.path());
        assert!(log.uploaded_at(&TorInstance { pid: 1, started: 1001 }, "abc").is_some(), "uptime is coarse");
        assert!(log.uploaded_at(&restarted, "abc").is_none());
        UploadLog::record(dir.path(), &restarted, "def").unwrap();
        let log = UploadLog::load(dir.path());
        assert!(log.uploaded_at(&restarted, "abc").is_none() && log.uploaded_at(&restarted, "def").is_some());
    }
}
