//! A control-port connection: connect (TCP or Unix socket), authenticate, send commands,
//! collect asynchronous events. torut's `Conn` does the wire framing; authentication and
//! everything torut lacks (verified SAFECOOKIE, V3Auth, replies we need) is done here.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, WriteHalf};
use tokio::sync::mpsc;
use torut::control::{Conn, ConnError};
use zeroize::Zeroizing;

use super::command::{parse_pairs, CommandLine, Reply};
use crate::error::{Error, Result};

const SERVER_TO_CONTROLLER: &[u8] = b"Tor safe cookie authentication server-to-controller hash";
const CONTROLLER_TO_SERVER: &[u8] = b"Tor safe cookie authentication controller-to-server hash";
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_QUEUED_EVENTS: usize = 10_000;

/// Where tor's control port is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlTarget {
    /// `HOST:PORT`
    Tcp(String),
    /// A Unix socket, as Debian's `ControlSocket /run/tor/control`.
    Unix(PathBuf),
}

impl std::fmt::Display for ControlTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlTarget::Tcp(addr) => write!(f, "{addr}"),
            ControlTarget::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// How to reach and authenticate to tor. The cookie is read anew at every connection:
/// tor writes a new one each time it starts.
#[derive(Clone)]
pub struct ControlConfig {
    pub target: ControlTarget,
    /// Where to go when `target` is a Unix socket that does not exist (or that nobody serves):
    /// on Tails the control socket appears only once the person has connected (tor bug
    /// #25173), and root reaches tor on its ControlPort until then.
    pub fallback: Option<ControlTarget>,
    /// Overrides the COOKIEFILE tor announces (e.g. when tor runs in a container).
    pub cookie_file: Option<PathBuf>,
    /// For HASHEDPASSWORD: the password, read from a file or a prompt by the caller.
    pub password: Option<Zeroizing<String>>,
    pub connect_timeout: Duration,
    /// Users allowed to serve the control port, besides root. Empty: tor's usual users
    /// (debian-tor, tor, _tor).
    pub tor_users: Vec<String>,
    /// The person vouches for `target` as tor's where its owner cannot be checked here (a tor
    /// on another computer): secrets go to it. A listener this computer shows to belong to
    /// anyone else is refused all the same.
    pub pinned: bool,
}

impl std::fmt::Debug for ControlConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlConfig")
            .field("target", &self.target)
            .field("fallback", &self.fallback)
            .field("cookie_file", &self.cookie_file)
            .field("password", &self.password.as_ref().map(|_| "[secret]"))
            .field("connect_timeout", &self.connect_timeout)
            .field("tor_users", &self.tor_users)
            .field("pinned", &self.pinned)
            .finish()
    }
}

impl ControlConfig {
    /// Debian's control socket, else Tails' ControlPort (see [`ControlConfig::fallback`]).
    pub fn system_default() -> Self {
        let mut config = Self::new(ControlTarget::Unix(PathBuf::from(crate::tails::TOR_CONTROL_SOCKET)));
        config.fallback = Some(ControlTarget::Tcp(crate::tails::TOR_CONTROL_PORT.to_owned()));
        config
    }

    pub fn new(target: ControlTarget) -> Self {
        Self {
            target,
            fallback: None,
            cookie_file: None,
            password: None,
            connect_timeout: Duration::from_secs(5),
            tor_users: Vec::new(),
            pinned: false,
        }
    }

    /// The user ids that may serve tor's control port: root and tor's own user(s).
    fn trusted_uids(&self) -> Result<Vec<u32>> {
        let mut uids = vec![0];
        if self.tor_users.is_empty() {
            uids.extend(DEFAULT_TOR_USERS.iter().filter_map(|name| crate::unix::uid_of(name)));
        } else {
            for user in &self.tor_users {
                let uid = user.parse().ok().or_else(|| crate::unix::uid_of(user)).ok_or_else(|| Error::TorAuth {
                    target: self.target.to_string(),
                    reason: format!("there is no user {user:?} on this computer to trust as tor's user"),
                })?;
                uids.push(uid);
            }
        }
        Ok(uids)
    }
}

/// The users Debian, Fedora and the BSDs run tor as.
const DEFAULT_TOR_USERS: &[&str] = &["debian-tor", "tor", "_tor"];

