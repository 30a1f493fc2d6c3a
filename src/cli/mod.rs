//! The command line: its grammar (`args`) dispatched to library operations, with the
//! printing, prompts and exit codes of the front end.

mod args;
mod client;
mod kept;
mod keys;
mod output;
mod secret_input;
mod tor;
mod transfer;

pub use tor::{TorPending, Unreachable, EXIT_PENDING, EXIT_UNREACHABLE};

/// What to do about an error, when the answer is a flag of this command line (the library
/// states the fact; advice naming flags belongs here).
pub fn advice(err: &anyhow::Error) -> Option<&'static str> {
    err.chain().find_map(|cause| match cause.downcast_ref::<tails_server_core::Error>()? {
        tails_server_core::Error::TorUntrusted { .. } => Some(
            "if this really is your tor and it runs as another user (your own, for a tor you started \
             yourself), name that user with --tor-user USER (TAILS_SERVER_TOR_USER); vouch for a tor on \
             another computer with --trust-control-port",
        ),
        _ => None,
    })
}

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

use tails_server_core::keys::ClientPublicKey;
use tails_server_core::names::{ClientName, ServiceName};
use tails_server_core::store::{BusyHook, StoreOptions};
use tails_server_core::{tails, AddRequest, Config, Manager, ServiceData};

pub use args::Cli;
use args::*;
use output::{Format, Printer};

