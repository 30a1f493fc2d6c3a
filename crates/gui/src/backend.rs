//! The window's one connection to the system service. zbus runs on a tokio runtime of its
//! own (one worker thread); GTK's main loop awaits the results, so the window never blocks
//! on the bus. One connection for the window's whole life: a proof of presence belongs to a
//! connection, so the person types the passphrase once per five minutes, not per click.

use std::future::Future;
use std::sync::Arc;

use futures_util::StreamExt;
use tails_server_dbus::{ServerProxy, ServiceError, BUS_NAME};

use crate::model::Failure;
use crate::tr;

/// What the window hears without asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Something changed (`Changed`): ask again.
    Changed,
    /// The Persistent Storage was unlocked or locked (`PersistentStorageUnlocked`).
    StorageUnlocked(bool),
    /// The service started (true) or stopped (false).
    ServiceRunning(bool),
}

#[derive(Clone)]
pub struct Backend {
    runtime: Arc<tokio::runtime::Runtime>,
    server: ServerProxy<'static>,
}

impl Backend {
    /// Connects to the system bus (`DBUS_SYSTEM_BUS_ADDRESS` when set), whether or not the
    /// service runs yet: [`Backend::running`] says.
    pub fn connect() -> impl Future<Output = Result<Backend, Failure>> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tails-server-gui-bus")
            .enable_all()
            .build();
        async move {
            let runtime =
                Arc::new(runtime.map_err(|e| Failure::NoBus(tr!("cannot start a thread: {error}", error = e)))?);
            let connect = runtime.spawn(async {
                let connection = zbus::Connection::system().await.map_err(|e| Failure::NoBus(e.to_string()))?;
                ServerProxy::new(&connection).await.map_err(|e| Failure::NoBus(e.to_string()))
            });
            let server = connect.await.map_err(|e| Failure::NoBus(e.to_string()))??;
            Ok(Backend { runtime, server })
        }
    }

    /// Whether the service owns its name on the bus now.
    pub fn running(&self) -> impl Future<Output = bool> {
        let connection = self.server.inner().connection().clone();
        let ask = self.runtime.spawn(async move {
            let dbus = zbus::fdo::DBusProxy::new(&connection).await.ok()?;
            dbus.name_has_owner(BUS_NAME.try_into().ok()?).await.ok()
        });
        async move { matches!(ask.await, Ok(Some(true))) }
    }

    /// One call to the service, made on the bus's thread and awaited on the caller's.
    pub fn call<T, F, Fut>(&self, call: F) -> impl Future<Output = Result<T, Failure>>
    where
        F: FnOnce(ServerProxy<'static>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, ServiceError>> + Send + 'static,
        T: Send + 'static,
    {
        let server = self.server.clone();
        let task = self.runtime.spawn(async move { call(server).await });
        async move {
            match task.await {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(ServiceError::ZBus(zbus::Error::MethodError(name, _, _))))
                    if name.as_str() == "org.freedesktop.DBus.Error.ServiceUnknown"
                        || name.as_str() == "org.freedesktop.DBus.Error.NameHasNoOwner" =>
                {
                    Err(Failure::NotRunning)
                }
                Ok(Err(error)) => Err(Failure::Refused(error)),
                Err(e) => Err(Failure::NoBus(tr!("the bus thread failed: {error}", error = e))),
            }
        }
    }

    /// Everything the window should hear, as it happens: a channel the main loop reads.
    pub fn events(&self) -> tokio::sync::mpsc::UnboundedReceiver<Event> {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        let server = self.server.clone();
        self.runtime.spawn(async move {
            let connection = server.inner().connection().clone();
            let Ok(dbus) = zbus::fdo::DBusProxy::new(&connection).await else { return };
            let (Ok(mut changed), mut unlocked, Ok(mut owners)) = (
                server.receive_changed().await,
                server.receive_persistent_storage_unlocked_changed().await,
                dbus.receive_name_owner_changed_with_args(&[(0, BUS_NAME)]).await,
            ) else {
                return;
            };
            loop {
                let event = tokio::select! {
                    Some(_) = changed.next() => Event::Changed,
                    Some(change) = unlocked.next() => match change.get().await {
                        Ok(value) => Event::StorageUnlocked(value),
                        Err(_) => continue,
                    },
                    Some(owner) = owners.next() => match owner.args() {
                        Ok(args) => Event::ServiceRunning(args.new_owner().is_some()),
                        Err(_) => continue,
                    },
                    else => return,
                };
                if sender.send(event).is_err() {
                    return;
                }
            }
        });
        receiver
    }
}