/// Whether the other end of the connection is tor's. Only who serves the connection counts:
/// a SAFECOOKIE proof shows knowledge of the cookie, which a byte relay run by anyone passes
/// through unchanged, so it never makes an unknown or foreign listener trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Trust {
    /// The socket serving this connection belongs to root or to tor's user.
    OwnedByTor,
    /// The person vouched for this endpoint ([`ControlConfig::pinned`]).
    Pinned,
    /// Neither: the reason, for the refusal message.
    Unverified(String),
}

trait ControlStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ControlStream for T {}

/// An asynchronous event tor sent (a `650` reply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TorEvent {
    HsDesc(HsDescEvent),
    /// `SIGNAL <name>`: tor acted on a signal (RELOAD, NEWNYM...), whoever sent it.
    Signal(String),
    /// `CONF_CHANGED`: someone changed tor's configuration (SETCONF, RESETCONF, a reload).
    ConfChanged,
    Other(String),
}

/// `HS_DESC <action> <service id> <auth> <hsdir> [descriptor id] [REASON=…] …`
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HsDescEvent {
    pub action: String,
    pub service_id: String,
    pub hsdir: Option<String>,
    /// Which descriptor (CREATED, UPLOAD, client-side REQUESTED/RECEIVED: the current and the
    /// next time period's descriptors are two); UPLOADED does not say.
    pub descriptor_id: Option<String>,
    /// FAILED's reason: `UPLOAD_REJECTED` or `UNEXPECTED` for an upload, `NOT_FOUND` and
    /// others for a client's fetch of the same address.
    pub reason: Option<String>,
}

impl TorEvent {
    /// Reads the lines of a `650` reply.
    pub(crate) fn parse(lines: &[String]) -> Self {
        let first = lines.first().map(String::as_str).unwrap_or_default();
        let words: Vec<&str> = first.split(' ').collect();
        match words.as_slice() {
            ["SIGNAL", name] => return TorEvent::Signal((*name).to_owned()),
            ["CONF_CHANGED", ..] => return TorEvent::ConfChanged,
            _ => {}
        }
        let [event, action, id, rest @ ..] = words.as_slice() else { return TorEvent::Other(first.to_owned()) };
        if *event != "HS_DESC" {
            return TorEvent::Other(first.to_owned());
        }
        // rest: auth, hsdir, then optional positional descriptor id, then KEY=value pairs.
        let hsdir = rest.get(1).filter(|h| **h != "UNKNOWN").map(|h| (*h).to_owned());
        let descriptor_id = rest.get(2).filter(|w| !w.contains('=')).map(|w| (*w).to_owned());
        let reason = rest.iter().find_map(|w| w.strip_prefix("REASON=")).map(str::to_owned);
        TorEvent::HsDesc(HsDescEvent {
            action: (*action).to_owned(),
            service_id: (*id).to_owned(),
            hsdir,
            descriptor_id,
            reason,
        })
    }
}

/// One run of tor, from start to exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TorInstance {
    pub pid: u32,
    /// Unix time tor started, to within a second or two.
    pub started: u64,
}

