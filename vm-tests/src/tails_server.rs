//! The project's CLI inside the guest, run as root in direct mode (`--state-dir` on the
//! Persistent Storage, tor found where it is by default), and tor's own answers read on its
//! ControlPort as root (as Tails' own root tools do: the control socket exists only once the
//! person has connected).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::remote_shell::ShOutput;
use crate::vm::{sh_words, Vm};

pub const STATE_DIR: &str = "/live/persistence/TailsData_unlocked/tails-server";
/// Amnesic (persistence=false) services live here: on the tmpfs.
pub const RUNTIME_DIR: &str = "/run/tails-server";
pub const BINARY: &str = "tails-server";

/// The command line (for `sh -c`) running the CLI with `args`.
pub fn command(args: &[&str]) -> String {
    let mut words = vec![BINARY, "--state-dir", STATE_DIR];
    words.extend_from_slice(args);
    format!("TAILS_SERVER_RUNTIME_DIR={RUNTIME_DIR} {}", sh_words(&words))
}

/// Runs the CLI as root; returns its output whatever the exit status.
pub fn run(vm: &mut Vm, args: &[&str]) -> Result<ShOutput> {
    vm.sh_env_timeout("root", &BTreeMap::new(), &command(args), Duration::from_secs(120))
}

/// Runs the CLI as root and requires exit 0.
pub fn ok(vm: &mut Vm, args: &[&str]) -> Result<String> {
    let out = run(vm, args)?;
    if !out.success() {
        return Err(Error::Command { cmd: command(args), rc: out.rc, stdout: out.stdout, stderr: out.stderr });
    }
    Ok(out.stdout)
}

/// Runs the CLI with `--format json` and requires exit 0.
pub fn json(vm: &mut Vm, args: &[&str]) -> Result<Value> {
    let mut a = vec!["--format", "json"];
    a.extend_from_slice(args);
    let out = ok(vm, &a)?;
    serde_json::from_str(&out)
        .map_err(|e| Error::Protocol(format!("tails-server {args:?} printed non-JSON ({e}): {out}")))
}

/// The onion addresses tor runs detached, as seen on its ControlPort (`GETINFO
/// onions/detached`), each with `.onion`. A python3 client in the guest, cookie
/// authentication (root can read the cookie; Tails' firewall lets root reach 9052).
pub fn tor_detached_onions(vm: &mut Vm) -> Result<Vec<String>> {
    let out = vm.sh("root", &format!("python3 -c {}", sh_words(&[TOR_ONIONS_PY])))?;
    if !out.success() {
        return Err(Error::Command {
            cmd: "GETINFO onions/detached".into(),
            rc: out.rc,
            stdout: out.stdout,
            stderr: out.stderr,
        });
    }
    Ok(out.stdout.split_whitespace().map(|s| format!("{s}.onion")).collect())
}

/// Prints the ids of tor's detached onions, one a line; exits 1 when tor does not answer.
pub const TOR_ONIONS_PY: &str = r#"
import socket, sys
def main():
    s = socket.create_connection(("127.0.0.1", 9052), timeout=5)
    cookie = open("/run/tor/control.authcookie", "rb").read().hex()
    f = s.makefile("rwb")
    def cmd(line):
        f.write((line + "\r\n").encode()); f.flush()
        out = []
        while True:
            l = f.readline().decode().rstrip("\r\n")
            if not l: raise SystemExit("tor closed")
            out.append(l)
            if l[3:4] == " ": return out
    r = cmd("AUTHENTICATE " + cookie)
    if not r[-1].startswith("250"): raise SystemExit(str(r))
    r = cmd("GETINFO onions/detached")
    for l in r:
        if l[:3].isdigit() and l[3:4] in "-+ ": l = l[4:]
        if l.startswith("onions/detached="): l = l[len("onions/detached="):]
        if l and l != "OK" and all(c in "abcdefghijklmnopqrstuvwxyz234567" for c in l): print(l)
main()
"#;
