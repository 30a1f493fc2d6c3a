//! The long-running republisher. Tails restarts tor every time a network comes up, and
//! every ADD_ONION service dies with it: this loop reconnects (with backoff) whenever the
//! control connection drops, and republishes every enabled `autostart` service, same
//! addresses, same clients. It opens the store only for the moment it reads it, so the CLI
//! keeps working beside it.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::manager::{Config, Manager};
use crate::model::ServiceRecord;
use crate::publish::{self, UploadLog};
use crate::tor::{ControlConfig, TorControl, TorEvent};

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

/// Reads the services in a blocking task: the store lock may make us wait a little.
async fn load_services(config: &Config) -> Result<Vec<ServiceRecord>> {
    let config = config.clone();
    tokio::task::spawn_blocking(move || Manager::open(config)?.list())
        .await
        .map_err(|e| Error::TorProtocol { target: "store".into(), detail: e.to_string() })?
}

/// Runs until `shutdown` completes. Nothing is fatal: tor may be restarting, or may not
/// have written its new cookie yet. Each distinct connection error is logged once, and
/// errors that concern one service are logged without stopping the others.
pub async fn run(options: DaemonOptions, shutdown: impl Future<Output = ()>) -> Result<()> {
    tokio::pin!(shutdown);
    let mut lost_at = Instant::now();
    let mut last_error = String::new();
    log(Level::Notice, &format!("starting; tor control port: {}", options.control.target));
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
        match serve(&mut tor, &options, answered, &mut shutdown).await {
            Ok(Served::Shutdown) => return stopping(),
            Ok(Served::TorGone) => {
                lost_at = Instant::now();
                log(Level::Warning, "tor went away; republishing when it comes back");
            }
            Err(e) => {
                lost_at = Instant::now();
                log(Level::Warning, &format!("{e}; reconnecting"));
                tokio::select! {
                    _ = tokio::time::sleep(retry_delay(&options, lost_at)) => {},
                    _ = &mut shutdown => return stopping(),
                }
            }
        }
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
    options: &DaemonOptions,
    answered: Instant,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Result<Served> {
    let instance = tor.instance().await?;
    log(
        Level::Notice,
        &format!(
            "connected to tor {} (pid {}), authenticated with {:?}",
            tor.tor_version(),
            instance.pid,
            tor.auth_method()
        ),
    );
    tor.set_events(&["HS_DESC", "STATUS_CLIENT"]).await?;
    let ours = reconcile(tor, options).await?;
    log(
        Level::Notice,
        &format!("{} service(s) published {} ms after tor answered", ours.len(), answered.elapsed().as_millis()),
    );
    let mut ours = ours;
    let mut uploaded_once = std::collections::HashSet::new();
    let mut next_reconcile = tokio::time::Instant::now() + options.reconcile_every;
    loop {
        let event = tokio::select! {
            e = tor.next_event(None) => e,
            _ = tokio::time::sleep_until(next_reconcile) => {
                ours = reconcile(tor, options).await?;
                next_reconcile = tokio::time::Instant::now() + options.reconcile_every;
                continue;
            }
            _ = shutdown.as_mut() => return Ok(Served::Shutdown),
        };
        match event {
            Ok(Some(TorEvent::HsDesc { action, service_id, .. })) if action == "UPLOADED" => {
                if let Some(name) = ours.get(&service_id) {
                    if let Some(dir) = &options.config.runtime_dir {
                        if let Err(e) = UploadLog::record(dir, &instance, &service_id) {
                            log(Level::Warning, &format!("cannot record the upload of {name}: {e}"));
                        }
                    }
                    if uploaded_once.insert(service_id.clone()) {
                        log(Level::Info, &format!("{name}: descriptor uploaded; the service can be reached"));
                    }
                }
            }
            Ok(Some(TorEvent::Other(line))) if line.contains("BOOTSTRAP") && line.contains("PROGRESS=100") => {
                log(Level::Info, "tor has bootstrapped");
            }
            Ok(_) => {}
            Err(Error::TorGone { .. }) => return Ok(Served::TorGone),
            Err(e) => return Err(e),
        }
    }
}

/// Makes tor run exactly the enabled `autostart` services (and removes ours that were
/// disabled meanwhile). Returns our services by service id, for event handling.
async fn reconcile(tor: &mut TorControl, options: &DaemonOptions) -> Result<std::collections::HashMap<String, String>> {
    let records = match load_services(&options.config).await {
        Ok(records) => records,
        Err(e) => {
            log(Level::Error, &format!("cannot read the services: {e}"));
            return Ok(Default::default());
        }
    };
    let report = publish::restore(tor, &records).await?;
    for name in &report.added {
        log(Level::Info, &format!("{name}: published"));
    }
    for (name, error) in &report.failed {
        log(Level::Error, &format!("{name}: could not be published: {error}"));
    }
    let detached = tor.detached_onions().await?;
    for record in records.iter().filter(|r| !r.enabled) {
        if detached.contains(&record.address().service_id()) {
            match publish::unpublish(tor, &record.address()).await {
                Ok(_) => log(Level::Info, &format!("{}: disabled, removed from tor", record.name)),
                Err(e) => log(Level::Error, &format!("{}: could not be removed from tor: {e}", record.name)),
            }
        }
    }
    Ok(records.iter().map(|r| (r.address().service_id(), r.name.to_string())).collect())
}
