//! A real tor on loopback for tests and benchmarks.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

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
        let hashed = Command::new(tor_binary())
            .args(["--quiet", "--hash-password", &password])
            .output()
            .expect("tor is installed");
        let hashed = String::from_utf8(hashed.stdout).unwrap().trim().lines().last().unwrap().to_owned();
        std::fs::write(dir.path().join("torrc"), format!("HashedControlPassword {hashed}\n")).unwrap();
        let mut tor = LocalTor { dir, control_port: 0, password, authenticated: true, child: None };
        tor.spawn();
        tor
    }

    /// A tor whose control port asks for no authentication (NULL).
    pub fn start_without_authentication() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("torrc"), "").unwrap();
        let mut tor = LocalTor { dir, control_port: 0, password: String::new(), authenticated: false, child: None };
        tor.spawn();
        tor
    }

    fn spawn(&mut self) -> Instant {
        let data = self.dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        // The first start lets tor pick a free port (a port probed free beforehand could be
        // taken by a parallel test before tor binds it); restarts reuse it, as Tails' tor does.
        let port_file = self.dir.path().join("control-port");
        let _ = std::fs::remove_file(&port_file);
        let port = if self.control_port == 0 { "auto".to_owned() } else { format!("127.0.0.1:{}", self.control_port) };
        std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        let child = Command::new(tor_binary())
            .arg("-f")
            .arg(self.dir.path().join("torrc"))
            .args(["--DataDirectory", data.to_str().unwrap()])
            .args(["--ControlPort", &port, "--ControlPortWriteToFile", port_file.to_str().unwrap()])
            .args(["--CookieAuthentication", if self.authenticated { "1" } else { "0" }])
            .args(["--SocksPort", "0", "--DisableNetwork", "1"])
            .args(["--GeoIPFile", "/dev/null", "--GeoIPv6File", "/dev/null", "--Log", "warn stderr"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.wait_answering()
    }

    /// Blocks until the control port accepts a connection; returns that moment.
    fn wait_answering(&mut self) -> Instant {
        let deadline = Instant::now() + Duration::from_secs(30);
        let port_file = self.dir.path().join("control-port");
        while self.control_port == 0 {
            // "PORT=127.0.0.1:NNNN", written once tor listens.
            let text = std::fs::read_to_string(&port_file).unwrap_or_default();
            if let Some(port) = text.trim().rsplit(':').next().and_then(|p| p.parse().ok()) {
                self.control_port = port;
            } else {
                assert!(Instant::now() < deadline, "tor did not open its control port");
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.control_port)).is_ok() {
                return Instant::now();
            }
            assert!(Instant::now() < deadline, "tor did not open its control port");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Stops tor and starts it again on the same ports: every ADD_ONION service is gone and
    /// a new cookie is written, as when Tails restarts tor. Returns when the control port
    /// answered again.
    pub fn restart(&mut self) -> Instant {
        self.stop();
        self.spawn()
    }

    /// The running tor's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("tor is running").id()
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

    pub fn config(&self) -> tails_server_core::tor::ControlConfig {
        tails_server_core::tor::ControlConfig::new(tails_server_core::tor::ControlTarget::Tcp(self.control()))
    }

    /// `GETINFO onions/detached`, through the library's own control layer.
    pub fn detached(&self) -> std::collections::HashSet<String> {
        self.try_detached().expect("tor answers on its control port")
    }

    /// The same, or None while tor is not (yet) answering, e.g. just after a restart.
    pub fn try_detached(&self) -> Option<std::collections::HashSet<String>> {
        let config = self.config();
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
            let mut tor = tails_server_core::tor::TorControl::connect(&config).await.ok()?;
            tor.detached_onions().await.ok()
        })
    }
}

impl LocalTor {
    /// The client keys tor holds (ONION_CLIENT_AUTH_VIEW): service id → base64 key, or None
    /// while tor is not answering.
    pub fn try_client_keys(&self) -> Option<std::collections::BTreeMap<String, String>> {
        self.control_command("ONION_CLIENT_AUTH_VIEW", &[]).map(|lines| {
            lines
                .iter()
                .filter_map(|line| {
                    let mut words = line.strip_prefix("CLIENT ")?.split(' ');
                    Some((words.next()?.to_owned(), words.next()?.strip_prefix("x25519:")?.to_owned()))
                })
                .collect()
        })
    }

    pub fn client_keys(&self) -> std::collections::BTreeMap<String, String> {
        self.try_client_keys().expect("tor answers on its control port")
    }

    /// Sends one command through the library's control layer; its reply lines if tor said OK.
    pub fn control_command(&self, keyword: &'static str, args: &[&str]) -> Option<Vec<String>> {
        let config = self.config();
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
            let mut tor = tails_server_core::tor::TorControl::connect(&config).await.ok()?;
            let mut command = tails_server_core::tor::CommandLine::new(keyword);
            for arg in args {
                command = command.arg("argument", arg).unwrap();
            }
            let reply = tor.send(&command).await.ok()?;
            assert!(reply.is_ok(), "{keyword}: {reply:?}");
            Some(reply.lines)
        })
    }
}

impl Drop for LocalTor {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The stored onion key blob of a service, read through the library (the CLI never prints
/// it): what a test needs to make another controller hold the same address.
pub fn onion_key_blob(state_dir: &Path, runtime_dir: &Path, name: &str) -> String {
    let mut config = tails_server_core::Config::new(state_dir.to_owned());
    config.runtime_dir = Some(runtime_dir.to_owned());
    let manager = tails_server_core::Manager::open(config).unwrap();
    manager.get(&name.parse().unwrap()).unwrap().key.to_control_blob().to_string()
}

/// Runs tor (DisableNetwork 1) on a HiddenServiceDir until it has written `hostname`;
/// returns tor's info-level log, which says which client files it loaded or refused.
pub fn run_hidden_service_dir(dir: &Path) -> String {
    let data = dir.parent().unwrap().join(format!("data-{}", dir.file_name().unwrap().to_str().unwrap()));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let torrc = data.join("torrc");
    std::fs::write(&torrc, "").unwrap();
    let mut child = Command::new(tor_binary())
        .args(["-f", torrc.to_str().unwrap(), "--DataDirectory", data.to_str().unwrap(), "--SocksPort", "0"])
        .args(["--DisableNetwork", "1", "--HiddenServiceDir", dir.to_str().unwrap()])
        .args(["--HiddenServicePort", "80 127.0.0.1:1"])
        .args(["--GeoIPFile", "/dev/null", "--GeoIPv6File", "/dev/null", "--Log", "info stdout"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("tor is installed (Debian: apt-get install tor)");
    // tor has loaded the service's keys and client files once it turns to the network,
    // which DisableNetwork makes it put off with a notice: read its log up to there.
    let (lines, seen) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut log = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match seen.recv_timeout(left) {
            Ok(line) => {
                let done = line.contains("Delaying directory fetches");
                log.push_str(&line);
                log.push('\n');
                if done && dir.join("hostname").exists() {
                    break;
                }
            }
            Err(_) => panic!("tor did not load {} within 60 s:\n{log}", dir.display()),
        }
    }
    child.kill().unwrap();
    let _ = child.wait();
    log
}

/// tor from PATH, or from /usr/sbin where Debian puts it (not always on a user's PATH).
pub fn tor_binary() -> PathBuf {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("tor"))
        .find(|p| p.is_file())
        .expect("this test needs tor (Debian: apt-get install tor)")
}
