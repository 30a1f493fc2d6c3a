//! The configuration each built-in daemon gets, written from the service's options. Pure
//! functions: what they produce is checked by unit tests here and by the daemons themselves
//! in the VM tests.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use crate::error::{Error, Result};

/// What a renderer needs, in the paths the daemon sees inside its unit's namespace.
#[derive(Clone)]
pub struct RenderInput<'a> {
    pub port: u16,
    /// Where the program listens. tails-server gives 127.0.0.1 of the program's own network:
    /// the LAN comes in through its door (see [`super::systemd::Door`]).
    pub listen: Ipv4Addr,
    /// The persistent data directory, as mounted for the daemon.
    pub data_dir: &'a str,
    /// The directory holding the rendered files, as mounted for the daemon.
    pub config_dir: &'a str,
    /// The account that owns the kind's folders (its `folders-user`), when not the daemon's.
    pub folders_user: Option<&'a str>,
    /// The service's options, defaults filled in.
    pub option: &'a dyn Fn(&str) -> Option<crate::options::OptionValue>,
}

/// One daemon's files and command line.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// (file name in the config directory, contents). Some hold secrets (passwords): the
    /// daemon reads them through its read-only bind mount; nobody else can reach them (the
    /// runtime directory above is root's, 0700).
    pub files: Vec<(String, String)>,
    pub exec: Vec<String>,
    /// Folders of the data directory also mounted elsewhere (folder, path the daemon sees).
    pub binds: Vec<(String, String)>,
    /// Commands run as root, outside the unit's sandbox, before the daemon starts.
    pub pre_privileged: Vec<Vec<String>>,
    /// An SSH host key kept in the data directory (this file name), made once: a key that
    /// changed at every start would make every client refuse the server.
    pub ssh_host_key: Option<String>,
    /// What a program running as root keeps of root's powers (none for the others).
    pub capabilities: Vec<super::systemd::Capability>,
    /// System calls it needs beyond `@system-service`.
    pub extra_syscalls: Vec<String>,
}

impl Rendered {
    fn new(files: Vec<(String, String)>, exec: Vec<String>) -> Self {
        Self {
            files,
            exec,
            binds: Vec::new(),
            pre_privileged: Vec::new(),
            ssh_host_key: None,
            capabilities: Vec::new(),
            extra_syscalls: Vec::new(),
        }
    }
}

