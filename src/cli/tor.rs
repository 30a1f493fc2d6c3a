//! The commands that talk to tor: enable/disable, status, restore, daemon, and the
//! reconcile that follows every change. What to publish is decided by the library's
//! [`Publisher`]; this module connects, calls it and says what happened.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use zeroize::Zeroizing;

use tails_server_core::daemon::{self, DaemonOptions};
use tails_server_core::model::ServiceRecord;
use tails_server_core::names::{KeyName, ServiceName};
use tails_server_core::publish;
use tails_server_core::reconcile::{Action, DaemonControl, KeyAction, Ledger, Pending, Publisher, SyncReport};
use tails_server_core::tor::{ControlConfig, ControlTarget, TorControl};
use tails_server_core::{Config, Error, ErrorKind};

use super::output::{rfc3339, Printer, TorState};

#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Connecting to tor")]
pub struct TorArgs {
    /// tor's control port, HOST:PORT (overrides --control-socket)
    #[arg(long, global = true, env = "TAILS_SERVER_CONTROL_PORT", value_name = "HOST:PORT")]
    control_port: Option<String>,
    /// tor's control socket [default: /run/tor/control, else 127.0.0.1:9052, Tails'
    /// ControlPort, while that socket does not exist]
    #[arg(long, global = true, env = "TAILS_SERVER_CONTROL_SOCKET", value_name = "PATH")]
    control_socket: Option<PathBuf>,
    /// tor's authentication cookie [default: the file tor names]
    #[arg(long, global = true, env = "TAILS_SERVER_COOKIE_FILE", value_name = "FILE")]
    cookie_file: Option<PathBuf>,
    /// A file whose first line is tor's control password (for HashedControlPassword)
    #[arg(long, global = true, env = "TAILS_SERVER_PASSWORD_FILE", value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Ask for tor's control password on the terminal
    #[arg(long, global = true)]
    ask_password: bool,
    /// The user tor runs as, when it is not debian-tor/tor/_tor (repeatable; your own user
    /// for a tor you run yourself): keys and passwords go only to a control port served by
    /// root or these users
    #[arg(long, global = true, env = "TAILS_SERVER_TOR_USER", value_name = "USER", value_delimiter = ',')]
    tor_user: Vec<String>,
    /// Send keys to the control port given although who serves it cannot be checked here (a
    /// tor on another computer). A port this computer shows to be served by anyone but root
    /// or tor's user is refused all the same
    #[arg(long, global = true, env = "TAILS_SERVER_TRUST_CONTROL_PORT")]
    trust_control_port: bool,
}

/// A change was saved but tor does not run it yet: exit status 3, so that scripts can
/// tell "done" from "saved, applied later".
#[derive(Debug)]
pub struct TorPending(pub String);

impl std::fmt::Display for TorPending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TorPending {}

/// The exit status for a change that was saved but could not be applied to tor yet (and
/// for `status` when tor does not run what is stored, or cannot be asked).
pub const EXIT_PENDING: u8 = 3;

/// `status --probe` could not connect to the service through tor: exit status 4.
#[derive(Debug)]
pub struct Unreachable(pub String);

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unreachable {}

pub const EXIT_UNREACHABLE: u8 = 4;

/// What a command changed: tor refusing that is an error, refusing anything else a warning.
#[derive(Debug, Clone, Copy)]
pub enum Affected<'a> {
    All,
    Service(&'a ServiceName),
    Key(&'a KeyName),
}

impl Affected<'_> {
    fn service(self, name: &str) -> bool {
        match self {
            Affected::All => true,
            Affected::Service(service) => service.as_str() == name,
            Affected::Key(_) => false,
        }
    }

    fn key(self, name: &str) -> bool {
        match self {
            Affected::All => true,
            Affected::Key(key) => key.as_str() == name,
            Affected::Service(_) => false,
        }
    }
}

