//! The exported object: `org.boum.tails.Server1` at `/org/boum/tails/Server`. Each method
//! checks the caller with polkit, checks its arguments as the CLI does (the same library
//! types parse them), calls the library and answers with the same JSON documents as the
//! CLI's `--format json`. A failing call is answered with a named error and the service goes
//! on serving and publishing.

use std::collections::HashMap;

use serde::Serialize;
use tokio::sync::watch;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;

use tails_server_core::daemon::{log, Level};
use tails_server_core::keys::{ClientPublicKey, OnionAddress};
use tails_server_core::names::{ClientName, KeyName, ServiceName};
use tails_server_core::reconcile::{Action, Pending, Publisher};
use tails_server_core::{backup, AddRequest, Error, Manager, OnConflict};
use tails_server_dbus::views::{self, KeyView, ServiceView, StatusView, TorState};
use tails_server_dbus::{actions, ServiceError, API_VERSION};

use crate::authority::Authority;

/// Largest string argument taken: names, keys and option values are all far shorter.
const MAX_ARGUMENT: usize = 4096;
/// The longest `WaitUploaded` may wait (the CLI's --timeout is bounded alike).
const MAX_WAIT_S: u32 = 3600;
/// Most service names one call may list.
const MAX_SERVICES_ARGUMENT: usize = 256;

pub struct Server {
    pub publisher: Publisher,
    pub authority: Authority,
    pub unlocked: watch::Receiver<bool>,
}

/// What a change did to tor, in every change's answer.
#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct TorOutcome {
    /// tor runs what is stored (true), or could not be told yet (false: see `pending`).
    applied: bool,
    pending: Vec<String>,
    /// Services tor did not take (other than unreachable).
    failed: Vec<String>,
}

fn check_length(what: &str, value: &str) -> Result<(), ServiceError> {
    if value.len() > MAX_ARGUMENT {
        return Err(ServiceError::InvalidInput(format!("{what} is too long ({} bytes)", value.len())));
    }
    Ok(())
}

fn service_name(name: &str) -> Result<ServiceName, ServiceError> {
    check_length("the service name", name)?;
    ServiceName::new(name).map_err(ServiceError::from)
}

fn client_name(name: &str) -> Result<ClientName, ServiceError> {
    check_length("the client name", name)?;
    ClientName::new(name).map_err(ServiceError::from)
}

fn key_name(name: &str) -> Result<KeyName, ServiceError> {
    check_length("the key name", name)?;
    KeyName::new(name).map_err(ServiceError::from)
}

fn json<T: Serialize>(value: &T) -> Result<String, ServiceError> {
    serde_json::to_string(value).map_err(|e| ServiceError::Failed(e.to_string()))
}

impl Server {
    async fn authorize(
        &self,
        connection: &zbus::Connection,
        header: &Header<'_>,
        action: &str,
    ) -> Result<(), ServiceError> {
        let sender = header.sender().ok_or_else(|| ServiceError::NotAuthorized("the call has no sender".into()))?;
        self.authority.check(connection, sender.as_str(), action).await
    }

