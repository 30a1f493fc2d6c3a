//! Helpers shared by the tests that run the real `tails-server` binary on real files.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct TestEnv {
    pub root: tempfile::TempDir,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "command failed\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
    #[track_caller]
    pub fn fails_with(self, needle: &str) -> Self {
        assert_ne!(
            self.code, 0,
            "command should have failed\nstdout: {}",
            self.stdout
        );
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}:\n{}",
            self.stderr
        );
        self
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
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

/// What a store holds, to compare before and after a refused command: the names of the
/// entries in the state directory and every byte of the checksummed snapshots (one is
/// written per committed change, so an unchanged set proves no change was committed).
/// sled's own files are left out: sled rewrites its config and log head at every open.
pub fn store_state(state_dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut state = dir_contents(&state_dir.join("snapshots"));
    for entry in std::fs::read_dir(state_dir).unwrap() {
        state.insert(
            PathBuf::from("entry").join(entry.unwrap().file_name()),
            Vec::new(),
        );
    }
    state
}

/// Every file under `dir` with its bytes.
pub fn dir_contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                out.insert(
                    path.strip_prefix(base).unwrap().to_owned(),
                    std::fs::read(&path).unwrap(),
                );
            }
        }
    }
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out
}
