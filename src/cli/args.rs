//! The command line's grammar (clap): every verb, flag and value parser. What each does is
//! in `mod.rs`, which dispatches them to the library.

use super::*;

/// Run onion services from Tails and keep them, with their addresses and client keys,
/// across reboots.
///
/// Every service is reachable only by the clients you give a key to (Tor v3 client
/// authorization): share a client's key with `client show`.
#[derive(Debug, Parser)]
#[command(name = "tails-server", version, max_term_width = 100)]
pub struct Cli {
    /// Where persistent services are kept [default: the Persistent Storage on Tails,
    /// else the XDG data directory]
    #[arg(long, global = true, env = "TAILS_SERVER_STATE_DIR", value_name = "DIR")]
    pub(super) state_dir: Option<PathBuf>,

    /// Output format for data printed to standard output
    #[arg(long, global = true, value_enum, default_value_t = Format::Human)]
    pub(super) format: Format,

    /// Seconds to wait for another tails-server process to release the store
    #[arg(long, global = true, env = "TAILS_SERVER_LOCK_TIMEOUT", value_name = "SECONDS", default_value_t = 10.0)]
    pub(super) lock_timeout: f64,

    /// The Persistent Storage passphrase, when the system service asks for it (to show a
    /// secret or widen access), from this file's first line instead of the terminal
    #[arg(long, global = true, value_name = "FILE")]
    pub(super) storage_passphrase_file: Option<PathBuf>,

    #[command(flatten)]
    pub(crate) tor: tor::TorArgs,

    #[command(subcommand)]
    pub(super) command: Command,
}

