//! The CLI as a client of the system service. On Tails the logged-in user can read neither
//! the store nor tor's control port: when not root, without `--state-dir`, and with
//! `org.boum.tails.Server` on the system bus, commands go through the service and print
//! the same outputs, with the same exit statuses, as in direct mode. Commands the service
//! does not offer yet say so.

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

use tails_server_core::catalog::Catalog;
use tails_server_core::manager::KeptData;
use tails_server_dbus::views::{KeyView, ServiceView, StatusView};
use tails_server_dbus::{ServerProxy, ServiceError, BUS_NAME};

use std::collections::HashMap;

use super::kept::{self, KeptCommand};
use super::keys::{self, KeyCommand};
use super::output::{self, Printer};
use super::{Cli, ClientCommand, Command, CredentialForm};

/// Where a command goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// This process opens the store itself.
    Direct,
    /// Through the system service.
    Service,
    /// The system service is installed, but not there: on Tails the person's own store
    /// would be an empty one in the amnesic home, and what they add there lost at shutdown.
    ServiceMissing,
}

/// The one rule: root, a state directory given, or a command the service does not serve
/// work directly; otherwise the service when it is on the bus; and never a store of one's
/// own where the service is installed (its bus policy file is there).
fn route(root: bool, state_dir_given: bool, served: bool, installed: bool, on_bus: bool) -> Route {
    match (root || state_dir_given || !served, on_bus, installed) {
        (true, _, _) => Route::Direct,
        (false, true, _) => Route::Service,
        (false, false, true) => Route::ServiceMissing,
        (false, false, false) => Route::Direct,
    }
}

/// Whether this command goes through the service (Some: the runtime to call it on); an
/// error when it should and cannot.
pub fn wanted(cli: &Cli) -> Result<Option<tokio::runtime::Runtime>> {
    let served = !matches!(
        cli.command,
        Command::Service { .. }
            | Command::SocksProbe
            | Command::Daemon
            | Command::Completions { .. }
            | Command::Man
            | Command::Catalog
            | Command::Setup { .. }
    );
    let root = tails_server_core::unix::euid() == 0;
    if root || cli.state_dir.is_some() || !served {
        // Decided without asking the bus.
        return Ok(None);
    }
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")?;
    let on_bus = runtime.block_on(async {
        let connection = zbus::Connection::system().await.ok()?;
        let dbus = zbus::fdo::DBusProxy::new(&connection).await.ok()?;
        dbus.name_has_owner(zbus::names::BusName::try_from(BUS_NAME).ok()?).await.ok()
    });
    let installed = std::path::Path::new(tails_server_core::tails::SERVICE_BUS_POLICY).exists();
    match route(root, cli.state_dir.is_some(), served, installed, on_bus.unwrap_or(false)) {
        Route::Direct => Ok(None),
        Route::Service => Ok(Some(runtime)),
        Route::ServiceMissing => bail!(
            "the tails-server service is not running: nothing answers as {BUS_NAME} on the system bus, so your \
             services cannot be managed from here (this command did nothing). See why with `systemctl status \
             tails-server` and `journalctl -u tails-server`"
        ),
    }
}

/// Asks the system service to close the store's database, which it keeps open between
/// changes (a command run as root meanwhile). Quietly does nothing when there is no
/// service; the caller then waits for the database, and says who holds it.
pub fn ask_service_to_close_store() {
    // A thread of its own: the caller may be inside an async runtime.
    let ask = std::thread::spawn(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
        runtime.block_on(async {
            let call = async {
                let connection = zbus::Connection::system().await.ok()?;
                ServerProxy::new(&connection).await.ok()?.close_store().await.ok()
            };
            tokio::time::timeout(std::time::Duration::from_secs(5), call).await.ok().flatten()
        })
    });
    let _ = ask.join();
}

/// One form of a client's credential, as the service returns it; wiped when dropped.
#[derive(Deserialize)]
struct CredentialValue {
    value: zeroize::Zeroizing<String>,
}

