//! Credentials in and out: encrypted backups (export/import), C tor HiddenServiceDirs,
//! OnionShare settings, files and QR codes for sharing one client's key.

use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use serde::Serialize;
use zeroize::Zeroizing;

use tails_server_core::backup::{self, BackupDocument};
use tails_server_core::interop;
use tails_server_core::names::ServiceName;
use tails_server_core::secret_file::{self, Replace};
use tails_server_core::{AddRequest, ImportReport, Manager, OnConflict};

use super::output::Printer;

/// Mismatched terminal entries are asked again this many times in all.
const ATTEMPTS: usize = 3;

/// Shorter passphrases get a warning: the backup holds every key.
const WEAK_PASSPHRASE: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConflictArg {
    Fail,
    Skip,
    Replace,
}

impl From<ConflictArg> for OnConflict {
    fn from(c: ConflictArg) -> Self {
        match c {
            ConflictArg::Fail => OnConflict::Fail,
            ConflictArg::Skip => OnConflict::Skip,
            ConflictArg::Replace => OnConflict::Replace,
        }
    }
}

/// The passphrase, from a file (first line) or the terminal (asked twice when `confirm`).
/// Never from the command line or the environment.
pub fn passphrase(file: Option<&Path>, confirm: bool) -> Result<Zeroizing<String>> {
    let short = |passphrase: &str| {
        if confirm && passphrase.chars().count() < WEAK_PASSPHRASE {
            eprintln!(
                "tails-server: warning: this passphrase is short ({} characters). The backup holds every key: \
                 anyone who guesses it can impersonate your services.",
                passphrase.chars().count()
            );
        }
    };
    let passphrase = match file {
        Some(path) => {
            let passphrase = super::secret_input::first_line_of(path, "passphrase")?;
            short(&passphrase);
            passphrase
        }
        None => {
            let ask = |prompt: &str| -> Result<Zeroizing<String>> {
                rpassword::prompt_password(prompt)
                    .map(Zeroizing::new)
                    .context("cannot ask for the passphrase: there is no terminal. Give it with --passphrase-file FILE")
            };
            let mut attempt = 0;
            loop {
                attempt += 1;
                let first = ask("Passphrase: ")?;
                if first.is_empty() || !confirm {
                    break first;
                }
                // Said before it is confirmed: a short one can still be replaced.
                short(&first);
                let second = ask("Passphrase again (or Ctrl-C to stop): ")?;
                if *first == *second {
                    break first;
                }
                if attempt == ATTEMPTS {
                    bail!("the two passphrases differed {ATTEMPTS} times; nothing was written");
                }
                eprintln!("tails-server: the two passphrases differ; once more.");
            }
        }
    };
    if passphrase.is_empty() {
        bail!("the passphrase is empty");
    }
    Ok(passphrase)
}

/// `import`'s conflicts, with the flag that resolves them (other importers have no such flag).
pub fn conflict_hint(e: tails_server_core::Error) -> anyhow::Error {
    match e {
        tails_server_core::Error::ImportConflict(_) => anyhow::anyhow!("{e} (choose --on-conflict skip or replace)"),
        other => other.into(),
    }
}

/// Writes a new 0600 file; an existing one (a symbolic link included) is replaced only with
/// `force`, atomically, and never followed. The directory must be writable by nobody else.
pub fn write_private_file(path: &Path, bytes: &[u8], force: bool) -> Result<()> {
    secret_file::write_secret_file(path, &[bytes], replace_mode(force)).map_err(|e| refusal(path, e))
}

/// Fails early (before a passphrase is asked for) when [`write_private_file`] would refuse.
pub fn check_private_target(path: &Path, force: bool) -> Result<()> {
    secret_file::check_writable(path, replace_mode(force)).map_err(|e| refusal(path, e))
}

fn replace_mode(force: bool) -> Replace {
    if force {
        Replace::Always
    } else {
        Replace::Never
    }
}

fn refusal(path: &Path, e: tails_server_core::Error) -> anyhow::Error {
    match &e {
        tails_server_core::Error::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists => {
            anyhow::anyhow!("{} already exists; use --force to overwrite it", path.display())
        }
        _ => e.into(),
    }
}

/// Encrypts and writes the records. The caller has closed the store: nobody waits for
/// it while the passphrase is typed.
pub fn export(
    document: BackupDocument,
    output: &Path,
    passphrase_file: Option<&Path>,
    force: bool,
    out: &Printer,
) -> Result<()> {
    check_private_target(output, force)?;
    if document.services.is_empty() && document.keys.is_empty() {
        bail!("there is no service or kept key to export");
    }
    let passphrase = passphrase(passphrase_file, true)?;
    let encrypted = backup::encrypt(&document, &passphrase)?;
    write_private_file(output, &encrypted, force)?;
    let names: Vec<_> = document
        .services
        .iter()
        .map(|s| s.name.to_string())
        .chain(document.keys.iter().map(|k| format!("key {}", k.name)))
        .collect();
    exported(&names, output, out)
}

pub fn exported(names: &[String], output: &Path, out: &Printer) -> Result<()> {
    out.message(&format!(
        "Exported {} service(s) ({}) to {}, encrypted with your passphrase (age, scrypt). Keep the passphrase: \
         without it the backup cannot be opened.",
        names.len(),
        names.join(", "),
        output.display()
    ))
}

pub fn read_backup(file: &Path, passphrase_file: Option<&Path>) -> Result<BackupDocument> {
    let encrypted = read_backup_bytes(file)?;
    let passphrase = passphrase(passphrase_file, false)?;
    Ok(backup::decrypt(&encrypted, &passphrase)?)
}

