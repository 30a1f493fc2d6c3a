//! Host side of the Tails test suite's remote shell (features/support/helpers/remote_shell.rb
//! in Tails), over the virtio-serial port `org.tails.remote_shell.0`. One JSON array per line:
//!
//! ```text
//! [id, "sh_call", user, {env}, cmd]          -> [id, "success", rc, stdout, stderr]
//! [id, "sh_spawn", user, {env}, cmd]         -> no reply
//! [id, "python_execute", user, {env}, code]  -> [id, "success", ...]
//! [id, "file_read", path]                    -> [id, "success", base64]
//! [id, "file_write"|"file_append", path, b64] -> [id, "success", bytes]
//! [id, "signal_ready"]                       -> [id, "success"]
//! failure                                    -> [id, "error", "Exception: message"]
//! ```
//!
//! Replies whose id is not the one awaited (late answers to a request that timed out) are
//! dropped, as Tails' client does.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use data_encoding::BASE64;
use serde_json::{json, Value};

use crate::error::{Error, Result};

/// What `sh_call` returns.
#[derive(Debug, Clone)]
pub struct ShOutput {
    pub rc: i64,
    pub stdout: String,
    pub stderr: String,
}

impl ShOutput {
    pub fn success(&self) -> bool {
        self.rc == 0
    }
}

pub struct RemoteShell {
    writer: UnixStream,
    replies: Receiver<Value>,
    next_id: u64,
}

impl RemoteShell {
    /// Connects to QEMU's end of the port (a `-chardev socket,server=on` at `path`).
    pub fn connect(path: &Path) -> Result<RemoteShell> {
        let stream = UnixStream::connect(path).map_err(Error::io(format!("connecting to {}", path.display())))?;
        let reader = stream.try_clone().map_err(Error::io("cloning the remote-shell socket"))?;
        let (tx, rx) = mpsc::channel();
        thread::Builder::new()
            .name("remote-shell-reader".into())
            .spawn(move || {
                let mut lines = BufReader::new(reader);
                let mut line = String::new();
                loop {
                    line.clear();
                    match lines.read_line(&mut line) {
                        Ok(0) | Err(_) => return, // the channel's disconnection tells the waiter
                        Ok(_) => {}
                    }
                    let trimmed = line.trim();
                    if trimmed.is_empty() {
                        continue;
                    }
                    // A line that is not JSON is noise on the port (e.g. a guest that is not
                    // the agent): report it as a non-array value, which no id matches.
                    let v = serde_json::from_str(trimmed).unwrap_or(Value::String(trimmed.to_owned()));
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            })
            .map_err(Error::io("starting the remote-shell reader"))?;
        // Ids unique across connections, so a late reply to an earlier connection's request
        // can never be taken for an answer.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(1);
        Ok(RemoteShell { writer: stream, replies: rx, next_id: (seed % 1_000_000_000) * 1000 })
    }

    fn send(&mut self, mut request: Vec<Value>) -> Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        request.insert(0, json!(id));
        let mut line = serde_json::to_string(&Value::Array(request)).expect("JSON of JSON values");
        line.push('\n');
        self.writer.write_all(line.as_bytes()).map_err(Error::io("writing to the remote shell"))?;
        Ok(id)
    }

    /// Sends a request and waits for the reply with its id; returns what follows "success".
    fn call(&mut self, request: Vec<Value>, timeout: Duration) -> Result<Vec<Value>> {
        let what = describe(&request);
        let id = self.send(request)?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.replies.recv_timeout(left) {
                Ok(Value::Array(mut reply)) if reply.first().and_then(Value::as_u64) == Some(id) => {
                    if reply.len() < 2 {
                        return Err(Error::Protocol(format!("short reply to {what}: {reply:?}")));
                    }
                    let rest = reply.split_off(2);
                    return match reply[1].as_str() {
                        Some("success") => Ok(rest),
                        Some("error") => Err(Error::Remote {
                            request: what,
                            message: rest.first().and_then(Value::as_str).unwrap_or("(no message)").to_owned(),
                        }),
                        other => Err(Error::Protocol(format!("reply status {other:?} to {what}"))),
                    };
                }
                Ok(_) => continue, // another id: a late reply to a request that timed out
                Err(RecvTimeoutError::Timeout) => return Err(Error::Timeout { what, after: timeout }),
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(Error::Protocol(format!("the remote shell closed while waiting for {what}")))
                }
            }
        }
    }

    pub fn sh_call(
        &mut self,
        user: &str,
        env: &BTreeMap<String, String>,
        cmd: &str,
        timeout: Duration,
    ) -> Result<ShOutput> {
        let r = self.call(vec![json!("sh_call"), json!(user), json!(env), json!(cmd)], timeout)?;
        match r.as_slice() {
            [rc, out, err, ..] => Ok(ShOutput {
                rc: rc.as_i64().ok_or_else(|| Error::Protocol(format!("sh_call rc {rc}")))?,
                stdout: out.as_str().unwrap_or_default().to_owned(),
                stderr: err.as_str().unwrap_or_default().to_owned(),
            }),
            _ => Err(Error::Protocol(format!("sh_call reply {r:?}"))),
        }
    }

    /// Starts a command and returns at once (the protocol has no reply to it).
    pub fn sh_spawn(&mut self, user: &str, env: &BTreeMap<String, String>, cmd: &str) -> Result<()> {
        self.send(vec![json!("sh_spawn"), json!(user), json!(env), json!(cmd)]).map(drop)
    }

    pub fn python_execute(
        &mut self,
        user: &str,
        env: &BTreeMap<String, String>,
        code: &str,
        timeout: Duration,
    ) -> Result<Vec<Value>> {
        self.call(vec![json!("python_execute"), json!(user), json!(env), json!(code)], timeout)
    }

    pub fn file_read(&mut self, path: &str, timeout: Duration) -> Result<Vec<u8>> {
        let r = self.call(vec![json!("file_read"), json!(path)], timeout)?;
        let b64 = r.first().and_then(Value::as_str).ok_or_else(|| Error::Protocol(format!("file_read reply {r:?}")))?;
        BASE64.decode(b64.as_bytes()).map_err(|e| Error::Protocol(format!("file_read of {path}: bad base64: {e}")))
    }

    fn write_kind(&mut self, kind: &str, path: &str, data: &[u8], timeout: Duration) -> Result<u64> {
        let r = self.call(vec![json!(kind), json!(path), json!(BASE64.encode(data))], timeout)?;
        r.first().and_then(Value::as_u64).ok_or_else(|| Error::Protocol(format!("{kind} reply {r:?}")))
    }

    pub fn file_write(&mut self, path: &str, data: &[u8], timeout: Duration) -> Result<u64> {
        self.write_kind("file_write", path, data, timeout)
    }

    pub fn file_append(&mut self, path: &str, data: &[u8], timeout: Duration) -> Result<u64> {
        self.write_kind("file_append", path, data, timeout)
    }

    pub fn signal_ready(&mut self, timeout: Duration) -> Result<()> {
        self.call(vec![json!("signal_ready")], timeout).map(drop)
    }
}

fn describe(request: &[Value]) -> String {
    let kind = request.first().and_then(Value::as_str).unwrap_or("?");
    match kind {
        "sh_call" | "sh_spawn" | "python_execute" => {
            let user = request.get(1).and_then(Value::as_str).unwrap_or("?");
            let cmd = request.get(3).and_then(Value::as_str).unwrap_or("?");
            let short: String = cmd.chars().take(200).collect();
            format!("{kind} as {user}: {short}")
        }
        _ => format!("{kind} {}", request.get(1).and_then(Value::as_str).unwrap_or("")),
    }
}
