//! The long-running republisher. Tails restarts tor every time a network comes up, and
//! every ADD_ONION service dies with it: this loop reconnects (with backoff) whenever the
//! control connection drops and reconciles ([`crate::reconcile`]) at every connection, every
//! `reconcile_every`, and as soon as tor drops the keys it was given (on NEWNYM, a reload or
//! a configuration change: tor's events say so, and a check every `check_keys_every` covers
//! a SETCONF that changes nothing). So every wanted service is back, same address, same
//! clients, every kept key is in tor, and nothing removed stays up. It opens the store only
//! for the moment it reads it, so the CLI keeps working beside it.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::manager::Config;
use crate::reconcile::{Action, DaemonControl, KeyAction, Publisher};
use crate::tor::{ControlConfig, TorControl, TorEvent, TorInstance};

#[derive(Debug, Clone)]
pub struct DaemonOptions {
    pub control: ControlConfig,
    pub config: Config,
    /// How often to compare what tor runs with what is enabled, between restarts.
    pub reconcile_every: Duration,
    /// Delay between connection attempts while tor is expected back soon (just lost, or
    /// never seen), and after `fast_retry_for` has passed.
    pub fast_retry: Duration,
    pub fast_retry_for: Duration,
    pub slow_retry: Duration,
    /// How often to look for a change notice from a command (a stat on the runtime tmpfs).
    pub watch_changes_every: Duration,
    /// How often to ask tor whether it still holds the keys it was given, when it was given
    /// any: a SETCONF that changes nothing drops them without an event.
    pub check_keys_every: Duration,
    /// Delay before trying again when a reconcile could not finish (the store busy past
    /// its retries, a disk error): soon, not at the next periodic reconcile.
    pub retry_failed: Duration,
    /// Whether the catalog's daemons are started here (the system service) or by the user.
    pub daemons: DaemonControl,
    /// Told whenever what tor runs may have changed (tor found or lost, a reconcile that
    /// changed something, a descriptor uploaded, bootstrap progress), so that the system
    /// service can tell its clients without their polling. Notifications coalesce.
    pub tor_changed: Option<std::sync::Arc<tokio::sync::Notify>>,
}

impl DaemonOptions {
    pub fn new(control: ControlConfig, config: Config) -> Self {
        Self {
            control,
            config,
            reconcile_every: Duration::from_secs(60),
            // Tails restarts tor in about a second: poll briskly (a refused loopback connect
            // costs nothing), then settle down if it stays away.
            fast_retry: Duration::from_millis(50),
            fast_retry_for: Duration::from_secs(30),
            slow_retry: Duration::from_secs(2),
            retry_failed: Duration::from_secs(1),
            watch_changes_every: Duration::from_millis(500),
            check_keys_every: Duration::from_secs(5),
            daemons: DaemonControl::Manual,
            tor_changed: None,
        }
    }
}

/// Log lines on stderr. Under systemd (JOURNAL_STREAM set) each line carries its syslog
/// priority as `<N>`, which journald turns into the entry's priority.
#[derive(Debug, Clone, Copy)]
pub enum Level {
    Error = 3,
    Warning = 4,
    Notice = 5,
    Info = 6,
}

#[allow(clippy::print_stderr)] // the one logger: stderr is what journald reads
pub fn log(level: Level, message: &str) {
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        eprintln!("<{}>{message}", level as u8);
    } else {
        let tag = match level {
            Level::Error => "error",
            Level::Warning => "warning",
            Level::Notice => "notice",
            Level::Info => "info",
        };
        eprintln!("tails-server daemon: {tag}: {message}");
    }
}

