//! The exported object: `org.boum.tails.Server1` at `/org/boum/tails/Server`. Every method
//! goes the same way: polkit grants the caller the method's action, the arguments are
//! parsed by the same library types the CLI uses, the work runs on the stores, a change is
//! then applied (tor, the programs, the firewall), and the answer is the same JSON document
//! as the CLI's `--format json`. The stores are reachable only through [`Server::read`] and
//! [`Server::change`], which take a [`Grant`]: no method touches them before polkit said yes.
//! A secret leaves, or access widens, only for a caller that also proved a person is there
//! ([`crate::presence`]).
//! A failing call is answered with a named error and the service goes on serving and
//! publishing.

use std::collections::HashMap;
use std::marker::PhantomData;

use serde::Serialize;
use tokio::sync::watch;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;

use tails_server_core::daemon::{log, Level};
use tails_server_core::keys::{ClientPublicKey, OnionAddress};
use tails_server_core::names::{ClientName, KeyName, ServiceName};
use tails_server_core::reconcile::{Action, Pending, Publisher};
use tails_server_core::{backup, AddRequest, Error, Manager, OnConflict, ServiceData};
use tails_server_dbus::views::{self, KeyView, ServiceView, StatusView, TorState};
use tails_server_dbus::{actions, ServiceError, API_VERSION};

use crate::authority::Authority;
use crate::presence::Presence;

/// Largest string argument taken: names, keys and option values are all far shorter.
const MAX_ARGUMENT: usize = 4096;
/// The longest `WaitUploaded` may wait (the CLI's --timeout is bounded alike).
const MAX_WAIT_S: u32 = 3600;
/// Most service names one call may list.
const MAX_SERVICES_ARGUMENT: usize = 256;

pub struct Server {
    pub publisher: Publisher,
    pub authority: Authority,
    pub presence: Presence,
    pub unlocked: watch::Receiver<bool>,
    /// On Tails, where the Persistent Storage is mounted: Additional Software's list there
    /// says whether tails-server comes back after a restart. None: nothing forgets it.
    pub persistent_storage: Option<std::path::PathBuf>,
}

/// A polkit action, as a type, so that what a [`Grant`] allows is checked by the compiler.
trait PolkitAction {
    const ID: &'static str;
    /// What the action does, when it also needs a person's presence.
    const NEEDS_PRESENCE: Option<&'static str> = None;
}
/// `org.boum.tails.server.read`: the services, their clients' public keys, their state.
struct Read;
/// `org.boum.tails.server.change`: anything that changes the stores or what tor runs.
struct Change;
/// `org.boum.tails.server.reveal-secret`: a private key, a secret option, a backup.
struct RevealSecret;
impl PolkitAction for Read {
    const ID: &'static str = actions::READ;
}
impl PolkitAction for Change {
    const ID: &'static str = actions::CHANGE;
}
impl PolkitAction for RevealSecret {
    const ID: &'static str = actions::REVEAL_SECRET;
    const NEEDS_PRESENCE: Option<&'static str> = Some("Revealing a secret (a private key, a secret option, a backup)");
}

/// Proof that polkit allowed this call's caller the action `A` (and, for actions that need
/// it, that the caller proved a person is there); made only by [`Server::grant`].
struct Grant<A: PolkitAction>(PhantomData<A>);

/// Who is calling, as zbus hands it to each method.
struct Caller<'a, 'h> {
    header: &'a Header<'h>,
    connection: &'a zbus::Connection,
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

impl TorOutcome {
    /// A change that tor has nothing to do with (a dry run, nothing imported).
    fn nothing_to_do() -> Self {
        TorOutcome { applied: true, pending: Vec::new(), failed: Vec::new() }
    }
}

/// Every change's answer: its own document, and what tor made of it.
#[derive(Serialize)]
struct Changed<T: Serialize> {
    #[serde(flatten)]
    result: T,
    tor: TorOutcome,
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

/// The work of a call on the stores, run in a blocking thread.
trait Work<T>: FnOnce(&mut Manager) -> tails_server_core::Result<T> + Send + 'static {}
impl<T, F: FnOnce(&mut Manager) -> tails_server_core::Result<T> + Send + 'static> Work<T> for F {}

fn sender<'a>(caller: &Caller<'a, '_>) -> Result<&'a str, ServiceError> {
    caller
        .header
        .sender()
        .map(|s| s.as_str())
        .ok_or_else(|| ServiceError::NotAuthorized("the call has no sender".into()))
}

impl Server {
    /// Asks polkit whether the caller may do `A`; the first step of every method.
    async fn grant<A: PolkitAction>(&self, caller: &Caller<'_, '_>) -> Result<Grant<A>, ServiceError> {
        let sender = sender(caller)?;
        self.authority.check(caller.connection, sender, A::ID).await?;
        if let Some(what) = A::NEEDS_PRESENCE {
            self.presence.require(sender, what)?;
        }
        Ok(Grant(PhantomData))
    }

