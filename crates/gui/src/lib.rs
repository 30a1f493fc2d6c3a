//! tails-server-gui: the graphical front end of tails-server, a GTK 4 and libadwaita window
//! over the system service's D-Bus API (`org.boum.tails.Server1`), as the CLI is a terminal
//! one. It holds no state of its own: the service keeps everything.
//!
//! - [`model`]: every word and state the window shows, worked out without GTK;
//! - [`backend`]: the one connection to the service, on a thread of its own;
//! - [`window`]: the services window;
//! - [`add`]: adding a service from the catalog;
//! - [`keys`]: the keys you received (the friend's side);
//! - [`backup`]: saving and restoring an encrypted backup of everything;
//! - [`kept`]: the files removed services left, deleted or given back;
//! - [`friends`]: inviting, showing a key (after the Persistent Storage passphrase), revoking;
//! - [`i18n`]: the person's language (gettext).

pub mod add;
pub mod backend;
pub mod backup;
pub mod friends;
pub mod i18n;
pub mod kept;
pub mod keys;
pub mod model;
mod qr;
pub mod window;

pub use {adw, gtk};

/// The application's identifier (its desktop entry is `APP_ID.desktop`).
pub const APP_ID: &str = "org.boum.tails.Server.Gui";