/// What a change did to tor, as the service reports it.
#[derive(Deserialize)]
struct TorOutcome {
    applied: bool,
    pending: Vec<String>,
    failed: Vec<String>,
}

/// A change's answer: the changed object (a service, by default) and what tor did.
#[derive(Deserialize)]
struct Changed<V = ServiceView> {
    #[serde(flatten)]
    view: V,
    tor: TorOutcome,
}

/// The service's answer to an error, as the CLI says it (the message is the CLI's own).
fn failed(e: ServiceError) -> anyhow::Error {
    match e {
        ServiceError::ZBus(e) => anyhow!("cannot talk to the tails-server service: {e}"),
        other => anyhow!("{}", other.message()),
    }
}

/// Exit 3 when the change is stored but tor could not be told, as in direct mode.
fn after_change(tor: &TorOutcome) -> Result<()> {
    for failure in &tor.failed {
        eprintln!("tails-server: warning: {failure}");
    }
    if tor.applied {
        return Ok(());
    }
    Err(super::TorPending(format!(
        "saved, but tor could not be updated:\n  {}\n  the tails-server service applies it as soon as tor answers",
        tor.pending.join("\n  ")
    ))
    .into())
}

/// The Persistent Storage passphrase, when the service asks for a person's presence.
struct Presence<'a> {
    /// `--storage-passphrase-file`: its first line, instead of asking.
    file: Option<&'a std::path::Path>,
}

/// Wrong passphrases typed on the terminal before giving up.
const PRESENCE_ATTEMPTS: usize = 3;

impl Presence<'_> {
    /// Proves the person's presence to the service (`why` is the service's reason).
    async fn prove(&self, server: &ServerProxy<'_>, why: &str) -> Result<()> {
        if let Some(path) = self.file {
            let passphrase = super::secret_input::first_line_of(path, "Persistent Storage passphrase")?;
            server.prove_presence(&passphrase).await.map_err(failed)?;
            return Ok(());
        }
        if std::fs::File::open("/dev/tty").is_err() {
            bail!(
                "{why}. There is no terminal to ask on: give --storage-passphrase-file FILE (the passphrase on \
                 its first line)"
            );
        }
        eprintln!("{why}.");
        for attempt in 1..=PRESENCE_ATTEMPTS {
            let passphrase = zeroize::Zeroizing::new(
                rpassword::prompt_password("Persistent Storage passphrase (not shown): ")
                    .context("cannot read from the terminal")?,
            );
            match server.prove_presence(&passphrase).await {
                Ok(_) => return Ok(()),
                Err(ServiceError::NotAuthorized(message)) if attempt < PRESENCE_ATTEMPTS => {
                    eprintln!("tails-server: {message}; once more.")
                }
                Err(e) => return Err(failed(e)),
            }
        }
        unreachable!("the last attempt returns")
    }

    /// `call`, and once more after proving the person's presence if the service asks for it.
    /// The outer error: the presence could not be proven.
    async fn call<T, F, Fut>(&self, server: &ServerProxy<'_>, call: F) -> Result<Result<T, ServiceError>>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, ServiceError>>,
    {
        match call().await {
            Err(ServiceError::PresenceRequired(why)) => {
                self.prove(server, &why).await?;
                Ok(call().await)
            }
            other => Ok(other),
        }
    }

    /// A new client's secret forms (`key`, `auth-private`), or None when they cannot be
    /// shown now (the passphrase not at hand, or not typed right): the client is added
    /// either way, and its key shown later by `client show`.
    async fn new_key(
        &self,
        server: &ServerProxy<'_>,
        service: &str,
        client: &str,
    ) -> Result<Option<(zeroize::Zeroizing<String>, zeroize::Zeroizing<String>)>> {
        let show = |form: &'static str| server.credential(service, client, form);
        let key: CredentialValue = match self.call(server, || show("key")).await {
            Ok(answer) => parse(&answer.map_err(failed)?)?,
            Err(e) => {
                eprintln!("tails-server: {client}'s key is not shown: {e:#}");
                return Ok(None);
            }
        };
        let line: CredentialValue = parse(&show("auth-private").await.map_err(failed)?)?;
        Ok(Some((key.value, line.value)))
    }
}

