//! What the trials share: the network, running the real `tails-server` binary, and
//! clients that connect through tor's SOCKS port the way Tor Browser does.

pub use tails_server_integration::network;

pub use crate::common::Run;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use tails_server_core::tor::{CommandLine, TorControl, TorEvent};

use network::Network;

/// The `tails-server` binary of this workspace (built by `cargo build` before the suite).
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("TAILS_SERVER_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("tails-server");
    assert!(bin.exists(), "{} is missing: run `cargo build` first", bin.display());
    bin
}

/// One user's tails-server, with its own state, pointed at the onion-service tor (or, for
/// a friend who keeps received keys, at a client tor).
pub struct User<'a> {
    pub net: &'a Network,
    pub home: tempfile::TempDir,
    /// None: the onion-service tor; Some(i): client tor i.
    tor_client: Option<u16>,
}

impl<'a> User<'a> {
    pub fn new(net: &'a Network) -> Self {
        User { net, home: tempfile::tempdir().unwrap(), tor_client: None }
    }

    /// The friend's tails-server, talking to client tor `index`.
    pub fn friend(net: &'a Network, index: u16) -> Self {
        User { net, home: tempfile::tempdir().unwrap(), tor_client: Some(index) }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.home.path().join("state")
    }

    pub fn command(&self) -> Command {
        let (port, cookie) = match self.tor_client {
            None => (self.net.ports.hs_control(), self.net.dir("hs/control_auth_cookie")),
            Some(i) => (self.net.ports.client_control(i), self.net.dir(&format!("client{i}/control_auth_cookie"))),
        };
        let mut cmd = Command::new(binary());
        cmd.env("TAILS_SERVER_STATE_DIR", self.state_dir())
            .env("TAILS_SERVER_RUNTIME_DIR", self.home.path().join("run"))
            .env("TAILS_SERVER_CONTROL_PORT", format!("{}:{port}", self.net.ports.address))
            .env("TAILS_SERVER_COOKIE_FILE", cookie)
            .env_remove("TAILS_SERVER_PASSWORD_FILE")
            .stdin(std::process::Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.command().args(args).output().unwrap().into()
    }

    pub fn address(&self, service: &str) -> String {
        self.run(&["--format", "json", "info", service]).ok().json()["address"].as_str().unwrap().to_owned()
    }

    /// The `.auth_private` line `client show` prints.
    pub fn auth_private(&self, service: &str, client: &str) -> String {
        self.run(&["client", "show", service, client, "--as", "auth-private"]).ok().stdout.trim().to_owned()
    }
}

/// A client tor of the network, with its ClientOnionAuthDir on this machine.
pub struct Client<'a> {
    pub net: &'a Network,
    pub index: u16,
}

impl<'a> Client<'a> {
    pub fn auth_dir(&self) -> PathBuf {
        self.net.dir(&format!("client{}/onion_auth", self.index))
    }

    /// Installs a credential as Tor Browser / a tor user would: a file in
    /// ClientOnionAuthDir, then SIGNAL RELOAD (tor reads the directory only then), then
    /// NEWNYM so that no cached descriptor or open circuit hides the change.
    pub async fn set_keys(&self, lines: &[(&str, &str)]) {
        for entry in std::fs::read_dir(self.auth_dir()).unwrap() {
            std::fs::remove_file(entry.unwrap().path()).unwrap();
        }
        for (name, line) in lines {
            let path = self.auth_dir().join(format!("{name}.auth_private"));
            std::fs::write(&path, format!("{line}\n")).unwrap();
            network::chmod(&path, 0o600);
        }
        let mut tor = self.control().await;
        tor.signal("RELOAD").await.unwrap();
        self.newnym_on(&mut tor).await;
    }

    pub async fn control(&self) -> TorControl {
        TorControl::connect(&self.net.client_control_config(self.index)).await.expect("client control port")
    }

    /// Forgets descriptors, circuits and the keys given with ONION_CLIENT_AUTH_ADD, as Tor
    /// Browser's New Identity does.
    pub async fn newnym(&self) {
        let mut tor = self.control().await;
        self.newnym_on(&mut tor).await;
    }

    /// Asks for a NEWNYM without waiting for it: a retry's fresh start, whenever tor gets
    /// to it.
    async fn request_newnym(&self) {
        let reply = self.control().await.send(&CommandLine::new("SIGNAL").arg("signal", "NEWNYM").unwrap()).await;
        assert!(reply.unwrap().is_ok(), "NEWNYM refused");
    }