pub fn control_config(args: &TorArgs) -> Result<ControlConfig> {
    let mut config = match (&args.control_port, &args.control_socket) {
        (Some(port), _) => ControlConfig::new(ControlTarget::Tcp(port.clone())),
        (None, Some(path)) => ControlConfig::new(ControlTarget::Unix(path.clone())),
        (None, None) => ControlConfig::system_default(),
    };
    config.cookie_file = args.cookie_file.clone();
    config.tor_users = args.tor_user.clone();
    if args.trust_control_port {
        if args.control_port.is_none() && args.control_socket.is_none() {
            bail!("--trust-control-port vouches for the port given with --control-port or --control-socket: give one");
        }
        config.pinned = true;
    }
    if let Some(path) = &args.password_file {
        config.password = Some(super::secret_input::first_line_of(path, "password")?);
    } else if args.ask_password {
        let password = rpassword::prompt_password("tor control password: ").context("cannot read the password")?;
        config.password = Some(Zeroizing::new(password));
    }
    Ok(config)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")
}

pub fn publisher(args: &TorArgs, config: Config) -> Result<Publisher> {
    let mut publisher = Publisher::new(config, control_config(args)?);
    publisher.daemons = DaemonControl::detect();
    Ok(publisher)
}

/// Whether an error means tor could not be reached at all (as opposed to tor refusing).
fn unreachable(e: &Error) -> bool {
    matches!(e.kind(), ErrorKind::TorUnavailable)
}

/// Connects; None when tor cannot be reached (a refusal is an error).
async fn connect(publisher: &Publisher) -> Result<(Option<TorControl>, Option<Error>)> {
    match publisher.connect().await {
        Ok(tor) => Ok((Some(tor), None)),
        Err(e) if unreachable(&e) => Ok((None, Some(e))),
        Err(e) => Err(e.into()),
    }
}

/// Tells on stderr what a reconcile did besides leaving services as they were. Returns
/// whether what the command changed (`affected`) failed.
fn tell(report: &SyncReport, affected: Affected<'_>) -> bool {
    for name in report.names(Action::Published) {
        eprintln!("{name}: published on tor.");
    }
    for name in report.names(Action::Republished) {
        eprintln!("{name}: republished with its current clients and ports; connected clients will reconnect.");
    }
    for name in report.names(Action::Removed) {
        eprintln!("{name}: removed from tor.");
    }
    for (name, action) in &report.keys {
        match action {
            KeyAction::Registered => eprintln!("key {name}: given to tor."),
            KeyAction::Removed => eprintln!("key {name}: taken back from tor."),
            KeyAction::Unchanged => {}
        }
    }
    let mut affected_failed = tell_daemons(&report.daemons, affected);
    for (name, error) in &report.failed {
        let ours = affected.service(name);
        affected_failed |= ours;
        let tag = if ours { "error" } else { "warning" };
        eprintln!("tails-server: {tag}: {name}: tor did not take it: {error}");
    }
    for (name, error) in &report.failed_keys {
        let ours = affected.key(name);
        affected_failed |= ours;
        let tag = if ours { "error" } else { "warning" };
        eprintln!("tails-server: {tag}: key {name}: tor did not take it: {error}");
    }
    affected_failed
}

/// Tells what was done to the services' programs; returns whether `affected`'s failed.
fn tell_daemons(report: &tails_server_core::system::DaemonReport, affected: Affected<'_>) -> bool {
    for name in &report.started {
        eprintln!("{name}: its program is running.");
    }
    for name in &report.stopped {
        eprintln!("{name}: its program is stopped.");
    }
    for (name, at) in &report.set_aside {
        eprintln!(
            "tails-server: warning: {name}: data of another service of that name was found and set aside in {}; \
             this service starts without it.",
            at.display()
        );
    }
    for (image, error) in &report.data_failed {
        eprintln!(
            "tails-server: warning: {}: not let go or destroyed yet (tried again at the next start): {error}",
            image.display()
        );
    }
    let mut affected_failed = false;
    for (name, error) in &report.failed {
        let ours = affected.service(name);
        affected_failed |= ours;
        let tag = if ours { "error" } else { "warning" };
        eprintln!("tails-server: {tag}: {name}: its program cannot run: {error}");
    }
    affected_failed
}