    /// Runs `work` on the stores in a blocking thread, once the Persistent Storage is there.
    async fn with_manager<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Manager) -> tails_server_core::Result<T> + Send + 'static,
    ) -> Result<T, ServiceError> {
        if !*self.unlocked.borrow() {
            return Err(Error::PersistentStorageLocked.into());
        }
        let config = self.publisher.config.clone();
        let unlocked = self.unlocked.clone();
        tokio::task::spawn_blocking(move || {
            let mut manager = Manager::open(config)?;
            for recovery in manager.recoveries() {
                log(Level::Warning, &recovery.to_string());
            }
            let result = work(&mut manager);
            // Problems after a change was stored (a snapshot not written, an old copy of a
            // removed key not erased): the change stands, the journal must say it.
            for warning in manager.warnings() {
                log(Level::Warning, &warning);
            }
            drop(manager);
            // The volume went away during this request: nothing of it stays open (the
            // service let go of sled when it saw the volume locked, maybe before this).
            if !*unlocked.borrow() {
                tails_server_core::store::let_go_of_held_databases();
            }
            result
        })
        .await
        .map_err(|e| ServiceError::Failed(format!("internal error: {e}")))?
        .map_err(ServiceError::from)
    }

    /// One service's document.
    async fn view_of(&self, name: ServiceName) -> Result<ServiceView, ServiceError> {
        self.with_manager(move |m| Ok(views::service_view(m, &m.get(&name)?))).await
    }

    /// `Changed`, broadcast to every user of the bus: it names nothing (names need the read
    /// action); a front end that follows it asks `List`, which polkit decides.
    async fn announce(emitter: &SignalEmitter<'_>) -> zbus::Result<()> {
        Self::changed(emitter, Vec::new()).await
    }

    /// After a change: tells the reconcile loop, and reconciles now to say what is true. The
    /// programs and the firewall follow the store whether or not tor answers.
    async fn apply(&self, emitter: &SignalEmitter<'_>) -> TorOutcome {
        let _ = self.publisher.note_change();
        let _ = Self::announce(emitter).await;
        let why = match self.publisher.connect().await {
            Ok(mut tor) => match self.publisher.sync(&mut tor).await {
                Ok(report) => {
                    return TorOutcome {
                        applied: true,
                        pending: Vec::new(),
                        failed: report
                            .failed
                            .iter()
                            .map(|(n, e)| format!("{n}: {e}"))
                            .chain(report.failed_keys.iter().map(|(n, e)| format!("key {n}: {e}")))
                            // A program that cannot run: its service is off tor until it can.
                            .chain(report.daemons.failed.iter().map(|(n, e)| format!("{n}: {e}")))
                            .collect(),
                    };
                }
                Err(e) => e,
            },
            Err(e) => e,
        };
        let mut failed = Vec::new();
        match self.publisher.sync_daemons().await {
            Ok(report) => failed.extend(report.failed.iter().map(|(n, e)| format!("{n}: {e}"))),
            Err(e) => failed.push(format!("the services' programs could not be checked: {e}")),
        }
        let pending = self.publisher.pending().await.unwrap_or_default();
        TorOutcome {
            applied: pending.is_empty(),
            pending: pending
                .iter()
                .map(|p| match p {
                    Pending::StillRunning { name, .. } => format!("tor may still run {name} ({why})"),
                    Pending::Outdated { name } => format!("tor may still run {name} with its previous clients ({why})"),
                    Pending::NotPublished { name } => format!("{name} is not published yet ({why})"),
                    Pending::KeyNotGiven { name } => format!("tor does not have key {name} yet ({why})"),
                    Pending::KeyStillGiven { name } => format!("tor may still hold key {name} ({why})"),
                })
                .collect(),
            failed,
        }
    }
}

#[derive(Serialize)]
struct Changed<T: Serialize> {
    #[serde(flatten)]
    result: T,
    tor: TorOutcome,
}