/// Runs until `shutdown` completes. Nothing is fatal: tor may be restarting, or may not
/// have written its new cookie yet. Each distinct connection error is logged once, and
/// errors that concern one service are logged without stopping the others.
pub async fn run(options: DaemonOptions, shutdown: impl Future<Output = ()>) -> Result<()> {
    tokio::pin!(shutdown);
    let mut publisher = Publisher::new(options.config.clone(), options.control.clone());
    publisher.on_store_busy = Some(|message| log(Level::Notice, message));
    publisher.daemons = options.daemons;
    // The services' programs do not need tor: they start now, before tor answers.
    if publisher.daemons == DaemonControl::Systemd {
        match publisher.sync_daemons().await {
            Ok(report) => log_daemons(&report),
            Err(e) => log(Level::Error, &format!("cannot start the services' programs: {e}")),
        }
    }
    let mut lost_at = Instant::now();
    let mut last_error = String::new();
    let mut last_serve_error = String::new();
    let fallback = options.control.fallback.as_ref().map(|f| format!(", else {f}")).unwrap_or_default();
    log(Level::Notice, &format!("starting; tor control port: {}{fallback}", options.control.target));
    loop {
        let connected = tokio::select! {
            r = TorControl::connect(&options.control) => r,
            _ = &mut shutdown => return stopping(),
        };
        let mut tor = match connected {
            Ok(tor) => tor,
            Err(e) => {
                let text = e.to_string();
                if text != last_error {
                    log(Level::Warning, &format!("{text}; retrying until tor answers"));
                    last_error = text;
                }
                tokio::select! {
                    _ = tokio::time::sleep(retry_delay(&options, lost_at)) => {},
                    _ = &mut shutdown => return stopping(),
                }
                continue;
            }
        };
        let answered = Instant::now();
        last_error.clear();
        let served = serve(&mut tor, &publisher, &options, answered, &mut shutdown).await;
        tell(&options);
        match served {
            Ok(Served::Shutdown) => return stopping(),
            Ok(Served::TorGone) => {
                lost_at = Instant::now();
                last_serve_error.clear();
                log(Level::Warning, "tor went away; republishing when it comes back");
            }
            Err(e) => {
                lost_at = Instant::now();
                // Logged once while it repeats (a stand-in on tor's port fails every time).
                let text = e.to_string();
                if text != last_serve_error {
                    log(Level::Warning, &format!("{text}; reconnecting"));
                    last_serve_error = text;
                }
                tokio::select! {
                    _ = tokio::time::sleep(retry_delay(&options, lost_at)) => {},
                    _ = &mut shutdown => return stopping(),
                }
            }
        }
    }
}

/// Lets whoever follows tor's state know it may have changed.
fn tell(options: &DaemonOptions) {
    if let Some(notify) = &options.tor_changed {
        notify.notify_one();
    }
}

fn retry_delay(options: &DaemonOptions, lost_at: Instant) -> Duration {
    if lost_at.elapsed() < options.fast_retry_for {
        options.fast_retry
    } else {
        options.slow_retry
    }
}

fn stopping() -> Result<()> {
    log(Level::Notice, "stopping; published services stay up until tor stops");
    Ok(())
}

enum Served {
    Shutdown,
    TorGone,
}

