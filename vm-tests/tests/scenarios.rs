//! Reboot, power-cut and tor-restart scenarios in a VM (see README.md). Each boots QEMU
//! (under TCG here: tens of seconds per boot); a global lock keeps one QEMU at a time.
//! The CLI runs as root in direct mode until the .deb, its system service and D-Bus exist.

use std::time::{Duration, Instant};

use serde_json::Value;
use vm_tests::tails_server::{self as ts, STATE_DIR};
use vm_tests::vm::sh_words;
use vm_tests::{BootOptions, Error, Result, Vm, VmConfig};

fn scenario(name: &str, f: impl FnOnce(&mut Vm) -> Result<()>) {
    let mut vm = match Vm::new(name, VmConfig::default()) {
        Ok(vm) => vm,
        Err(e) => panic!("{name}: {e}"),
    };
    let t0 = Instant::now(); // after Vm::new, which waits for any other scenario's QEMU
    if let Err(e) = f(&mut vm) {
        panic!("{name}: {e}\n(logs in {})", vm.dir.display());
    }
    vm.record("scenario total", t0.elapsed());
    vm.pass();
}

fn check(cond: bool, what: impl Into<String>) -> Result<()> {
    if cond {
        Ok(())
    } else {
        Err(Error::Protocol(format!("check failed: {}", what.into())))
    }
}

/// tor answers on its control socket (cookie authentication) in the guest.
fn wait_for_tor(vm: &mut Vm) -> Result<()> {
    let cmd = format!("python3 -c {} >/dev/null", sh_words(&[ts::TOR_ONIONS_PY]));
    let d = vm.wait_until("root", &cmd, Duration::from_secs(120))?;
    vm.record("tor's control socket answering (after systemd finished)", d);
    Ok(())
}

fn wait_unlocked(vm: &mut Vm) -> Result<()> {
    vm.wait_until("root", "mountpoint -q /live/persistence/TailsData_unlocked", Duration::from_secs(120))?;
    Ok(())
}

/// `list --format json` as name -> address.
fn addresses(vm: &mut Vm) -> Result<Vec<(String, String)>> {
    let list = ts::json(vm, &["list"])?;
    let arr = list.as_array().ok_or_else(|| Error::Protocol(format!("list is not an array: {list}")))?;
    Ok(arr
        .iter()
        .map(|s| (s["name"].as_str().unwrap_or("").to_owned(), s["address"].as_str().unwrap_or("").to_owned()))
        .collect())
}

fn address_of(list: &[(String, String)], name: &str) -> Option<String> {
    list.iter().find(|(n, _)| n == name).map(|(_, a)| a.clone())
}

/// The package the scenarios install, as the payload carries it.
const DEB: &str = "/usr/local/share/tails-server/tails-server.deb";

/// A shell test that tor runs every one of `addresses` (with `.onion`).
fn registered_cmd(addresses: &[&str]) -> String {
    let mut cmd = format!("ids=$(python3 -c {})", sh_words(&[ts::TOR_ONIONS_PY]));
    for address in addresses {
        let id = address.trim_end_matches(".onion");
        cmd.push_str(&format!(" && printf '%s\\n' \"$ids\" | grep -qx {id}"));
    }
    cmd
}

/// Mumble's server listens on 127.0.0.1:64738, and on nothing else.
const MUMBLE_LOCAL_ONLY: &str =
    "ss -ltnH 'sport = :64738' | awk '{print $4}' | sort -u | tr '\\n' ' ' | grep -qx '127.0.0.1:64738 '";

/// An SFTP session on the local port with one of amnesia's test keys, commands from stdin.
fn sftp_batch(key: &str, commands: &str) -> String {
    format!(
        "printf '{commands}\\n' | sftp -b - -i /tmp/{key} -P 2222 -o StrictHostKeyChecking=no \
         -o UserKnownHostsFile=/dev/null -o BatchMode=yes tails-server-sftp@127.0.0.1"
    )
}