fn parse<T: for<'de> Deserialize<'de>>(json: &str) -> Result<T> {
    serde_json::from_str(json).context("the tails-server service answered something unexpected")
}

pub fn run(cli: &Cli, runtime: tokio::runtime::Runtime) -> Result<()> {
    let out = Printer::new(cli.format);
    let presence = Presence { file: cli.storage_passphrase_file.as_deref() };
    runtime.block_on(async {
        let connection = zbus::Connection::system().await.context("cannot reach the system bus")?;
        let server = ServerProxy::new(&connection).await.context("cannot reach the tails-server service")?;
        match &cli.command {
            Command::List => {
                let views: Vec<ServiceView> = parse(&server.list().await.map_err(failed)?)?;
                out.list_views(&views)
            }
            Command::Info { name, details } => {
                let view: ServiceView = parse(&server.info(name.as_str()).await.map_err(failed)?)?;
                // The kind's words come from the built-in catalog (drop-ins live in the store).
                let catalog = Catalog::load(None);
                let kind = catalog.get(&view.kind).ok();
                let specs = kind.map(|k| k.all_options()).unwrap_or_default();
                out.info_view(&view, kind, &specs, &service_data_dir(&view)?, *details)
            }
            Command::Status { name, probe } => {
                let mut view: StatusView = parse(&server.status(name.as_str(), *probe).await.map_err(failed)?)?;
                let tor = std::mem::take(&mut view.tor);
                out.status_and_outcome(view, tor)
            }
            Command::Enable { name, wait, timeout } => {
                let changed: Changed = parse(&server.enable(name.as_str()).await.map_err(failed)?)?;
                let text = if changed.tor.applied {
                    format!("{name} is enabled and registered with tor at {}.", changed.view.address)
                } else {
                    format!("{name} is enabled.")
                };
                out.changed(&text, "service", &changed.view)?;
                after_change(&changed.tor)?;
                if *wait {
                    // The service's loop follows tor's upload events; this waits for its record.
                    let seconds = u32::try_from(*timeout).unwrap_or(u32::MAX).clamp(1, 3600);
                    server.wait_uploaded(name.as_str(), seconds).await.map_err(failed)?;
                    eprintln!(
                        "The descriptor is uploaded: clients holding a key can now reach {}.",
                        changed.view.address
                    );
                }
                Ok(())
            }
            Command::Disable { name } => {
                let changed: Changed = parse(&server.disable(name.as_str()).await.map_err(failed)?)?;
                out.changed(&format!("{name} is disabled."), "service", &changed.view)?;
                after_change(&changed.tor)
            }
            Command::Remove { name, yes, keep_data } => {
                if !yes {
                    super::confirm_removal(name, *keep_data)?;
                }
                #[derive(Deserialize)]
                struct Removed {
                    #[serde(flatten)]
                    removed: output::RemovedService,
                    tor: TorOutcome,
                }
                let answer: Removed = parse(&server.remove(name.as_str(), *keep_data).await.map_err(failed)?)?;
                out.removed(&answer.removed)?;
                after_change(&answer.tor)
            }
            Command::GetOption { name, option } => {
                #[derive(Deserialize)]
                struct Got {
                    value: tails_server_core::options::OptionValue,
                }
                let got: Got = parse(
                    &presence.call(&server, || server.get_option(name.as_str(), option)).await?.map_err(failed)?,
                )?;
                out.option_value(name, option, &got.value)
            }
            Command::SetOption { name, option, value } => {
                // Whether the option is secret decides how its value may be given; the
                // built-in catalog knows, else the service refuses a bad value anyway.
                let secret = Catalog::load(None)
                    .kinds()
                    .flat_map(|k| k.options.get(option.as_str()).map(|spec| spec.secret))
                    .any(|s| s);
                let raw = if secret {
                    super::secret_input::read(name, option, value.as_deref())?
                } else {
                    zeroize::Zeroizing::new(value.clone().ok_or_else(|| {
                        anyhow!("give the new value of {option}: `tails-server set-option {name} {option} VALUE`")
                    })?)
                };
                #[derive(Deserialize)]
                struct Change {
                    secret: bool,
                    changed: bool,
                    value: tails_server_core::options::OptionValue,
                    previous: tails_server_core::options::OptionValue,
                }
                #[derive(Deserialize)]
                struct SetAnswer {
                    #[serde(flatten)]
                    view: ServiceView,
                    change: Change,
                    tor: TorOutcome,
                }
                let answer: SetAnswer = parse(
                    &presence
                        .call(&server, || server.set_option(name.as_str(), option, &raw))
                        .await?
                        .map_err(failed)?,
                )?;
                let change = answer.change;
                // Secret values come back hidden: whether they changed is said apart.
                let previous = match (change.secret, change.changed) {
                    (true, true) => tails_server_core::options::OptionValue::String("(previous)".into()),
                    (true, false) => change.value.clone(),
                    (false, _) => change.previous,
                };
                out.option_changed(&answer.view, option, change.secret, &change.value, &previous)?;
                after_change(&answer.tor)
            }
            Command::Client(ClientCommand::Add { name, client, public_key }) => {
                let key = public_key.map(|k| k.auth_line()).unwrap_or_default();
                let changed: Changed = parse(
                    &presence
                        .call(&server, || server.add_client(name.as_str(), client.as_str(), &key))
                        .await?
                        .map_err(failed)?,
                )?;
                let added = changed
                    .view
                    .clients
                    .iter()
                    .find(|c| c.name == client.as_str())
                    .ok_or_else(|| anyhow!("the tails-server service did not add {client}"))?;
                // The new key pair's secret forms, shown once, as in direct mode.
                let shown = if public_key.is_none() {
                    presence.new_key(&server, name.as_str(), client.as_str()).await?
                } else {
                    None
                };
                let new_key = match (&shown, public_key) {
                    (Some((key, line)), _) => output::NewKey::Shown { key, line },
                    (None, Some(_)) => output::NewKey::PublicOnly,
                    (None, None) => output::NewKey::Withheld,
                };
                let catalog = Catalog::load(None);
                let steps = output::steps(catalog.get(&changed.view.kind).ok(), &changed.view, client.as_str());
                out.client_added_view(name.as_str(), &changed.view.address, added, new_key, &steps)?;
                after_change(&changed.tor)
            }
            Command::Client(ClientCommand::Remove { name, client }) => {
                let changed: Changed =
                    parse(&server.remove_client(name.as_str(), client.as_str()).await.map_err(failed)?)?;
                out.changed(
                    &format!("Removed client {client} of service {name} from the store."),
                    "service",
                    &changed.view,
                )?;
                after_change(&changed.tor)
            }
            Command::Add { kind, name, local_port, remote_port, options, client, allow_anyone_with_the_address } => {
                if *allow_anyone_with_the_address {
                    bail!(
                        "turning client authorization off is not offered by the tails-server service: run it as root"
                    );
                }
                let mut arguments: HashMap<String, String> =
                    options.iter().map(|(option, value)| (format!("option.{option}"), value.clone())).collect();
                arguments.insert("first-client".into(), client.to_string());
                if let Some(name) = name {
                    arguments.insert("name".into(), name.to_string());
                }
                if let Some(port) = local_port {
                    arguments.insert("local-port".into(), port.to_string());
                }
                if let Some(port) = remote_port {
                    arguments.insert("remote-port".into(), port.to_string());
                }
                let changed: Changed =
                    parse(&presence.call(&server, || server.add(kind, arguments.clone())).await?.map_err(failed)?)?;
                let service = changed.view.name.clone();
                let new_key = presence.new_key(&server, &service, client.as_str()).await?;
                let secret = new_key.as_ref().map(|(key, line)| output::SecretView {
                    name: client.as_str(),
                    key,
                    auth_private: line,
                });
                let data_dir = service_data_dir(&changed.view)?;
                let catalog = Catalog::load(None);
                out.added_view(changed.view.clone(), catalog.get(&changed.view.kind).ok(), &data_dir, secret)?;
                if new_key.is_none() {
                    eprintln!(
                        "tails-server: show {client}'s key later with: tails-server client show {service} {client}"
                    );
                }
                after_change(&changed.tor)
            }
            Command::Client(ClientCommand::Show { name, client, form, output: file, force }) => {
                let wire = match form {
                    CredentialForm::AuthPrivate => "auth-private",
                    CredentialForm::Key | CredentialForm::Qr => "key",
                    CredentialForm::Auth => "auth",
                };
                let view: ServiceView = parse(&server.info(name.as_str()).await.map_err(failed)?)?;
                let value: CredentialValue = parse(
                    &presence
                        .call(&server, || server.credential(name.as_str(), client.as_str(), wire))
                        .await?
                        .map_err(failed)?,
                )?;
                let who =
                    output::CredentialOf { service: name.as_str(), address: &view.address, client: client.as_str() };
                super::show_credential_value(&who, *form, &value.value, file.as_deref(), *force, &out)
            }
            Command::Export { output: file, services, passphrase_file, force } => {
                super::transfer::check_private_target(file, *force)?;
                let names: Vec<String> = if services.is_empty() {
                    let views: Vec<ServiceView> = parse(&server.list().await.map_err(failed)?)?;
                    views.into_iter().map(|v| v.name).collect()
                } else {
                    services.iter().map(|s| s.to_string()).collect()
                };
                if names.is_empty() {
                    bail!("there is no service to export");
                }
                let passphrase = super::transfer::passphrase(passphrase_file.as_deref(), true)?;
                let encrypted = zeroize::Zeroizing::new(
                    presence
                        .call(&server, || server.export(services.iter().map(|s| s.to_string()).collect(), &passphrase))
                        .await?
                        .map_err(failed)?,
                );
                super::transfer::write_private_file(file, &encrypted, *force)?;
                super::transfer::exported(&names, file, &out)
            }
            Command::Import { file, passphrase_file, dry_run, on_conflict, accept_lower_protection } => {
                if *accept_lower_protection {
                    bail!(
                        "--accept-lower-protection is for root, in direct mode: through the service an import never \
                         lowers protection (what the backup asks for is held back, to be turned on by you)"
                    );
                }
                let bytes = super::transfer::read_backup_bytes(file)?;
                let passphrase = super::transfer::passphrase(passphrase_file.as_deref(), false)?;
                let rule = match on_conflict {
                    super::transfer::ConflictArg::Fail => "fail",
                    super::transfer::ConflictArg::Skip => "skip",
                    super::transfer::ConflictArg::Replace => "replace",
                };
                #[derive(Deserialize)]
                #[serde(rename_all = "kebab-case")]
                struct Imported {
                    added: Vec<String>,
                    replaced: Vec<String>,
                    skipped: Vec<String>,
                    #[serde(default)]
                    held_back: Vec<String>,
                    #[serde(default)]
                    replacing_widens: Vec<String>,
                    tor: TorOutcome,
                }
                let answer = presence
                    .call(&server, || server.import(bytes.clone(), &passphrase, rule, *dry_run))
                    .await?
                    .map_err(|e| match e {
                        ServiceError::Conflict(message) => {
                            super::transfer::conflict_hint(tails_server_core::Error::ImportConflict(message))
                        }
                        other => failed(other),
                    })?;
                let imported: Imported = parse(&answer)?;
                let report = tails_server_core::ImportReport {
                    added: imported.added,
                    replaced: imported.replaced,
                    skipped: imported.skipped,
                    replacing_widens: imported.replacing_widens,
                };
                super::transfer::print_import(&report, *dry_run, &imported.held_back, &out)?;
                after_change(&imported.tor)
            }
            Command::Key(command) => run_key(&server, command, &out).await,
            Command::KeptData(KeptCommand::List) => {
                kept::list(&parse::<Vec<KeptData>>(&server.kept_data().await.map_err(failed)?)?, &out)
            }
            Command::KeptData(KeptCommand::Delete { ids, yes }) => {
                if !yes {
                    kept::confirm_deletion(ids)?;
                }
                let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
                kept::deleted(&parse::<Vec<KeptData>>(&server.delete_kept_data(&ids).await.map_err(failed)?)?, &out)
            }
            Command::KeptData(KeptCommand::Give { id, service }) => {
                let answer =
                    presence.call(&server, || server.give_kept_data(id, service.as_str())).await?.map_err(failed)?;
                kept::given(&parse::<kept::Given>(&answer)?, &out)
            }
            Command::Client(ClientCommand::List { name }) => {
                let view: ServiceView = parse(&server.info(name.as_str()).await.map_err(failed)?)?;
                out.client_views(&view)
            }
            _ => bail!(
                "this command is not offered by the tails-server service yet; run it as root, or give \
                 --state-dir to use a store of your own"
            ),
        }
    })
}

