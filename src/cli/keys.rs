//! `key`: the friend's side. Keys received from the owners of other onion services are kept
//! in the store and given to the local tor at every login and after every tor restart, so
//! Tor Browser, Mumble or sftp through tor reach those services without pasting a key again.
//! A key is never taken on the command line (every program can read it there): it comes
//! from a file, standard input, or the terminal.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use zeroize::Zeroizing;

use tails_server_core::keys::OnionAddress;
use tails_server_core::names::KeyName;
use tails_server_dbus::views::{key_view, KeyView};

use super::output::Printer;
use super::{open, publisher, tor, Cli};

/// The largest key file read: a key is one line of about 120 characters.
const MAX_KEY_TEXT: u64 = 4096;

#[derive(Debug, clap::Subcommand)]
pub enum KeyCommand {
    /// Keep a key someone gave you for their onion service; your tor gets it now and after
    /// every restart
    Add {
        /// A name for the key (e.g. who gave it to you)
        name: KeyName,
        /// A file holding the key: the line `ADDRESS:descriptor:x25519:KEY`, or the address
        /// and the key; `-` reads standard input [default: ask on the terminal]
        file: Option<PathBuf>,
        /// The service's address, when you received only the key
        #[arg(long, value_name = "ADDRESS")]
        address: Option<OnionAddress>,
        /// Forget the key at shutdown instead of keeping it in the Persistent Storage
        #[arg(long)]
        until_shutdown: bool,
    },
    /// List the keys you keep
    List,
    /// Show a kept key's name, service and when it was added (never the key itself)
    Show {
        /// The key (see `tails-server key list`)
        name: KeyName,
    },
    /// Forget a key: its stored copies are destroyed and your tor no longer has it
    Remove {
        /// The key (see `tails-server key list`)
        name: KeyName,
    },
}

/// Direct mode: the stores on this computer, and tor's control port.
pub fn run(cli: &Cli, command: &KeyCommand, out: &Printer) -> Result<()> {
    match command {
        KeyCommand::Add { name, file, address, until_shutdown } => {
            let text = read_key_text(file.as_deref(), address.is_some())?;
            let key = open(cli)?.add_received_key(name.clone(), &text, *address, !until_shutdown)?;
            added(&key_view(&key), out)?;
            tor::sync_after_change(&publisher(cli)?, tor::Affected::Key(name))
        }
        KeyCommand::List => list(&open(cli)?.received_keys()?.iter().map(key_view).collect::<Vec<_>>(), out),
        KeyCommand::Show { name } => show(&key_view(&open(cli)?.received_key(name)?), out),
        KeyCommand::Remove { name } => {
            let key = open(cli)?.remove_received_key(name)?;
            removed(&key_view(&key), out)?;
            tor::sync_after_change(&publisher(cli)?, tor::Affected::Key(name))
        }
    }
}

/// The key's text from `file`, standard input (`-`, or not a terminal), or the terminal.
/// `have_address`: the address was given apart, so the text may be the bare key.
pub fn read_key_text(file: Option<&Path>, have_address: bool) -> Result<Zeroizing<String>> {
    match file {
        Some(path) if path == Path::new("-") => read_bounded(std::io::stdin().lock(), "standard input"),
        Some(path) => {
            if !path.exists() && path.to_string_lossy().split_whitespace().any(looks_like_key) {
                bail!(
                    "refusing a key on the command line: every program on this computer can read it there, and it \
                     stays in your shell's history (you may want to remove it from there). Nothing was kept. Run \
                     `tails-server key add NAME` and paste it when asked, or put it in a file"
                );
            }
            let file =
                std::fs::File::open(path).with_context(|| format!("cannot read the key file {}", path.display()))?;
            read_bounded(file, &path.display().to_string())
        }
        None if std::io::stdin().is_terminal() => {
            let line = rpassword::prompt_password(
                "Paste the key you received: the line ADDRESS:descriptor:x25519:KEY, or the key alone (not shown): ",
            )
            .map(Zeroizing::new)
            .context("cannot read from the terminal")?;
            if have_address || line.contains(':') {
                return Ok(line);
            }
            eprint!("The address of the service it opens (….onion): ");
            let mut address = String::new();
            std::io::stdin().read_line(&mut address).context("cannot read from the terminal")?;
            Ok(Zeroizing::new(format!("{} {}", line.as_str(), address.trim())))
        }
        None => read_bounded(std::io::stdin().lock(), "standard input"),
    }
}

/// A key's text pasted where a file name goes: an `.auth_private` line, or 52 base32
/// characters (no file name of ours looks like that).
fn looks_like_key(text: &str) -> bool {
    text.contains(":descriptor:")
        || (text.len() >= 52 && text.chars().all(|c| c.is_ascii_alphanumeric() || c == ':' || c == '.'))
}

fn read_bounded(input: impl Read, what: &str) -> Result<Zeroizing<String>> {
    let mut bytes = Zeroizing::new(Vec::with_capacity(MAX_KEY_TEXT as usize + 1));
    input.take(MAX_KEY_TEXT + 1).read_to_end(&mut bytes).with_context(|| format!("cannot read {what}"))?;
    if bytes.len() as u64 > MAX_KEY_TEXT {
        bail!("{what} is too large to be a key ({MAX_KEY_TEXT} bytes at most); nothing was kept");
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        bail!("{what} is empty: no key was given; nothing was kept");
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| anyhow::anyhow!("{what} is not text; nothing was kept"))?;
    Ok(Zeroizing::new(text.to_owned()))
}

fn kept(view: &KeyView) -> &'static str {
    if view.persistent {
        "in the Persistent Storage"
    } else {
        "until shutdown"
    }
}

pub fn added(view: &KeyView, out: &Printer) -> Result<()> {
    if out.structured(view)? {
        return Ok(());
    }
    print!(
        "Kept key {} for {} ({}).\nYour tor gets it now and again after every restart: Tor Browser, and programs that \
         go through tor (a Mumble client, torsocks sftp…), can reach that service.\n",
        view.name,
        view.address,
        kept(view)
    );
    Ok(())
}

pub fn removed(view: &KeyView, out: &Printer) -> Result<()> {
    if out.structured(view)? {
        return Ok(());
    }
    println!("Forgot key {} for {}: its stored copies are destroyed.", view.name, view.address);
    Ok(())
}

pub fn list(views: &[KeyView], out: &Printer) -> Result<()> {
    if out.structured(&views)? {
        return Ok(());
    }
    if views.is_empty() {
        eprintln!("No keys kept. Keep one someone gave you with `tails-server key add NAME`.");
        return Ok(());
    }
    let width = views.iter().map(|v| v.name.len()).max().unwrap_or(3).max(3);
    let mut text = format!("{:width$}  {:62}  {:14}  ADDED\n", "KEY", "SERVICE", "KEPT");
    for v in views {
        let kept = if v.persistent { "persistent" } else { "until shutdown" };
        text.push_str(&format!("{:width$}  {:62}  {:14}  {}\n", v.name, v.address, kept, v.created));
    }
    print!("{text}");
    Ok(())
}

pub fn show(view: &KeyView, out: &Printer) -> Result<()> {
    if out.structured(view)? {
        return Ok(());
    }
    println!("key: {}\nservice: {}\nkept: {}\nadded: {}", view.name, view.address, kept(view), view.created);
    Ok(())
}