/// The SFTP server's host key as a client sees it.
const SFTP_HOST_KEY: &str = "ssh-keyscan -t ed25519 -p 2222 127.0.0.1 2>/dev/null";

/// The web site's program answers on 127.0.0.1:8080 with the page put in its folder.
const WEB_SERVES_HELLO: &str = "python3 -c \"import urllib.request as u; \
    assert b'hello from tails-server' in u.urlopen('http://127.0.0.1:8080/', timeout=5).read()\"";

/// (a) The path a Tails user takes: install the package once, `setup`, add a Mumble and a
/// custom service and enable them; reboot and unlock: with no command typed, Additional
/// Software installs the package again, its system service starts Mumble's server and
/// registers both addresses in tor, clients and options intact.
#[test]
fn a_setup_then_every_boot_restores_with_no_command_typed() {
    scenario("a-setup-and-restore", |vm| {
        vm.boot(BootOptions::unlocked())?;
        wait_unlocked(vm)?;
        wait_for_tor(vm)?;
        // The first installation, as with an administration password (apt install ./….deb).
        let t = Instant::now();
        vm.sh_ok("root", &format!("DEBIAN_FRONTEND=noninteractive apt-get install -y -q {DEB} >/dev/null"))?;
        vm.record("first installation of the .deb", t.elapsed());
        vm.wait_until("root", "systemctl is-active -q tails-server.service", Duration::from_secs(60))?;
        // The package's unit, as systemd itself reads it where the package is installed (the
        // stand-in, like Tails, has no manual pages to check its Documentation= against).
        let unit = vm.sh("root", "systemd-analyze verify --man=no tails-server.service 2>&1")?;
        check(unit.success() && unit.stdout.trim().is_empty(), format!("systemd-analyze verify: {}", unit.stdout))?;
        let setup = vm.sh_ok("root", &format!("/usr/bin/tails-server setup --deb {DEB}"))?;
        check(setup.contains("done:    tails-server in Additional Software"), format!("setup said: {setup}"))?;
        let again = vm.sh_ok("root", &format!("/usr/bin/tails-server setup --deb {DEB}"))?;
        check(!again.contains("done:    tails-server in"), format!("setup again changes nothing: {again}"))?;
        // polkit decides every call: root may, and amnesia, logged in at the computer (an
        // active session, as on Tails' desktop); a user without a session is refused, in the
        // CLI's words; nobody but root may own the service's name.
        vm.sh_ok("root", LIST_OVER_DBUS)?;
        let refused = vm.sh("nobody", "tails-server list")?;
        check(
            !refused.success() && refused.stderr.contains("not authorized: org.boum.tails.server.read was refused"),
            format!("a user without an active session refused by polkit: {refused:?}"),
        )?;
        let owner = vm.sh("amnesia", "busctl call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus RequestName su org.boum.tails.Server 4")?;
        check(!owner.success(), format!("only root may own the service's name: {owner:?}"))?;
        vm.wait_until("root", "loginctl show-user amnesia -p State | grep -q State=active", Duration::from_secs(60))?;

        // Everything else as amnesia in that session (the stand-in's agent plays the part of
        // a terminal on Tails' desktop): the CLI goes through the service.
        for args in [
            "add mumble --name chat --set max-users=7",
            "add custom --name site --local-port 8090",
            "add web --name www",
            "add gobby --name docs --set autosave-interval=30",
            "client add chat alice",
            "enable chat",
            "enable site",
            "enable www",
            "enable docs",
        ] {
            vm.sh_ok("amnesia", &format!("tails-stand-in-in-session tails-server {args}"))?;
        }
        // The web site serves what is put in its folder; Gobby's server listens.
        vm.sh_ok("root", &format!("echo 'hello from tails-server' > {STATE_DIR}/data/www/site/index.html"))?;
        vm.sh_ok("root", WEB_SERVES_HELLO)?;
        vm.sh_ok("root", "ss -ltnH 'sport = :6523' | grep -q LISTEN")?;
        let before = addresses(vm)?;
        let chat =
            address_of(&before, "chat").ok_or_else(|| Error::Protocol(format!("chat not listed: {before:?}")))?;
        let site =
            address_of(&before, "site").ok_or_else(|| Error::Protocol(format!("site not listed: {before:?}")))?;
        vm.sh_ok("root", &registered_cmd(&[&chat, &site]))?;
        vm.sh_ok("root", MUMBLE_LOCAL_ONLY)?;
        let ini = vm.sh_ok("root", "cat /run/tails-server/daemons/chat/mumble-server.ini")?;
        check(ini.contains("\nusers=7\n"), format!("the option reached Mumble's configuration: {ini}"))?;

        // SFTP: a friend's key lets them in, locked into the shared folder; another key
        // does not. The friend's key pair stays with the test across the reboot.
        vm.sh_ok("amnesia", "rm -f /tmp/friend* /tmp/stranger* && ssh-keygen -q -t ed25519 -N '' -f /tmp/friend")?;
        vm.sh_ok("amnesia", "ssh-keygen -q -t ed25519 -N '' -f /tmp/stranger")?;
        vm.sh_ok(
            "amnesia",
            "tails-stand-in-in-session 'tails-server add sftp --name share --set \"authorized-keys=$(cat /tmp/friend.pub)\"'",
        )?;
        vm.sh_ok("amnesia", "tails-stand-in-in-session tails-server enable share")?;
        let listing = vm.sh_ok(
            "amnesia",
            &format!("cd /tmp && echo shared > note.txt && {}", sftp_batch("friend", "put note.txt\nls -1 /")),
        )?;
        check(
            listing.lines().any(|l| l.trim() == "/files") && !listing.contains("ssh_host"),
            format!("the friend sees the shared folder only: {listing}"),
        )?;
        vm.sh_ok("root", &format!("test \"$(stat -c %U {STATE_DIR}/data/share/files/note.txt)\" = tails-server-sftp"))?;
        let stranger = vm.sh("amnesia", &sftp_batch("stranger", "ls"))?;
        check(
            !stranger.success() && stranger.stderr.contains("Permission denied"),
            format!("another key is refused: {stranger:?}"),
        )?;
        let friend_key = vm.sh_ok("amnesia", "cat /tmp/friend")?;
        let host_key = vm.sh_ok("root", SFTP_HOST_KEY)?;

        vm.reboot(BootOptions::unlocked())?;
        // No tails-server command from here on: only waiting and looking.
        let d = vm.wait_until("root", &registered_cmd(&[&chat, &site]), Duration::from_secs(180))?;
        vm.record("both addresses registered again (after systemd finished)", d);
        vm.sh_ok("root", "dpkg-query -W -f '${Status}' tails-server | grep -q 'install ok installed'")?;
        let d = vm.wait_until("root", MUMBLE_LOCAL_ONLY, Duration::from_secs(60))?;
        vm.record("Mumble's server listening again", d);
        vm.wait_until("root", WEB_SERVES_HELLO, Duration::from_secs(60))?;
        vm.wait_until("root", "ss -ltnH 'sport = :6523' | grep -q LISTEN", Duration::from_secs(60))?;
        let info = ts::json(vm, &["info", "chat"])?;
        check(info["address"] == chat.as_str(), format!("same address: {info}"))?;
        let clients: Vec<&str> =
            info["clients"].as_array().into_iter().flatten().filter_map(|c| c["name"].as_str()).collect();
        check(clients == ["alice", "client-1"] || clients == ["client-1", "alice"], format!("clients intact: {info}"))?;
        check(info["options"]["max-users"] == 7, format!("options intact: {info}"))?;
        // The SFTP server is back with the same host key (a client that remembers it
        // connects without a warning) and the friend finds the file.
        vm.wait_until("root", "ss -ltnH 'sport = :2222' | grep -q LISTEN", Duration::from_secs(60))?;
        check(vm.sh_ok("root", SFTP_HOST_KEY)? == host_key, "the same SSH host key after the reboot")?;
        vm.sh_ok("amnesia", &format!("umask 077 && printf '%s' {} > /tmp/friend", sh_words(&[friend_key])))?;
        let fetched = vm.sh_ok(
            "amnesia",
            &format!("cd /tmp && rm -f note.txt && {} && cat note.txt", sftp_batch("friend", "get note.txt")),
        )?;
        check(fetched.contains("shared"), format!("the shared file after the reboot: {fetched}"))?;
        Ok(())
    });
}

