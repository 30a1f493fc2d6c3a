//! Moving services between tails-server and other tools, so that nobody is locked in:
//! C tor's HiddenServiceDir (in and out) and OnionShare's persistent-mode settings (in).

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::keys::{ClientPublicKey, ClientSecretKey, OnionAddress, OnionSecretKey};
use crate::model::{now_unix, ClientRecord, ServiceRecord, MAX_CLIENTS};
use crate::names::ClientName;
use crate::secret_file::{PrivateDir, Replace};

const MAX_KEY_FILE: u64 = 1024;
const MAX_AUTH_FILE: u64 = 4096;
const MAX_ONIONSHARE_FILE: u64 = 1024 * 1024;

/// What another tool knew about a service: its key, and its clients if any.
#[derive(Debug)]
pub struct Imported {
    pub key: OnionSecretKey,
    /// Empty when the service was open to anyone with the address.
    pub clients: Vec<ClientRecord>,
}

fn invalid(path: &Path, reason: impl Into<String>) -> Error {
    Error::InvalidImport { source_path: path.display().to_string(), reason: reason.into() }
}

/// Reads a file after checking its size, so a huge or endless file is refused unread.
fn read_limited(path: &Path, limit: u64) -> Result<Zeroizing<Vec<u8>>> {
    let meta = fs::metadata(path).map_err(|e| invalid(path, format!("cannot read it ({e})")))?;
    if !meta.is_file() {
        return Err(invalid(path, "it is not a regular file"));
    }
    if meta.len() > limit {
        return Err(invalid(path, format!("it is larger than {limit} bytes, too large for what it should hold")));
    }
    let mut bytes = Zeroizing::new(Vec::new());
    fs::File::open(path)
        .and_then(|f| f.take(limit + 1).read_to_end(&mut bytes))
        .map_err(|e| invalid(path, format!("cannot read it ({e})")))?;
    if bytes.len() as u64 > limit {
        return Err(invalid(path, format!("it is larger than {limit} bytes")));
    }
    Ok(bytes)
}

/// Reads a C tor HiddenServiceDir: `hs_ed25519_secret_key` (checked against `hostname` and
/// `hs_ed25519_public_key` when present) and `authorized_clients/*.auth` (public keys only).
pub fn read_tor_dir(dir: &Path) -> Result<Imported> {
    if !dir.is_dir() {
        return Err(invalid(dir, "it is not a directory"));
    }
    let secret_path = dir.join("hs_ed25519_secret_key");
    let secret = read_limited(&secret_path, MAX_KEY_FILE)?;
    let key = OnionSecretKey::from_tor_secret_file(&secret).map_err(|e| invalid(&secret_path, e.to_string()))?;
    let address = key.address();
    let hostname_path = dir.join("hostname");
    if hostname_path.exists() {
        let hostname = read_limited(&hostname_path, 256)?;
        let hostname = String::from_utf8_lossy(&hostname).trim().to_owned();
        let listed: OnionAddress = hostname.parse().map_err(|e: Error| invalid(&hostname_path, e.to_string()))?;
        if listed != address {
            return Err(invalid(&hostname_path, format!("it names {listed}, but the secret key is that of {address}")));
        }
    }
    let public_path = dir.join("hs_ed25519_public_key");
    if public_path.exists() {
        let public = read_limited(&public_path, MAX_KEY_FILE)?;
        if public[..] != key.public_key().to_tor_public_file()[..] {
            return Err(invalid(&public_path, "it does not match the secret key"));
        }
    }
    let mut clients = Vec::new();
    let auth_dir = dir.join("authorized_clients");
    if auth_dir.is_dir() {
        let mut paths: Vec<_> = fs::read_dir(&auth_dir)
            .map_err(|e| invalid(&auth_dir, format!("cannot read it ({e})")))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "auth"))
            .collect();
        paths.sort();
        if paths.len() > MAX_CLIENTS {
            return Err(invalid(&auth_dir, format!("it holds {} clients; at most {MAX_CLIENTS} fit", paths.len())));
        }
        for path in paths {
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
            let name = ClientName::new(stem).map_err(|e| invalid(&path, e.to_string()))?;
            let content = read_limited(&path, MAX_AUTH_FILE)?;
            let text = std::str::from_utf8(&content).map_err(|_| invalid(&path, "it is not text"))?;
            let line = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or_default();
            if !line.starts_with("descriptor:x25519:") {
                return Err(invalid(&path, "expected a line `descriptor:x25519:<base32 public key>`"));
            }
            let public_key = ClientPublicKey::parse(line).map_err(|e| invalid(&path, e.to_string()))?;
            if clients.iter().any(|c: &ClientRecord| c.public_key == public_key) {
                return Err(invalid(&path, "the same key is in another .auth file"));
            }
            clients.push(ClientRecord { name, public_key, secret_key: None, created: now_unix() });
        }
    }
    Ok(Imported { key, clients })
}

