//! The commands that talk to tor: enable/disable, status, restore, daemon, and the
//! republishing that client changes need.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zeroize::Zeroizing;

use tails_server::daemon::{self, DaemonOptions};
use tails_server::model::ServiceRecord;
use tails_server::names::ServiceName;
use tails_server::publish::{self, Publication, UploadLog};
use tails_server::tor::{CommandLine, ControlConfig, ControlTarget, TorControl};
use tails_server::{tails, Config, Error};

use super::output::{rfc3339, Printer, TorState};

#[derive(Debug, clap::Args)]
pub struct TorArgs {
    /// tor's control port, HOST:PORT (overrides --control-socket)
    #[arg(long, global = true, env = "TAILS_SERVER_CONTROL_PORT", value_name = "HOST:PORT")]
    control_port: Option<String>,
    /// tor's control socket [default: /run/tor/control]
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
}

const MAX_PASSWORD_FILE: u64 = 4096;

fn control_config(args: &TorArgs) -> Result<ControlConfig> {
    let target = match (&args.control_port, &args.control_socket) {
        (Some(port), _) => ControlTarget::Tcp(port.clone()),
        (None, Some(path)) => ControlTarget::Unix(path.clone()),
        (None, None) => ControlTarget::Unix(PathBuf::from(tails::TOR_CONTROL_SOCKET)),
    };
    let mut config = ControlConfig::new(target);
    config.cookie_file = args.cookie_file.clone();
    if let Some(path) = &args.password_file {
        config.password = Some(read_password_file(path)?);
    } else if args.ask_password {
        let password = rpassword::prompt_password("tor control password: ").context("cannot read the password")?;
        config.password = Some(Zeroizing::new(password));
    }
    Ok(config)
}

fn read_password_file(path: &Path) -> Result<Zeroizing<String>> {
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read the password file {}", path.display()))?;
    if meta.len() > MAX_PASSWORD_FILE {
        bail!("{} is not a password file: it is larger than {MAX_PASSWORD_FILE} bytes", path.display());
    }
    let text = Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("cannot read the password file {}", path.display()))?,
    );
    let line = text.lines().next().unwrap_or_default();
    if line.is_empty() {
        bail!("the password file {} is empty", path.display());
    }
    Ok(Zeroizing::new(line.to_owned()))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")
}

/// Connects for a command that changes a service's state. When tor cannot be reached at
/// all, the state is recorded anyway (the daemon or the login hook acts on it later) and
/// the command fails saying `unreached`; when tor refuses us, nothing is recorded. Hands
/// `record_state` back, unused, with the connection.
async fn connect_or_record<F: FnOnce() -> Result<()>>(
    config: &ControlConfig,
    name: &ServiceName,
    record_state: F,
    unreached: &str,
) -> Result<(TorControl, F)> {
    match TorControl::connect(config).await {
        Ok(tor) => Ok((tor, record_state)),
        Err(e) if unreachable(&e) => {
            record_state()?;
            bail!("{unreached}: {e}");
        }
        Err(e) => bail!("{e}. {name} was left as it was"),
    }
}

/// Whether an error means tor could not be reached at all (as opposed to tor refusing).
fn unreachable(e: &Error) -> bool {
    matches!(e, Error::TorConnect { .. } | Error::TorGone { .. })
}