/// (e, second half) An image that ships tails-server, booted without unlocking: the service
/// runs, answers "not unlocked" and writes nothing to the stick; the volume is unlocked
/// later (the Welcome Screen's moment) and, with no command typed, the service opens the
/// store (told by the tps stand-in's PropertiesChanged) and registers the stored service.
#[test]
fn e2_the_service_waits_for_the_unlock_then_restores() {
    scenario("e2-unlock-later", |vm| {
        vm.boot(BootOptions::unlocked())?;
        wait_unlocked(vm)?;
        wait_for_tor(vm)?;
        ts::ok(vm, &["add", "custom", "--name", "keep", "--local-port", "8080"])?;
        ts::ok(vm, &["enable", "keep"])?;
        let listed = addresses(vm)?;
        let keep =
            address_of(&listed, "keep").ok_or_else(|| Error::Protocol(format!("keep not listed: {listed:?}")))?;

        vm.reboot(BootOptions::locked())?;
        wait_for_tor(vm)?;
        vm.sh_ok("root", &format!("DEBIAN_FRONTEND=noninteractive apt-get install -y -q {DEB} >/dev/null"))?;
        vm.wait_until("root", "systemctl is-active -q tails-server.service", Duration::from_secs(60))?;
        let (w0, _) = vm.stick_writes()?;
        let locked = vm.sh("root", &format!("{LIST_OVER_DBUS} 2>&1"))?;
        check(
            !locked.success() && locked.stdout.contains("the Persistent Storage is not unlocked"),
            format!("the service says the Persistent Storage is not unlocked: {locked:?}"),
        )?;
        vm.sh_ok("root", "sync")?;
        let (w1, ops) = vm.stick_writes()?;
        check(w1 == w0, format!("nothing written to the stick while locked ({} bytes in {ops} operations)", w1 - w0))?;

        let passphrase = vm.image.passphrase().to_owned();
        let t = Instant::now();
        vm.sh_ok("root", &format!("printf %s {} | tails-stand-in-persistence unlock-stdin", sh_words(&[passphrase])))?;
        vm.record("unlocking (stand-in)", t.elapsed());
        let d = vm.wait_until("root", &registered_cmd(&[&keep]), Duration::from_secs(120))?;
        vm.record("the stored service registered after the unlock, no command typed", d);
        vm.sh_ok("root", LIST_OVER_DBUS)?;
        Ok(())
    });
}

