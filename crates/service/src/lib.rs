//! The tails-server system service: what `tails-server service` runs as root on Tails, where
//! the logged-in user can reach neither tor's control port nor the Persistent Storage. It
//! owns `org.boum.tails.Server` on the system bus and exports the interface of
//! [`tails_server_dbus`] over the library; it keeps services published (the library's
//! reconcile loop) once the Persistent Storage is unlocked. It holds no policy of its own:
//! each method is a checked call into the library.

pub mod authority;
pub mod persistent_storage;
pub mod presence;
mod server;

use std::future::Future;

use tails_server_core::daemon::{self, DaemonOptions};
use tails_server_core::reconcile::Publisher;
use tails_server_dbus::{BUS_NAME, OBJECT_PATH};

pub use authority::Authority;
pub use persistent_storage::Source as PersistentStorageSource;
pub use presence::PresenceCheck;

/// One key derivation at a time, whatever it is for (a passphrase checked against the
/// Persistent Storage: argon2id, up to 1 GiB; a backup decrypted: scrypt, up to 512 MiB):
/// the unit's memory cap fits one, and guessing gets no faster with more callers.
pub(crate) static KEY_DERIVATION: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// Which bus to serve on.
#[derive(Debug, Clone)]
pub enum Bus {
    System,
    /// A bus address (`unix:path=...`): tests run a private dbus-daemon.
    Address(String),
}

#[derive(Debug, Clone)]
pub struct ServiceOptions {
    pub bus: Bus,
    pub daemon: DaemonOptions,
    pub authority: Authority,
    pub persistent_storage: PersistentStorageSource,
    /// What proves a person is there before a secret leaves or access widens.
    pub presence: PresenceCheck,
}

/// Serves until `shutdown` completes. Errors only when the service cannot start (the bus is
/// not there, the name is owned by another process or refused by the bus policy).
pub async fn run(mut options: ServiceOptions, shutdown: impl Future<Output = ()>) -> zbus::Result<()> {
    // Changes come one after another here: sled stays open between them (a change then
    // costs the stick its snapshot's two syncs, not sled's open and close as well).
    options.daemon.config.store.hold_database = true;
    // Another process holding sled is waited for, never asked over the bus (by ourselves).
    options.daemon.config.store.ask_holder_to_let_go = None;
    let connection = match &options.bus {
        Bus::System => zbus::connection::Builder::system(),
        Bus::Address(address) => zbus::connection::Builder::address(address.as_str()),
    }
    .build()
    .await?;
    let mut unlocked = persistent_storage::follow(options.persistent_storage, &connection).await?;
    let mut publisher = Publisher::new(options.daemon.config.clone(), options.daemon.control.clone());
    publisher.daemons = options.daemon.daemons;
    let server = server::Server {
        publisher,
        authority: options.authority.clone(),
        presence: presence::Presence::new(options.presence.clone()),
        unlocked: unlocked.clone(),
        // The store is a folder of the Persistent Storage (Tails' tails-server/).
        persistent_storage: match options.persistent_storage {
            PersistentStorageSource::Tails => options.daemon.config.state_dir.parent().map(Into::into),
            PersistentStorageSource::None => None,
        },
    };
    connection.object_server().at(OBJECT_PATH, server).await?;
    // What tor runs changes without any call (tor restarted, a descriptor uploaded): the
    // front ends hear it as `Changed`, as they hear the changes made through calls.
    let tor_changed = std::sync::Arc::new(tokio::sync::Notify::new());
    options.daemon.tor_changed = Some(tor_changed.clone());
    tokio::spawn(tell_tor_changes(connection.clone(), tor_changed));
    connection.request_name(BUS_NAME).await?;
    daemon::log(daemon::Level::Notice, &format!("serving {BUS_NAME} on the bus"));

    // The reconcile loop runs while the Persistent Storage is unlocked: before, nothing may
    // be created where the volume will be mounted.
    tokio::pin!(shutdown);
    loop {
        while !*unlocked.borrow_and_update() {
            daemon::log(daemon::Level::Notice, "waiting for the Persistent Storage to be unlocked");
            tokio::select! {
                changed = unlocked.changed() => if changed.is_err() {
                    // Nobody will tell us any more: it stays locked.
                    shutdown.as_mut().await;
                    return Ok(());
                },
                _ = &mut shutdown => return Ok(()),
            }
        }
        notify_unlocked(&connection).await;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let daemon_options = options.daemon.clone();
        let loop_task = tokio::spawn(async move {
            let _ = daemon::run(daemon_options, async {
                let _ = stopped.await;
            })
            .await;
        });
        // Until the volume goes away (locked again, or the service stops).
        let done = loop {
            tokio::select! {
                changed = unlocked.changed() => match changed {
                    Ok(()) if !*unlocked.borrow() => break false,
                    Ok(()) => {}
                    // Nobody will tell us any more (no Persistent Storage to follow): it
                    // stays unlocked until the service stops.
                    Err(_) => {
                        shutdown.as_mut().await;
                        break true;
                    }
                },
                _ = &mut shutdown => break true,
            }
        };
        let _ = stop.send(());
        let _ = loop_task.await;
        // Flushed and closed once the volume is locked (or the service stops); a request
        // already running lets go itself when it ends (`Server::with_manager`).
        let _ = tokio::task::spawn_blocking(tails_server_core::store::let_go_of_held_databases).await;
        if done {
            return Ok(());
        }
    }
}

/// Emits `Changed` each time the reconcile loop says tor's state may have changed (bursts
/// coalesce into one signal), until the connection closes.
async fn tell_tor_changes(connection: zbus::Connection, tor_changed: std::sync::Arc<tokio::sync::Notify>) {
    let Ok(iface) = connection.object_server().interface::<_, server::Server>(OBJECT_PATH).await else { return };
    loop {
        tor_changed.notified().await;
        if server::Server::announce(iface.signal_emitter()).await.is_err() {
            return;
        }
    }
}

/// Lets clients following the property know the state changed.
async fn notify_unlocked(connection: &zbus::Connection) {
    if let Ok(iface) = connection.object_server().interface::<_, server::Server>(OBJECT_PATH).await {
        let _ = iface.get().await.persistent_storage_unlocked_changed(iface.signal_emitter()).await;
    }
}