pub(crate) fn config(cli: &Cli) -> Result<Config> {
    if !(0.0..=3600.0).contains(&cli.lock_timeout) {
        bail!("--lock-timeout must be between 0 and 3600 seconds");
    }
    let state_dir = cli.state_dir.clone().unwrap_or_else(tails::default_state_dir);
    Ok(Config {
        catalog_dir: Some(
            std::env::var_os("TAILS_SERVER_CATALOG_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| state_dir.join("catalog.d")),
        ),
        runtime_dir: tails::default_runtime_dir().ok(),
        state_dir,
        store: StoreOptions {
            lock_timeout: Duration::from_secs_f64(cli.lock_timeout),
            // The system service keeps the database open between its changes.
            ask_holder_to_let_go: Some(BusyHook(std::sync::Arc::new(client::ask_service_to_close_store))),
            ..StoreOptions::default()
        },
    })
}

fn publisher(cli: &Cli) -> Result<tails_server_core::reconcile::Publisher> {
    tor::publisher(&cli.tor, config(cli)?)
}

fn open(cli: &Cli) -> Result<Opened> {
    let config = config(cli)?;
    let manager = Manager::open(config)?;
    for recovery in manager.recoveries() {
        eprintln!("tails-server: WARNING: {recovery}");
    }
    for problem in manager.catalog().problems() {
        eprintln!("tails-server: warning: ignoring a service definition: {problem}");
    }
    Ok(Opened(manager))
}

/// The stores, open for one command. When closed, tells what went wrong after a change
/// was saved (a snapshot not written, an old copy of a removed key not erased): the
/// change stands, and the user must know what protection is missing.
struct Opened(Manager);

impl std::ops::Deref for Opened {
    type Target = Manager;
    fn deref(&self) -> &Manager {
        &self.0
    }
}

impl std::ops::DerefMut for Opened {
    fn deref_mut(&mut self) -> &mut Manager {
        &mut self.0
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        for warning in self.0.warnings() {
            eprintln!("tails-server: WARNING: {warning}");
        }
    }
}

/// Parses the command line; on a usage error, prints clap's message and exits. clap puts
/// the flags given through the environment (`TAILS_SERVER_STATE_DIR`…) in an error's usage
/// line as if they were required; the usage shown is the command's own instead.
pub fn parse() -> Cli {
    let err = match Cli::try_parse() {
        Ok(cli) => return cli,
        Err(err) => err,
    };
    if !err.use_stderr() {
        err.exit(); // --help, --version
    }
    let text = err.render().to_string();
    let Some(usage_line) = text.lines().find(|l| l.starts_with("Usage: ")) else { err.exit() };
    let mut command = Cli::command();
    command.build();
    let mut current = &command;
    for word in usage_line.split(' ').skip(2) {
        match current.find_subcommand(word) {
            Some(sub) => current = sub,
            None => break,
        }
    }
    let own = current.clone().render_usage().to_string();
    eprint!("{}", text.replacen(usage_line, own.trim_end(), 1));
    std::process::exit(err.exit_code());
}

pub fn run(cli: Cli) -> Result<()> {
    // On Tails, as the logged-in user: through the system service.
    if let Some(runtime) = client::wanted(&cli)? {
        return client::run(&cli, runtime);
    }
    let out = Printer::new(cli.format);
    match &cli.command {
        Command::Completions { .. } | Command::Man => run_docs(&cli),
        Command::Catalog
        | Command::Add { .. }
        | Command::Remove { .. }
        | Command::List
        | Command::Info { .. }
        | Command::GetOption { .. }
        | Command::SetOption { .. } => run_services(&cli, &out),
        Command::Status { .. }
        | Command::Enable { .. }
        | Command::Disable { .. }
        | Command::Restore
        | Command::Daemon => run_tor(&cli, &out),
        Command::Service { bus, authorization, persistent_storage, presence } => {
            tor::service(&cli, bus, authorization, *persistent_storage, presence.as_deref())
        }
        Command::Client(command) => run_client(&cli, command, &out),
        Command::Key(command) => keys::run(&cli, command, &out),
        Command::KeptData(command) => kept::run(&cli, command, &out),
        Command::SocksProbe => tor::socks_probe(),
        Command::Setup { deb, with, undo, root } => run_setup(&cli, deb, with, *undo, root.as_deref(), &out),
        Command::Export { .. }
        | Command::ImportTorDir { .. }
        | Command::ImportOnionshare { .. }
        | Command::Import { .. }
        | Command::ExportTorDir { .. } => run_transfer(&cli, &out),
    }
}

fn run_setup(
    cli: &Cli,
    debs: &[std::path::PathBuf],
    with: &[String],
    undo: bool,
    root: Option<&Path>,
    out: &Printer,
) -> Result<()> {
    use tails_server_core::tails::setup::{self, SetupPaths};
    let paths = root.map(SetupPaths::under).unwrap_or_else(SetupPaths::tails);
    if undo {
        return out.setup_report(&setup::undo(&paths)?, true);
    }
    // The kinds are checked before anything changes.
    let catalog = tails_server_core::catalog::Catalog::load(config(cli)?.catalog_dir.as_deref());
    let mut programs = Vec::new();
    for kind in with {
        let definition = catalog.get(kind)?;
        if definition.packages.is_empty() {
            bail!("a {kind} service runs no program of its own: there is nothing to install for it");
        }
        programs.push((kind.clone(), definition.packages.clone()));
    }
    let mut report = if debs.is_empty() { setup::SetupReport::default() } else { setup::setup(&paths, debs)? };
    let installed = setup::install_programs(&paths, &programs)?;
    report.steps.extend(installed.steps);
    out.setup_report(&report, false)
}

/// The manual page and shell completions, generated from the definitions above.
fn run_docs(cli: &Cli) -> Result<()> {
    match &cli.command {
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(
                clap_complete::Shell::from(*shell),
                &mut Cli::command(),
                "tails-server",
                &mut script,
            );
            let script = String::from_utf8(script).context("completions are not UTF-8")?;
            std::io::stdout().write_all(without_hidden_flag(&script).as_bytes())?;
            Ok(())
        }
        Command::Man => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()).context("cannot write the manual page")
        }
        _ => unreachable!("dispatched by run"),
    }
}