/// The service's `List`, as root over the system bus.
const LIST_OVER_DBUS: &str = "busctl call org.boum.tails.Server /org/boum/tails/Server org.boum.tails.Server1 List";

/// The remote shell protocol itself: every request type, errors, ids, a timeout.
#[test]
fn a0_remote_shell_protocol() {
    scenario("remote-shell-protocol", |vm| {
        vm.boot(BootOptions::locked())?;
        let out = vm.sh("amnesia", "id -u; echo err >&2; exit 3")?;
        check(
            out.rc == 3 && out.stdout.trim() == "1000" && out.stderr.trim() == "err",
            format!("sh_call as amnesia: {out:?}"),
        )?;
        check(vm.sh_ok("root", "cat /etc/tails-stand-in")?.contains("not Tails"), "the stand-in says it is not Tails")?;
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        check(vm.file_write("/tmp/blob", &data)? == data.len() as u64, "file_write count")?;
        check(vm.file_append("/tmp/blob", b"tail")? == 4, "file_append count")?;
        let back = vm.file_read("/tmp/blob")?;
        check(
            back.len() == data.len() + 4 && back[..data.len()] == data[..] && &back[data.len()..] == b"tail",
            "file_read round trip (200 kB, > 32 KiB chunks)",
        )?;
        match vm.file_read("/nonexistent") {
            Err(Error::Remote { message, .. }) => {
                check(message.contains("FileNotFoundError"), format!("error message {message}"))?
            }
            other => check(false, format!("file_read of a missing file: {other:?}"))?,
        }
        vm.spawn("root", "echo spawned > /run/spawned")?;
        vm.wait_until("root", "grep -q spawned /run/spawned", Duration::from_secs(10))?;
        vm.signal_ready()?;
        check(vm.sh("root", "test -e /run/tails-autotest-remote-shell.ready")?.success(), "signal_ready")?;
        // A request that times out on the host: its late reply must not be taken for the next one's.
        match vm.sh_env_timeout("root", &Default::default(), "sleep 3; echo late", Duration::from_secs(1)) {
            Err(Error::Timeout { .. }) => {}
            other => check(false, format!("expected a timeout, got {other:?}"))?,
        }
        let next = vm.sh_env_timeout("root", &Default::default(), "sleep 4; echo next", Duration::from_secs(20))?;
        check(next.stdout.trim() == "next", format!("reply after a timed-out request: {next:?}"))?;
        check(vm.sh_ok("root", "id -u; stat -c %a /run/tor")?.starts_with('0'), "root")?;
        Ok(())
    });
}