    /// For a change that widens access (`what` says which): refused unless the caller
    /// proved a person is there.
    fn require_presence(&self, _: &Grant<Change>, caller: &Caller<'_, '_>, what: &str) -> Result<(), ServiceError> {
        self.presence.require(sender(caller)?, what)
    }

    fn require_unlocked(&self) -> Result<(), ServiceError> {
        if *self.unlocked.borrow() {
            Ok(())
        } else {
            Err(Error::PersistentStorageLocked.into())
        }
    }

    /// Runs `work` on the stores in a blocking thread, once the Persistent Storage is there.
    async fn read<A: PolkitAction, T: Send + 'static>(
        &self,
        _: &Grant<A>,
        work: impl Work<T>,
    ) -> Result<T, ServiceError> {
        self.require_unlocked()?;
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

    /// A question's answer: `work`'s document as JSON.
    async fn answer<A: PolkitAction, T: Serialize + Send + 'static>(
        &self,
        grant: &Grant<A>,
        work: impl Work<T>,
    ) -> Result<String, ServiceError> {
        json(&self.read(grant, work).await?)
    }

    /// A change: `work` stores it, then it is applied, and the answer says both.
    async fn change<T: Serialize + Send + 'static>(
        &self,
        grant: &Grant<Change>,
        emitter: &SignalEmitter<'_>,
        work: impl Work<T>,
    ) -> Result<String, ServiceError> {
        let result = self.read(grant, work).await?;
        let tor = self.apply(emitter).await;
        json(&Changed { result, tor })
    }