fn warn(warnings: &[String]) {
    for warning in warnings {
        eprintln!("tails-server: WARNING: {warning}");
    }
}

/// Says what is still to be done when tor could not be told, and fails with
/// [`TorPending`] if anything is; succeeds quietly when tor has nothing to change.
async fn pending_after(publisher: &Publisher, why: &Error) -> Result<()> {
    let pending = publisher.pending().await?;
    if pending.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = pending
        .iter()
        .map(|p| match p {
            Pending::StillRunning { name, .. } => format!(
                "tor may still run {name} until tor restarts or tails-server reaches it (it will be removed then)"
            ),
            Pending::Outdated { name } => format!(
                "tor may still run {name} with its previous clients and ports until tails-server reaches it \
                 (it will be republished then)"
            ),
            Pending::NotPublished { name } => {
                format!("{name} is not published yet (it will be when tails-server reaches tor)")
            }
            Pending::KeyNotGiven { name } => {
                format!("tor does not have key {name} yet (it will when tails-server reaches tor)")
            }
            Pending::KeyStillGiven { name } => format!(
                "tor may still hold key {name} until tor restarts or tails-server reaches it (it will be taken back then)"
            ),
        })
        .collect();
    Err(TorPending(format!(
        "saved, but tor could not be updated: {why}\n  {}\n  `tails-server daemon` (or the next login) applies it as soon as tor answers",
        lines.join("\n  ")
    ))
    .into())
}

/// Reconciles over `tor` (None: unreachable, for `why`) after a change was stored.
/// Exit status 3 ([`TorPending`]) when tor could not be told and something differs; a
/// failure of another service than `affected` is a warning.
async fn sync_stored(
    publisher: &Publisher,
    tor: Option<TorControl>,
    why: Option<Error>,
    affected: Affected<'_>,
) -> Result<()> {
    let Some(mut tor) = tor else {
        // The services' programs do not wait for tor.
        if publisher.daemons == DaemonControl::Systemd {
            let report = publisher.sync_daemons().await?;
            if tell_daemons(&report, affected) {
                bail!("the change is saved, but the service's program cannot run (see above)");
            }
        }
        return pending_after(publisher, &why.expect("set when unreachable")).await;
    };
    match publisher.sync(&mut tor).await {
        Ok(report) => {
            if tell(&report, affected) {
                bail!("the change is saved, but tor did not take it (see above)");
            }
            Ok(())
        }
        // Stored, whatever tor does now: refusals and losses alike leave it to be applied.
        Err(e) => pending_after(publisher, &e).await,
    }
}

/// After a change to the store: tells a running daemon, then makes tor match the store.
pub fn sync_after_change(publisher: &Publisher, affected: Affected<'_>) -> Result<()> {
    if let Err(e) = publisher.note_change() {
        eprintln!("tails-server: warning: cannot tell a running daemon about the change: {e}");
    }
    runtime()?.block_on(async {
        let (tor, why) = match publisher.connect().await {
            Ok(tor) => (Some(tor), None),
            Err(e) => (None, Some(e)),
        };
        sync_stored(publisher, tor, why, affected).await
    })
}

pub fn keep_for_session(publisher: &Publisher, name: &ServiceName) -> Result<()> {
    runtime()?.block_on(publisher.keep_for_session(name)).map_err(Into::into)
}

