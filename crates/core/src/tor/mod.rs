//! Talking to tor's control port. [`control`] is the connection (authentication, commands,
//! events); [`command`] builds command lines that cannot smuggle a second command.

pub mod command;
pub mod control;

pub use command::{CommandLine, Reply};
pub use control::{AuthMethod, ControlConfig, ControlTarget, HsDescEvent, TorControl, TorEvent, TorInstance};