    /// `Changed`, broadcast to every user of the bus: it names nothing (names need the read
    /// action); a front end that follows it asks `List`, which polkit decides.
    pub(crate) async fn announce(emitter: &SignalEmitter<'_>) -> zbus::Result<()> {
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

#[zbus::interface(name = "org.boum.tails.Server1")]
impl Server {
    async fn catalog(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> Result<String, ServiceError> {
        let grant = self.grant::<Read>(&Caller { header: &header, connection }).await?;
        self.answer(&grant, |m| Ok(m.catalog().kinds().cloned().collect::<Vec<_>>())).await
    }

    async fn list(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> Result<String, ServiceError> {
        let grant = self.grant::<Read>(&Caller { header: &header, connection }).await?;
        self.answer(&grant, |m| Ok(m.list()?.iter().map(|r| views::service_view(m, r)).collect::<Vec<ServiceView>>()))
            .await
    }

    async fn info(
        &self,
        name: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> Result<String, ServiceError> {
        let grant = self.grant::<Read>(&Caller { header: &header, connection }).await?;
        let name = service_name(name)?;
        self.answer(&grant, move |m| Ok(views::service_view(m, &m.get(&name)?))).await
    }

    async fn status(
        &self,
        name: &str,
        probe: bool,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> Result<String, ServiceError> {
        let grant = self.grant::<Read>(&Caller { header: &header, connection }).await?;
        let name = service_name(name)?;
        let (record, mut view): (_, StatusView) = self
            .read(&grant, move |m| {
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
        let grant = self.grant::<Read>(&Caller { header: &header, connection }).await?;
        let name = service_name(name)?;
        if timeout_s == 0 || timeout_s > MAX_WAIT_S {
            return Err(ServiceError::InvalidInput(format!("the timeout must be 1 to {MAX_WAIT_S} seconds")));
        }
        let record = self.read(&grant, move |m| m.get(&name)).await?;
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
        let caller = Caller { header: &header, connection };
        let grant = self.grant::<Change>(&caller).await?;
        let request = add_request(kind, &options)?;
        // A new service that comes with more than a plain add gives (an SSH key, the local
        // network, a directory listing) is judged against its kind's defaults: whoever is
        // later given a client key for it would get that way in too.
        let present = self.presence.is_proven(sender(&caller)?);
        let stored = self
            .read(&grant, move |m| {
                let widens = m.widening_at_add(&request);
                if !present && !widens.is_empty() {
                    return Ok(Err(format!("Adding a service with {}", widens.join(", "))));
                }
                // Client authorization is not optional over D-Bus: the opt-out is the CLI's hidden flag.
                let record = m.add(request)?;
                Ok(Ok(views::service_view(m, &record)))
            })
            .await?;
        let view = stored.map_err(|what| Presence::refusal(&what))?;
        let tor = self.apply(&emitter).await;
        json(&Changed { result: view, tor })
    }

    async fn remove(
        &self,
        name: &str,
        keep_data: bool,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<String, ServiceError> {
        let grant = self.grant::<Change>(&Caller { header: &header, connection }).await?;
        let name = service_name(name)?;
        let data = if keep_data { ServiceData::Keep } else { ServiceData::Destroy };
        #[derive(Serialize)]
        #[serde(rename_all = "kebab-case")]
        struct Removed {
            name: String,
            address: String,
            data_kept_at: Option<String>,
        }
        self.change(&grant, &emitter, move |m| {
            let removed = m.remove(&name, data)?;
            Ok(Removed {
                name: removed.record.name.to_string(),
                address: removed.record.address().to_string(),
                data_kept_at: removed.data_kept_at.map(|at| at.display().to_string()),
            })
        })
        .await
    }

    async fn enable(
        &self,
        name: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<String, ServiceError> {
        let grant = self.grant::<Change>(&Caller { header: &header, connection }).await?;
        self.set_enabled(&grant, name, true, &emitter).await
    }

    async fn disable(
        &self,
        name: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<String, ServiceError> {
        let grant = self.grant::<Change>(&Caller { header: &header, connection }).await?;
        self.set_enabled(&grant, name, false, &emitter).await
    }

    async fn get_option(
        &self,
        name: &str,
        option: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> Result<String, ServiceError> {
        let caller = Caller { header: &header, connection };
        let grant = self.grant::<Read>(&caller).await?;
        let name = service_name(name)?;
        check_length("the option", option)?;
        let option = option.to_owned();
        let (service, option, secret, value) = self
            .read(&grant, move |m| {
                let (spec, value) = m.get_option(&name, &option)?;
                Ok((name, option, spec.secret, value))
            })
            .await?;
        if secret {
            // A secret's value is shown only to whom may see secrets.
            self.grant::<RevealSecret>(&caller).await?;
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
        let caller = Caller { header: &header, connection };
        let grant = self.grant::<Change>(&caller).await?;
        let name = service_name(name)?;
        check_length("the option", option)?;
        check_length("the value", value)?;
        let (option, value) = (option.to_owned(), zeroize::Zeroizing::new(value.to_owned()));
        // Whether the change widens access depends on the value it replaces: decided where
        // it is replaced, so no other change can come between.
        let present = self.presence.is_proven(sender(&caller)?);
        #[derive(Serialize)]
        struct WithChange {
            #[serde(flatten)]
            view: ServiceView,
            change: serde_json::Value,
        }
        let stored = self
            .read(&grant, move |m| {
                let (spec, before) = m.get_option(&name, &option)?;
                if !present {
                    if let Some(how) = spec.widening(&before, &spec.parse(&option, &value)?) {
                        return Ok(Err(format!("Changing {option} of {name} ({how})")));
                    }
                }
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
                Ok(Ok(WithChange { view: views::service_view(m, &record), change }))
            })
            .await?;
        let result = stored.map_err(|what| Presence::refusal(&what))?;
        let tor = self.apply(&emitter).await;
        json(&Changed { result, tor })
    }

    async fn clients(
        &self,
        name: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> Result<String, ServiceError> {
        let grant = self.grant::<Read>(&Caller { header: &header, connection }).await?;
        let name = service_name(name)?;
        self.answer(&grant, move |m| Ok(views::service_view(m, &m.get(&name)?).clients)).await
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
        let caller = Caller { header: &header, connection };
        let grant = self.grant::<Change>(&caller).await?;
        if !public_key.is_empty() {
            // A key made elsewhere: whoever holds its private half reaches the service.
            self.require_presence(&grant, &caller, "Giving a key made elsewhere access to a service")?;
        }
        let name = service_name(name)?;
        let client = client_name(client)?;
        check_length("the public key", public_key)?;
        let key = if public_key.is_empty() { None } else { Some(ClientPublicKey::parse(public_key)?) };
        self.change(&grant, &emitter, move |m| {
            m.add_client(&name, client, key)?;
            Ok(views::service_view(m, &m.get(&name)?))
        })
        .await
    }

    async fn remove_client(
        &self,
        name: &str,
        client: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<String, ServiceError> {
        let grant = self.grant::<Change>(&Caller { header: &header, connection }).await?;
        let name = service_name(name)?;
        let client = client_name(client)?;
        self.change(&grant, &emitter, move |m| {
            m.remove_client(&name, &client)?;
            Ok(views::service_view(m, &m.get(&name)?))
        })
        .await
    }

    async fn keys(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> Result<String, ServiceError> {
        let grant = self.grant::<Read>(&Caller { header: &header, connection }).await?;
        self.answer(&grant, |m| Ok(m.received_keys()?.iter().map(views::key_view).collect::<Vec<KeyView>>())).await
    }

    async fn kept_data(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> Result<String, ServiceError> {
        let grant = self.grant::<Read>(&Caller { header: &header, connection }).await?;
        self.answer(&grant, |m| m.kept_data()).await
    }

    /// Deletes data set aside: no service has it and none ever gets it again, so neither tor
    /// nor the programs change. A persistent service's image waits for the programs' reconcile,
    /// run now, which overwrites its programs' keys (as root) and deletes it.
    async fn delete_kept_data(
        &self,
        ids: Vec<String>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<String, ServiceError> {
        let grant = self.grant::<Change>(&Caller { header: &header, connection }).await?;
        if ids.len() > MAX_KEPT_IDS {
            return Err(ServiceError::InvalidInput(format!("{} ids at once: {MAX_KEPT_IDS} at most", ids.len())));
        }
        for id in &ids {
            check_length("a kept data's id", id)?;
        }
        let deleted = self.answer(&grant, move |m| m.delete_kept_data(&ids)).await?;
        // Its failures are logged and tried again at the next reconcile: the data is no
        // longer listed, whatever happens to its image meanwhile.
        let _ = self.publisher.sync_daemons().await;
        // Other windows list kept data too.
        let _ = Self::announce(&emitter).await;
        Ok(deleted)
    }

    /// Gives kept data to a service: its friends get to see it, so it takes presence. The
    /// service is disabled (its program does not run), so nothing changes until it is enabled.
    async fn give_kept_data(
        &self,
        id: &str,
        service: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<String, ServiceError> {
        let caller = Caller { header: &header, connection };
        let grant = self.grant::<Change>(&caller).await?;
        check_length("a kept data's id", id)?;
        let name = service_name(service)?;
        let id = id.to_owned();
        // A refusal is said before the passphrase is asked for, not after it was typed.
        let (judged_id, judged_name) = (id.clone(), name.clone());
        self.read(&grant, move |m| m.check_giving_kept_data(&judged_id, &judged_name)).await?;
        self.require_presence(&grant, &caller, "Giving kept data to a service")?;
        #[derive(Serialize)]
        struct Given {
            kept: tails_server_core::manager::KeptData,
            service: String,
        }
        let given = self
            .answer(&grant, move |m| {
                let (kept, record) = m.give_kept_data(&id, &name)?;
                Ok(Given { kept, service: record.name.to_string() })
            })
            .await?;
        let _ = Self::announce(&emitter).await;
        Ok(given)
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
        let grant = self.grant::<Change>(&Caller { header: &header, connection }).await?;
        let name = key_name(name)?;
        check_length("the key", text)?;
        check_length("the address", address)?;
        let text = zeroize::Zeroizing::new(text.to_owned());
        let address = if address.is_empty() { None } else { Some(address.parse::<OnionAddress>()?) };
        self.change(&grant, &emitter, move |m| {
            Ok(views::key_view(&m.add_received_key(name, &text, address, persistent)?))
        })
        .await
    }

    async fn remove_key(
        &self,
        name: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<String, ServiceError> {
        let grant = self.grant::<Change>(&Caller { header: &header, connection }).await?;
        let name = key_name(name)?;
        self.change(&grant, &emitter, move |m| Ok(views::key_view(&m.remove_received_key(&name)?))).await
    }

    async fn credential(
        &self,
        name: &str,
        client: &str,
        form: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> Result<String, ServiceError> {
        let caller = Caller { header: &header, connection };
        // The form says which action: a private key needs reveal-secret, a public one read.
        let form = CredentialForm::parse(form)?;
        if form.is_secret() {
            let grant = self.grant::<RevealSecret>(&caller).await?;
            self.credential_of(&grant, name, client, form).await
        } else {
            let grant = self.grant::<Read>(&caller).await?;
            self.credential_of(&grant, name, client, form).await
        }
    }

    async fn export(
        &self,
        services: Vec<String>,
        passphrase: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> Result<Vec<u8>, ServiceError> {
        let grant = self.grant::<RevealSecret>(&Caller { header: &header, connection }).await?;
        check_length("the passphrase", passphrase)?;
        if passphrase.is_empty() {
            return Err(ServiceError::InvalidInput("the passphrase is empty".into()));
        }
        if services.len() > MAX_SERVICES_ARGUMENT {
            return Err(ServiceError::InvalidInput(format!("more than {MAX_SERVICES_ARGUMENT} services named")));
        }
        let names = services.iter().map(|s| service_name(s)).collect::<Result<Vec<_>, _>>()?;
        let document = self.read(&grant, move |m| m.export(&names)).await?;
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
        let caller = Caller { header: &header, connection };
        let grant = self.grant::<Change>(&caller).await?;
        if !dry_run {
            // A backup brings its own keys and clients: access to what it holds widens.
            self.require_presence(&grant, &caller, "Importing a backup")?;
        }
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
        // One key derivation at a time: this one may take 512 MiB (scrypt at the highest
        // work factor accepted), and the service's memory is capped.
        let permit = crate::KEY_DERIVATION.acquire().await.map_err(|e| ServiceError::Failed(e.to_string()))?;
        let mut document = tokio::task::spawn_blocking(move || backup::decrypt(&backup, &passphrase))
            .await
            .map_err(|e| ServiceError::Failed(e.to_string()))??;
        drop(permit);
        // Through the service an import never lowers protection: nothing open, nothing
        // published or opened to the LAN until the person turns it on.
        let held_back = document.hold_back_lowered_protection()?;
        let enabled: Vec<String> = document.services.iter().filter(|r| r.enabled).map(|r| r.name.to_string()).collect();
        let report = self
            .read(&grant, move |m| {
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
            replacing_widens: Vec<String>,
        }
        // Kept keys are reported as `key NAME`.
        let changed_any = !report.added.is_empty() || !report.replaced.is_empty();
        let keys_touched = report.added.iter().chain(&report.replaced).any(|n| n.starts_with("key "));
        let touches_tor =
            keys_touched || !report.replaced.is_empty() || report.added.iter().any(|n| enabled.contains(n));
        let result = Imported {
            dry_run,
            added: report.added,
            replaced: report.replaced,
            skipped: report.skipped,
            held_back,
            replacing_widens: report.replacing_widens,
        };
        let tor = if dry_run || !changed_any {
            TorOutcome::nothing_to_do()
        } else if touches_tor {
            self.apply(&emitter).await
        } else {
            let _ = Self::announce(&emitter).await;
            TorOutcome::nothing_to_do()
        };
        json(&Changed { result, tor })
    }

    /// The Persistent Storage passphrase, proving a person is there: see [`crate::presence`].
    async fn prove_presence(
        &self,
        passphrase: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> Result<u32, ServiceError> {
        let caller = Caller { header: &header, connection };
        // Only callers polkit lets in at all may try passphrases.
        self.grant::<Read>(&caller).await?;
        let passphrase = zeroize::Zeroizing::new(passphrase.to_owned());
        let kept = self.presence.prove(sender(&caller)?, passphrase).await?;
        Ok(u32::try_from(kept.as_secs()).unwrap_or(u32::MAX))
    }

    async fn restore(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> Result<String, ServiceError> {
        self.grant::<Change>(&Caller { header: &header, connection }).await?;
        self.require_unlocked()?;
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
        self.grant::<Change>(&Caller { header: &header, connection }).await?;
        tokio::task::spawn_blocking(tails_server_core::store::let_go_of_held_databases)
            .await
            .map_err(|e| ServiceError::Failed(format!("internal error: {e}")))
    }

    /// Emitted after every change, made through a call or by tor (tor found or lost, a
    /// service published again, a descriptor uploaded, bootstrap progress). It names nothing:
    /// names need the read action.
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

    /// Whether tails-server is installed again at every login (`tails-server setup` done):
    /// on Tails, Additional Software's list names it; elsewhere always. Read from the file at
    /// each get (setup runs in another process), hence no change signal. False while the
    /// Persistent Storage is locked or the list cannot be read: the window then says how to
    /// set it up, which does no harm.
    #[zbus(property(emits_changed_signal = "false"))]
    fn installed_at_every_login(&self) -> bool {
        match &self.persistent_storage {
            None => true,
            Some(mount) => {
                *self.unlocked.borrow()
                    && tails_server_core::tails::setup::installed_at_every_login(mount).unwrap_or(false)
            }
        }
    }
}

impl Server {
    async fn set_enabled(
        &self,
        grant: &Grant<Change>,
        name: &str,
        enabled: bool,
        emitter: &SignalEmitter<'_>,
    ) -> Result<String, ServiceError> {
        self.require_unlocked()?;
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
        let tor = self.apply(emitter).await;
        let view = self.read(grant, move |m| Ok(views::service_view(m, &m.get(&name)?))).await?;
        json(&Changed { result: view, tor })
    }

    async fn credential_of<A: PolkitAction>(
        &self,
        grant: &Grant<A>,
        name: &str,
        client: &str,
        form: CredentialForm,
    ) -> Result<String, ServiceError> {
        let name = service_name(name)?;
        let client = client_name(client)?;
        self.answer(grant, move |m| credential_document(m, &name, &client, form)).await
    }
}

/// Kept data deleted by one call, at most.
const MAX_KEPT_IDS: usize = 256;

/// `Add`'s options map, checked as the CLI checks its flags.
fn add_request(kind: &str, options: &HashMap<String, String>) -> Result<AddRequest, ServiceError> {
    check_length("the kind", kind)?;
    let mut request = AddRequest::new(kind);
    for (key, value) in options {
        check_length(key, value)?;
        let port = |v: &str| {
            v.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                ServiceError::InvalidInput(format!("invalid port {v:?} for {key}: expected a number from 1 to 65535"))
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
    Ok(request)
}

/// The forms `Credential` gives a client's key in.
#[derive(Clone, Copy)]
enum CredentialForm {
    /// `<56-char-onion>:descriptor:x25519:<private key>`, the friend's `.auth_private` line.
    AuthPrivate,
    /// The private key alone, for Tor Browser's prompt.
    Key,
    /// `descriptor:x25519:<public key>`, the service side's `.auth` line: no secret.
    Auth,
}

impl CredentialForm {
    fn parse(form: &str) -> Result<Self, ServiceError> {
        match form {
            "auth-private" => Ok(Self::AuthPrivate),
            "key" => Ok(Self::Key),
            "auth" => Ok(Self::Auth),
            other => Err(ServiceError::InvalidInput(format!(
                "unknown credential form {other:?}: expected auth-private, key or auth"
            ))),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::AuthPrivate => "auth-private",
            Self::Key => "key",
            Self::Auth => "auth",
        }
    }

    fn is_secret(self) -> bool {
        !matches!(self, Self::Auth)
    }
}

fn credential_document(
    m: &mut Manager,
    name: &ServiceName,
    client: &ClientName,
    form: CredentialForm,
) -> tails_server_core::Result<serde_json::Value> {
    let (record, client) = m.client(name, client)?;
    let no_key = || Error::NoPrivateKey { service: record.name.to_string(), client: client.name.to_string() };
    let value = match form {
        CredentialForm::AuthPrivate => {
            client.secret_key.as_ref().ok_or_else(no_key)?.auth_private_line(&record.address())
        }
        CredentialForm::Key => client.secret_key.as_ref().ok_or_else(no_key)?.to_base32(),
        CredentialForm::Auth => zeroize::Zeroizing::new(client.public_key.auth_line()),
    };
    Ok(serde_json::json!({
        "service": record.name.as_str(),
        "client": client.name.as_str(),
        "address": record.address().to_string(),
        "form": form.name(),
        "value": value.as_str(),
    }))
}