/// `key` through the service: the same texts as in direct mode.
async fn run_key(server: &ServerProxy<'_>, command: &KeyCommand, out: &Printer) -> Result<()> {
    match command {
        KeyCommand::Add { name, file, address, until_shutdown } => {
            let text = keys::read_key_text(file.as_deref(), address.is_some())?;
            let address = address.map(|a| a.to_string()).unwrap_or_default();
            let changed: Changed<KeyView> =
                parse(&server.add_key(name.as_str(), &text, &address, !until_shutdown).await.map_err(failed)?)?;
            keys::added(&changed.view, out)?;
            after_change(&changed.tor)
        }
        KeyCommand::List => keys::list(&parse::<Vec<KeyView>>(&server.keys().await.map_err(failed)?)?, out),
        KeyCommand::Show { name } => {
            let views: Vec<KeyView> = parse(&server.keys().await.map_err(failed)?)?;
            match views.iter().find(|v| v.name == name.as_str()) {
                Some(view) => keys::show(view, out),
                None => Err(tails_server_core::Error::NoSuchKey(name.to_string()).into()),
            }
        }
        KeyCommand::Remove { name } => {
            let changed: Changed<KeyView> = parse(&server.remove_key(name.as_str()).await.map_err(failed)?)?;
            keys::removed(&changed.view, out)?;
            after_change(&changed.tor)
        }
    }
}