impl TorInstance {
    pub fn same_as(&self, other: &TorInstance) -> bool {
        self.pid == other.pid && self.started.abs_diff(other.started) <= 2
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    Null,
    SafeCookie,
    Cookie,
    HashedPassword,
}

type Received = std::result::Result<(u16, Vec<String>), ConnError>;

/// A connection to tor. A reader task owns the receiving half and passes whole replies
/// through a channel, so that giving up on a wait (a timeout, a shutdown) never leaves half
/// a reply unread and the stream out of step.
pub struct TorControl {
    writer: WriteHalf<Box<dyn ControlStream>>,
    replies: mpsc::Receiver<Received>,
    reader: tokio::task::JoinHandle<()>,
    events: VecDeque<TorEvent>,
    target: ControlTarget,
    auth_method: AuthMethod,
    tor_version: String,
    trust: Trust,
    /// A TCP connection's two ends, for reading who serves it once it is accepted.
    tcp: Option<(SocketAddr, SocketAddr)>,
    /// A reply did not come in time: a late one would be read as the answer to the next
    /// command, so the connection is not used again.
    out_of_step: bool,
}

impl TorControl {
    /// Connects and authenticates, choosing the strongest method tor offers that we can use.
    pub async fn connect(config: &ControlConfig) -> Result<Self> {
        let (target, stream, owner) = match open(&config.target, config.connect_timeout).await {
            Ok((stream, owner)) => (config.target.clone(), stream, owner),
            Err(first) => match (&config.target, &config.fallback) {
                (ControlTarget::Unix(path), Some(fallback)) if socket_absent(&first) => {
                    match open(fallback, config.connect_timeout).await {
                        Ok((stream, owner)) => (fallback.clone(), stream, owner),
                        Err(second) => {
                            return Err(Error::TorConnect {
                                target: format!("{} (absent or not served) or {fallback}", path.display()),
                                source: second,
                            })
                        }
                    }
                }
                _ => return Err(Error::TorConnect { target: config.target.to_string(), source: first }),
            },
        };
        let (trust, tcp) = match owner {
            Owner::Known(owner) => (trust_of(config, owner)?, None),
            // Decided after tor's first answer: before the server accepts, the kernel's table
            // may name root for a connection nobody has accepted yet.
            Owner::Tcp { server, client } => {
                (Trust::Unverified("who serves it was not read yet".into()), Some((server, client)))
            }
        };
        let (read_half, writer) = tokio::io::split(stream);
        let (sender, replies) = mpsc::channel(256);
        let reader = tokio::spawn(async move {
            let mut conn = Conn::new(BufReader::new(read_half));
            loop {
                let received = conn.receive_data().await;
                let failed = received.is_err();
                if sender.send(received).await.is_err() || failed {
                    break;
                }
            }
        });
        let mut control = TorControl {
            writer,
            replies,
            reader,
            events: VecDeque::new(),
            target,
            auth_method: AuthMethod::Null,
            tor_version: String::new(),
            trust,
            tcp,
            out_of_step: false,
        };
        // A listener that accepts but never answers (a stopped or paused tor: the kernel
        // completes the handshake) is as unreachable as one that refuses.
        match tokio::time::timeout(config.connect_timeout, control.authenticate(config)).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(Error::TorConnect {
                    target: control.target.to_string(),
                    source: std::io::Error::new(std::io::ErrorKind::TimedOut, "tor did not answer"),
                })
            }
        }
        Ok(control)
    }

    /// Refuses unless the other end has shown it is tor: a secret (an onion key, a client
    /// key, a password, the cookie) never goes to a stand-in listening on tor's port.
    fn require_trust(&self, what: impl std::fmt::Display) -> Result<()> {
        match &self.trust {
            Trust::OwnedByTor | Trust::Pinned => Ok(()),
            Trust::Unverified(reason) => Err(Error::TorUntrusted {
                target: self.target.to_string(),
                what: what.to_string(),
                reason: reason.clone(),
            }),
        }
    }

    /// Refuses unless the other end has shown it is tor (`what`: what would be at stake).
    pub fn require_verified(&self, what: &str) -> Result<()> {
        self.require_trust(what)
    }

    /// Whether secrets may be sent on this connection.
    pub fn is_verified(&self) -> bool {
        !matches!(self.trust, Trust::Unverified(_))
    }

    pub fn auth_method(&self) -> AuthMethod {
        self.auth_method
    }

    pub fn tor_version(&self) -> &str {
        &self.tor_version
    }

    pub fn target(&self) -> &ControlTarget {
        &self.target
    }

    fn auth_error(&self, reason: impl Into<String>) -> Error {
        Error::TorAuth { target: self.target.to_string(), reason: reason.into() }
    }

    async fn authenticate(&mut self, config: &ControlConfig) -> Result<()> {
        let info = self.send(&CommandLine::new("PROTOCOLINFO").arg("version", "1")?).await?;
        // It answered: it has accepted the connection, whose socket now shows its owner.
        if let Some((server, client)) = self.tcp {
            self.trust = trust_of(config, tcp_server_owner(server, client))?;
        }
        if !info.is_ok() {
            return Err(self.auth_error(format!("PROTOCOLINFO failed: {}", info.message())));
        }
        let mut methods = HashSet::new();
        let mut cookie_file = None;
        for line in &info.lines {
            if let Some(rest) = line.strip_prefix("AUTH ") {
                for (key, value) in parse_pairs(rest) {
                    match key.as_str() {
                        "METHODS" => methods.extend(value.split(',').map(str::to_owned)),
                        "COOKIEFILE" => cookie_file = Some(PathBuf::from(value)),
                        _ => {}
                    }
                }
            } else if let Some(rest) = line.strip_prefix("VERSION ") {
                if let Some((_, v)) = parse_pairs(rest).into_iter().find(|(k, _)| k == "Tor") {
                    self.tor_version = v;
                }
            }
        }
        let cookie_file = config.cookie_file.clone().or(cookie_file);
        // SAFECOOKIE whenever offered: tor proves it knows the cookie before we prove we do.
        // Our proof too goes only to a listener that belongs to tor (see `send`): through a
        // byte relay it would open an authenticated session for whoever runs the relay. Every
        // other method sends a secret (the cookie itself, a password) or lets us in without
        // proof, and the commands that matter carry secrets.
        let safecookie = methods.contains("SAFECOOKIE");
        let cookie = match (&cookie_file, safecookie) {
            (Some(path), true) => Some(self.read_cookie(path)),
            _ => None,
        };
        let use_password = config.password.is_some() && methods.contains("HASHEDPASSWORD");
        let command = if let Some(Ok(cookie)) = &cookie {
            self.auth_method = AuthMethod::SafeCookie;
            self.safecookie_response(cookie).await?
        } else if use_password {
            // The password given, when tor's cookie cannot be read: sent only to a
            // listener that belongs to tor.
            self.auth_method = AuthMethod::HashedPassword;
            self.require_trust("tor's control password")?;
            let password = config.password.as_ref().expect("checked");
            CommandLine::new("AUTHENTICATE").quoted_secret_arg("password", password.as_bytes())?
        } else if let Some(Err(e)) = cookie {
            return Err(e);
        } else if methods.contains("NULL") {
            self.auth_method = AuthMethod::Null;
            CommandLine::new("AUTHENTICATE")
        } else if safecookie {
            return Err(self.auth_error("tor announces no cookie file; give its path with --cookie-file FILE"));
        } else if let (true, Some(path)) = (methods.contains("COOKIE"), &cookie_file) {
            // Real tor offers SAFECOOKIE beside COOKIE; COOKIE alone is sent only to a
            // listener that belongs to tor, as every other secret.
            self.auth_method = AuthMethod::Cookie;
            self.require_trust("tor's authentication cookie")?;
            let cookie = self.read_cookie(path)?;
            let hex = Zeroizing::new(data_encoding::HEXUPPER.encode(cookie.as_ref()));
            CommandLine::new("AUTHENTICATE").secret_arg("cookie", &hex)?
        } else if methods.contains("HASHEDPASSWORD") {
            return Err(self.auth_error("tor asks for a password: give one with --password-file FILE"));
        } else {
            let offered = methods.into_iter().collect::<Vec<_>>().join(",");
            return Err(self.auth_error(format!("tor offers no method we can use (offered: {offered})")));
        };
        let reply = self.send(&command).await?;
        if !reply.is_ok() {
            let hint = match self.auth_method {
                AuthMethod::HashedPassword => " (wrong password?)",
                AuthMethod::Cookie | AuthMethod::SafeCookie => " (a stale cookie file, or the cookie of another tor?)",
                AuthMethod::Null => "",
            };
            return Err(self.auth_error(format!("tor refused us: {} {}{hint}", reply.code, reply.message())));
        }
        Ok(())
    }

    /// Reads a cookie file: a regular file of exactly 32 bytes, opened without following a
    /// link and without blocking (the path may come from whoever answers on the port: a FIFO
    /// or /dev/zero must not hang or exhaust us).
    fn read_cookie(&self, path: &Path) -> Result<Zeroizing<[u8; 32]>> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let unreadable = |e: std::io::Error| {
            self.auth_error(format!("cannot read tor's authentication cookie {}: {e}", path.display()))
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
            .map_err(unreadable)?;
        let meta = file.metadata().map_err(unreadable)?;
        if !meta.is_file() {
            return Err(self.auth_error(format!("{} is not a tor cookie (not a regular file)", path.display())));
        }
        if meta.len() != 32 {
            return Err(self.auth_error(format!(
                "{} is not a tor cookie (it has {} bytes, not 32)",
                path.display(),
                meta.len()
            )));
        }
        let mut cookie = Zeroizing::new([0u8; 32]);
        file.read_exact(cookie.as_mut()).map_err(unreadable)?;
        Ok(cookie)
    }

    /// SAFECOOKIE: prove we know the cookie without sending it, and check that the other end
    /// does too (torut skips this check). It authenticates us to tor; it says nothing about
    /// who serves the connection (see [`Trust`]).
    async fn safecookie_response(&mut self, cookie: &[u8; 32]) -> Result<CommandLine> {
        let mut client_nonce = [0u8; 32];
        crate::keys::os_random(&mut client_nonce)?;
        let challenge = CommandLine::new("AUTHCHALLENGE")
            .arg("method", "SAFECOOKIE")?
            .arg("nonce", &data_encoding::HEXUPPER.encode(&client_nonce))?;
        let reply = self.send(&challenge).await?;
        if !reply.is_ok() {
            return Err(self.auth_error(format!("AUTHCHALLENGE failed: {}", reply.message())));
        }
        let text = reply.message().strip_prefix("AUTHCHALLENGE ").unwrap_or_default();
        let pairs = parse_pairs(text);
        let field = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .and_then(|(_, v)| data_encoding::HEXUPPER_PERMISSIVE.decode(v.as_bytes()).ok())
                .filter(|v| v.len() == 32)
        };
        let (Some(server_hash), Some(server_nonce)) = (field("SERVERHASH"), field("SERVERNONCE")) else {
            return Err(self.auth_error("malformed AUTHCHALLENGE reply"));
        };
        let mac = |key: &[u8]| {
            let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
            mac.update(cookie);
            mac.update(&client_nonce);
            mac.update(&server_nonce);
            mac
        };
        if mac(SERVER_TO_CONTROLLER).verify_slice(&server_hash).is_err() {
            return Err(self.auth_error(
                "the control port did not prove it knows tor's cookie (SAFECOOKIE server hash mismatch): \
                 it may not be the tor you think, or the cookie file belongs to another tor",
            ));
        }
        let response =
            Zeroizing::new(data_encoding::HEXUPPER.encode(&mac(CONTROLLER_TO_SERVER).finalize().into_bytes()));
        CommandLine::new("AUTHENTICATE").secret_arg("SAFECOOKIE response", &response)
    }

    /// tor stopped answering: as unreachable as a closed port, and worth reconnecting.
    fn gave_up(&self, command: &CommandLine) -> Error {
        Error::TorConnect {
            target: self.target.to_string(),
            source: std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no reply to {} within {REPLY_TIMEOUT:?}", command.keyword()),
            ),
        }
    }

    fn protocol_error(&self, detail: impl std::fmt::Display) -> Error {
        Error::TorProtocol { target: self.target.to_string(), detail: detail.to_string() }
    }

    fn conn_error(&self, e: ConnError) -> Error {
        match e {
            ConnError::IOError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                Error::TorGone { target: self.target.to_string() }
            }
            ConnError::IOError(e) => Error::TorConnect { target: self.target.to_string(), source: e },
            other => self.protocol_error(format!("{other:?}")),
        }
    }

    /// Reads one reply, queueing the asynchronous events that arrive before it. Returns
    /// Ok(None) when `timeout` passes first. Cancel-safe.
    async fn read_reply(&mut self, timeout: Option<Duration>, stop_at_event: bool) -> Result<Option<Reply>> {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        loop {
            let received = match deadline {
                Some(d) => match tokio::time::timeout_at(d, self.replies.recv()).await {
                    Ok(r) => r,
                    Err(_) => return Ok(None),
                },
                None => self.replies.recv().await,
            };
            let Some(received) = received else {
                return Err(Error::TorGone { target: self.target.to_string() });
            };
            let (code, lines) = received.map_err(|e| self.conn_error(e))?;
            if code == 650 {
                if self.events.len() < MAX_QUEUED_EVENTS {
                    self.events.push_back(TorEvent::parse(&lines));
                }
                if stop_at_event {
                    return Ok(None);
                }
                continue;
            }
            return Ok(Some(Reply { code, lines }));
        }
    }

    /// Sends a command and returns tor's reply, whatever its status code.
    pub async fn send(&mut self, command: &CommandLine) -> Result<Reply> {
        if command.is_secret() {
            self.require_trust(command.keyword().to_owned())?;
        }
        if self.out_of_step {
            return Err(self.gave_up(command));
        }
        let bytes = command.wire_bytes();
        let written = async {
            self.writer.write_all(&bytes).await?;
            self.writer.flush().await
        };
        written.await.map_err(|e| self.conn_error(ConnError::IOError(e)))?;
        match self.read_reply(Some(REPLY_TIMEOUT), false).await? {
            Some(reply) => Ok(reply),
            None => {
                self.out_of_step = true;
                Err(self.gave_up(command))
            }
        }
    }

    /// Sends a command and turns any non-2xx reply into an error that explains it.
    pub async fn execute(&mut self, command: &CommandLine) -> Result<Reply> {
        let reply = self.send(command).await?;
        if reply.is_ok() {
            Ok(reply)
        } else {
            Err(rejected(command, &reply))
        }
    }

    pub async fn get_info(&mut self, key: &'static str) -> Result<String> {
        let reply = self.execute(&CommandLine::new("GETINFO").arg("key", key)?).await?;
        let prefix = format!("{key}=");
        reply
            .lines
            .iter()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(|v| v.trim_start_matches("\r\n").to_owned())
            .ok_or_else(|| self.protocol_error(format!("GETINFO {key}: no value in the reply")))
    }

    /// The service ids (no `.onion`) of all detached onion services, whoever added them.
    pub async fn detached_onions(&mut self) -> Result<HashSet<String>> {
        let value = self.get_info("onions/detached").await?;
        Ok(value.split(['\r', '\n']).map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
    }

    /// Whether tor may use the network (`DisableNetwork 0`): on Tails, only once the person
    /// has connected; until then tor takes services but uploads nothing.
    pub async fn network_enabled(&mut self) -> Result<bool> {
        let reply = self.execute(&CommandLine::new("GETCONF").arg("key", "DisableNetwork")?).await?;
        let value = reply.values("DisableNetwork").next().map(str::to_owned);
        match value.as_deref() {
            Some("0") => Ok(true),
            Some("1") => Ok(false),
            other => Err(self.protocol_error(format!("GETCONF DisableNetwork: unexpected {other:?}"))),
        }
    }

    /// Bootstrap progress in percent.
    pub async fn bootstrap_progress(&mut self) -> Result<u8> {
        let phase = self.get_info("status/bootstrap-phase").await?;
        parse_pairs(&phase)
            .into_iter()
            .find(|(k, _)| k == "PROGRESS")
            .and_then(|(_, v)| v.parse().ok())
            .ok_or_else(|| self.protocol_error(format!("cannot read bootstrap progress from {phase:?}")))
    }

    /// tor's process id and start time: together they tell one tor instance from the next
    /// (a pid alone repeats, e.g. tor as PID 1 of a container).
    pub async fn instance(&mut self) -> Result<TorInstance> {
        let pid = self.get_info("process/pid").await?;
        let pid = pid.trim().parse().map_err(|_| self.protocol_error(format!("bad process/pid {pid:?}")))?;
        let uptime = self.get_info("uptime").await?;
        let uptime: u64 = uptime.trim().parse().map_err(|_| self.protocol_error(format!("bad uptime {uptime:?}")))?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        Ok(TorInstance { pid, started: now.saturating_sub(uptime) })
    }

    /// The SOCKS listeners, as `host:port`.
    pub async fn socks_listeners(&mut self) -> Result<Vec<String>> {
        let value = self.get_info("net/listeners/socks").await?;
        Ok(value.split(' ').filter(|s| !s.is_empty()).map(|s| s.trim_matches('"').to_owned()).collect())
    }

    pub async fn set_events(&mut self, events: &[&'static str]) -> Result<()> {
        let mut command = CommandLine::new("SETEVENTS");
        for event in events {
            command = command.arg("event", event)?;
        }
        self.execute(&command).await.map(|_| ())
    }

    pub async fn signal(&mut self, signal: &'static str) -> Result<()> {
        self.execute(&CommandLine::new("SIGNAL").arg("signal", signal)?).await.map(|_| ())
    }

    /// Forgets the events received so far (those read before the last reply): what
    /// happened before a command, when only what follows it matters.
    pub fn discard_events(&mut self) {
        self.events.clear();
    }

    /// The next asynchronous event, waiting at most `timeout` (None: forever). Returns
    /// Ok(None) on timeout and an error when tor goes away. Cancel-safe.
    pub async fn next_event(&mut self, timeout: Option<Duration>) -> Result<Option<TorEvent>> {
        if let Some(event) = self.events.pop_front() {
            return Ok(Some(event));
        }
        match self.read_reply(timeout, true).await? {
            None => Ok(self.events.pop_front()),
            // A synchronous reply nobody asked for means we lost track of the stream.
            Some(reply) => Err(self.protocol_error(format!("unexpected reply {} {}", reply.code, reply.message()))),
        }
    }
}

fn trusted_names(config: &ControlConfig) -> String {
    if config.tor_users.is_empty() {
        DEFAULT_TOR_USERS.join(", ")
    } else {
        config.tor_users.join(", ")
    }
}

/// How to tell who serves a connection.
enum Owner {
    /// Known at once (a Unix socket: the kernel's record of who created the listener), or why not.
    Known(std::result::Result<u32, String>),
    /// A TCP connection: read in the kernel's tables once the server has answered, i.e.
    /// accepted it.
    Tcp { server: SocketAddr, client: SocketAddr },
}

/// Connects to one control target; returns the stream and how to tell who serves it.
async fn open(target: &ControlTarget, timeout: Duration) -> std::io::Result<(Box<dyn ControlStream>, Owner)> {
    let timed_out = || std::io::Error::from(std::io::ErrorKind::TimedOut);
    match target {
        ControlTarget::Tcp(addr) => {
            let stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
                .await
                .map_err(|_| timed_out())??;
            let owner = match (stream.peer_addr(), stream.local_addr()) {
                (Ok(server), Ok(client)) => Owner::Tcp { server, client },
                (Err(e), _) | (_, Err(e)) => Owner::Known(Err(format!("cannot tell which address it is ({e})"))),
            };
            Ok((Box::new(stream), owner))
        }
        ControlTarget::Unix(path) => {
            let stream = tokio::time::timeout(timeout, tokio::net::UnixStream::connect(path))
                .await
                .map_err(|_| timed_out())??;
            // The kernel's record of who created the listening socket: unlike the socket
            // file's owner, it cannot be changed after the fact.
            let owner =
                stream.peer_cred().map(|cred| cred.uid()).map_err(|e| format!("cannot ask who serves it ({e})"));
            Ok((Box::new(stream), Owner::Known(owner)))
        }
    }
}

/// A Unix socket that is not there, or that nobody serves any more (a stale file).
fn socket_absent(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused)
}

