//! The control-port commands that put a stored service on tor and take it off: ADD_ONION
//! with the stored key, `Flags=Detach` (so a service outlives our connection) and one
//! `ClientAuthV3` per client; DEL_ONION. When to send them is decided in one place only,
//! [`crate::reconcile`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::keys::{ClientPublicKey, ClientSecretKey, OnionAddress};
use crate::model::{ReceivedKey, ServiceRecord};
use crate::tor::{CommandLine, HsDescEvent, TorControl, TorEvent};

/// Where tor sends a service's connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A port of the computer's loopback: a program the person runs.
    Loopback(u16),
    /// The Unix socket of a program tails-server runs in a network of its own (its door,
    /// [`crate::system::door_path`]).
    Door(PathBuf),
}

impl Target {
    /// ADD_ONION's `Port=` value for the onion port `remote`.
    pub fn port_mapping(&self, remote: u16) -> String {
        match self {
            Target::Loopback(port) => format!("Port={remote},127.0.0.1:{port}"),
            Target::Door(path) => format!("Port={remote},unix:{}", path.display()),
        }
    }
}

/// The ADD_ONION line for a service. The key is a secret argument: never shown, and sent
/// only to a tor that proved itself (see [`TorControl::send`]).
pub fn add_onion_command(record: &ServiceRecord, target: &Target) -> Result<CommandLine> {
    let flags = if record.client_auth { "Flags=Detach,V3Auth" } else { "Flags=Detach" };
    let mut command = CommandLine::new("ADD_ONION")
        .secret_arg("onion key", &record.key.to_control_blob())?
        .arg("flags", flags)?
        .arg("port mapping", &target.port_mapping(record.remote_port))?;
    if record.client_auth {
        if record.clients.is_empty() {
            return Err(Error::LastClient { service: record.name.to_string(), client: String::new() });
        }
        for client in &record.clients {
            command = command.arg("client key", &format!("ClientAuthV3={}", client.public_key.to_base32()))?;
        }
    }
    Ok(command)
}

/// Sends ADD_ONION for a service tor does not run, and checks tor answered with the
/// address derived from the stored key.
pub async fn add(tor: &mut TorControl, record: &ServiceRecord, target: &Target) -> Result<()> {
    let id = record.address().service_id();
    let reply = tor.execute(&add_onion_command(record, target)?).await?;
    let got = reply.values("ServiceID").next().unwrap_or_default().to_owned();
    if got != id {
        // Never leave an unexpected service running.
        if !got.is_empty() {
            let _ = tor.send(&CommandLine::new("DEL_ONION").arg("service id", &got)?).await;
        }
        return Err(Error::WrongAddress { service: record.name.to_string(), expected: id, got });
    }
    Ok(())
}

/// Removes an onion service from tor by its service id. Returns whether it was running.
pub async fn unpublish_id(tor: &mut TorControl, service_id: &str) -> Result<bool> {
    let command = CommandLine::new("DEL_ONION").arg("service id", service_id)?;
    let reply = tor.send(&command).await?;
    match reply.code {
        250 => Ok(true),
        552 => Ok(false),
        _ => Err(crate::tor::control::rejected(&command, &reply)),
    }
}

/// Removes a service from tor. Returns whether it was running.
pub async fn unpublish(tor: &mut TorControl, address: &OnionAddress) -> Result<bool> {
    unpublish_id(tor, &address.service_id()).await
}

/// Gives tor a received client key (ONION_CLIENT_AUTH_ADD), for this tor's life only: tor
/// replaces a key it had for the same address. The key is a secret argument.
pub async fn give_client_key(tor: &mut TorControl, key: &ReceivedKey) -> Result<()> {
    let blob = zeroize::Zeroizing::new(format!("x25519:{}", key.secret_key.to_base64().as_str()));
    let command = CommandLine::new("ONION_CLIENT_AUTH_ADD")
        .arg("service id", &key.address.service_id())?
        .secret_arg("client key", &blob)?;
    tor.execute(&command).await.map(drop)
}

/// The client keys tor holds, whoever gave them (ONION_CLIENT_AUTH_VIEW), as service id →
/// public key: tor's answer carries the private keys; only their public halves are kept and
/// the reply's lines are wiped (copies in the connection's read buffers are not). Only for a
/// tor that proved itself (the caller checks).
pub async fn held_client_keys(tor: &mut TorControl) -> Result<HashMap<String, ClientPublicKey>> {
    let mut reply = tor.execute(&CommandLine::new("ONION_CLIENT_AUTH_VIEW")).await?;
    let held = parse_client_auth_view(&reply.lines);
    for line in &mut reply.lines {
        zeroize::Zeroize::zeroize(line);
    }
    Ok(held)
}