/// (b) Power cut (QMP quit) right after `client add` and `set-option` were acknowledged:
/// both are there after the next boot and the store opens.
#[test]
fn b_power_cut_after_acknowledged_changes() {
    scenario("b-power-cut", |vm| {
        vm.boot(BootOptions::unlocked())?;
        wait_unlocked(vm)?;
        ts::ok(vm, &["add", "custom", "--name", "cut", "--local-port", "8080"])?;
        let t = Instant::now();
        ts::ok(vm, &["client", "add", "cut", "alice"])?;
        ts::ok(vm, &["set-option", "cut", "autostart", "false"])?;
        vm.record("client add + set-option (direct mode, unthrottled stick)", t.elapsed());
        vm.power_cut()?;
        vm.boot(BootOptions::unlocked())?;
        wait_unlocked(vm)?;
        let out = ts::run(vm, &["--format", "json", "info", "cut"])?;
        let _ = std::fs::write(
            vm.dir.join("info-after-power-cut.txt"),
            format!("rc {}\n{}\n--- stderr\n{}", out.rc, out.stdout, out.stderr),
        );
        check(out.success(), format!("the store opens after the power cut: rc {} {}", out.rc, out.stderr))?;
        if !out.stderr.trim().is_empty() {
            eprintln!("vm-tests: b-power-cut: stderr of the first open after the cut: {}", out.stderr.trim());
        }
        let info: Value = serde_json::from_str(&out.stdout).map_err(|e| Error::Protocol(format!("info json: {e}")))?;
        let clients: Vec<&str> = info["clients"]
            .as_array()
            .map(|a| a.iter().filter_map(|c| c["name"].as_str()).collect())
            .unwrap_or_default();
        check(clients.contains(&"alice"), format!("alice survived the power cut: {clients:?}"))?;
        check(
            info["options"]["autostart"] == Value::Bool(false),
            format!("autostart=false survived: {}", info["options"]),
        )?;
        Ok(())
    });
}

