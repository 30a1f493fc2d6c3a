//! Helpers shared by the tests that run the real `tails-server` binary on real files.
//! `run.rs` and `tor.rs` do not name this package's binary, so the integration suite and
//! the benchmarks include them too (`#[path]`).
#![allow(dead_code)]

mod bus;
mod fake_tor;
mod run;
mod tor;

#[allow(unused_imports)] // not every test runs a bus or a stand-in
pub use bus::*;
#[allow(unused_imports)]
pub use fake_tor::*;
pub use run::*;
#[allow(unused_imports)] // not every test starts a tor
pub use tor::*;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct TestEnv {
    pub root: tempfile::TempDir,
}

impl TestEnv {
    pub fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("run")).unwrap();
        Self { root }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.root.path().join("state")
    }

    pub fn runtime_dir(&self) -> PathBuf {
        self.root.path().join("run/tails-server")
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tails-server"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.root.path())
            .env("TAILS_SERVER_STATE_DIR", self.state_dir())
            .env("TAILS_SERVER_RUNTIME_DIR", self.runtime_dir())
            .env("TAILS_SERVER_LOCK_TIMEOUT", "20")
            .stdin(std::process::Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.command().args(args).output().unwrap().into()
    }

    /// The state as the JSON listing shows it.
    pub fn listing(&self) -> serde_json::Value {
        self.run(&["--format", "json", "list"]).ok().json()
    }

    pub fn service(&self, name: &str) -> serde_json::Value {
        self.run(&["--format", "json", "info", name]).ok().json()
    }
}

/// Every byte of every file of a store (sled's files, the lock, the snapshots): compare
/// before and after a refused command to prove it changed nothing.
pub fn store_state(state_dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    dir_contents(state_dir)
}

/// The service id (address without `.onion`) of a service, from its JSON listing.
pub fn service_id(service: &serde_json::Value) -> String {
    service["address"].as_str().unwrap().trim_end_matches(".onion").to_owned()
}

/// Encrypts arbitrary bytes to a passphrase the way `age -p -a` does, with a low scrypt
/// work factor (tails-server accepts any up to its maximum), so that tests stay quick.
pub fn age_encrypt(plaintext: &[u8], passphrase: &str) -> Vec<u8> {
    use std::io::Write;
    let mut recipient = age::scrypt::Recipient::new(age::secrecy::SecretString::from(passphrase.to_owned()));
    recipient.set_work_factor(10);
    let encryptor = age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient)).unwrap();
    let mut out = Vec::new();
    let armor = age::armor::ArmoredWriter::wrap_output(&mut out, age::armor::Format::AsciiArmor).unwrap();
    let mut w = encryptor.wrap_output(armor).unwrap();
    w.write_all(plaintext).unwrap();
    w.finish().unwrap().finish().unwrap();
    out
}

/// Sends SIGTERM to the program `strace` runs (killing strace would only detach it) and
/// waits for strace to end with it.
pub fn terminate_traced(strace: &mut KillOnDrop) -> std::process::ExitStatus {
    let pid = strace.0.id();
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    let traced: i32 = children.split_whitespace().next().expect("the program runs under strace").parse().unwrap();
    unsafe { libc::kill(traced, libc::SIGTERM) };
    strace.0.wait().unwrap()
}

/// `tails-server service` on `bus` with `tor`, as the window's tests run it: root allowed,
/// no Persistent Storage to follow, the passphrase of the LUKS volume `storage` asked before
/// a secret leaves; its log in `env`'s service.log.
pub fn serve_for_the_window(env: &TestEnv, bus: &Bus, tor: &LocalTor, storage: &Path) -> KillOnDrop {
    let log = std::fs::File::create(env.root.path().join("service.log")).unwrap();
    KillOnDrop(
        env.command()
            .env("TAILS_SERVER_CONTROL_PORT", tor.control())
            .args(["service", "--bus", &bus.address, "--authorization", "uids:0", "--persistent-storage", "none"])
            .arg("--presence")
            .arg(format!("luks:{}", storage.display()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}