#[zbus::interface(name = "org.boum.tails.Server1")]
impl Server {
    async fn catalog(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> Result<String, ServiceError> {
        self.authorize(connection, &header, actions::READ).await?;
        let kinds = self.with_manager(|m| Ok(m.catalog().kinds().cloned().collect::<Vec<_>>())).await?;
        json(&kinds)
    }

    async fn list(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> Result<String, ServiceError> {
        self.authorize(connection, &header, actions::READ).await?;
        let list: Vec<ServiceView> =
            self.with_manager(|m| Ok(m.list()?.iter().map(|r| views::service_view(m, r)).collect())).await?;
        json(&list)
    }

    async fn info(
        &self,
        name: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> Result<String, ServiceError> {
        self.authorize(connection, &header, actions::READ).await?;
        let name = service_name(name)?;
        let view = self.view_of(name).await?;
        json(&view)
    }

    async fn status(
        &self,
        name: &str,
        probe: bool,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> Result<String, ServiceError> {
        self.authorize(connection, &header, actions::READ).await?;
        let name = service_name(name)?;
        let (record, mut view): (_, StatusView) = self
            .with_manager(move |m| {
                let record = m.get(&name)?;
                let view = views::status_view(m, &record);
                Ok((record, view))
            })
            .await?;
        view.tor = match self.publisher.tor_view(&record, probe).await {
            Ok(tor) => tor.into(),
            Err(e) => TorState { tor_error: Some(e.to_string()), ..TorState::default() },
        };
        json(&view)
    }

    /// Waits (at most `timeout_s` seconds) until tor reports the service's descriptor
    /// uploaded (`enable --wait`).
    async fn wait_uploaded(
        &self,
        name: &str,
        timeout_s: u32,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> Result<String, ServiceError> {
        self.authorize(connection, &header, actions::READ).await?;
        let name = service_name(name)?;
        if timeout_s == 0 || timeout_s > MAX_WAIT_S {
            return Err(ServiceError::InvalidInput(format!("the timeout must be 1 to {MAX_WAIT_S} seconds")));
        }
        let record = self.with_manager(move |m| m.get(&name)).await?;
        if !record.enabled {
            return Err(ServiceError::InvalidInput(format!("{} is not enabled: enable it first", record.name)));
        }
        let at = self.publisher.wait_recorded_upload(&record, std::time::Duration::from_secs(timeout_s.into())).await?;
        json(&serde_json::json!({
            "name": record.name.as_str(),
            "address": record.address().to_string(),
            "uploaded-at": views::rfc3339(at),
        }))
    }

    async fn add(
        &self,
        kind: &str,
        options: HashMap<String, String>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<String, ServiceError> {
        self.authorize(connection, &header, actions::CHANGE).await?;
        check_length("the kind", kind)?;
        let mut request = AddRequest::new(kind);
        for (key, value) in &options {
            check_length(key, value)?;
            let port = |v: &str| {
                v.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                    ServiceError::InvalidInput(format!(
                        "invalid port {v:?} for {key}: expected a number from 1 to 65535"
                    ))
                })
            };
            match key.as_str() {
                "name" => request.name = Some(service_name(value)?),
                "local-port" => request.local_port = Some(port(value)?),
                "remote-port" => request.remote_port = Some(port(value)?),
                "first-client" => request.first_client = client_name(value)?,
                other => match other.strip_prefix("option.") {
                    Some(option) => request.options.push((option.to_owned(), value.clone())),
                    None => {
                        return Err(ServiceError::InvalidInput(format!(
                            "unknown argument {other:?}: expected name, local-port, remote-port, first-client or \
                             option.NAME"
                        )))
                    }
                },
            }
        }
        // Client authorization is not optional over D-Bus: the opt-out is the CLI's hidden flag.
        let view = self
            .with_manager(move |m| {
                let record = m.add(request)?;
                Ok(views::service_view(m, &record))
            })
            .await?;
        let tor = self.apply(&emitter).await;
        json(&Changed { result: view, tor })
    }

    async fn remove(
        &self,
        name: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<String, ServiceError> {
        self.authorize(connection, &header, actions::CHANGE).await?;
        let name = service_name(name)?;
        let removed = self.with_manager(move |m| m.remove(&name)).await?;
        #[derive(Serialize)]
        struct Removed {
            name: String,
            address: String,
        }
        let tor = self.apply(&emitter).await;
        json(&Changed {
            result: Removed { name: removed.name.to_string(), address: removed.address().to_string() },
            tor,
        })
    }

    async fn enable(
        &self,
        name: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<String, ServiceError> {
        self.set_enabled(name, true, &header, connection, &emitter).await
    }

    async fn disable(
        &self,
        name: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<String, ServiceError> {
        self.set_enabled(name, false, &header, connection, &emitter).await
    }

    async fn get_option(
        &self,
        name: &str,
        option: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> Result<String, ServiceError> {
        self.authorize(connection, &header, actions::READ).await?;
        let name = service_name(name)?;
        check_length("the option", option)?;
        let option = option.to_owned();
        let (service, option, spec_secret, value) = self
            .with_manager(move |m| {
                let (spec, value) = m.get_option(&name, &option)?;
                Ok((name, option, spec.secret, value))
            })
            .await?;
        if spec_secret {
            // A secret's value is shown only to whom may see secrets.
            self.authorize(connection, &header, actions::REVEAL_SECRET).await?;
        }
        json(&serde_json::json!({ "name": service.as_str(), "option": option, "value": value }))
    }

    async fn set_option(
        &self,
        name: &str,
        option: &str,
        value: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<String, ServiceError> {
        self.authorize(connection, &header, actions::CHANGE).await?;
        let name = service_name(name)?;
        check_length("the option", option)?;
        check_length("the value", value)?;
        let (option, value) = (option.to_owned(), zeroize::Zeroizing::new(value.to_owned()));
        let (view, change) = self
            .with_manager(move |m| {
                let (record, previous) = m.set_option(&name, &option, &value)?;
                let (spec, new) = m.get_option(&name, &option)?;
                // A secret's values are never sent back, only whether they changed or are empty.
                let shown = |v: &tails_server_core::options::OptionValue| match (spec.secret, v) {
                    (true, tails_server_core::options::OptionValue::String(s)) if s.is_empty() => serde_json::json!(""),
                    (true, _) => serde_json::json!(views::HIDDEN),
                    (false, v) => serde_json::json!(v),
                };
                let change = serde_json::json!({
                    "option": option,
                    "secret": spec.secret,
                    "changed": new != previous,
                    "value": shown(&new),
                    "previous": shown(&previous),
                });
                Ok((views::service_view(m, &record), change))
            })
            .await?;
        let tor = self.apply(&emitter).await;
        #[derive(Serialize)]
        struct WithChange {
            #[serde(flatten)]
            view: ServiceView,
            change: serde_json::Value,
        }
        json(&Changed { result: WithChange { view, change }, tor })
    }

    async fn clients(
        &self,
        name: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> Result<String, ServiceError> {
        self.authorize(connection, &header, actions::READ).await?;
        let name = service_name(name)?;
        let view = self.view_of(name).await?;
        json(&view.clients)
    }

    async fn add_client(
        &self,
        name: &str,
        client: &str,
        public_key: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<String, ServiceError> {
        self.authorize(connection, &header, actions::CHANGE).await?;
        let name = service_name(name)?;
        let client = client_name(client)?;
        check_length("the public key", public_key)?;
        let key = if public_key.is_empty() { None } else { Some(ClientPublicKey::parse(public_key)?) };
        let view = self
            .with_manager(move |m| {
                m.add_client(&name, client, key)?;
                Ok(views::service_view(m, &m.get(&name)?))
            })
            .await?;
        let tor = self.apply(&emitter).await;
        json(&Changed { result: view, tor })
    }

    async fn remove_client(
        &self,
        name: &str,
        client: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<String, ServiceError> {
        self.authorize(connection, &header, actions::CHANGE).await?;
        let name = service_name(name)?;
        let client = client_name(client)?;
        let view = self
            .with_manager(move |m| {
                m.remove_client(&name, &client)?;
                Ok(views::service_view(m, &m.get(&name)?))
            })
            .await?;
        let tor = self.apply(&emitter).await;
        json(&Changed { result: view, tor })
    }

    async fn keys(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> Result<String, ServiceError> {
        self.authorize(connection, &header, actions::READ).await?;
        let keys: Vec<KeyView> =
            self.with_manager(|m| Ok(m.received_keys()?.iter().map(views::key_view).collect())).await?;
        json(&keys)
    }

    #[allow(clippy::too_many_arguments)] // zbus passes the header, connection and emitter as arguments
    async fn add_key(
        &self,
        name: &str,
        text: &str,
        address: &str,
        persistent: bool,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<String, ServiceError> {
        self.authorize(connection, &header, actions::CHANGE).await?;
        let name = key_name(name)?;
        check_length("the key", text)?;
        check_length("the address", address)?;
        let text = zeroize::Zeroizing::new(text.to_owned());
        let address = if address.is_empty() { None } else { Some(address.parse::<OnionAddress>()?) };
        let view = self
            .with_manager(move |m| Ok(views::key_view(&m.add_received_key(name, &text, address, persistent)?)))
            .await?;
        let tor = self.apply(&emitter).await;
        json(&Changed { result: view, tor })
    }

    async fn remove_key(
        &self,
        name: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<String, ServiceError> {
        self.authorize(connection, &header, actions::CHANGE).await?;
        let name = key_name(name)?;
        let view = self.with_manager(move |m| Ok(views::key_view(&m.remove_received_key(&name)?))).await?;
        let tor = self.apply(&emitter).await;
        json(&Changed { result: view, tor })
    }

    async fn credential(
        &self,
        name: &str,
        client: &str,
        form: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> Result<String, ServiceError> {
        let secret = match form {
            "auth-private" | "key" => true,
            "auth" => false,
            other => {
                return Err(ServiceError::InvalidInput(format!(
                    "unknown credential form {other:?}: expected auth-private, key or auth"
                )))
            }
        };
        let action = if secret { actions::REVEAL_SECRET } else { actions::READ };
        self.authorize(connection, &header, action).await?;
        let name = service_name(name)?;
        let client = client_name(client)?;
        let form = form.to_owned();
        let view = self
            .with_manager(move |m| {
                let (record, client) = m.client(&name, &client)?;
                let no_key =
                    || Error::NoPrivateKey { service: record.name.to_string(), client: client.name.to_string() };
                let value = match form.as_str() {
                    "auth-private" => {
                        client.secret_key.as_ref().ok_or_else(no_key)?.auth_private_line(&record.address())
                    }
                    "key" => client.secret_key.as_ref().ok_or_else(no_key)?.to_base32(),
                    _ => zeroize::Zeroizing::new(client.public_key.auth_line()),
                };
                Ok(serde_json::json!({
                    "service": record.name.as_str(),
                    "client": client.name.as_str(),
                    "address": record.address().to_string(),
                    "form": form,
                    "value": value.as_str(),
                }))
            })
            .await?;
        json(&view)
    }

    async fn export(
        &self,
        services: Vec<String>,
        passphrase: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> Result<Vec<u8>, ServiceError> {
        self.authorize(connection, &header, actions::REVEAL_SECRET).await?;
        check_length("the passphrase", passphrase)?;
        if passphrase.is_empty() {
            return Err(ServiceError::InvalidInput("the passphrase is empty".into()));
        }
        if services.len() > MAX_SERVICES_ARGUMENT {
            return Err(ServiceError::InvalidInput(format!("more than {MAX_SERVICES_ARGUMENT} services named")));
        }
        let names = services.iter().map(|s| service_name(s)).collect::<Result<Vec<_>, _>>()?;
        let document = self.with_manager(move |m| m.export(&names)).await?;
        if document.services.is_empty() && document.keys.is_empty() {
            return Err(ServiceError::NotFound("there is no service or kept key to export".into()));
        }
        let passphrase = zeroize::Zeroizing::new(passphrase.to_owned());
        // scrypt takes a second of CPU: not on the bus's thread.
        tokio::task::spawn_blocking(move || backup::encrypt(&document, &passphrase))
            .await
            .map_err(|e| ServiceError::Failed(e.to_string()))?
            .map_err(Into::into)
    }

    #[allow(clippy::too_many_arguments)] // zbus passes the header, connection and emitter as arguments
    async fn import(
        &self,
        backup: Vec<u8>,
        passphrase: &str,
        on_conflict: &str,
        dry_run: bool,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<String, ServiceError> {
        self.authorize(connection, &header, actions::CHANGE).await?;
        check_length("the passphrase", passphrase)?;
        if backup.len() as u64 > backup::MAX_BACKUP_SIZE {
            return Err(ServiceError::InvalidInput(format!(
                "this is not a tails-server backup: it is larger than {} bytes",
                backup::MAX_BACKUP_SIZE
            )));
        }
        let conflict = match on_conflict {
            "fail" => OnConflict::Fail,
            "skip" => OnConflict::Skip,
            "replace" => OnConflict::Replace,
            other => {
                return Err(ServiceError::InvalidInput(format!(
                    "unknown conflict rule {other:?}: expected fail, skip or replace"
                )))
            }
        };
        let passphrase = zeroize::Zeroizing::new(passphrase.to_owned());
        // One key derivation at a time: each may take 512 MiB (scrypt at the highest work
        // factor accepted), and the service's memory is capped.
        static DECRYPTING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);
        let permit = DECRYPTING.acquire().await.map_err(|e| ServiceError::Failed(e.to_string()))?;
        let mut document = tokio::task::spawn_blocking(move || backup::decrypt(&backup, &passphrase))
            .await
            .map_err(|e| ServiceError::Failed(e.to_string()))??;
        drop(permit);
        // Through the service an import never lowers protection: nothing open, nothing
        // published or opened to the LAN until the person turns it on.
        let held_back = document.hold_back_lowered_protection()?;
        let enabled: Vec<String> = document.services.iter().filter(|r| r.enabled).map(|r| r.name.to_string()).collect();
        let report = self
            .with_manager(move |m| {
                document.validate(m.catalog())?;
                m.import_with_keys(document.services, document.keys, conflict, dry_run)
            })
            .await?;
        #[derive(Serialize)]
        #[serde(rename_all = "kebab-case")]
        struct Imported {
            dry_run: bool,
            added: Vec<String>,
            replaced: Vec<String>,
            skipped: Vec<String>,
            held_back: Vec<String>,
        }
        // Kept keys are reported as `key NAME`.
        let changed_any = !report.added.is_empty() || !report.replaced.is_empty();
        let keys_touched = report.added.iter().chain(&report.replaced).any(|n| n.starts_with("key "));
        let touches_tor =
            keys_touched || !report.replaced.is_empty() || report.added.iter().any(|n| enabled.contains(n));
        let result =
            Imported { dry_run, added: report.added, replaced: report.replaced, skipped: report.skipped, held_back };
        let tor = if dry_run || !changed_any {
            TorOutcome { applied: true, pending: vec![], failed: vec![] }
        } else if touches_tor {
            self.apply(&emitter).await
        } else {
            let _ = Self::announce(&emitter).await;
            TorOutcome { applied: true, pending: vec![], failed: vec![] }
        };
        json(&Changed { result, tor })
    }

    async fn restore(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> Result<String, ServiceError> {
        self.authorize(connection, &header, actions::CHANGE).await?;
        if !*self.unlocked.borrow() {
            return Err(Error::PersistentStorageLocked.into());
        }
        let mut tor = self.publisher.connect().await?;
        let report = self.publisher.sync(&mut tor).await?;
        json(&serde_json::json!({
            "published": report.names(Action::Published),
            "republished": report.names(Action::Republished),
            "already-published": report.names(Action::Unchanged),
            "removed": report.names(Action::Removed),
            "failed": report.failed.iter().map(|(n, e)| serde_json::json!({"name": n, "error": e.to_string()})).collect::<Vec<_>>(),
            "elapsed-ms": report.elapsed.as_secs_f64() * 1e3,
        }))
    }

    async fn close_store(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> Result<(), ServiceError> {
        self.authorize(connection, &header, actions::CHANGE).await?;
        tokio::task::spawn_blocking(tails_server_core::store::let_go_of_held_databases)
            .await
            .map_err(|e| ServiceError::Failed(format!("internal error: {e}")))
    }

    /// Emitted after every change, with the services it concerned.
    #[zbus(signal)]
    async fn changed(emitter: &SignalEmitter<'_>, names: Vec<String>) -> zbus::Result<()>;

    #[zbus(property)]
    fn version(&self) -> u32 {
        API_VERSION
    }

    #[zbus(property)]
    fn persistent_storage_unlocked(&self) -> bool {
        *self.unlocked.borrow()
    }
}

impl Server {
    async fn set_enabled(
        &self,
        name: &str,
        enabled: bool,
        header: &Header<'_>,
        connection: &zbus::Connection,
        emitter: &SignalEmitter<'_>,
    ) -> Result<String, ServiceError> {
        self.authorize(connection, header, actions::CHANGE).await?;
        if !*self.unlocked.borrow() {
            return Err(Error::PersistentStorageLocked.into());
        }
        let name = service_name(name)?;
        // The library's policy: publish then record for enable, record then remove for
        // disable; a refusal by tor changes nothing.
        let warnings = if enabled {
            let mut tor = self.publisher.connect().await.ok();
            self.publisher.enable(tor.as_mut(), &name).await?.warnings
        } else {
            self.publisher.disable(&name).await?
        };
        for warning in warnings {
            log(Level::Warning, &warning);
        }
        let outcome = self.apply(emitter).await;
        let view = self.view_of(name).await?;
        json(&Changed { result: view, tor: outcome })
    }
}
