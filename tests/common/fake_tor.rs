//! A stand-in for tor's control port, run as another user than tor and root, that answers
//! like tor and records every byte it receives: what a local attacker would run on tor's
//! port while tor restarts. It stands in for such an attacker only.
#![allow(dead_code)]

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};

/// A stand-in control port, run as another user, that answers like tor and records every
/// byte it receives.
pub struct FakeControlPort {
    child: std::process::Child,
    dir: tempfile::TempDir,
    pub target: String,
}

const FAKE_TOR: &str = r#"
import socket, sys, os
kind, where, methods, cookiefile, log = sys.argv[1:6]
if cookiefile.endswith("/own-cookie"):
    with open(cookiefile, "wb") as out: out.write(os.urandom(32))
if kind == "tcp":
    s = socket.socket(); s.bind(("127.0.0.1", 0)); where = "127.0.0.1:%d" % s.getsockname()[1]
else:
    s = socket.socket(socket.AF_UNIX); s.bind(where)
s.listen(8)
print(where, flush=True)
while True:
    c, _ = s.accept()
    f = c.makefile("rwb")
    for line in f:
        with open(log, "ab") as out: out.write(line)
        word = line.split(b" ")[0].strip().upper()
        if word == b"PROTOCOLINFO":
            extra = (' COOKIEFILE="%s"' % cookiefile) if cookiefile != "-" else ""
            f.write(('250-PROTOCOLINFO 1\r\n250-AUTH METHODS=%s%s\r\n250-VERSION Tor="0.4.9.11"\r\n250 OK\r\n' % (methods, extra)).encode())
        elif word == b"GETINFO":
            key = line.split(b" ")[1].strip()
            value = {b"process/pid": b"4242", b"uptime": b"100"}.get(key, b"")
            if key == b"onions/detached": f.write(b"250+onions/detached=\r\n.\r\n250 OK\r\n")
            else: f.write(b"250-" + key + b"=" + value + b"\r\n250 OK\r\n")
        elif word == b"AUTHCHALLENGE":
            # A correct SAFECOOKIE proof, for the cookie file this stand-in wrote itself.
            import hmac, hashlib
            cookie = open(cookiefile, "rb").read()
            client_nonce = bytes.fromhex(line.split(b" ")[2].strip().decode())
            server_nonce = os.urandom(32)
            key = b"Tor safe cookie authentication server-to-controller hash"
            proof = hmac.new(key, cookie + client_nonce + server_nonce, hashlib.sha256).hexdigest().upper()
            f.write(("250 AUTHCHALLENGE SERVERHASH=%s SERVERNONCE=%s\r\n" % (proof, server_nonce.hex().upper())).encode())
        elif word == b"ADD_ONION":
            f.write(b"250-ServiceID=x\r\n250 OK\r\n")
        else:
            f.write(b"250 OK\r\n")
        f.flush()
"#;

impl FakeControlPort {
    /// `kind`: "tcp" or "unix"; `methods` as in PROTOCOLINFO; `cookie_file` announced.
    pub fn start(kind: &str, methods: &str, cookie_file: Option<&Path>) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), kind, methods, cookie_file)
    }

    /// Offering SAFECOOKIE with a cookie file it writes itself (and so can prove).
    pub fn start_with_own_cookie(kind: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cookie = dir.path().join("own-cookie");
        Self::start_in(dir, kind, "COOKIE,SAFECOOKIE", Some(&cookie))
    }

    fn start_in(dir: tempfile::TempDir, kind: &str, methods: &str, cookie_file: Option<&Path>) -> Self {
        let as_root = is_root();
        if as_root {
            // The stand-in runs as nobody: it must be able to write its socket and log.
            std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        }
        let script = dir.path().join("fake_tor.py");
        std::fs::write(&script, FAKE_TOR).unwrap();
        let socket = dir.path().join("control");
        let log = dir.path().join("received");
        let args = [
            script.to_str().unwrap(),
            kind,
            socket.to_str().unwrap(),
            methods,
            cookie_file.map(|p| p.to_str().unwrap()).unwrap_or("-"),
            log.to_str().unwrap(),
        ];
        let mut command = if as_root {
            let mut c = Command::new("setpriv");
            // Debian's python3: a per-user one (pyenv under /root) is out of nobody's reach.
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3"]);
            c
        } else {
            Command::new("python3")
        };
        let mut child = command.args(args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("python3 runs");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        FakeControlPort { child, dir, target: line.trim().to_owned() }
    }

    pub fn received(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("received")).unwrap_or_default()
    }
}

impl Drop for FakeControlPort {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