/// Publishes, then records `enabled`: a refusal by tor changes nothing. When tor cannot
/// be reached, `enabled` is recorded and the command exits 3.
pub fn enable(publisher: &Publisher, name: &ServiceName, wait: bool, timeout: Duration, out: &Printer) -> Result<()> {
    runtime()?.block_on(async {
        let (mut tor, why) = connect(publisher).await.map_err(|e| e.context(format!("{name} was left as it was")))?;
        if let (Some(tor), true) = (tor.as_mut(), wait) {
            tor.set_events(&["HS_DESC"]).await?;
        }
        let changed = publisher
            .enable(tor.as_mut(), name)
            .await
            .map_err(|e| anyhow::Error::from(e).context(format!("{name} was left as it was")))?;
        warn(&changed.warnings);
        let Some(report) = changed.report else {
            out.changed(&format!("{name} is enabled."), "service", &view_now(publisher, name, out))?;
            return pending_after(publisher, &why.expect("set when unreachable")).await;
        };
        let mut tor = tor.expect("connected when there is a report");
        let record = report_record(publisher, name).await?;
        let action = report.action(name.as_str());
        let others = SyncReport {
            actions: report
                .actions
                .iter()
                .filter(|(n, _)| n.as_str() != name.as_str())
                .map(|(n, a)| (n.clone(), *a))
                .collect(),
            failed: report
                .failed
                .iter()
                .map(|(n, e)| (n.clone(), Error::TorProtocol { target: String::new(), detail: e.to_string() }))
                .collect(),
            ..SyncReport::default()
        };
        tell(&others, Affected::Service(name));
        let text = match action {
            Some(Action::Unchanged) => format!("{name} is enabled; tor already runs it at {}.", record.address()),
            _ => format!("{name} is enabled and registered with tor at {}.", record.address()),
        };
        out.changed(&text, "service", &view_now(publisher, name, out))?;
        if !wait {
            return Ok(());
        }
        let instance = report.tor.expect("set by a reconcile");
        let id = record.address().service_id();
        if action == Some(Action::Unchanged) {
            let runtime_dir = publisher.config.runtime_dir.as_deref().expect("reconcile needs it");
            match Ledger::load(runtime_dir).entry_for(&instance, &id).and_then(|e| e.uploaded_at) {
                Some(at) => eprintln!("Its descriptor was uploaded at {}.", rfc3339(at)),
                None => eprintln!(
                    "It was published earlier; this process cannot see when its descriptor was uploaded \
                     (`tails-server daemon` records uploads)."
                ),
            }
            return Ok(());
        }
        let spinner = if std::io::stderr().is_terminal() {
            let s = indicatif::ProgressBar::new_spinner();
            s.enable_steady_tick(Duration::from_millis(120));
            s.set_message("waiting for tor to upload the descriptor");
            s
        } else {
            indicatif::ProgressBar::hidden()
        };
        let result =
            publish::wait_uploaded(&mut tor, &record.address(), timeout, |stage| spinner.set_message(stage.to_owned()))
                .await;
        spinner.finish_and_clear();
        result?;
        let _ = publisher.record_upload(&instance, &id).await;
        eprintln!("The descriptor is uploaded: clients holding a key can now reach {}.", record.address());
        Ok(())
    })
}

/// The service's document as stored now, for `--format` only (people get the sentence, and
/// no second read of the store): a short read of its snapshot, between tor's answers. The
/// change is stored already: a read that fails here leaves the document out rather than
/// fail the command.
fn view_now(publisher: &Publisher, name: &ServiceName, out: &Printer) -> Option<tails_server_dbus::views::ServiceView> {
    if !out.is_structured() {
        return None;
    }
    let manager = tails_server_core::Manager::open(publisher.config.clone()).ok()?;
    Some(tails_server_dbus::views::service_view(&manager, &manager.get(name).ok()?))
}

async fn report_record(publisher: &Publisher, name: &ServiceName) -> Result<ServiceRecord> {
    let records = publisher.read_services().await?;
    records
        .into_iter()
        .find(|r| &r.name == name)
        .ok_or_else(|| anyhow!(Error::NoSuchService { name: name.to_string(), similar: None }))
}