#[derive(Debug, Subcommand)]
pub(super) enum Command {
    /// List the kinds of service that can be added
    Catalog,
    /// Add a service, with a new onion address and a first client key
    Add {
        /// Kind of service (see `tails-server catalog`)
        kind: String,
        /// Name of the new service [default: the kind]
        #[arg(long, value_name = "NAME")]
        name: Option<ServiceName>,
        /// Port the service listens on, on 127.0.0.1 [default: the kind's]
        #[arg(long, value_name = "PORT", value_parser = parse_port)]
        local_port: Option<u16>,
        /// Port clients connect to on the onion address [default: the kind's, or the local port]
        #[arg(long, value_name = "PORT", value_parser = parse_port)]
        remote_port: Option<u16>,
        /// Set an option (repeatable), e.g. --set autostart=false
        #[arg(long = "set", value_name = "OPTION=VALUE", value_parser = parse_assignment)]
        options: Vec<(String, String)>,
        /// Name of the first client
        #[arg(long, value_name = "CLIENT", default_value = "client-1")]
        client: ClientName,
        /// Turn client authorization off: anyone who knows the address can find and reach
        /// the service. Hidden on purpose; see the warning it prints.
        #[arg(long, hide = true)]
        allow_anyone_with_the_address: bool,
    },
    /// Remove a service: destroy its onion key and client keys, and delete its data
    Remove {
        /// The service (see `tails-server list`)
        name: ServiceName,
        /// Do not ask for confirmation
        #[arg(long)]
        yes: bool,
        /// Keep its data (Mumble's database, the web site, the shared files…) in the store's
        /// kept-data folder instead of deleting it; a later service of the same name never
        /// gets it
        #[arg(long)]
        keep_data: bool,
    },
    /// List the services
    List,
    /// Show a service's settings
    Info {
        /// The service (see `tails-server list`)
        name: ServiceName,
        /// Also describe each option
        #[arg(long)]
        details: bool,
    },
    /// Show a service's state: stored, registered with tor, descriptor uploaded, reachable
    Status {
        /// The service (see `tails-server list`)
        name: ServiceName,
        /// Also try to connect to the service through tor (uses a stored client key)
        #[arg(long)]
        probe: bool,
    },
    /// Enable a service and publish it on tor
    Enable {
        /// The service (see `tails-server list`)
        name: ServiceName,
        /// Wait until tor has uploaded the service's descriptor
        #[arg(long)]
        wait: bool,
        /// Seconds to wait with --wait
        #[arg(long, value_name = "SECONDS", default_value_t = 120)]
        timeout: u64,
    },
    /// Disable a service and remove it from tor
    Disable {
        /// The service (see `tails-server list`)
        name: ServiceName,
    },
    /// Publish every enabled service with autostart (what the login hook runs)
    Restore,
    /// Keep services published: republish them every time tor (re)starts
    Daemon,
    /// Print the value of an option
    GetOption {
        /// The service (see `tails-server list`)
        name: ServiceName,
        /// The option (see `tails-server info SERVICE --details`)
        option: String,
    },
    /// Change the value of an option
    SetOption {
        /// The service (see `tails-server list`)
        name: ServiceName,
        /// The option (see `tails-server info SERVICE --details`)
        option: String,
        /// The new value. Secret options (passwords) never take one here: leave it out to
        /// be asked on the terminal (twice, not shown), or give `-` to read one line of
        /// standard input
        value: Option<String>,
    },
    /// Manage the clients allowed to reach a service
    #[command(subcommand)]
    Client(ClientCommand),
    /// Keep the keys other people gave you for their onion services: your tor gets them at
    /// every login and after every restart
    #[command(subcommand)]
    Key(keys::KeyCommand),
    /// The data set aside when a service was removed with --keep-data (or found under a new
    /// service's name): list it, delete it for good
    #[command(subcommand)]
    KeptData(kept::KeptCommand),
    /// Write an encrypted backup (age, passphrase) of services, keys, clients and options
    Export {
        /// The backup file to write (0600; never overwritten without --force)
        #[arg(long, short, value_name = "FILE")]
        output: PathBuf,
        /// Only these services (repeatable) [default: all]
        #[arg(long = "service", value_name = "NAME")]
        services: Vec<ServiceName>,
        /// Read the passphrase from the first line of FILE instead of asking twice
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
        /// Overwrite FILE if it exists
        #[arg(long)]
        force: bool,
    },
    /// Restore services from a backup made by `export` (all or nothing)
    Import {
        /// The backup `tails-server export` wrote
        file: PathBuf,
        /// Read the passphrase from the first line of FILE instead of asking
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
        /// Show what would change and write nothing
        #[arg(long)]
        dry_run: bool,
        /// What to do with a service that already exists
        #[arg(long, value_enum, default_value_t = transfer::ConflictArg::Fail)]
        on_conflict: transfer::ConflictArg,
        /// Import services as the backup has them even where that lowers protection (open to
        /// anyone with the address, published at once, reachable from the local network);
        /// otherwise they are shown and held back (root, in direct mode, only)
        #[arg(long)]
        accept_lower_protection: bool,
    },
    /// Make a service of a C tor HiddenServiceDir (same address, its authorized clients)
    ImportTorDir {
        /// The HiddenServiceDir (hs_ed25519_secret_key, authorized_clients/)
        dir: PathBuf,
        #[command(flatten)]
        target: ImportTarget,
    },
    /// Make a service of an OnionShare persistent-mode settings file (same address and key)
    ImportOnionshare {
        /// OnionShare's settings file (onionshare.json, or a mode's own settings)
        file: PathBuf,
        #[command(flatten)]
        target: ImportTarget,
    },
    /// Write a service as a C tor HiddenServiceDir, which tor itself can run
    ExportTorDir {
        /// The service (see `tails-server list`)
        name: ServiceName,
        /// The directory to write (created 0700 if missing)
        dir: PathBuf,
        /// Write into a non-empty directory (only our files are replaced)
        #[arg(long)]
        force: bool,
    },
    /// Run the system service: the D-Bus API (org.boum.tails.Server1) on the system bus and
    /// the republishing loop (what systemd starts as root on Tails)
    #[command(hide = true)]
    Service {
        /// `system`, or a D-Bus address (a private bus, for tests)
        #[arg(long, default_value = "system", value_name = "system|ADDRESS")]
        bus: String,
        /// Who may call: `polkit`, or `uids:UID,...` (a test backend for buses without polkit)
        #[arg(long, default_value = "polkit", value_name = "polkit|uids:UID,...")]
        authorization: String,
        /// `tails`: wait for Tails' Persistent Storage to be unlocked; `none`: not on Tails
        #[arg(long, value_enum, default_value_t = PersistentStorageArg::Tails)]
        persistent_storage: PersistentStorageArg,
        /// What proves a person is there before a secret leaves or access widens:
        /// `luks:PATH`, that volume's passphrase [default with `--persistent-storage tails`:
        /// luks:/dev/disk/by-partlabel/TailsData], or `polkit-only` [default otherwise]
        #[arg(long, value_name = "luks:PATH|polkit-only")]
        presence: Option<String>,
    },
    /// One connection through tor's SocksPort for `status --probe`, run as nobody by the
    /// system service (reads `PROXY HOST PORT` on stdin, prints the SOCKS reply code)
    #[command(hide = true, name = tails_server_core::system::SOCKS_PROBE_COMMAND)]
    SocksProbe,
    /// On Tails, make tails-server come back at every login (root, once): a local apt
    /// repository on the Persistent Storage holding the package, and an entry in Additional
    /// Software; `--with KIND` installs the programs of those kinds the same way. Run it again
    /// after an upgrade; `--undo` takes it back and keeps the services
    Setup {
        /// The tails-server .deb to install at every login, and the window's,
        /// tails-server-gui (--deb tails-server_*.deb tails-server-gui_*.deb); of a package
        /// given in several versions, the newest
        #[arg(long, value_name = "FILE", num_args = 1.., required_unless_present_any = ["undo", "with"])]
        deb: Vec<PathBuf>,
        /// Also install the programs of these kinds of service (mumble, web, gobby, sftp)
        /// through Additional Software: now, with the network, and at every login, offline
        #[arg(long, value_name = "KIND", value_delimiter = ',')]
        with: Vec<String>,
        /// Take back what setup did (the services and their keys are kept)
        #[arg(long, conflicts_with_all = ["deb", "with"])]
        undo: bool,
        /// Work under this directory instead of / (the same layout, without Tails' mounts):
        /// for tests and image builds
        #[arg(long, hide = true, value_name = "DIR")]
        root: Option<PathBuf>,
    },
    /// Print shell completions (bash, zsh, fish)
    Completions { shell: CompletionShell },
    /// Print the manual page (roff): tails-server man | man -l -
    Man,
}