fn string(input: &RenderInput, name: &str) -> String {
    match (input.option)(name) {
        Some(crate::options::OptionValue::String(s)) => s,
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

fn integer(input: &RenderInput, name: &str) -> Result<i64> {
    match (input.option)(name) {
        Some(crate::options::OptionValue::Integer(i)) => Ok(i),
        other => Err(Error::InvalidOptionValue {
            option: name.to_owned(),
            value: other.map(|v| v.to_string()).unwrap_or_default(),
            expected: "a whole number".into(),
        }),
    }
}

fn boolean(input: &RenderInput, name: &str) -> bool {
    matches!((input.option)(name), Some(crate::options::OptionValue::Bool(true)))
}

/// A value in double quotes for Qt's INI reader (murmurd), which unescapes `\"` and `\\`,
/// and reads a leading `@` as a type marker (`@@` is a plain `@`). Option strings hold no
/// control characters (checked when set).
fn qt_quoted(value: &str) -> String {
    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
    let escaped = match escaped.strip_prefix('@') {
        Some(rest) => format!("@@{rest}"),
        None => escaped,
    };
    format!("\"{escaped}\"")
}

/// A lighttpd string: only fixed paths and addresses reach it, never what a user typed.
fn lighttpd_quoted(value: &str) -> String {
    debug_assert!(!value.contains(['"', '\\']));
    format!("\"{value}\"")
}

/// A GLib key-file value (infinoted): backslashes and a leading space are escaped.
fn keyfile_value(value: &str) -> String {
    let escaped = value.replace('\\', "\\\\");
    match escaped.strip_prefix(' ') {
        Some(rest) => format!("\\s{rest}"),
        None => escaped,
    }
}

/// The programs a built-in daemon may be, newest Debian first: the one its package installed
/// is used ([`super::resolve_program`]). Paths, not names: nothing is looked up in $PATH.
pub fn program_candidates(daemon: &str) -> &'static [&'static str] {
    match daemon {
        // Debian 13 (Mumble 1.5) renamed murmurd.
        "mumble" => &["/usr/bin/mumble-server", "/usr/sbin/murmurd"],
        "web" => &["/usr/sbin/lighttpd"],
        "gobby" => &["/usr/bin/infinoted", "/usr/bin/infinoted-0.7"],
        "sftp" => &["/usr/sbin/sshd"],
        _ => &[],
    }
}

/// Mumble's server (Debian's mumble-server; murmurd before 1.5): its INI file, which both
/// versions read alike.
pub fn mumble(input: &RenderInput) -> Result<Rendered> {
    let users = integer(input, "max-users")?;
    let mut ini = String::new();
    let _ = writeln!(ini, "; Written by tails-server from the service's options; rewritten at every start.");
    let _ = writeln!(ini, "database={}/{MUMBLE_DATABASE}", input.data_dir);
    let _ = writeln!(ini, "host={}", input.listen);
    let _ = writeln!(ini, "port={}", input.port);
    let _ = writeln!(ini, "users={users}");
    let _ = writeln!(ini, "welcometext={}", qt_quoted(&string(input, "welcome-message")));
    let _ = writeln!(ini, "serverpassword={}", qt_quoted(&string(input, "server-password")));
    // An unauthenticated ping tells anyone who can reach the port the number of users:
    // only key holders reach it, but they need not learn that either.
    let _ = writeln!(ini, "allowping=false");
    // Logs go to the journal (murmurd -fg writes to its output); no pid file.
    let _ = writeln!(ini, "logfile=");
    let _ = writeln!(ini, "pidfile=");
    let _ = writeln!(ini, "bonjour=false");
    let _ = writeln!(ini, "registerName=");
    Ok(Rendered::new(
        vec![("mumble-server.ini".into(), ini)],
        vec![
            program_candidates("mumble")[0].into(),
            "-fg".into(),
            "-ini".into(),
            format!("{}/mumble-server.ini", input.config_dir),
        ],
    ))
}

/// A static web site (lighttpd) serving the data directory's `site/` folder.
pub fn web(input: &RenderInput) -> Result<Rendered> {
    let mut conf = String::new();
    let _ = writeln!(conf, "# Written by tails-server from the service's options; rewritten at every start.");
    let _ = writeln!(conf, "server.modules = (\"mod_indexfile\", \"mod_dirlisting\", \"mod_staticfile\")");
    let _ = writeln!(conf, "server.document-root = {}", lighttpd_quoted(&format!("{}/site", input.data_dir)));
    let _ = writeln!(conf, "server.port = {}", input.port);
    let _ = writeln!(conf, "server.bind = {}", lighttpd_quoted(&input.listen.to_string()));
    // No version in headers or error pages: it would help whoever probes the service.
    let _ = writeln!(conf, "server.tag = \"\"");
    // A link in the site must not serve what lies outside it.
    let _ = writeln!(conf, "server.follow-symlink = \"disable\"");
    let _ = writeln!(conf, "index-file.names = (\"index.html\", \"index.htm\")");
    let _ = writeln!(
        conf,
        "dir-listing.activate = {}",
        if boolean(input, "directory-listing") { "\"enable\"" } else { "\"disable\"" }
    );
    let _ = writeln!(conf, "static-file.exclude-extensions = ()");
    let _ = writeln!(conf, "mimetype.assign = (");
    for (ext, mime) in [
        (".html", "text/html; charset=utf-8"),
        (".htm", "text/html; charset=utf-8"),
        (".css", "text/css; charset=utf-8"),
        (".js", "text/javascript; charset=utf-8"),
        (".txt", "text/plain; charset=utf-8"),
        (".md", "text/plain; charset=utf-8"),
        (".json", "application/json"),
        (".svg", "image/svg+xml"),
        (".png", "image/png"),
        (".jpg", "image/jpeg"),
        (".jpeg", "image/jpeg"),
        (".gif", "image/gif"),
        (".webp", "image/webp"),
        (".ico", "image/x-icon"),
        (".pdf", "application/pdf"),
        (".woff2", "font/woff2"),
        ("", "application/octet-stream"),
    ] {
        let _ = writeln!(conf, "  \"{ext}\" => \"{mime}\",");
    }
    let _ = writeln!(conf, ")");
    Ok(Rendered::new(
        vec![("lighttpd.conf".into(), conf)],
        vec![
            program_candidates("web")[0].into(),
            "-D".into(),
            "-f".into(),
            format!("{}/lighttpd.conf", input.config_dir),
        ],
    ))
}

/// Gobby's server (infinoted), documents in the data directory's `documents/` folder. The
/// password goes in its key file, never on its command line.
pub fn gobby(input: &RenderInput) -> Result<Rendered> {
    let interval = integer(input, "autosave-interval")?;
    let password = string(input, "server-password");
    let mut conf = String::new();
    let _ = writeln!(conf, "# Written by tails-server from the service's options; rewritten at every start.");
    let _ = writeln!(conf, "[infinoted]");
    let _ = writeln!(conf, "root-directory={}/documents", input.data_dir);
    let _ = writeln!(conf, "port={}", input.port);
    // Tor already encrypts and authenticates the connection (the onion address is the
    // server's identity); a self-signed certificate would only add a warning to click away.
    let _ = writeln!(conf, "security-policy=no-tls");
    // Once plugins are listed, the text editor's must be too.
    let _ = writeln!(conf, "plugins=note-text;autosave");
    if !password.is_empty() {
        let _ = writeln!(conf, "password={}", keyfile_value(&password));
    }
    let _ = writeln!(conf, "[autosave]");
    let _ = writeln!(conf, "interval={interval}");
    Ok(Rendered::new(
        vec![("infinoted.conf".into(), conf)],
        vec![
            program_candidates("gobby")[0].into(),
            "--config-file".into(),
            format!("{}/infinoted.conf", input.config_dir),
        ],
    ))
}

/// SFTP only: OpenSSH's sshd with its built-in internal-sftp. Friends log in as the kind's
/// folders user with a key from `authorized-keys`, and each login is locked (chroot) into a
/// directory whose only entry is the data directory's `files/` folder: no shell, no
/// forwarding, nothing else of the system in sight.
pub fn sftp(input: &RenderInput) -> Result<Rendered> {
    let user = input.folders_user.ok_or_else(|| Error::Daemon {
        unit: "sshd".into(),
        detail: "the kind names no folders-user for its friends to log in as".into(),
    })?;
    let raw_keys = string(input, "authorized-keys");
    let keys = crate::options::ssh_public_keys(&raw_keys).ok().filter(|keys| !keys.is_empty()).ok_or_else(|| {
        Error::InvalidOptionValue {
            option: "authorized-keys".into(),
            value: raw_keys.clone(),
            expected: "at least one SSH public key: nobody could log in without one".into(),
        }
    })?;
    // sshd's rule for a chroot: every directory up to it root's and writable by root only.
    // systemd makes this one as the mount point of the shared folder.
    let chroot = format!("{}-chroot", input.data_dir);
    let force = if boolean(input, "read-only") { "internal-sftp -d /files -R" } else { "internal-sftp -d /files" };
    let mut conf = String::new();
    let _ = writeln!(conf, "# Written by tails-server from the service's options; rewritten at every start.");
    let _ = writeln!(conf, "Port {}", input.port);
    let _ = writeln!(conf, "ListenAddress {}", input.listen);
    let _ = writeln!(conf, "HostKey {}/{SSH_HOST_KEY}", input.data_dir);
    let _ = writeln!(conf, "PidFile none");
    // PAM would open a login session per connection; keys alone decide.
    let _ = writeln!(conf, "UsePAM no");
    let _ = writeln!(conf, "AuthenticationMethods publickey");
    let _ = writeln!(conf, "PasswordAuthentication no");
    let _ = writeln!(conf, "KbdInteractiveAuthentication no");
    let _ = writeln!(conf, "PermitRootLogin no");
    let _ = writeln!(conf, "AllowUsers {user}");
    let _ = writeln!(conf, "AuthorizedKeysFile {}/authorized_keys", input.config_dir);
    let _ = writeln!(conf, "ChrootDirectory {chroot}");
    let _ = writeln!(conf, "ForceCommand {force}");
    let _ = writeln!(conf, "Subsystem sftp {force}");
    let _ = writeln!(conf, "DisableForwarding yes");
    let _ = writeln!(conf, "PermitTTY no");
    let _ = writeln!(conf, "PermitUserRC no");
    let _ = writeln!(conf, "PrintMotd no");
    let _ = writeln!(conf, "PrintLastLog no");
    // What the server says before authentication: no distribution in it (Debian's option).
    let _ = writeln!(conf, "DebianBanner no");
    let _ = writeln!(conf, "MaxAuthTries 3");
    let _ = writeln!(conf, "ClientAliveInterval 60");
    // The same restrictions again on every key, should a Match block ever loosen them.
    let authorized: String = keys.iter().map(|k| format!("restrict {k}\n")).collect();
    let mut rendered = Rendered::new(
        vec![("sshd_config".into(), conf), ("authorized_keys".into(), authorized)],
        vec![
            program_candidates("sftp")[0].into(),
            "-D".into(),
            "-e".into(),
            "-f".into(),
            format!("{}/sshd_config", input.config_dir),
        ],
    );
    rendered.binds.push(("files".into(), format!("{chroot}/files")));
    // sshd's privilege separation directory (Debian's), which its own unit would create.
    rendered.pre_privileged.push(vec![
        "/bin/mkdir".into(),
        "-p".into(),
        "-m".into(),
        "0755".into(),
        "/run/sshd".into(),
    ]);
    rendered.ssh_host_key = Some(SSH_HOST_KEY.into());
    // sshd runs as root to lock each login into the share: it keeps what that takes (its
    // privilege separation and chroot, changing to the login's user, signalling its
    // children), nothing else.
    {
        use super::systemd::Capability::*;
        rendered.capabilities =
            vec![Chown, DacOverride, DacReadSearch, Fowner, Kill, Setgid, Setuid, SysChroot, AuditWrite];
    }
    rendered.extra_syscalls = vec!["chroot".into()];
    Ok(rendered)
}

/// The SFTP server's host key, in its data directory, and the public half ssh-keygen writes.
pub const SSH_HOST_KEY: &str = "ssh_host_ed25519_key";
pub const SSH_HOST_KEY_PUB: &str = "ssh_host_ed25519_key.pub";
/// Mumble's database, in its data directory: it holds the server certificate and its key.
pub const MUMBLE_DATABASE: &str = "mumble-server.sqlite";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::OptionValue;

    fn input<'a>(listen: Ipv4Addr, option: &'a dyn Fn(&str) -> Option<OptionValue>) -> RenderInput<'a> {
        RenderInput {
            port: 64738,
            listen,
            data_dir: "/var/lib/tails-server/chat",
            config_dir: "/etc/tails-server/chat",
            folders_user: Some("tails-server-sftp"),
            option,
        }
    }

    #[test]
    fn mumble_listens_on_loopback_unless_lan_and_quotes_what_users_typed() {
        let options = |name: &str| match name {
            "max-users" => Some(OptionValue::Integer(5)),
            "welcome-message" => Some(OptionValue::String(r#"Hi "friends" \o/"#.into())),
            "server-password" => Some(OptionValue::String("@pw".into())),
            _ => None,
        };
        let out = mumble(&input(Ipv4Addr::LOCALHOST, &options)).unwrap();
        let ini = &out.files[0].1;
        assert!(ini.contains("\nhost=127.0.0.1\n"), "{ini}");
        assert!(ini.contains("\nport=64738\n") && ini.contains("\nusers=5\n"), "{ini}");
        assert!(ini.contains(r#"welcometext="Hi \"friends\" \\o/""#), "{ini}");
        assert!(ini.contains("serverpassword=\"@@pw\"") && ini.contains("allowping=false"), "{ini}");
        assert_eq!(out.exec.last().unwrap(), "/etc/tails-server/chat/mumble-server.ini");
        let ini = &mumble(&input(Ipv4Addr::UNSPECIFIED, &options)).unwrap().files[0].1;
        assert!(ini.contains("\nhost=0.0.0.0\n"), "{ini}");
    }

    #[test]
    fn web_serves_the_site_folder_and_lists_only_when_asked() {
        let listing = std::cell::Cell::new(false);
        let options = |name: &str| (name == "directory-listing").then(|| OptionValue::Bool(listing.get()));
        let out = web(&input(Ipv4Addr::LOCALHOST, &options)).unwrap();
        let conf = &out.files[0].1;
        assert!(conf.contains("server.document-root = \"/var/lib/tails-server/chat/site\""), "{conf}");
        assert!(conf.contains("server.bind = \"127.0.0.1\"") && conf.contains("dir-listing.activate = \"disable\""));
        assert!(!conf.contains("errorlog"), "lighttpd -D logs to the journal: {conf}");
        listing.set(true);
        let conf = &web(&input(Ipv4Addr::UNSPECIFIED, &options)).unwrap().files[0].1;
        assert!(conf.contains("dir-listing.activate = \"enable\""), "{conf}");
        assert!(conf.contains("server.bind = \"0.0.0.0\""), "{conf}");
    }

    #[test]
    fn gobby_keeps_its_password_off_the_command_line() {
        let options = |name: &str| match name {
            "autosave-interval" => Some(OptionValue::Integer(30)),
            "server-password" => Some(OptionValue::String(r" s3\cret".into())),
            _ => None,
        };
        let out = gobby(&input(Ipv4Addr::LOCALHOST, &options)).unwrap();
        assert!(out.files[0].1.contains("\npassword=\\ss3\\\\cret\n"), "{}", out.files[0].1);
        assert!(
            out.files[0].1.contains("plugins=note-text;autosave\n")
                && out.files[0].1.contains("[autosave]\ninterval=30\n")
        );
        assert!(!out.exec.iter().any(|a| a.contains("s3")), "{:?}", out.exec);
    }

    #[test]
    fn sftp_locks_friends_in_the_shared_folder_with_their_keys_only() {
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOh4sgryCCw4zaVE7laV88IQHnVk0qbHQ+Nh+6mJ+unx alice@tails";
        let keys = std::cell::RefCell::new(String::new());
        let read_only = std::cell::Cell::new(false);
        let options = |name: &str| match name {
            "authorized-keys" => Some(OptionValue::String(keys.borrow().clone())),
            "read-only" => Some(OptionValue::Bool(read_only.get())),
            _ => None,
        };
        let error = sftp(&input(Ipv4Addr::LOCALHOST, &options)).unwrap_err().to_string();
        assert!(error.contains("authorized-keys") && error.contains("nobody could log in"), "{error}");
        *keys.borrow_mut() = format!("{key}, {key}");
        let out = sftp(&input(Ipv4Addr::LOCALHOST, &options)).unwrap();
        let conf = &out.files[0].1;
        for line in [
            "ListenAddress 127.0.0.1",
            "AllowUsers tails-server-sftp",
            "AuthenticationMethods publickey",
            "ChrootDirectory /var/lib/tails-server/chat-chroot",
            "ForceCommand internal-sftp -d /files\n",
            "AuthorizedKeysFile /etc/tails-server/chat/authorized_keys",
            "HostKey /var/lib/tails-server/chat/ssh_host_ed25519_key",
            "DisableForwarding yes",
            "UsePAM no",
        ] {
            assert!(conf.contains(line), "{line}: {conf}");
        }
        assert_eq!(out.files[1].1, format!("restrict {key}\nrestrict {key}\n"));
        assert_eq!(out.binds, [("files".to_owned(), "/var/lib/tails-server/chat-chroot/files".to_owned())]);
        assert_eq!(out.ssh_host_key.as_deref(), Some("ssh_host_ed25519_key"));
        read_only.set(true);
        let conf = &sftp(&input(Ipv4Addr::UNSPECIFIED, &options)).unwrap().files[0].1;
        assert!(conf.contains("ForceCommand internal-sftp -d /files -R\n"), "{conf}");
        assert!(conf.contains("ListenAddress 0.0.0.0"), "{conf}");
    }
}