/// Services and their options: the catalog, add, remove, list, info, get/set-option.
fn run_services(cli: &Cli, out: &Printer) -> Result<()> {
    match &cli.command {
        Command::Catalog => {
            let manager = open(cli)?;
            out.catalog(manager.catalog())?;
            if let Some(problem) = manager.catalog().problems().first() {
                bail!(
                    "{} service definition(s) could not be loaded; first: {problem}",
                    manager.catalog().problems().len()
                );
            }
            Ok(())
        }
        Command::Add { kind, name, local_port, remote_port, options, client, allow_anyone_with_the_address } => {
            let mut manager = open(cli)?;
            secret_input::refuse_secret_settings(&manager, kind, name.as_ref(), options)?;
            let request = AddRequest {
                kind: kind.clone(),
                name: name.clone(),
                local_port: *local_port,
                remote_port: *remote_port,
                options: options.clone(),
                client_auth: !allow_anyone_with_the_address,
                first_client: client.clone(),
            };
            let record = manager.add(request)?;
            if *allow_anyone_with_the_address {
                output::warn_no_client_auth(&record.name);
            }
            out.added(&manager, &record)
        }
        Command::Remove { name, yes, keep_data } => {
            if !yes {
                confirm_removal(name, *keep_data)?;
            }
            let data = if *keep_data { ServiceData::Keep } else { ServiceData::Destroy };
            let removed = open(cli)?.remove(name, data)?;
            out.removed(&output::RemovedService {
                name: removed.record.name.to_string(),
                address: removed.record.address().to_string(),
                data_kept_at: removed.data_kept_at.map(|at| at.display().to_string()),
            })?;
            tor::sync_after_change(&publisher(cli)?, tor::Affected::Service(name))
        }
        Command::List => {
            let manager = open(cli)?;
            out.list(&manager, &manager.list()?)
        }
        Command::Info { name, details } => {
            let manager = open(cli)?;
            out.info(&manager, &manager.get(name)?, *details)
        }
        Command::GetOption { name, option } => {
            let manager = open(cli)?;
            let (_, value) = manager.get_option(name, option)?;
            out.option_value(name, option, &value)
        }
        Command::SetOption { name, option, value } => {
            let mut manager = open(cli)?;
            let (spec, _) = manager.get_option(name, option)?;
            let raw = if spec.secret {
                // The store stays unlocked while a person types.
                drop(manager);
                let raw = secret_input::read(name, option, value.as_deref())?;
                manager = open(cli)?;
                raw
            } else {
                zeroize::Zeroizing::new(value.clone().ok_or_else(|| {
                    anyhow::anyhow!("give the new value of {option}: `tails-server set-option {name} {option} VALUE`")
                })?)
            };
            let (record, previous) = manager.set_option(name, option, &raw)?;
            let view = tails_server_dbus::views::service_view(&manager, &record);
            drop(manager);
            out.option_changed(&view, option, spec.secret, &record.options[option], &previous)?;
            // autostart=false concerns the next login: a service enabled now stays up until
            // shutdown, tor restarts included.
            let turned_off = record.options[option] == tails_server_core::options::OptionValue::Bool(false)
                && previous == tails_server_core::options::OptionValue::Bool(true);
            if record.enabled && option == tails_server_core::options::AUTOSTART && turned_off {
                tor::keep_for_session(&publisher(cli)?, name)?;
            }
            Ok(())
        }
        _ => unreachable!("dispatched by run"),
    }
}

/// What talks to tor: status, enable, disable, restore, daemon.
fn run_tor(cli: &Cli, out: &Printer) -> Result<()> {
    match &cli.command {
        Command::Status { name, probe } => {
            let (record, view) = {
                let manager = open(cli)?;
                let record = manager.get(name)?;
                let view = output::status_view(&manager, &record);
                (record, view)
            };
            let tor_state = tor::tor_status(&publisher(cli)?, &record, *probe)?;
            out.status_and_outcome(view, tor_state)
        }
        Command::Enable { name, wait, timeout } => {
            open(cli)?.get(name)?;
            tor::enable(&publisher(cli)?, name, *wait, Duration::from_secs(*timeout), out)
        }
        Command::Disable { name } => {
            open(cli)?.get(name)?;
            tor::disable(&publisher(cli)?, name, out)
        }
        Command::Restore => {
            // Opened once so that a recovery or a catalog problem is reported.
            drop(open(cli)?);
            tor::restore(&publisher(cli)?, out)
        }
        Command::Daemon => tor::daemon(&cli.tor, config(cli)?),
        _ => unreachable!("dispatched by run"),
    }
}