/// Whether an owner is tor's; the person's pin counts only where the owner cannot be told.
fn trust_of(config: &ControlConfig, owner: std::result::Result<u32, String>) -> Result<Trust> {
    let trusted = config.trusted_uids()?;
    Ok(match owner {
        Ok(uid) if trusted.contains(&uid) => Trust::OwnedByTor,
        Ok(uid) => Trust::Unverified(format!(
            "it is served by {}, which is neither root nor tor's user ({})",
            crate::unix::describe_uid(uid),
            trusted_names(config)
        )),
        Err(_) if config.pinned => Trust::Pinned,
        Err(reason) => Trust::Unverified(reason),
    })
}

/// The owner of the socket serving our connection (see [`crate::sockets::server_owner`]).
fn tcp_server_owner(server: SocketAddr, client: SocketAddr) -> std::result::Result<u32, String> {
    crate::sockets::server_owner(server, client).ok_or_else(|| {
        format!("{server} is not served on this computer (a remote or forwarded port cannot be checked)")
    })
}

impl Drop for TorControl {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Explains tor's refusals in words a user can act on (codes from control-spec and tor.md).
pub(crate) fn rejected(command: &CommandLine, reply: &Reply) -> Error {
    let message = reply.message().to_owned();
    let hint = match (reply.code, message.as_str()) {
        (510, _) => "tor does not know this command, or a filter such as onion-grater does not let it through".into(),
        (514, _) => "tor wants authentication first".into(),
        (515, _) => "authentication failed".into(),
        (512, m) if m.contains("Cannot decode v3 client auth key") => {
            "tor could not read a client's public key; check the clients with `tails-server client list`".into()
        }
        (512, m) if m.contains("Failed to decode ED25519-V3 key") => {
            "tor could not read the service's onion key".into()
        }
        (512, m) if m.contains("No auth clients specified") => {
            "client authorization is on but there are no clients".into()
        }
        (512, m) if m.contains("Invalid VIRTPORT/TARGET") => "a port is not acceptable to tor".into(),
        (513, _) => "tor does not support this key type".into(),
        (550, m) if m.contains("Onion address collision") => {
            "tor already runs a service at this address that another program added (not detached)".into()
        }
        (551, _) => "tor hit an internal error".into(),
        (552, m) if m.contains("Unknown Onion Service") => "tor does not run this onion service".into(),
        (552, _) => "tor did not recognise an argument".into(),
        (553, _) => "tor could not store this".into(),
        _ => String::new(),
    };
    Error::TorRejected { command: command.to_string(), code: reply.code, message, hint }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hs_desc_events() {
        let e = TorEvent::parse(&["HS_DESC UPLOADED abcd UNKNOWN $AAAA~auth0".into()]);
        let event = |action: &str, hsdir: Option<&str>, descriptor: Option<&str>, reason: Option<&str>| {
            TorEvent::HsDesc(HsDescEvent {
                action: action.into(),
                service_id: "abcd".into(),
                hsdir: hsdir.map(Into::into),
                descriptor_id: descriptor.map(Into::into),
                reason: reason.map(Into::into),
            })
        };
        assert_eq!(e, event("UPLOADED", Some("$AAAA~auth0"), None, None));
        let e = TorEvent::parse(&["HS_DESC CREATED abcd UNKNOWN UNKNOWN descid".into()]);
        assert_eq!(e, event("CREATED", None, Some("descid"), None));
        let e = TorEvent::parse(&["HS_DESC UPLOAD abcd UNKNOWN $AAAA~auth0 descid HSDIR_INDEX=F2C2".into()]);
        assert_eq!(e, event("UPLOAD", Some("$AAAA~auth0"), Some("descid"), None));
        let e = TorEvent::parse(&["HS_DESC FAILED abcd UNKNOWN $AAAA~auth0 REASON=UPLOAD_REJECTED".into()]);
        assert_eq!(e, event("FAILED", Some("$AAAA~auth0"), None, Some("UPLOAD_REJECTED")));
        let e = TorEvent::parse(&["HS_DESC FAILED abcd NO_AUTH $AAAA~auth0 descid REASON=NOT_FOUND".into()]);
        assert_eq!(e, event("FAILED", Some("$AAAA~auth0"), Some("descid"), Some("NOT_FOUND")));
        assert_eq!(TorEvent::parse(&["HS_DESC CREATED abcd".into()]), event("CREATED", None, None, None));
        assert!(matches!(TorEvent::parse(&["STATUS_CLIENT NOTICE X".into()]), TorEvent::Other(_)));
        assert_eq!(TorEvent::parse(&["SIGNAL NEWNYM".into()]), TorEvent::Signal("NEWNYM".into()));
        assert_eq!(TorEvent::parse(&["CONF_CHANGED".into(), "MaxCircuitDirtiness=700".into()]), TorEvent::ConfChanged);
    }

    #[test]
    fn refusals_are_explained() {
        let cmd = CommandLine::new("ADD_ONION").secret_arg("key", "ED25519-V3:AAAA").unwrap();
        let reply = Reply { code: 512, lines: vec!["Failed to decode ED25519-V3 key".into()] };
        let err = rejected(&cmd, &reply).to_string();
        assert!(err.contains("512") && err.contains("onion key") && !err.contains("AAAA"), "{err}");
        let reply = Reply { code: 510, lines: vec!["Unrecognized command \"ADD_ONION\"".into()] };
        assert!(rejected(&cmd, &reply).to_string().contains("onion-grater"));
    }
}