/// (c) tor restarted inside the VM with `tails-server daemon` running: every service is
/// registered again; the delay from tor's control socket answering to all registered.
#[test]
fn c_tor_restart_with_daemon() {
    scenario("c-tor-restart", |vm| {
        vm.boot(BootOptions::unlocked())?;
        wait_unlocked(vm)?;
        wait_for_tor(vm)?;
        let names = ["svc-a", "svc-b", "svc-c"];
        for (i, n) in names.iter().enumerate() {
            let port = (8080 + i).to_string();
            ts::ok(vm, &["add", "custom", "--name", n, "--local-port", &port])?;
            ts::ok(vm, &["enable", n])?;
        }
        let list = addresses(vm)?;
        let ids: Vec<String> = names
            .iter()
            .map(|n| address_of(&list, n).unwrap_or_default().trim_end_matches(".onion").to_owned())
            .collect();
        let onions = ts::tor_detached_onions(vm)?;
        check(
            ids.iter().all(|id| onions.contains(&format!("{id}.onion"))),
            format!("all registered before the restart: tor runs {onions:?}, list says {list:?}"),
        )?;
        vm.spawn("root", &format!("{} >/run/tails-server-daemon.log 2>&1", ts::command(&["daemon"])))?;
        vm.wait_until("root", "pgrep -f 'tails-server .*daemon' >/dev/null", Duration::from_secs(20))?;
        vm.file_write("/run/watch-tor-restart.py", WATCH_TOR_RESTART_PY.as_bytes())?;
        let out = vm.sh_ok("root", &format!("python3 /run/watch-tor-restart.py {}", sh_words(&ids)))?;
        let m: Value =
            serde_json::from_str(out.trim()).map_err(|e| Error::Protocol(format!("watch script: {e}: {out}")))?;
        let _ = std::fs::write(vm.dir.join("tor-restart.json"), &out);
        check(
            m["all_registered"] == Value::Bool(true),
            format!("every service registered again after tor's restart: {m}"),
        )?;
        let secs = |k: &str| Duration::from_secs_f64(m[k].as_f64().unwrap_or(f64::NAN));
        vm.record(
            "tor restart: `systemctl restart` command to control socket answering",
            secs("answer_after_restart_s"),
        );
        vm.record("tor restart: control socket answering to all services registered", secs("all_after_answer_s"));
        let log = String::from_utf8_lossy(&vm.file_read("/run/tails-server-daemon.log")?).into_owned();
        let _ = std::fs::write(vm.dir.join("daemon.log"), &log);
        Ok(())
    });
}

/// Restarts tor and watches its control socket every 10 ms: when the new tor first answers,
/// and when every id given is registered. Prints one JSON object.
const WATCH_TOR_RESTART_PY: &str = r#"
import json, socket, subprocess, sys, time
want = set(sys.argv[1:])
cookie_path = "/run/tor/control.authcookie"
def ask():
    s = socket.socket(socket.AF_UNIX); s.settimeout(2)
    try:
        s.connect("/run/tor/control")
        f = s.makefile("rwb")
        def cmd(line):
            f.write((line + "\r\n").encode()); f.flush(); out = []
            while True:
                l = f.readline().decode().rstrip("\r\n")
                if not l: raise OSError("closed")
                out.append(l)
                if l[3:4] == " ": return out
        if not cmd("AUTHENTICATE " + open(cookie_path, "rb").read().hex())[-1].startswith("250"): return None
        r = cmd("GETINFO process/pid onions/detached")
        pid, ids = None, set()
        for l in r:
            if l[:3].isdigit() and l[3:4] in "-+ ": l = l[4:]
            if l.startswith("process/pid="): pid = l.split("=", 1)[1]; continue
            if l.startswith("onions/detached="): l = l.split("=", 1)[1]
            if l and l != "OK": ids.add(l)
        return pid, ids
    except OSError:
        return None
    finally:
        s.close()
