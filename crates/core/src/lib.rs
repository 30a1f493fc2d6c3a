//! tails-server: run onion services from Tails and keep them across reboots.
//!
//! The library is organised one module per concern, each depending only on those above it:
//!
//! - [`names`], [`keys`], [`options`]: validated names, tor's key and auth formats, typed options;
//! - [`catalog`]: data-driven definitions of the kinds of service;
//! - [`model`]: the records kept per service;
//! - [`store`]: the sled store (locking, transactions, snapshots, recovery);
//! - [`sockets`]: the kernel's socket tables (who listens on a port, who serves a connection);
//! - [`tails`]: the only module that knows Tails and Debian paths;
//! - [`tor`]: the control-port connection, secrets only to a tor that proved itself;
//! - [`system`]: the catalog's daemons as systemd units, and LAN access;
//! - [`manager`]: the operations on stored services;
//! - [`reconcile`]: the one policy for tor — what it runs always converges to the store.
//!
//! Every front end (the CLI, the daemon, the D-Bus service) calls these; none holds policy.

// The library states facts and returns them; printing is the front ends' business (the
// daemon's logger is the one exception, and says so).
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod backup;
pub mod catalog;
pub mod daemon;
pub mod error;
#[doc(hidden)]
pub mod fuzz_targets;
pub mod interop;
pub mod keys;
pub mod manager;
pub mod model;
pub mod names;
pub mod options;
pub mod publish;
pub mod reconcile;
pub mod secret_file;
pub mod sockets;
pub mod store;
pub mod system;
pub mod tails;
pub mod tor;
pub mod unix;

pub use error::{Error, ErrorKind, Result};
pub use manager::{AddRequest, Config, ImportReport, Manager, OnConflict, Removed, ServiceData};
