//! The friend's side, on the host: connections through a client tor's SocksPort (a tor of the
//! private Tor network the guest's tor joins) to the guest's onion services, as the friend's
//! programs make them: an HTTP fetch (Tor Browser), a Mumble client's handshake, an SFTP
//! session.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use crate::error::{Error, Result};

/// What a SOCKS5 connection through tor came to: tor's reply code (0 = connected; tor's
/// extended codes 0xF0–0xF7 for onion services) and, when connected, the stream.
pub fn socks_connect(proxy: SocketAddr, host: &str, port: u16, timeout: Duration) -> Result<(u8, Option<TcpStream>)> {
    let io = |what: &str| Error::io(format!("SOCKS through {proxy}: {what}"));
    let mut s = TcpStream::connect_timeout(&proxy, timeout).map_err(io("connecting"))?;
    s.set_read_timeout(Some(timeout)).map_err(io("a timeout"))?;
    s.set_write_timeout(Some(timeout)).map_err(io("a timeout"))?;
    s.write_all(&[5, 1, 0]).map_err(io("greeting"))?;
    let mut greeting = [0u8; 2];
    s.read_exact(&mut greeting).map_err(io("greeting"))?;
    if greeting != [5, 0] {
        return Err(Error::Protocol(format!("the SOCKS port at {proxy} wants authentication: {greeting:?}")));
    }
    let mut request = vec![5, 1, 0, 3, host.len() as u8];
    request.extend_from_slice(host.as_bytes());
    request.extend_from_slice(&port.to_be_bytes());
    s.write_all(&request).map_err(io("request"))?;
    let mut reply = [0u8; 10];
    match s.read_exact(&mut reply) {
        Ok(()) => {}
        // tor closes without a full reply on some failures; the first two bytes say which.
        Err(e) => return Err(Error::Io { what: format!("SOCKS reply from {proxy}"), source: e }),
    }
    Ok((reply[1], (reply[1] == 0).then_some(s)))
}

/// GET / of `http://<onion>/` through the proxy: Ok(body) on HTTP 200, Err(code) with tor's
/// SOCKS reply code when the connection was refused.
pub fn http_get(proxy: SocketAddr, onion: &str, timeout: Duration) -> Result<std::result::Result<String, u8>> {
    let (code, stream) = socks_connect(proxy, onion, 80, timeout)?;
    let Some(mut s) = stream else { return Ok(Err(code)) };
    write!(s, "GET / HTTP/1.0\r\nHost: {onion}\r\n\r\n").map_err(Error::io("sending the request"))?;
    let mut response = String::new();
    s.read_to_string(&mut response).map_err(Error::io("reading the page"))?;
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.") && head.contains(" 200 ") => Ok(Ok(body.to_owned())),
        _ => Err(Error::Protocol(format!("not an HTTP 200 answer: {}", response.lines().next().unwrap_or("")))),
    }
}

/// Connects through the proxy, sends `hello` and returns the first bytes the server answers
/// (at most 4 KiB, as text); Err(code) with tor's SOCKS reply code when refused.
pub fn first_answer(
    proxy: SocketAddr,
    onion: &str,
    port: u16,
    hello: &[u8],
) -> Result<std::result::Result<String, u8>> {
    let (code, stream) = socks_connect(proxy, onion, port, Duration::from_secs(60))?;
    let Some(mut s) = stream else { return Ok(Err(code)) };
    s.write_all(hello).map_err(Error::io("sending the opening"))?;
    let mut answer = vec![0u8; 4096];
    let n = s.read(&mut answer).map_err(Error::io("reading the answer"))?;
    Ok(Ok(String::from_utf8_lossy(&answer[..n]).into_owned()))
}