old = ask()
old_pid = old[0] if old else None
t0 = time.monotonic()
p = subprocess.Popen(["systemctl", "restart", "tor@default"])
t_answer = t_all = None
while time.monotonic() - t0 < 90:
    r = ask()
    now = time.monotonic()
    if r and r[0] != old_pid:
        if t_answer is None: t_answer = now
        if want <= r[1]: t_all = now; break
    time.sleep(0.01)
p.wait()
print(json.dumps({"old_pid": old_pid, "all_registered": t_all is not None,
    "answer_after_restart_s": (t_answer - t0) if t_answer else None,
    "all_after_answer_s": (t_all - t_answer) if t_all else None}))
"#;

/// (d) A persistence=false service is gone after a reboot; a persistent one is back with the
/// same address (after `restore`, what the login hook runs).
#[test]
fn d_amnesic_service_gone_persistent_back() {
    scenario("d-amnesic-vs-persistent", |vm| {
        vm.boot(BootOptions::unlocked())?;
        wait_unlocked(vm)?;
        wait_for_tor(vm)?;
        ts::ok(vm, &["add", "custom", "--name", "keep", "--local-port", "8080"])?;
        ts::ok(vm, &["add", "custom", "--name", "gone", "--local-port", "8081", "--set", "persistence=false"])?;
        ts::ok(vm, &["enable", "keep"])?;
        ts::ok(vm, &["enable", "gone"])?;
        let before = addresses(vm)?;
        let keep =
            address_of(&before, "keep").ok_or_else(|| Error::Protocol(format!("keep not listed: {before:?}")))?;
        let gone =
            address_of(&before, "gone").ok_or_else(|| Error::Protocol(format!("gone not listed: {before:?}")))?;
        let onions = ts::tor_detached_onions(vm)?;
        check(
            onions.contains(&keep) && onions.contains(&gone),
            format!("both registered: tor runs {onions:?}, list says {before:?}"),
        )?;

        vm.reboot(BootOptions::unlocked())?;
        wait_unlocked(vm)?;
        wait_for_tor(vm)?;
        let t = Instant::now();
        let restore = ts::json(vm, &["restore"])?;
        vm.record("restore after reboot (direct mode)", t.elapsed());
        let _ = std::fs::write(vm.dir.join("restore.json"), restore.to_string());
        let after = addresses(vm)?;
        check(
            address_of(&after, "keep").as_deref() == Some(keep.as_str()),
            format!("keep back with the same address: {after:?}"),
        )?;
        check(address_of(&after, "gone").is_none(), format!("the persistence=false service is gone: {after:?}"))?;
        let onions = ts::tor_detached_onions(vm)?;
        check(onions.contains(&keep), format!("keep registered again: {onions:?}"))?;
        check(!onions.contains(&gone), format!("gone not registered: {onions:?}"))?;
        Ok(())
    });
}

