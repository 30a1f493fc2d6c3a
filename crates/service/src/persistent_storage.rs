//! Following Tails' Persistent Storage (`org.boum.tails.PersistentStorage`, run by tpsd):
//! the persistent store lives on the encrypted volume, which is only there once the user has
//! unlocked it in the Welcome Screen. Until then nothing may be created where the volume
//! will be mounted, and calls that need the store say so.

use tokio::sync::watch;

#[zbus::proxy(
    interface = "org.boum.tails.PersistentStorage",
    default_service = "org.boum.tails.PersistentStorage",
    default_path = "/org/boum/tails/PersistentStorage"
)]
trait PersistentStorage {
    #[zbus(property)]
    fn state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn is_unlocked(&self) -> zbus::Result<bool>;
}

/// Where the unlocked state comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Tails: ask tpsd and follow its PropertiesChanged signals.
    Tails,
    /// No Persistent Storage to wait for (not Tails): the state directory is always there.
    None,
}

/// Starts following the volume; the receiver always holds the latest answer.
pub async fn follow(source: Source, connection: &zbus::Connection) -> zbus::Result<watch::Receiver<bool>> {
    if source == Source::None {
        return Ok(watch::channel(true).1);
    }
    let proxy = PersistentStorageProxy::new(connection).await?;
    let (sender, receiver) = watch::channel(proxy.is_unlocked().await.unwrap_or(false));
    tokio::spawn(async move {
        use futures_util::StreamExt;
        let mut changes = proxy.receive_is_unlocked_changed().await;
        while let Some(change) = changes.next().await {
            if let Ok(unlocked) = change.get().await {
                if sender.send(unlocked).is_err() {
                    break;
                }
            }
        }
    });
    Ok(receiver)
}