/// Writes a HiddenServiceDir that tor itself loads: secret and public key files, hostname,
/// and `authorized_clients/NAME.auth`. Refuses to touch an existing non-empty directory
/// unless `force`, and even then only writes its own files, and removes the `.auth` files of
/// clients the service no longer has (tor running that directory would still admit them).
///
/// The directory must be ours and writable by nobody else; it ends 0700 (created so), its
/// files 0600, and a symbolic link planted in place of a file is replaced, not followed.
pub fn write_tor_dir(record: &ServiceRecord, dir: &Path, force: bool) -> Result<()> {
    let occupied = dir.is_dir() && fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(false);
    if dir.exists() && !dir.is_dir() {
        return Err(invalid(dir, "it exists and is not a directory"));
    }
    if occupied && !force {
        return Err(invalid(dir, "it is not empty; use --force to overwrite the key files in it"));
    }
    let hs = PrivateDir::create(dir)?;
    hs.write("hs_ed25519_secret_key".as_ref(), &[&record.key.to_tor_secret_file()], Replace::Always)?;
    hs.write("hs_ed25519_public_key".as_ref(), &[&record.key.public_key().to_tor_public_file()], Replace::Always)?;
    hs.write("hostname".as_ref(), &[format!("{}\n", record.address()).as_bytes()], Replace::Always)?;
    let auth_dir = hs.subdir("authorized_clients")?;
    let mut current = HashSet::new();
    for client in &record.clients {
        let name = format!("{}.auth", client.name);
        auth_dir.write(name.as_ref(), &[format!("{}\n", client.public_key.auth_line()).as_bytes()], Replace::Always)?;
        current.insert(OsString::from(name));
    }
    // tor loads every file whose name ends in `.auth`.
    auth_dir.remove_stale(|name| name.as_bytes().ends_with(b".auth") && !current.contains(name))?;
    Ok(())
}

/// Reads an OnionShare persistent-mode settings file (`persistent/<id>.json`): its
/// `onion.private_key` (the ED25519-V3 blob, with or without the type prefix) and, unless
/// the share was public, its client key pair (base32).
pub fn read_onionshare(path: &Path) -> Result<Imported> {
    let bytes = read_limited(path, MAX_ONIONSHARE_FILE)?;
    parse_onionshare(path, &bytes)
}

/// The parsing half of [`read_onionshare`]; `path` only names the source in errors.
pub fn parse_onionshare(path: &Path, bytes: &[u8]) -> Result<Imported> {
    let json: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| invalid(path, format!("it is not JSON ({e})")))?;
    let field = |group: &str, key: &str| json.get(group).and_then(|g| g.get(key));
    let blob = field("onion", "private_key")
        .and_then(|v| v.as_str())
        .ok_or_else(|| invalid(path, "it has no onion.private_key: was the share started in persistent mode?"))?;
    let blob =
        Zeroizing::new(if blob.starts_with("ED25519-V3:") { blob.to_owned() } else { format!("ED25519-V3:{blob}") });
    let key = OnionSecretKey::from_control_blob(&blob).map_err(|e| invalid(path, format!("onion.private_key: {e}")))?;
    if let Some(id) = field("general", "service_id").and_then(|v| v.as_str()) {
        let listed: OnionAddress = id.parse().map_err(|e: Error| invalid(path, format!("general.service_id: {e}")))?;
        if listed != key.address() {
            return Err(invalid(
                path,
                format!("general.service_id is {listed}, but the key is that of {}", key.address()),
            ));
        }
    }
    let public = field("general", "public").and_then(|v| v.as_bool()).unwrap_or(false);
    let mut clients = Vec::new();
    if !public {
        if let Some(secret) = field("onion", "client_auth_priv_key").and_then(|v| v.as_str()) {
            let secret = ClientSecretKey::from_base32(secret)
                .map_err(|e| invalid(path, format!("onion.client_auth_priv_key: {e}")))?;
            if let Some(public) = field("onion", "client_auth_pub_key").and_then(|v| v.as_str()) {
                let public = ClientPublicKey::parse(public)
                    .map_err(|e| invalid(path, format!("onion.client_auth_pub_key: {e}")))?;
                if public != secret.public_key() {
                    return Err(invalid(path, "onion.client_auth_pub_key does not match onion.client_auth_priv_key"));
                }
            }
            clients.push(ClientRecord {
                name: ClientName::new("onionshare").expect("valid"),
                public_key: secret.public_key(),
                secret_key: Some(secret),
                created: now_unix(),
            });
        }
    }
    Ok(Imported { key, clients })
}