/// (e) Boot without unlocking: the store is not created on the volume (QEMU counts no write
/// to the stick), whatever the CLI is asked; after unlocking, the volume has no store.
#[test]
fn e_locked_boot_writes_nothing_to_the_volume() {
    scenario("e-locked-boot", |vm| {
        vm.boot(BootOptions::locked())?;
        check(!vm.sh("root", "mountpoint -q /live/persistence/TailsData_unlocked")?.success(), "not unlocked")?;
        check(!vm.sh("root", "test -e /dev/mapper/TailsData_unlocked")?.success(), "no mapping")?;
        let (w0, _) = vm.stick_writes()?;
        // What a user (here root, as the scenarios run) would type, without --state-dir.
        let plain = vm.sh(
            "root",
            "TAILS_SERVER_RUNTIME_DIR=/run/tails-server tails-server add custom --name x --local-port 8080",
        )?;
        let _ = std::fs::write(
            vm.dir.join("cli-while-locked.txt"),
            format!("rc {}\n{}\n--- stderr\n{}", plain.rc, plain.stdout, plain.stderr),
        );
        eprintln!(
            "vm-tests: e-locked-boot: `tails-server add` while locked: rc {} stderr: {}",
            plain.rc,
            plain.stderr.trim()
        );
        // And in direct mode with the state directory named explicitly.
        let direct = ts::run(vm, &["add", "custom", "--name", "y", "--local-port", "8081"])?;
        eprintln!(
            "vm-tests: e-locked-boot: direct mode --state-dir {STATE_DIR} while locked: rc {} stderr: {}",
            direct.rc,
            direct.stderr.trim()
        );
        let _ = std::fs::write(
            vm.dir.join("cli-direct-while-locked.txt"),
            format!("rc {}\n{}\n--- stderr\n{}", direct.rc, direct.stdout, direct.stderr),
        );
        let landed = vm.sh("root", &format!("test -e {STATE_DIR} && echo 'on the tmpfs under the mount point'; ls -d /root/.local/share/tails-server 2>/dev/null"))?;
        eprintln!("vm-tests: e-locked-boot: stores created while locked: {}", landed.stdout.trim().replace('\n', "; "));
        vm.sh_ok("root", "sync")?;
        let (w1, ops) = vm.stick_writes()?;
        check(w1 == w0, format!("no write reached the stick while locked ({} bytes in {ops} operations)", w1 - w0))?;
        vm.reboot(BootOptions::unlocked())?;
        wait_unlocked(vm)?;
        let ls = vm.sh_ok("root", "ls -A /live/persistence/TailsData_unlocked")?;
        check(!ls.lines().any(|l| l == "tails-server"), format!("no store on the volume: {ls}"))?;
        Ok(())
    });
}

/// Runs the CLI in the guest and returns its wall time measured there (no remote-shell
/// round trip); fails on a non-zero exit.
fn timed(vm: &mut Vm, args: &[&str]) -> Result<Duration> {
    let cmd = format!(
        "s=$(date +%s%N); {} >/dev/null || exit $?; e=$(date +%s%N); echo $(( (e - s) / 1000 ))",
        ts::command(args)
    );
    let out = vm.sh_ok("root", &cmd)?;
    let us: u64 = out.trim().parse().map_err(|_| Error::Protocol(format!("timing output {out:?}")))?;
    Ok(Duration::from_micros(us))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// (f) On the stick throttled to USB-2 speeds (4 MiB/s, 60 write IOPS): medians of `list`,
/// `set-option` and `client add`, measured inside the guest (figures for the design note).
#[test]
fn f_throttled_stick_medians() {
    let mut vm = Vm::new("f-throttled", VmConfig { throttle_stick: true, ..VmConfig::default() })
        .unwrap_or_else(|e| panic!("f-throttled: {e}"));
    let t0 = Instant::now();
    let r = (|| -> Result<()> {
        vm.boot(BootOptions::unlocked())?;
        wait_unlocked(&mut vm)?;
        ts::ok(&mut vm, &["add", "custom", "--name", "bench", "--local-port", "8080"])?;
        let (mut list, mut set, mut add) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..5 {
            list.push(timed(&mut vm, &["list"])?);
            set.push(timed(&mut vm, &["set-option", "bench", "autostart", if i % 2 == 0 { "false" } else { "true" }])?);
            add.push(timed(&mut vm, &["client", "add", "bench", &format!("c{i}")])?);
        }
        vm.record("median `list` (throttled stick, in the guest, TCG)", median(list));
        vm.record("median `set-option` (throttled stick, in the guest, TCG)", median(set));
        vm.record("median `client add` (throttled stick, in the guest, TCG)", median(add));
        Ok(())
    })();
    if let Err(e) = r {
        panic!("f-throttled: {e}\n(logs in {})", vm.dir.display());
    }
    vm.record("scenario total", t0.elapsed());
    vm.pass();
}