/// The `CLIENT <id> x25519:<base64> …` lines of an ONION_CLIENT_AUTH_VIEW reply, as service
/// id → public key; other lines, and keys that do not decode, are skipped.
pub fn parse_client_auth_view(lines: &[String]) -> HashMap<String, ClientPublicKey> {
    let mut held = HashMap::new();
    for line in lines {
        let mut words = line.strip_prefix("CLIENT ").unwrap_or_default().split(' ');
        let (Some(id), Some(blob)) = (words.next(), words.next().and_then(|w| w.strip_prefix("x25519:"))) else {
            continue;
        };
        let bytes = zeroize::Zeroizing::new(data_encoding::BASE64.decode(blob.as_bytes()).unwrap_or_default());
        if let Ok(secret) = <[u8; 32]>::try_from(bytes.as_slice()) {
            held.insert(id.to_owned(), ClientSecretKey::from_bytes(secret).public_key());
        }
    }
    held
}

/// Takes a client key back from tor (ONION_CLIENT_AUTH_REMOVE). One tor no longer has is
/// not an error (tor answers 251).
pub async fn forget_client_key(tor: &mut TorControl, service_id: &str) -> Result<()> {
    let command = CommandLine::new("ONION_CLIENT_AUTH_REMOVE").arg("service id", service_id)?;
    tor.execute(&command).await.map(drop)
}

/// One round of a service's descriptor uploads, followed through tor's `HS_DESC` events.
/// tor builds two descriptors (`CREATED`: the current and the next time period's; which one a
/// client asks for depends on the time), uploads each to every HSDir responsible for it
/// (`UPLOAD`, with the descriptor's id), and reports each answer by HSDir only (`UPLOADED`
/// carries no descriptor id). A client asks one HSDir of its descriptor's set at random. So
/// "uploaded" — a friend fetching now finds it — is: every descriptor built has had its
/// uploads launched, every upload has been answered, and each descriptor has one success at
/// least. Measured on the private network: the first `UPLOADED` alone fired, after a tor
/// restart, before the descriptor a client needed was even sent (the two descriptors' uploads
/// then go out 1–2 s apart), leaving the client the dead tor's stale copy.
///
/// Two cases keep a round from ever completing by that rule, and are settled by time: an
/// upload whose connection dies is never answered at all (tor reports neither `UPLOADED` nor
/// `FAILED`), so [`SETTLE_AFTER`] without news ends a round in which each descriptor has a
/// success; and a round still open when a new batch begins [`NEW_ROUND_AFTER`] later is
/// replaced by it.
#[derive(Debug, Default, Clone)]
pub struct UploadRound {
    /// The descriptors built in this round: whether their uploads were launched, and whether
    /// one of them succeeded.
    descriptors: HashMap<String, Descriptor>,
    /// Uploads launched and not answered yet, by HSDir, in the order they were launched (an
    /// HSDir can hold both descriptors; its answers are taken in that order).
    pending: HashMap<String, std::collections::VecDeque<Option<String>>>,
    succeeded: u32,
    failed: u32,
    complete: bool,
    started: Option<Instant>,
    last_news: Option<Instant>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Descriptor {
    launched: bool,
    succeeded: bool,
}

/// How long a round with a success for each descriptor waits for news before it counts as
/// uploaded despite unanswered uploads (tor answers each within seconds, or never).
pub const SETTLE_AFTER: Duration = Duration::from_secs(10);
/// A new batch of descriptors this long after a round began starts a new round.
pub const NEW_ROUND_AFTER: Duration = Duration::from_secs(60);

impl UploadRound {
    /// Takes one `HS_DESC` event of the service, seen at `now`; returns true when it
    /// completes the round. Events of a client fetching the same address (`REQUESTED`,
    /// `RECEIVED`, `FAILED` with a fetch's reason) are not the service's uploads.
    pub fn observe(&mut self, event: &HsDescEvent, now: Instant) -> bool {
        let hsdir = event.hsdir.clone().unwrap_or_default();
        let batch = matches!(event.action.as_str(), "CREATED" | "UPLOAD");
        let stale = self.started.is_some_and(|t| now.duration_since(t) > NEW_ROUND_AFTER);
        if batch && (self.complete || stale) {
            *self = UploadRound::default();
        }
        match event.action.as_str() {
            "CREATED" => {
                if let Some(id) = &event.descriptor_id {
                    self.descriptors.entry(id.clone()).or_default();
                }
            }
            "UPLOAD" => {
                if let Some(id) = &event.descriptor_id {
                    self.descriptors.entry(id.clone()).or_default().launched = true;
                }
                self.pending.entry(hsdir).or_default().push_back(event.descriptor_id.clone());
            }
            "UPLOADED" | "FAILED" => {
                // An upload's failure names no descriptor; a client's fetch (a probe through
                // this same tor) names the one it asked for.
                let upload_failure = event.descriptor_id.is_none()
                    && matches!(event.reason.as_deref(), None | Some("UPLOAD_REJECTED" | "UNEXPECTED"));
                if event.action == "FAILED" && !upload_failure {
                    return false;
                }
                // An answer from an HSDir we sent nothing to is not about this round.
                let Some(descriptor) = self.pending.get_mut(&hsdir).and_then(|q| q.pop_front()) else {
                    return false;
                };
                if event.action == "UPLOADED" {
                    self.succeeded += 1;
                    if let Some(d) = descriptor.and_then(|id| self.descriptors.get_mut(&id)) {
                        d.succeeded = true;
                    }
                } else {
                    self.failed += 1;
                }
            }
            _ => return false,
        }
        self.started.get_or_insert(now);
        self.last_news = Some(now);
        let answered = self.pending.values().all(|q| q.is_empty());
        self.finish_if(answered && self.each_descriptor_succeeded())
    }

