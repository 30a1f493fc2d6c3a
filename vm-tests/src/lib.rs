//! vm-tests: boots an image in QEMU and drives it through the Tails test suite's remote shell.
//!
//! The image is either the stand-in built by `image/build.sh` — a Debian stand-in with Tails'
//! paths, not Tails — or a real Tails USB image (see README.md). Scenarios live in `tests/`.

pub mod error;
pub mod friend;
pub mod image;
pub mod qmp;
pub mod remote_shell;
pub mod tails_server;
pub mod vm;

pub use error::{Error, Result};
pub use image::Image;
pub use remote_shell::{RemoteShell, ShOutput};
pub use vm::{BootOptions, Vm, VmConfig};