/// Records `disabled`, then removes the service from tor. tor refusing us (bad
/// credentials, not tor) changes nothing; tor being unreachable is recorded and finished
/// later (exit 3).
pub fn disable(publisher: &Publisher, name: &ServiceName, out: &Printer) -> Result<()> {
    runtime()?.block_on(async {
        let (tor, why) = connect(publisher).await.map_err(|e| e.context(format!("{name} was left as it was")))?;
        warn(&publisher.disable(name).await?);
        out.changed(&format!("{name} is disabled."), "service", &view_now(publisher, name, out))?;
        sync_stored(publisher, tor, why, Affected::Service(name)).await
    })
}

pub fn restore(publisher: &Publisher, out: &Printer) -> Result<()> {
    let report = runtime()?.block_on(async {
        let mut tor = publisher.connect().await?;
        publisher.sync(&mut tor).await
    })?;
    out.restore_report(&report)?;
    if !report.failed.is_empty() {
        bail!(
            "{} of {} service(s) could not be published",
            report.failed.len(),
            report.failed.len() + report.actions.len()
        );
    }
    Ok(())
}

/// Completes on SIGTERM (systemd stopping us) or Ctrl-C.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch for SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
    })
}

pub fn daemon(args: &TorArgs, config: Config) -> Result<()> {
    let mut options = DaemonOptions::new(control_config(args)?, config);
    options.daemons = DaemonControl::detect();
    runtime()?.block_on(async {
        let shutdown = shutdown_signal()?;
        daemon::run(options, shutdown).await.map_err(anyhow::Error::from)
    })
}

/// `socks-probe`: what the system service runs as nobody for `status --probe`.
pub fn socks_probe() -> Result<()> {
    let mut request = String::new();
    std::io::stdin().read_line(&mut request).context("cannot read the request")?;
    let answer = runtime()?.block_on(publish::socks_probe_line(&request));
    println!("{answer}");
    Ok(())
}

/// The system service (`tails-server service`): the D-Bus API and the reconcile loop.
pub fn service(
    cli: &super::Cli,
    bus: &str,
    authorization: &str,
    persistent_storage: super::PersistentStorageArg,
    presence: Option<&str>,
) -> Result<()> {
    use tails_server_service::presence::TAILS_DATA_PARTITION;
    use tails_server_service::{Authority, Bus, PersistentStorageSource, PresenceCheck, ServiceOptions};
    let presence = match (presence, persistent_storage) {
        (Some(text), _) => PresenceCheck::parse(text).map_err(|e| anyhow!("--presence {e}"))?,
        (None, super::PersistentStorageArg::Tails) => PresenceCheck::LuksPassphrase(TAILS_DATA_PARTITION.into()),
        (None, super::PersistentStorageArg::None) => PresenceCheck::PolkitOnly,
    };
    let options = ServiceOptions {
        bus: if bus == "system" { Bus::System } else { Bus::Address(bus.to_owned()) },
        daemon: DaemonOptions {
            daemons: DaemonControl::detect(),
            ..DaemonOptions::new(control_config(&cli.tor)?, super::config(cli)?)
        },
        authority: Authority::parse(authorization).map_err(|e| anyhow!("--authorization {e}"))?,
        persistent_storage: match persistent_storage {
            super::PersistentStorageArg::Tails => PersistentStorageSource::Tails,
            super::PersistentStorageArg::None => PersistentStorageSource::None,
        },
        presence,
    };
    runtime()?.block_on(async {
        let shutdown = shutdown_signal()?;
        tails_server_service::run(options, shutdown).await.context("the D-Bus service cannot run")
    })
}

/// What tor says about one service; tor being unreachable is reported, not an error.
pub fn tor_status(publisher: &Publisher, record: &ServiceRecord, probe: bool) -> Result<TorState> {
    Ok(runtime()?.block_on(publisher.tor_view(record, probe))?.into())
}