    /// Ends a round that has had no news for [`SETTLE_AFTER`] when each of its descriptors
    /// has a success; returns true when it does so now.
    pub fn settle(&mut self, now: Instant) -> bool {
        let quiet = self.last_news.is_some_and(|t| now.duration_since(t) >= SETTLE_AFTER);
        self.finish_if(quiet && self.each_descriptor_succeeded())
    }

    /// When [`UploadRound::settle`] may next end the round.
    pub fn settles_at(&self) -> Option<Instant> {
        (!self.complete && self.each_descriptor_succeeded()).then_some(self.last_news? + SETTLE_AFTER)
    }

    fn each_descriptor_succeeded(&self) -> bool {
        self.succeeded > 0 && self.descriptors.values().all(|d| d.launched && d.succeeded)
    }

    fn finish_if(&mut self, done: bool) -> bool {
        if done && !self.complete {
            self.complete = true;
            return true;
        }
        false
    }

    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// (uploads answered with success, with failure, still waiting).
    pub fn counts(&self) -> (u32, u32, usize) {
        (self.succeeded, self.failed, self.pending.values().map(|q| q.len()).sum())
    }
}

/// Waits until the service's descriptor is uploaded as [`UploadRound`] defines it. The caller
/// must have subscribed to HS_DESC before publishing.
pub async fn wait_uploaded(
    tor: &mut TorControl,
    address: &OnionAddress,
    timeout: Duration,
    mut progress: impl FnMut(&str),
) -> Result<()> {
    let id = address.service_id();
    let deadline = Instant::now() + timeout;
    let mut round = UploadRound::default();
    loop {
        let now = Instant::now();
        if round.settle(now) {
            return Ok(());
        }
        let until = round.settles_at().map_or(deadline, |t| t.min(deadline));
        if now >= deadline {
            return Err(Error::Timeout { what: format!("tor to upload the descriptor of {address}"), waited: timeout });
        }
        let Some(TorEvent::HsDesc(event)) = tor.next_event(Some(until.saturating_duration_since(now))).await? else {
            continue;
        };
        if event.service_id != id {
            continue;
        }
        if round.observe(&event, Instant::now()) {
            return Ok(());
        }
        let (ok, failed, waiting) = round.counts();
        match event.action.as_str() {
            "CREATED" => progress("descriptor built"),
            "UPLOAD" => progress(&format!("{waiting} uploads of the descriptor under way")),
            "UPLOADED" | "FAILED" => progress(&format!(
                "{ok} uploads done{}, {waiting} to go",
                if failed > 0 { format!(" ({failed} refused; tor tries again)") } else { String::new() }
            )),
            _ => {}
        }
    }
}

/// Who opens the probe's connection to tor's SocksPort.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeAs {
    /// This process (a user's own CLI).
    ThisProcess,
    /// `nobody` ([`crate::system::socks_probe_as_nobody`]): on Tails root may not connect to
    /// the SocksPort (its firewall lets only a few users through, nobody among them), and a
    /// probe needs no privilege anyway.
    Nobody,
}