/// Credentials in and out: backups, C tor HiddenServiceDirs, OnionShare.
fn run_transfer(cli: &Cli, out: &Printer) -> Result<()> {
    match &cli.command {
        Command::Export { output, services, passphrase_file, force } => {
            // Read, then let go of the store before asking for the passphrase.
            let records = open(cli)?.export(services)?;
            transfer::export(records, output, passphrase_file.as_deref(), *force, out)
        }
        Command::Import { file, passphrase_file, dry_run, on_conflict, accept_lower_protection } => {
            // Read, decrypt and decode before touching the store.
            let mut document = transfer::read_backup(file, passphrase_file.as_deref())?;
            let mut manager = open(cli)?;
            document.validate(manager.catalog())?;
            let held_back = transfer::confirm_lowered_protection(&mut document, *accept_lower_protection, *dry_run)?;
            let enabled: Vec<String> =
                document.services.iter().filter(|r| r.enabled).map(|r| r.name.to_string()).collect();
            let report = manager
                .import_with_keys(document.services, document.keys, (*on_conflict).into(), *dry_run)
                .map_err(transfer::conflict_hint)?;
            drop(manager);
            transfer::print_import(&report, *dry_run, &held_back, out)?;
            // A replaced service may be published with its old key or clients; an enabled
            // one imported is to be published.
            let touches_tor = !report.replaced.is_empty()
                || report.added.iter().any(|n| enabled.contains(n) || n.starts_with("key "));
            if *dry_run || !touches_tor {
                return Ok(());
            }
            tor::sync_after_change(&publisher(cli)?, tor::Affected::All)
        }
        Command::ImportTorDir { dir, target } => {
            let imported = tails_server_core::interop::read_tor_dir(dir)?;
            let fallback = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let request = import_request(target, fallback, None)?;
            let mut manager = open(cli)?;
            transfer::import_foreign(&mut manager, imported, request, out)
        }
        Command::ImportOnionshare { file, target } => {
            let imported = tails_server_core::interop::read_onionshare(file)?;
            let request = import_request(target, "onionshare", Some(80))?;
            let mut manager = open(cli)?;
            transfer::import_foreign(&mut manager, imported, request, out)
        }
        Command::ExportTorDir { name, dir, force } => {
            let record = open(cli)?.get(name)?;
            tails_server_core::interop::write_tor_dir(&record, dir, *force)?;
            out.message(&format!(
                "Wrote {} as a HiddenServiceDir in {}: hs_ed25519_secret_key is SECRET (whoever has it can run {}).",
                record.name,
                dir.display(),
                record.address()
            ))
        }
        _ => unreachable!("dispatched by run"),
    }
}

fn import_request(target: &ImportTarget, fallback_name: &str, default_remote: Option<u16>) -> Result<AddRequest> {
    let mut request = AddRequest::new(&target.kind);
    request.name = Some(match &target.name {
        Some(name) => name.clone(),
        None => transfer::default_name(fallback_name, "the file name")?,
    });
    request.local_port = target.local_port;
    request.remote_port = target.remote_port.or(default_remote);
    Ok(request)
}

fn run_client(cli: &Cli, command: &ClientCommand, out: &Printer) -> Result<()> {
    match command {
        ClientCommand::Add { name, client, public_key } => {
            let (record, added, steps) = {
                let mut manager = open(cli)?;
                let added = manager.add_client(name, client.clone(), *public_key)?;
                let record = manager.get(name)?;
                let steps = tails_server_core::catalog::how_to_connect(
                    manager.kind_of(&record),
                    record.name.as_str(),
                    &record.address().to_string(),
                    record.remote_port,
                    added.name.as_str(),
                );
                (record, added, steps)
            };
            out.client_added(&record, &added, &steps)?;
            tor::sync_after_change(&publisher(cli)?, tor::Affected::Service(name))
        }
        ClientCommand::Remove { name, client } => {
            let (removed, view) = {
                let mut manager = open(cli)?;
                let removed = manager.remove_client(name, client)?;
                (removed, tails_server_dbus::views::service_view(&manager, &manager.get(name)?))
            };
            out.changed(
                &format!("Removed client {} of service {name} from the store.", removed.name),
                "service",
                &view,
            )?;
            tor::sync_after_change(&publisher(cli)?, tor::Affected::Service(name))
        }
        ClientCommand::List { name } => {
            let manager = open(cli)?;
            let record = manager.get(name)?;
            out.clients(&record)
        }
        ClientCommand::Show { name, client, form, output, force } => {
            let manager = open(cli)?;
            let (record, client) = manager.client(name, client)?;
            show_credential(&record, &client, *form, output.as_deref(), *force, out)
        }
    }
}