#[derive(Debug, Subcommand)]
pub(super) enum ClientCommand {
    /// Add a client, with a new key pair or with the public key the client sent you
    Add {
        /// The service (see `tails-server list`)
        name: ServiceName,
        /// The client (see `tails-server client list SERVICE`)
        client: ClientName,
        /// The client's x25519 public key (base32, or a `descriptor:x25519:` line); no
        /// private key is then stored
        #[arg(long, value_name = "KEY", value_parser = parse_public_key)]
        public_key: Option<ClientPublicKey>,
    },
    /// Remove a client: it can no longer reach the service
    Remove {
        /// The service (see `tails-server list`)
        name: ServiceName,
        /// The client (see `tails-server client list SERVICE`)
        client: ClientName,
    },
    /// List a service's clients
    List {
        /// The service (see `tails-server list`)
        name: ServiceName,
    },
    /// Print a client's credential, in the form the client's software takes
    Show {
        /// The service (see `tails-server list`)
        name: ServiceName,
        /// The client (see `tails-server client list SERVICE`)
        client: ClientName,
        /// The form of the credential
        #[arg(long = "as", value_name = "FORM", value_enum, default_value_t = CredentialForm::AuthPrivate)]
        form: CredentialForm,
        /// Write it to FILE (0600) instead of printing it
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Overwrite FILE if it exists
        #[arg(long, requires = "output")]
        force: bool,
    },
}

/// The shells whose completions are tested in the real shell (tests/cli.rs).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

impl From<CompletionShell> for clap_complete::Shell {
    fn from(shell: CompletionShell) -> Self {
        match shell {
            CompletionShell::Bash => clap_complete::Shell::Bash,
            CompletionShell::Zsh => clap_complete::Shell::Zsh,
            CompletionShell::Fish => clap_complete::Shell::Fish,
        }
    }
}

/// How an imported service is set up here (the other tool's files do not say).
#[derive(Debug, clap::Args)]
pub(super) struct ImportTarget {
    /// Name of the new service [default: from the file or directory name]
    #[arg(long, value_name = "NAME")]
    pub(super) name: Option<ServiceName>,
    /// Kind of service
    #[arg(long, default_value = "custom")]
    pub(super) kind: String,
    /// Port the service listens on, on 127.0.0.1
    #[arg(long, value_name = "PORT", value_parser = parse_port)]
    pub(super) local_port: Option<u16>,
    /// Port clients connect to on the onion address [default: 80 for OnionShare, else the local port]
    #[arg(long, value_name = "PORT", value_parser = parse_port)]
    pub(super) remote_port: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PersistentStorageArg {
    Tails,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CredentialForm {
    /// A line for tor's ClientOnionAuthDir (`CLIENT.auth_private`): secret
    AuthPrivate,
    /// The bare key, for Tor Browser's prompt: secret
    Key,
    /// The service-side line (`descriptor:x25519:…`, a public key)
    Auth,
    /// Two QR codes in the terminal: the address, then the (secret) key
    Qr,
}

pub(super) fn parse_port(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("{s:?} is not a port number from 1 to 65535")),
    }
}

pub(super) fn parse_assignment(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not of the form OPTION=VALUE"))
}

pub(super) fn parse_public_key(s: &str) -> Result<ClientPublicKey, String> {
    ClientPublicKey::parse(s).map_err(|e| e.to_string())
}
