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
        assert_eq!(self.code, 0, "command failed\nstdout: {}\nstderr: {}", self.stdout, self.stderr);
        self
    }
    #[track_caller]
    pub fn fails_with(self, needle: &str) -> Self {
        assert_ne!(self.code, 0, "command should have failed\nstdout: {}", self.stdout);
        assert!(self.stderr.contains(needle), "stderr lacks {needle:?}:\n{}", self.stderr);
        self
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
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

/// Every byte of every file of a store (sled's files, the lock, the snapshots): compare
/// before and after a refused command to prove it changed nothing.
pub fn store_state(state_dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    dir_contents(state_dir)
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
                out.insert(path.strip_prefix(base).unwrap().to_owned(), std::fs::read(&path).unwrap());
            }
        }
    }
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out
}

/// A real tor process on loopback with `DisableNetwork 1`: its control port works fully
/// (ADD_ONION, DEL_ONION, GETINFO, events), it just never builds circuits. Killed on drop.
pub struct LocalTor {
    pub dir: tempfile::TempDir,
    pub control_port: u16,
    pub password: String,
    /// false: no authentication at all (NULL), as onion-grater offers its clients.
    authenticated: bool,
    child: Option<std::process::Child>,
}

impl LocalTor {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let password = "correct horse battery staple".to_owned();
        let hashed =
            Command::new("tor").args(["--quiet", "--hash-password", &password]).output().expect("tor is installed");
        let hashed = String::from_utf8(hashed.stdout).unwrap().trim().lines().last().unwrap().to_owned();
        std::fs::write(dir.path().join("torrc"), format!("HashedControlPassword {hashed}\n")).unwrap();
        let mut tor = LocalTor { dir, control_port: free_port(), password, authenticated: true, child: None };
        tor.spawn();
        tor
    }

    /// A tor whose control port asks for no authentication (NULL).
    pub fn start_without_authentication() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("torrc"), "").unwrap();
        let mut tor =
            LocalTor { dir, control_port: free_port(), password: String::new(), authenticated: false, child: None };
        tor.spawn();
        tor
    }

    fn spawn(&mut self) {
        let data = self.dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        let child = Command::new("tor")
            .arg("-f")
            .arg(self.dir.path().join("torrc"))
            .args(["--DataDirectory", data.to_str().unwrap()])
            .args(["--ControlPort", &format!("127.0.0.1:{}", self.control_port)])
            .args(["--CookieAuthentication", if self.authenticated { "1" } else { "0" }])
            .args(["--SocksPort", "0", "--DisableNetwork", "1"])
            .args(["--GeoIPFile", "/dev/null", "--GeoIPv6File", "/dev/null", "--Log", "warn stderr"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.control_port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "tor did not open its control port");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Stops tor and starts it again on the same ports: every ADD_ONION service is gone and
    /// a new cookie is written, as when Tails restarts tor.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn control(&self) -> String {
        format!("127.0.0.1:{}", self.control_port)
    }

    pub fn password_file(&self) -> PathBuf {
        let path = self.dir.path().join("password");
        std::fs::write(&path, format!("{}\n", self.password)).unwrap();
        path
    }

    /// `GETINFO onions/detached`, through the library's own control layer.
    pub fn detached(&self) -> std::collections::HashSet<String> {
        let config = tails_server::tor::ControlConfig::new(tails_server::tor::ControlTarget::Tcp(self.control()));
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
            let mut tor = tails_server::tor::TorControl::connect(&config).await.unwrap();
            tor.detached_onions().await.unwrap()
        })
    }
}

impl Drop for LocalTor {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The service id (address without `.onion`) of a service, from its JSON listing.
pub fn service_id(service: &serde_json::Value) -> String {
    service["address"].as_str().unwrap().trim_end_matches(".onion").to_owned()
}