fn show_credential(
    record: &tails_server_core::model::ServiceRecord,
    client: &tails_server_core::model::ClientRecord,
    form: CredentialForm,
    output: Option<&std::path::Path>,
    force: bool,
    out: &Printer,
) -> Result<()> {
    let (_, value) = output::credential_value(record, client, form)?;
    let who = output::CredentialOf {
        service: record.name.as_str(),
        address: &record.address().to_string(),
        client: client.name.as_str(),
    };
    show_credential_value(&who, form, &value, output, force, out)
}

/// Prints or writes one form of a client's credential (direct mode and through the service).
fn show_credential_value(
    who: &output::CredentialOf<'_>,
    form: CredentialForm,
    value: &str,
    output: Option<&std::path::Path>,
    force: bool,
    out: &Printer,
) -> Result<()> {
    let text = match form {
        // With --format: the key's document, and both codes as text.
        CredentialForm::Qr if output.is_none() && out.is_structured() => {
            return out.credential_qr(who, value, &transfer::qr_text(who.address)?, &transfer::qr_text(value)?);
        }
        CredentialForm::Qr => format!(
            "Address of {} - may be shared with the people who should reach it:\n{}{}\n\n\
             Key of client {} - SECRET, show it only to {}:\n{}{}\n",
            who.service,
            transfer::qr_text(who.address)?,
            who.address,
            who.client,
            who.client,
            transfer::qr_text(value)?,
            value
        ),
        _ if output.is_some() => format!("{value}\n"),
        _ => return out.credential(who, form, value),
    };
    let text = zeroize::Zeroizing::new(text);
    match output {
        Some(path) => {
            transfer::write_private_file(path, text.as_bytes(), force)?;
            let secret = if form == CredentialForm::Auth { "a public key, not secret" } else { "SECRET" };
            eprintln!("Wrote {} (mode 0600): {secret}.", path.display());
            Ok(())
        }
        None => {
            std::io::stdout().write_all(text.as_bytes())?;
            Ok(())
        }
    }
}

/// clap_complete lists hidden flags too; the opt-out must stay out of sight. Bash keeps
/// all options of a command on one line, the other shells one option per line.
fn without_hidden_flag(script: &str) -> String {
    const FLAG: &str = "--allow-anyone-with-the-address";
    // clap_complete's bash script names the states of a program called `tails-server`
    // `tails__server__subcmd__…` where it sets them but `tails__subcmd__server__subcmd__…`
    // where it matches them, so completion stopped after the first word.
    let script = script.replace("tails__subcmd__server", "tails__server");
    let mut out = String::with_capacity(script.len());
    for line in script.lines() {
        if line.contains(&FLAG[2..]) {
            if line.trim_start().starts_with("opts=") {
                out.push_str(&line.replace(&format!("{FLAG} "), "").replace(FLAG, ""));
                out.push('\n');
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Removing a service destroys its onion key: the address can never come back.
pub(crate) fn confirm_removal(name: &ServiceName, keep_data: bool) -> Result<()> {
    let data = if keep_data { "" } else { ", and deletes its data (add --keep-data to keep it)" };
    if !std::io::stdin().is_terminal() {
        bail!(
            "removing {name} destroys its onion address and client keys for good{data}; \
             add --yes to confirm when not running in a terminal"
        );
    }
    eprint!(
        "Removing {name} destroys its onion address and every client key{data}: nobody will reach it at \
         this address again.\nType the service name to confirm: "
    );
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).context("cannot read the confirmation")?;
    if answer.trim() != name.as_str() {
        bail!("not confirmed; nothing was removed");
    }
    Ok(())
}