    /// Returns once tor has acted on it. tor answers OK at once but defers a NEWNYM that
    /// comes within 10 s of the last one: a key given in between would be purged later, and
    /// a circuit the next step must not use would still be open.
    async fn newnym_on(&self, tor: &mut TorControl) {
        tor.set_events(&["SIGNAL"]).await.unwrap();
        let reply = tor.send(&CommandLine::new("SIGNAL").arg("signal", "NEWNYM").unwrap()).await.unwrap();
        assert!(reply.is_ok(), "NEWNYM: {reply:?}");
        // An event read before the reply is an earlier NEWNYM's (a deferred one, run between
        // SETEVENTS and this): tor acts on ours only after answering.
        tor.discard_events();
        loop {
            match tor.next_event(Some(Duration::from_secs(30))).await.unwrap() {
                Some(TorEvent::Signal(signal)) if signal == "NEWNYM" => break,
                Some(_) => {}
                None => panic!("client{}: tor did not act on NEWNYM within 30 s", self.index),
            }
        }
    }

    /// One connection attempt: the SOCKS reply code and, when connected, the HTTP body.
    pub async fn fetch(&self, address: &str, port: u16) -> (u8, Option<String>) {
        socks_fetch((self.net.ports.address, self.net.ports.client_socks(self.index)).into(), address, port).await
    }

    /// Tries until the reply is `want` (0x00 for a successful fetch), for at most `limit`.
    /// Returns the last reply and body.
    pub async fn fetch_until(&self, address: &str, port: u16, want: u8, limit: Duration) -> (u8, Option<String>) {
        let deadline = Instant::now() + limit;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result =
                tokio::time::timeout(Duration::from_secs(30), self.fetch(address, port)).await.unwrap_or((0xFF, None));
            if result.0 != want {
                eprintln!("    client{}: attempt {attempt} got {:#04x}", self.index, result.0);
            }
            if result.0 == want || Instant::now() >= deadline {
                if result.0 != want {
                    eprintln!(
                        "    client{}: gave up after {attempt} attempts, last reply {:#04x}",
                        self.index, result.0
                    );
                }
                return result;
            }
            // A timeout or a stale descriptor: forget it at once; a descriptor not found yet
            // (0xF0): ask again, and now and then from scratch.
            if result.0 == 0xFF || attempt % 3 == 0 {
                self.request_newnym().await;
            }
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
    }
}

/// SOCKS5 CONNECT to `host:port` through tor, then `GET /`.
pub async fn socks_fetch(socks: std::net::SocketAddr, host: &str, port: u16) -> (u8, Option<String>) {
    let Ok(mut s) = tokio::net::TcpStream::connect(socks).await else { return (0xFE, None) };
    let mut request = vec![5, 1, 0];
    if s.write_all(&request).await.is_err() {
        return (0xFE, None);
    }
    let mut greeting = [0u8; 2];
    if s.read_exact(&mut greeting).await.is_err() || greeting != [5, 0] {
        return (0xFE, None);
    }
    request = vec![5, 1, 0, 3, host.len() as u8];
    request.extend_from_slice(host.as_bytes());
    request.extend_from_slice(&port.to_be_bytes());
    s.write_all(&request).await.unwrap();
    let mut reply = [0u8; 10];
    if s.read_exact(&mut reply).await.is_err() {
        return (0xFD, None);
    }
    if reply[1] != 0 {
        return (reply[1], None);
    }
    s.write_all(format!("GET / HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes()).await.unwrap();
    let mut response = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_string(&mut response)).await;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
    (0, body)
}

/// A throw-away `.auth_private` line for `address` with a key nobody authorized.
pub fn wrong_key_line(address: &str) -> String {
    let key = tails_server_core::keys::ClientSecretKey::generate().unwrap();
    let id = address.trim_end_matches(".onion");
    format!("{id}:descriptor:x25519:{}", key.to_base32().as_str())
}

/// Waits until `tails-server status` reports the descriptor uploaded (the daemon or
/// `enable --wait` recorded the HS_DESC UPLOADED event).
pub fn wait_uploaded(user: &User, service: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        // Exit 3 while tor cannot be asked (restarting) or does not run it yet.
        let status = user.run(&["--format", "json", "status", service]).json();
        if status["uploaded"] == true {
            return;
        }
        assert!(Instant::now() < deadline, "{service} was not uploaded: {status}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn snapshot_files(state_dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(state_dir.join("snapshots"))
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    files.sort();
    files
}