/// A Mumble client's handshake through the proxy (Python's TLS; the protocol's messages
/// written by hand): TLS, Version and Authenticate sent, then the server's messages read until
/// ServerSync (type 5: the server took the user in) or Reject (type 4). Prints one line:
/// `synced <server release>` or `rejected <reason>` or `socks <code>`.
const MUMBLE_CLIENT_PY: &str = r#"
import socket, ssl, struct, sys
proxy_host, proxy_port, onion, port, user = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
s = socket.create_connection((proxy_host, proxy_port), timeout=120)
def exactly(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk: raise EOFError("the SOCKS port closed the connection")
        data += chunk
    return data
s.sendall(b"\x05\x01\x00"); assert exactly(s, 2) == b"\x05\x00"
s.sendall(b"\x05\x01\x00\x03" + bytes([len(onion)]) + onion.encode() + struct.pack(">H", port))
reply = exactly(s, 10)
if reply[1] != 0:
    print("socks %d" % reply[1]); sys.exit(0)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
t = ctx.wrap_socket(s, server_hostname=onion)
def varint(n):
    out = b""
    while True:
        b = n & 0x7f; n >>= 7
        if n: out += bytes([b | 0x80])
        else: return out + bytes([b])
def field(num, wire, value):
    key = varint((num << 3) | wire)
    return key + (varint(value) if wire == 0 else varint(len(value)) + value)
def send(kind, payload):
    t.sendall(struct.pack(">HI", kind, len(payload)) + payload)
def recv_exact(n):
    data = b""
    while len(data) < n:
        chunk = t.recv(n - len(data))
        if not chunk: raise EOFError("the server closed the connection")
        data += chunk
    return data
def strings(payload):
    # the string fields of a message, by number
    i, out = 0, {}
    while i < len(payload):
        key, shift = 0, 0
        while True:
            b = payload[i]; i += 1; key |= (b & 0x7f) << shift; shift += 7
            if not b & 0x80: break
        num, wire = key >> 3, key & 7
        if wire == 0:
            while payload[i] & 0x80: i += 1
            i += 1
        elif wire == 2:
            n, shift = 0, 0
            while True:
                b = payload[i]; i += 1; n |= (b & 0x7f) << shift; shift += 7
                if not b & 0x80: break
            out[num] = payload[i:i + n]; i += n
        elif wire == 1: i += 8
        elif wire == 5: i += 4
        else: break
    return out
send(0, field(1, 0, (1 << 16) | (5 << 8)) + field(2, 2, b"tails-server vm-tests") + field(3, 2, b"Linux"))
send(2, field(1, 2, user.encode()) + field(5, 0, 1))
release = ""
while True:
    kind, length = struct.unpack(">HI", recv_exact(6))
    payload = recv_exact(length)
    if kind == 0: release = strings(payload).get(2, b"").decode(errors="replace")
    if kind == 5: print("synced " + release); break
    if kind == 4: print("rejected " + strings(payload).get(2, b"").decode(errors="replace")); break
"#;

/// The outcome of [`MUMBLE_CLIENT_PY`]'s one line.
pub fn mumble_handshake(proxy: SocketAddr, onion: &str, port: u16, user: &str) -> Result<String> {
    let out = Command::new("python3")
        .args([
            "-c",
            MUMBLE_CLIENT_PY,
            &proxy.ip().to_string(),
            &proxy.port().to_string(),
            onion,
            &port.to_string(),
            user,
        ])
        .output()
        .map_err(Error::io("running python3 for the Mumble client"))?;
    if !out.status.success() {
        return Err(Error::Command {
            cmd: "the Mumble client's handshake".into(),
            rc: out.status.code().unwrap_or(-1) as i64,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// An SFTP session through the proxy (OpenSSH's sftp, its connection made by OpenBSD's
/// netcat as a SOCKS5 client), `commands` in batch mode; returns (exit status, stdout, stderr).
pub fn sftp(proxy: SocketAddr, onion: &str, key: &std::path::Path, commands: &str) -> Result<(i32, String, String)> {
    let mut child = Command::new("sftp")
        .args(["-b", "-", "-P", "22", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"])
        .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=120", "-o"])
        .arg(format!("ProxyCommand=nc -X 5 -x {proxy} %h %p"))
        .arg("-i")
        .arg(key)
        .arg(format!("tails-server-sftp@{onion}"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(Error::io("running sftp (openssh-client) with nc (netcat-openbsd)"))?;
    child.stdin.take().expect("piped").write_all(commands.as_bytes()).map_err(Error::io("sftp's commands"))?;
    let out = child.wait_with_output().map_err(Error::io("waiting for sftp"))?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// An address of this machine the guest reaches through QEMU's user network (its
/// connections leave from this machine's own stack): Docker's bridge, else the first other
/// IPv4 address. 127.0.0.1 would be the guest's own loopback.
pub fn host_address_for_guest() -> Result<std::net::Ipv4Addr> {
    let out = Command::new("ip").args(["-4", "-o", "addr", "show"]).output().map_err(Error::io("running ip"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let addresses: Vec<(String, std::net::Ipv4Addr)> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let ip = f.get(3)?.split('/').next()?.parse().ok()?;
            Some((f.get(1)?.to_string(), ip))
        })
        .filter(|(_, ip): &(String, std::net::Ipv4Addr)| !ip.is_loopback())
        .collect();
    addresses
        .iter()
        .find(|(dev, _)| dev == "docker0")
        .or_else(|| addresses.first())
        .map(|(_, ip)| *ip)
        .ok_or_else(|| Error::Protocol("this machine has no IPv4 address but loopback for the guest to reach".into()))
}