/// A backup file's bytes, bounded; not decrypted.
pub fn read_backup_bytes(file: &Path) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(file).with_context(|| format!("cannot read {}", file.display()))?;
    if !meta.is_file() {
        bail!("{} is not a file", file.display());
    }
    if meta.len() > backup::MAX_BACKUP_SIZE {
        bail!("{} is not a tails-server backup: it is larger than {} bytes", file.display(), backup::MAX_BACKUP_SIZE);
    }
    std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct ImportView<'a> {
    dry_run: bool,
    added: &'a [String],
    replaced: &'a [String],
    skipped: &'a [String],
    held_back: &'a [String],
    replacing_widens: &'a [String],
}

pub fn print_import(report: &ImportReport, dry_run: bool, held_back: &[String], out: &Printer) -> Result<()> {
    let view = ImportView {
        dry_run,
        added: &report.added,
        replaced: &report.replaced,
        skipped: &report.skipped,
        held_back,
        replacing_widens: &report.replacing_widens,
    };
    if out.structured(&view)? {
        return Ok(());
    }
    if !report.replacing_widens.is_empty() {
        // Said before the summary: the person may not know the backup's version differs.
        if !dry_run && report.replaced.iter().any(|n| !n.starts_with("key ")) {
            eprintln!("The services put in place of today's let in more than today's did:");
        } else {
            eprintln!("Replacing today's services (--on-conflict replace) would let in more than they do now:");
        }
        for item in &report.replacing_widens {
            eprintln!("  {item}");
        }
    }
    if !held_back.is_empty() {
        eprintln!("Held back, to be turned on by you (the backup asked for less protection):");
        for item in held_back {
            eprintln!("  {item}");
        }
    }
    let list = |v: &[String]| if v.is_empty() { "none".to_owned() } else { v.join(", ") };
    let verb = if dry_run { "Would import (dry run, nothing written)" } else { "Imported" };
    out.message(&format!(
        "{verb}: added: {}; replaced: {}; skipped: {}.",
        list(&report.added),
        list(&report.replaced),
        list(&report.skipped)
    ))
}

/// An import never lowers protection unasked: what the backup would lower is shown, and kept
/// back unless the person confirms it (`--accept-lower-protection`, or "yes" at the prompt).
/// Returns what was held back.
pub fn confirm_lowered_protection(
    document: &mut tails_server_core::backup::BackupDocument,
    accepted: bool,
    dry_run: bool,
) -> Result<Vec<String>> {
    use std::io::IsTerminal;
    let lowered = document.lowered_protection();
    if lowered.is_empty() || accepted {
        return Ok(Vec::new());
    }
    eprintln!("This backup asks for less protection than tails-server gives by itself:");
    for item in &lowered {
        eprintln!("  {item}");
    }
    if dry_run {
        eprintln!(
            "Without --accept-lower-protection (or \"yes\" at the prompt) these are held back: services \
             disabled, without LAN access, and one without client authorization not imported."
        );
        return Ok(Vec::new());
    }
    if std::io::stdin().is_terminal() {
        eprint!(
            "Type yes to import them as they are; anything else holds them back (a service without client \
             authorization is then not imported): "
        );
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer).context("cannot read the answer")?;
        if answer.trim() == "yes" {
            return Ok(Vec::new());
        }
    }
    Ok(document.hold_back_lowered_protection()?)
}

/// A service from another tool's key (and clients). A service that was open to anyone
/// gets a first client here: tails-server does not publish without client authorization.
pub fn import_foreign(
    manager: &mut Manager,
    imported: interop::Imported,
    request: AddRequest,
    out: &Printer,
) -> Result<()> {
    let was_public = imported.clients.is_empty();
    let clients = if was_public { None } else { Some(imported.clients) };
    let record = manager.new_record(request, imported.key, clients)?;
    manager.import(vec![record.clone()], OnConflict::Fail, false)?;
    if was_public {
        eprintln!(
            "It was reachable by anyone with its address; it now has client authorization, with a new client {}. \
             Give its key to the people who should reach it.",
            record.clients[0].name
        );
    }
    out.added(manager, &record)
}

pub fn default_name(candidate: &str, what: &str) -> Result<ServiceName> {
    let cleaned: String = candidate
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect::<String>()
        .trim_matches('-')
        .chars()
        .take(32)
        .collect();
    ServiceName::new(&cleaned)
        .map_err(|_| anyhow::anyhow!("cannot make a service name from {what}; give one with --name"))
}

/// Renders a QR code with Unicode half blocks (two modules per character cell), with the
/// quiet zone scanners need. Dark modules print as blanks on a light frame, which works on
/// dark and light terminals alike.
pub fn qr_text(data: &str) -> Result<String> {
    let code = qrcode::QrCode::new(data.as_bytes()).context("cannot make a QR code")?;
    let width = code.width();
    let colors = code.to_colors();
    let quiet = 2i64;
    let dark = |x: i64, y: i64| -> bool {
        x >= 0
            && y >= 0
            && (x as usize) < width
            && (y as usize) < width
            && colors[y as usize * width + x as usize] == qrcode::Color::Dark
    };
    let mut out = String::new();
    let mut y = -quiet;
    while y < width as i64 + quiet {
        for x in -quiet..width as i64 + quiet {
            out.push(match (dark(x, y), dark(x, y + 1)) {
                (false, false) => '█',
                (true, false) => '▄',
                (false, true) => '▀',
                (true, true) => ' ',
            });
        }
        out.push('\n');
        y += 2;
    }
    Ok(out)
}