/// Publishes first and records `enabled` only once tor accepted: a refusal (bad
/// credentials, a key tor rejects) leaves the store as it was. When tor cannot be reached
/// at all, `enabled` is recorded so that the daemon or the login hook publishes it later.
pub fn enable(
    args: &TorArgs,
    record: &ServiceRecord,
    set_enabled: impl FnOnce() -> Result<()>,
    runtime_dir: Option<&Path>,
    wait: bool,
    timeout: Duration,
    out: &Printer,
) -> Result<()> {
    let config = control_config(args)?;
    runtime()?.block_on(async {
        let name = &record.name;
        let unreached = format!("{name} is recorded as enabled, but it could not be published now");
        let (mut tor, set_enabled) = connect_or_record(&config, name, set_enabled, &unreached).await?;
        if wait {
            tor.set_events(&["HS_DESC"]).await?;
        }
        let outcome =
            publish::publish(&mut tor, record, None).await.map_err(|e| anyhow!("{e}. {name} was left as it was"))?;
        if let Err(e) = set_enabled() {
            if outcome == Publication::Added {
                let _ = publish::unpublish(&mut tor, &record.address()).await;
            }
            return Err(e.context(format!("{name} could not be recorded as enabled, so it was not published")));
        }
        let instance = tor.instance().await?;
        match outcome {
            Publication::Added => {
                out.message(&format!("{name} is enabled and registered with tor at {}.", record.address()))?
            }
            Publication::AlreadyPublished => {
                out.message(&format!("{name} is enabled; tor already runs it at {}.", record.address()))?
            }
        }
        if !wait {
            return Ok(());
        }
        let id = record.address().service_id();
        if outcome == Publication::AlreadyPublished {
            let seen = runtime_dir.and_then(|d| UploadLog::load(d).uploaded_at(&instance, &id));
            match seen {
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
        if let Some(dir) = runtime_dir {
            let _ = UploadLog::record(dir, &instance, &id);
        }
        eprintln!("The descriptor is uploaded: clients holding a key can now reach {}.", record.address());
        Ok(())
    })
}

/// Records `disabled`, then removes the service from tor. Bad credentials change nothing.
pub fn disable(
    args: &TorArgs,
    record: &ServiceRecord,
    set_disabled: impl FnOnce() -> Result<()>,
    out: &Printer,
) -> Result<()> {
    let config = control_config(args)?;
    runtime()?.block_on(async {
        let name = &record.name;
        let unreached = format!("{name} is recorded as disabled, but tor could not be told to remove it");
        let (mut tor, set_disabled) = connect_or_record(&config, name, set_disabled, &unreached).await?;
        set_disabled()?;
        let was_running = publish::unpublish(&mut tor, &record.address()).await?;
        if was_running {
            out.message(&format!("{name} is disabled and removed from tor."))
        } else {
            out.message(&format!("{name} is disabled (tor was not running it)."))
        }
    })
}

/// After a client change: tor cannot change clients in place, so a running service is
/// removed and added again.
pub fn clients_changed(args: &TorArgs, record: &ServiceRecord) -> Result<()> {
    if !record.enabled {
        return Ok(());
    }
    let config = control_config(args)?;
    runtime()?.block_on(async {
        let name = &record.name;
        let mut tor = TorControl::connect(&config).await.map_err(|e| {
            anyhow!(
                "the clients of {name} are saved, but tor could not be updated: {e}. Until it is (`tails-server \
                 enable {name}` or a tor restart with the daemon running), tor uses the previous list"
            )
        })?;
        if !tor.detached_onions().await?.contains(&record.address().service_id()) {
            return Ok(());
        }
        publish::republish(&mut tor, record).await?;
        eprintln!("{name} was republished with the new client list: connected clients will reconnect.");
        Ok(())
    })
}

pub fn restore(args: &TorArgs, records: &[ServiceRecord], out: &Printer) -> Result<()> {
    let config = control_config(args)?;
    let report = runtime()?.block_on(async {
        let mut tor = TorControl::connect(&config).await?;
        publish::restore(&mut tor, records).await
    })?;
    out.restore_report(&report)?;
    if !report.failed.is_empty() {
        bail!(
            "{} of {} service(s) could not be published",
            report.failed.len(),
            report.failed.len() + report.added.len() + report.already.len()
        );
    }
    Ok(())
}

pub fn daemon(args: &TorArgs, config: Config) -> Result<()> {
    let options = DaemonOptions::new(control_config(args)?, config);
    runtime()?.block_on(async {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot watch for SIGTERM")?;
        let shutdown = async move {
            tokio::select! {
                _ = terminate.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
        };
        daemon::run(options, shutdown).await.map_err(anyhow::Error::from)
    })
}

/// What tor says about one service; tor being unreachable is reported, not an error.
pub fn tor_status(args: &TorArgs, record: &ServiceRecord, runtime_dir: Option<&Path>, probe: bool) -> Result<TorState> {
    let config = control_config(args)?;
    runtime()?.block_on(async {
        let mut state = TorState::default();
        let mut tor = match TorControl::connect(&config).await {
            Ok(tor) => tor,
            Err(e) => {
                state.tor_error = Some(e.to_string());
                return Ok(state);
            }
        };
        let id = record.address().service_id();
        let registered = tor.detached_onions().await?.contains(&id);
        state.registered = Some(registered);
        let instance = tor.instance().await?;
        let uploaded_at =
            if registered { runtime_dir.and_then(|d| UploadLog::load(d).uploaded_at(&instance, &id)) } else { None };
        state.uploaded = if !registered {
            Some(false)
        } else if uploaded_at.is_some() {
            Some(true)
        } else {
            None
        };
        state.uploaded_at = uploaded_at.map(rfc3339);
        if probe {
            let (reachable, detail) = probe_service(&mut tor, record).await?;
            state.reachable = reachable;
            state.probe_detail = Some(detail);
        }
        Ok(state)
    })
}

/// Connects to the service through tor's own SOCKS port, as a client would, with one of
/// the stored client keys registered in tor just for the probe.
async fn probe_service(tor: &mut TorControl, record: &ServiceRecord) -> Result<(Option<bool>, String)> {
    let Some(socks) = tor.socks_listeners().await?.into_iter().next() else {
        return Ok((None, "tor has no SocksPort to probe through".into()));
    };
    let id = record.address().service_id();
    let mut registered_key = false;
    if record.client_auth {
        let Some(secret) = record.clients.iter().find_map(|c| c.secret_key.as_ref()) else {
            return Ok((None, "no client private key is stored to probe with".into()));
        };
        let key = Zeroizing::new(format!("x25519:{}", secret.to_base64().as_str()));
        tor.execute(&CommandLine::new("ONION_CLIENT_AUTH_ADD").arg("service id", &id)?.secret_arg("client key", &key)?)
            .await?;
        registered_key = true;
    }
    let result = tokio::time::timeout(
        Duration::from_secs(90),
        socks_connect(&socks, &format!("{id}.onion"), record.remote_port),
    )
    .await;
    if registered_key {
        let _ = tor.send(&CommandLine::new("ONION_CLIENT_AUTH_REMOVE").arg("service id", &id)?).await;
    }
    Ok(match result {
        Err(_) => (Some(false), "no answer within 90 s".into()),
        Ok(Err(e)) => (None, format!("cannot use tor's SocksPort {socks}: {e}")),
        Ok(Ok(0x00)) => (Some(true), "a connection through tor succeeded".into()),
        Ok(Ok(code)) => (Some(code == 0x05), socks_reply_meaning(code, record.local_port)),
    })
}

async fn socks_connect(proxy: &str, host: &str, port: u16) -> std::io::Result<u8> {
    let mut stream = tokio::net::TcpStream::connect(proxy).await?;
    stream.write_all(&[5, 1, 0]).await?;
    let mut greeting = [0u8; 2];
    stream.read_exact(&mut greeting).await?;
    if greeting != [5, 0] {
        return Err(std::io::Error::other("the SOCKS port refused unauthenticated access"));
    }
    let mut request = vec![5, 1, 0, 3, host.len() as u8];
    request.extend_from_slice(host.as_bytes());
    request.extend_from_slice(&port.to_be_bytes());
    stream.write_all(&request).await?;
    let mut reply = [0u8; 2];
    stream.read_exact(&mut reply).await?;
    Ok(reply[1])
}

/// SOCKS5 replies, with tor's extended onion-service codes (SocksPort ExtendedErrors).
pub fn socks_reply_meaning(code: u8, local_port: u16) -> String {
    match code {
        0x00 => "connected".into(),
        0x01 => "general failure".into(),
        0x04 => "host unreachable".into(),
        0x05 => format!("the onion service answered, but nothing accepted the connection on 127.0.0.1:{local_port}"),
        0x06 => "timed out".into(),
        0xF0 => "descriptor not found (not uploaded yet?)".into(),
        0xF1 => "descriptor invalid".into(),
        0xF2 => "introduction failed".into(),
        0xF3 => "rendezvous failed".into(),
        0xF4 => "client authorization required but no key given".into(),
        0xF5 => "the client key was refused".into(),
        0xF6 => "bad onion address".into(),
        0xF7 => "introduction timed out".into(),
        other => format!("SOCKS reply {other:#04x}"),
    }
}