/// What [`crate::system::SOCKS_PROBE_COMMAND`] does, for the binary to call. The answer is one line: the
/// reply code in decimal, `timeout`, or `error: …`, parsed strictly by the caller.
pub async fn socks_probe_line(request: &str) -> String {
    let words: Vec<&str> = request.split_whitespace().collect();
    let [proxy, host, port] = words.as_slice() else { return "error: expected PROXY HOST PORT".into() };
    let Ok(port) = port.parse::<u16>() else { return format!("error: bad port {port:?}") };
    match tokio::time::timeout(PROBE_TIMEOUT, socks_connect(proxy, host, port)).await {
        Err(_) => "timeout".into(),
        Ok(Ok(code)) => code.to_string(),
        Ok(Err(e)) => format!("error: {e}"),
    }
}

/// One SOCKS connection as `who`: Ok(Some(code)), Ok(None) on timeout, Err(reason).
async fn socks_connect_as(who: ProbeAs, proxy: &str, host: &str, port: u16) -> std::result::Result<Option<u8>, String> {
    let line = match who {
        ProbeAs::ThisProcess => socks_probe_line(&format!("{proxy} {host} {port}")).await,
        ProbeAs::Nobody => crate::system::socks_probe_as_nobody(&format!("{proxy} {host} {port}\n"), PROBE_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?,
    };
    match line.as_str() {
        "timeout" => Ok(None),
        other => match other.strip_prefix("error: ") {
            Some(reason) => Err(reason.to_owned()),
            None => other.parse().map(Some).map_err(|_| format!("unexpected answer {other:?}")),
        },
    }
}

/// Connects to the service through tor's own SocksPort, as a client would. With client
/// authorization, a stored client's key is lent to tor for the probe only — unless tor
/// already holds a credential for the address (the user's own, perhaps permanent), which is
/// used as it is and never replaced or removed. Returns whether it was reached (None: could
/// not tell) and why.
pub async fn probe(tor: &mut TorControl, record: &ServiceRecord, who: ProbeAs) -> Result<(Option<bool>, String)> {
    let Some(socks) = tor.socks_listeners().await?.into_iter().next() else {
        return Ok((None, "tor has no SocksPort to probe through".into()));
    };
    let id = record.address().service_id();
    let mut lent_key = false;
    let existing = tor.execute(&CommandLine::new("ONION_CLIENT_AUTH_VIEW").arg("service id", &id)?).await?;
    let has_credential = existing.lines.iter().any(|l| l.starts_with("CLIENT "));
    if record.client_auth && !has_credential {
        let Some(secret) = record.clients.iter().find_map(|c| c.secret_key.as_ref()) else {
            return Ok((None, "no client private key is stored to probe with".into()));
        };
        let key = zeroize::Zeroizing::new(format!("x25519:{}", secret.to_base64().as_str()));
        tor.execute(&CommandLine::new("ONION_CLIENT_AUTH_ADD").arg("service id", &id)?.secret_arg("client key", &key)?)
            .await?;
        lent_key = true;
    }
    let result = socks_connect_as(who, &socks, &format!("{id}.onion"), record.remote_port).await;
    if lent_key {
        let _ = tor.send(&CommandLine::new("ONION_CLIENT_AUTH_REMOVE").arg("service id", &id)?).await;
    }
    Ok(match result {
        Ok(None) => (Some(false), format!("no answer within {} s", PROBE_TIMEOUT.as_secs())),
        Err(e) => (None, format!("cannot use tor's SocksPort {socks}: {e}")),
        Ok(Some(0x00)) => (Some(true), "a connection through tor succeeded".into()),
        Ok(Some(code)) => (Some(code == 0x05), socks_reply_meaning(code, record.local_port)),
    })
}

/// How long a probe waits for tor: fetching a descriptor and building two circuits.
const PROBE_TIMEOUT: Duration = Duration::from_secs(90);

async fn socks_connect(proxy: &str, host: &str, port: u16) -> std::io::Result<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(proxy).await?;
    stream.write_all(&[5, 1, 0]).await?;
    let mut greeting = [0u8; 2];
    stream.read_exact(&mut greeting).await?;
    if greeting != [5, 0] {
        return Err(std::io::Error::other("the SOCKS port refused unauthenticated access"));
    }
    let mut request = vec![5, 1, 0, 3, host.len() as u8];
    request.extend_from_slice(host.as_bytes());
    request.extend_from_slice(&port.to_be_bytes());
    stream.write_all(&request).await?;
    let mut reply = [0u8; 2];
    stream.read_exact(&mut reply).await?;
    Ok(reply[1])
}