/// Where the system service keeps a service's files.
fn service_data_dir(view: &ServiceView) -> Result<std::path::PathBuf> {
    let persistent = view.options.get(tails_server_core::options::PERSISTENCE).and_then(|v| v.as_bool()) != Some(false);
    let name = tails_server_core::names::ServiceName::new(&view.name)
        .with_context(|| format!("the tails-server service named a service {:?}", view.name))?;
    Ok(tails_server_core::system::system_service_data_dir(&name, persistent))
}

#[cfg(test)]
mod tests {
    use super::{route, Route};

    #[test]
    fn where_the_service_is_installed_a_user_never_gets_a_store_of_their_own() {
        // (root, --state-dir, served by the service, installed, on the bus)
        assert_eq!(route(false, false, true, true, true), Route::Service);
        assert_eq!(route(false, false, true, true, false), Route::ServiceMissing);
        assert_eq!(route(false, false, true, false, true), Route::Service, "a service without our policy file");
        assert_eq!(route(false, false, true, false, false), Route::Direct, "a developer's machine");
        assert_eq!(route(true, false, true, true, false), Route::Direct, "root works on the store");
        assert_eq!(route(false, true, true, true, false), Route::Direct, "a state directory of one's own");
        assert_eq!(route(false, false, false, true, false), Route::Direct, "catalog, completions, man");
    }
}