async fn serve(
    tor: &mut TorControl,
    publisher: &Publisher,
    options: &DaemonOptions,
    answered: Instant,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Result<Served> {
    let instance = tor.instance().await?;
    log(
        Level::Notice,
        &format!(
            "connected to tor {} (pid {}) on {}, authenticated with {:?}",
            tor.tor_version(),
            instance.pid,
            tor.target(),
            tor.auth_method()
        ),
    );
    // SIGNAL and CONF_CHANGED: tor drops every key given with ONION_CLIENT_AUTH_ADD on
    // NEWNYM (Tor Browser's New Identity), on a reload and on any configuration change (Tor
    // Connection's SETCONF), so the friend's kept keys are given again at once.
    tor.set_events(&["HS_DESC", "STATUS_CLIENT", "SIGNAL", "CONF_CHANGED"]).await?;
    let mut seen_change = publisher.last_change();
    let first = reconcile(tor, publisher).await;
    // Found (again): whatever it runs now is news.
    tell(options);
    let mut next_reconcile = match first {
        Ok((count, already)) => {
            log(
                Level::Notice,
                &format!(
                    "{count} service(s) published {} ms after tor answered ({already} already running)",
                    answered.elapsed().as_millis()
                ),
            );
            tokio::time::Instant::now() + options.reconcile_every
        }
        Err(e) if is_tor_loss(&e) => return Err(e),
        Err(e) => {
            log(Level::Error, &format!("cannot reconcile: {e}; trying again shortly"));
            tokio::time::Instant::now() + options.retry_failed
        }
    };
    let mut watch = tokio::time::interval(options.watch_changes_every);
    // Not at once: the reconcile above has just given them.
    let mut check_keys =
        tokio::time::interval_at(tokio::time::Instant::now() + options.check_keys_every, options.check_keys_every);
    check_keys.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // dpkg's database changes when a package is installed (Additional Software installs the
    // services' programs at login, maybe after tails-server itself): a program that could not
    // run may run now.
    let dpkg_changed = || std::fs::metadata(crate::tails::DPKG_STATUS).and_then(|m| m.modified()).ok();
    let mut seen_dpkg = dpkg_changed();
    // Per service id: a descriptor is recorded uploaded once each of its uploads is answered.
    let mut rounds: std::collections::HashMap<String, crate::publish::UploadRound> = Default::default();
    loop {
        let event = tokio::select! {
            e = tor.next_event(None) => e,
            _ = watch.tick() => {
                // Uploads tor will never answer (their connection died) settle with time.
                let now = std::time::Instant::now();
                let settled: Vec<String> =
                    rounds.iter_mut().filter_map(|(id, round)| round.settle(now).then(|| id.clone())).collect();
                for id in settled {
                    rounds.remove(&id);
                    record_upload(publisher, &instance, &id).await;
                    tell(options);
                }
                let dpkg = dpkg_changed();
                if publisher.daemons == DaemonControl::Systemd && dpkg != seen_dpkg {
                    seen_dpkg = dpkg;
                    next_reconcile = tokio::time::Instant::now();
                }
                let change = publisher.last_change();
                if change != seen_change {
                    // A command changed the store (and may not have reached tor itself).
                    seen_change = change;
                    next_reconcile = tokio::time::Instant::now();
                }
                continue;
            }
            _ = check_keys.tick() => {
                if keys_lost(tor, publisher, "").await? {
                    next_reconcile = tokio::time::Instant::now();
                }
                continue;
            }
            _ = tokio::time::sleep_until(next_reconcile) => {
                next_reconcile = match reconcile(tor, publisher).await {
                    Ok((published, _)) => {
                        if published > 0 {
                            tell(options);
                        }
                        tokio::time::Instant::now() + options.reconcile_every
                    }
                    Err(e) if is_tor_loss(&e) => return Err(e),
                    Err(e) => {
                        log(Level::Error, &format!("cannot reconcile: {e}; trying again shortly"));
                        tokio::time::Instant::now() + options.retry_failed
                    }
                };
                continue;
            }
            _ = shutdown.as_mut() => return Ok(Served::Shutdown),
        };
        match event {
            Ok(Some(TorEvent::HsDesc(event))) => {
                // Only the uploads of services this tor runs start a round: a fetch of anyone
                // else's onion (Tor Browser's) is no business of ours.
                let service_side = matches!(event.action.as_str(), "CREATED" | "UPLOAD");
                if !service_side && !rounds.contains_key(&event.service_id) {
                    continue;
                }
                let round = rounds.entry(event.service_id.clone()).or_default();
                if round.observe(&event, std::time::Instant::now()) {
                    rounds.remove(&event.service_id);
                    record_upload(publisher, &instance, &event.service_id).await;
                    tell(options);
                }
            }
            Ok(Some(TorEvent::Signal(signal))) if matches!(signal.as_str(), "NEWNYM" | "RELOAD") => {
                if keys_lost(tor, publisher, &format!(" after {signal}")).await? {
                    next_reconcile = tokio::time::Instant::now();
                }
            }
            Ok(Some(TorEvent::ConfChanged)) => {
                if keys_lost(tor, publisher, " after a configuration change").await? {
                    next_reconcile = tokio::time::Instant::now();
                }
            }
            Ok(Some(TorEvent::Other(line))) if line.contains("BOOTSTRAP") => {
                if line.contains("PROGRESS=100") {
                    log(Level::Info, "tor has bootstrapped");
                }
                tell(options);
            }
            Ok(_) => {}
            Err(Error::TorGone { .. }) => return Ok(Served::TorGone),
            Err(e) => return Err(e),
        }
    }
}

/// Errors after which this connection is not used again: tor went away, stopped
/// answering, or is not shown to be tor.
fn is_tor_loss(e: &Error) -> bool {
    matches!(
        e,
        Error::TorGone { .. } | Error::TorConnect { .. } | Error::TorProtocol { .. } | Error::TorUntrusted { .. }
    )
}

/// Whether tor lost a key it was given (then logged, `after` saying when); only an error
/// that ends this connection is returned.
async fn keys_lost(tor: &mut TorControl, publisher: &Publisher, after: &str) -> Result<bool> {
    match publisher.given_keys_missing(tor).await {
        Ok(lost) => {
            if lost {
                log(Level::Info, &format!("tor no longer holds a key it was given{after}: giving it back"));
            }
            Ok(lost)
        }
        Err(e) if is_tor_loss(&e) => Err(e),
        Err(e) => {
            log(Level::Warning, &format!("cannot ask tor which keys it holds: {e}"));
            Ok(false)
        }
    }
}

async fn record_upload(publisher: &Publisher, instance: &TorInstance, service_id: &str) {
    match publisher.record_upload(instance, service_id).await {
        Ok(Some(name)) => log(Level::Info, &format!("{name}: descriptor uploaded; the service can be reached")),
        Ok(None) => {}
        Err(e) => log(Level::Warning, &format!("cannot record the upload of {service_id}: {e}")),
    }
}

/// One reconcile, logged. Returns how many services it published and how many tor already
/// ran as stored.
async fn reconcile(tor: &mut TorControl, publisher: &Publisher) -> Result<(usize, usize)> {
    let report = publisher.sync(tor).await?;
    for name in report.names(Action::Published) {
        log(Level::Info, &format!("{name}: published"));
    }
    for name in report.names(Action::Republished) {
        log(Level::Info, &format!("{name}: republished with its current clients and ports"));
    }
    for name in report.names(Action::Removed) {
        log(Level::Info, &format!("{name}: removed from tor (removed, disabled or not to start)"));
    }
    for (name, error) in &report.failed {
        log(Level::Error, &format!("{name}: could not be published: {error}"));
    }
    for (name, action) in &report.keys {
        match action {
            KeyAction::Registered => log(Level::Info, &format!("key {name}: given to tor")),
            KeyAction::Removed => log(Level::Info, &format!("key {name}: taken back from tor (no longer kept)")),
            KeyAction::Unchanged => {}
        }
    }
    for (name, error) in &report.failed_keys {
        log(Level::Error, &format!("key {name}: tor did not take it: {error}"));
    }
    log_daemons(&report.daemons);
    let published = report.names(Action::Published).len() + report.names(Action::Republished).len();
    Ok((published, report.names(Action::Unchanged).len()))
}

fn log_daemons(report: &crate::system::DaemonReport) {
    for name in &report.started {
        log(Level::Info, &format!("{name}: its program started"));
    }
    for name in &report.stopped {
        log(Level::Info, &format!("{name}: its program stopped"));
    }
    for (name, error) in &report.failed {
        log(Level::Error, &format!("{name}: its program cannot run: {error}"));
    }
    for (name, at) in &report.set_aside {
        log(Level::Warning, &format!("{name}: data of another service of that name was set aside in {}", at.display()));
    }
    for (image, error) in &report.data_failed {
        log(Level::Warning, &format!("{}: not let go or destroyed yet, tried again later: {error}", image.display()));
    }
}