/// SOCKS5 replies, with tor's extended onion-service codes (SocksPort ExtendedErrors).
pub fn socks_reply_meaning(code: u8, local_port: u16) -> String {
    match code {
        0x00 => "connected".into(),
        0x01 => "general failure".into(),
        0x04 => "host unreachable".into(),
        0x05 => {
            format!("the onion service answered, but nothing accepted the connection behind it (port {local_port})")
        }
        0x06 => "timed out".into(),
        0xF0 => "descriptor not found (not uploaded yet?)".into(),
        0xF1 => "descriptor invalid".into(),
        0xF2 => "introduction failed".into(),
        0xF3 => "rendezvous failed".into(),
        0xF4 => "client authorization required but no key given".into(),
        0xF5 => "the client key was refused".into(),
        0xF6 => "bad onion address".into(),
        0xF7 => "introduction timed out".into(),
        other => format!("SOCKS reply {other:#04x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{ClientSecretKey, OnionSecretKey};
    use crate::model::ClientRecord;
    use crate::names::{ClientName, ServiceName};

    fn record(clients: usize, auth: bool) -> ServiceRecord {
        ServiceRecord {
            name: ServiceName::new("web").unwrap(),
            kind: "web".into(),
            local_port: 8080,
            remote_port: 80,
            enabled: true,
            client_auth: auth,
            options: Default::default(),
            key: OnionSecretKey::generate().unwrap(),
            clients: (0..clients)
                .map(|i| {
                    let s = ClientSecretKey::generate().unwrap();
                    ClientRecord {
                        name: ClientName::new(&format!("c{i}")).unwrap(),
                        public_key: s.public_key(),
                        secret_key: Some(s),
                        created: 0,
                    }
                })
                .collect(),
            created: 0,
        }
    }

    #[test]
    fn add_onion_line_has_every_client_and_hides_the_key() {
        let r = record(3, true);
        let cmd = add_onion_command(&r, &Target::Loopback(8080)).unwrap();
        let shown = cmd.to_string();
        assert_eq!(shown.matches("ClientAuthV3=").count(), 3);
        assert!(shown.starts_with("ADD_ONION [secret] Flags=Detach,V3Auth Port=80,127.0.0.1:8080 "));
        let wire = String::from_utf8(cmd.wire_bytes().to_vec()).unwrap();
        assert!(wire.contains(r.key.to_control_blob().as_str()));
        assert!(wire.ends_with("\r\n") && wire.matches("\r\n").count() == 1);
        for c in &r.clients {
            assert!(wire.contains(&format!("ClientAuthV3={}", c.public_key.to_base32())));
        }
    }

    fn ev(action: &str, hsdir: Option<&str>, descriptor: Option<&str>, reason: Option<&str>) -> HsDescEvent {
        HsDescEvent {
            action: action.into(),
            service_id: "abcd".into(),
            hsdir: hsdir.map(Into::into),
            descriptor_id: descriptor.map(Into::into),
            reason: reason.map(Into::into),
        }
    }

    #[test]
    fn uploaded_means_every_launched_upload_answered_and_a_success_for_each_descriptor() {
        let t = Instant::now();
        // A fresh service, as tor 0.4.9 reports it: two descriptors, each to the four HSDirs.
        let mut round = UploadRound::default();
        assert!(!round.observe(&ev("CREATED", None, Some("cur"), None), t));
        assert!(!round.observe(&ev("CREATED", None, Some("next"), None), t));
        for desc in ["cur", "next"] {
            for dir in ["$A", "$B", "$C", "$D"] {
                assert!(!round.observe(&ev("UPLOAD", Some(dir), Some(desc), None), t));
            }
        }
        assert!(!round.observe(&ev("UPLOADED", Some("$A"), None, None), t), "the first answer is not the last");
        // A friend's fetch of the same address failing is not an answer to an upload.
        assert!(!round.observe(&ev("FAILED", Some("$B"), Some("cur"), Some("NOT_FOUND")), t));
        assert!(!round.observe(&ev("FAILED", Some("$C"), Some("cur"), Some("UNEXPECTED")), t));
        for dir in ["$B", "$C", "$D", "$A", "$B", "$C"] {
            assert!(!round.observe(&ev("UPLOADED", Some(dir), None, None), t));
        }
        assert_eq!(round.counts(), (7, 0, 1));
        assert!(!round.observe(&ev("UPLOADED", Some("$Z"), None, None), t), "nothing was sent to $Z");
        assert!(round.observe(&ev("FAILED", Some("$D"), None, Some("UPLOAD_REJECTED")), t), "all answered");
        assert!(round.is_complete());
        assert!(!round.observe(&ev("UPLOADED", Some("$C"), None, None), t), "complete once");

        // A new descriptor (the time period's rotation) starts a new round.
        assert!(!round.observe(&ev("CREATED", None, Some("after"), None), t));
        assert!(!round.is_complete());
        assert!(!round.observe(&ev("UPLOAD", Some("$A"), Some("after"), None), t));
        assert!(round.observe(&ev("UPLOADED", Some("$A"), None, None), t));
    }

    #[test]
    fn a_descriptor_not_yet_sent_or_with_no_success_keeps_the_round_open() {
        let t = Instant::now();
        // After a tor restart the two descriptors' uploads go out apart.
        let mut restart = UploadRound::default();
        restart.observe(&ev("CREATED", None, Some("cur"), None), t);
        restart.observe(&ev("CREATED", None, Some("next"), None), t);
        restart.observe(&ev("UPLOAD", Some("$A"), Some("next"), None), t);
        assert!(!restart.observe(&ev("UPLOADED", Some("$A"), None, None), t), "the client's descriptor is not out");
        restart.observe(&ev("UPLOAD", Some("$B"), Some("cur"), None), t);
        assert!(restart.observe(&ev("UPLOADED", Some("$B"), None, None), t));

        // Every upload of one descriptor refused: not uploaded, whatever the other's success.
        let mut refused = UploadRound::default();
        refused.observe(&ev("UPLOAD", Some("$A"), Some("cur"), None), t);
        refused.observe(&ev("UPLOAD", Some("$B"), Some("next"), None), t);
        refused.observe(&ev("FAILED", Some("$A"), None, Some("UPLOAD_REJECTED")), t);
        assert!(!refused.observe(&ev("UPLOADED", Some("$B"), None, None), t));
        assert!(!refused.settle(t + SETTLE_AFTER * 2), "no success for cur: never settled");
        // tor's next batch, a while later, starts over.
        let later = t + NEW_ROUND_AFTER * 2;
        refused.observe(&ev("UPLOAD", Some("$A"), Some("cur2"), None), later);
        assert!(refused.observe(&ev("UPLOADED", Some("$A"), None, None), later));
    }

    #[test]
    fn an_upload_tor_never_answers_is_settled_once_each_descriptor_has_a_success() {
        let t = Instant::now();
        let mut round = UploadRound::default();
        round.observe(&ev("UPLOAD", Some("$A"), Some("cur"), None), t);
        round.observe(&ev("UPLOAD", Some("$B"), Some("cur"), None), t);
        assert_eq!(round.settles_at(), None, "nothing succeeded yet");
        assert!(!round.observe(&ev("UPLOADED", Some("$A"), None, None), t));
        assert_eq!(round.settles_at(), Some(t + SETTLE_AFTER));
        assert!(!round.settle(t + SETTLE_AFTER / 2), "still within the wait for $B's answer");
        assert!(round.settle(t + SETTLE_AFTER), "$B's connection died: tor will never say");
        assert!(round.is_complete() && !round.settle(t + SETTLE_AFTER * 3));
    }

    #[test]
    fn no_client_auth_means_no_v3auth_flag() {
        let cmd = add_onion_command(&record(0, false), &Target::Loopback(8080)).unwrap().to_string();
        assert!(cmd.contains("Flags=Detach ") && !cmd.contains("V3Auth") && !cmd.contains("ClientAuthV3"));
        assert!(add_onion_command(&record(0, true), &Target::Loopback(8080)).is_err());
    }

    #[test]
    fn a_program_s_door_is_given_to_tor_as_a_unix_socket_target() {
        let r = record(1, true);
        let door = crate::system::door_path(&r.name);
        let cmd = add_onion_command(&r, &Target::Door(door)).unwrap().to_string();
        assert!(cmd.contains(" Port=80,unix:/var/lib/tor/tails-server/web.sock "), "{cmd}");
        assert!(!cmd.contains("127.0.0.1"));
    }
}
