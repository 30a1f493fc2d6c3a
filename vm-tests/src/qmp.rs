//! A minimal QMP client: capabilities negotiation, commands, events kept in a log.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::error::{Error, Result};

pub struct Qmp {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    /// Every asynchronous event seen, in order (`{"event": ..., "data": ...}`).
    pub events: Vec<Value>,
}

impl Qmp {
    pub fn connect(path: &Path, timeout: Duration) -> Result<Qmp> {
        let stream = UnixStream::connect(path).map_err(Error::io(format!("connecting to QMP {}", path.display())))?;
        stream.set_read_timeout(Some(timeout)).map_err(Error::io("QMP read timeout"))?;
        let reader = BufReader::new(stream.try_clone().map_err(Error::io("cloning the QMP socket"))?);
        let mut qmp = Qmp { writer: stream, reader, events: Vec::new() };
        // QEMU may send an event (RESUME as the guest starts) before its greeting: kept.
        let greeting = loop {
            let message = qmp.read()?;
            if message.get("event").is_none() {
                break message;
            }
            qmp.events.push(message);
        };
        if greeting.get("QMP").is_none() {
            return Err(Error::Protocol(format!("QMP greeting {greeting}")));
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    fn read(&mut self) -> Result<Value> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err(Error::Protocol("QMP closed".into())),
            Ok(_) => serde_json::from_str(&line).map_err(|e| Error::Protocol(format!("QMP sent {line:?}: {e}"))),
            Err(e) => Err(Error::Io { what: "reading QMP".into(), source: e }),
        }
    }

    /// Runs a command and returns its `return` value; events read meanwhile are kept.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value> {
        let mut msg = json!({ "execute": command });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let mut line = msg.to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes()).map_err(Error::io(format!("sending QMP {command}")))?;
        loop {
            let v = self.read()?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                return Err(Error::Qemu(format!("QMP {command}: {e}")));
            }
            self.events.push(v);
        }
    }

    /// `quit` closes the socket as QEMU exits: a missing reply is the expected outcome.
    pub fn quit(&mut self) -> Result<()> {
        match self.execute("quit", None) {
            Ok(_) | Err(Error::Protocol(_)) | Err(Error::Io { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;

    /// Seen in CI: QEMU's RESUME event arrived before the greeting, and the connection failed.
    #[test]
    fn an_event_before_the_greeting_is_kept_not_taken_for_the_greeting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let qemu = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let event = r#"{"event": "RESUME", "timestamp": {"seconds": 1, "microseconds": 2}}"#;
            writeln!(stream, "{event}").unwrap();
            writeln!(stream, r#"{{"QMP": {{"version": {{}}, "capabilities": []}}}}"#).unwrap();
            let mut line = String::new();
            BufReader::new(stream.try_clone().unwrap()).read_line(&mut line).unwrap();
            assert!(line.contains("qmp_capabilities"), "{line}");
            writeln!(stream, r#"{{"return": {{}}}}"#).unwrap();
        });
        let qmp = super::Qmp::connect(&path, std::time::Duration::from_secs(10)).unwrap();
        assert_eq!(qmp.events.len(), 1);
        assert_eq!(qmp.events[0]["event"], "RESUME");
        qemu.join().unwrap();
    }
}
