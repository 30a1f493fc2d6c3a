//! `kept-data`: the data set aside when a service was removed with `--keep-data`, or found
//! under a new service's name before its program started. No service is ever given it again;
//! here it is listed, and deleted for good when the person says so.

use std::io::{IsTerminal, Write};

use anyhow::{bail, Context, Result};

use tails_server_core::manager::KeptData;
use tails_server_core::names::ServiceName;
use tails_server_dbus::views::rfc3339;

use super::output::Printer;
use super::{open, Cli};

#[derive(Debug, clap::Subcommand)]
pub enum KeptCommand {
    /// List the data set aside: whose it was, when, how big, and in which store
    List,
    /// Delete data set aside, for good (its programs' keys are overwritten first)
    Delete {
        /// What to delete, as `tails-server kept-data list` names it
        #[arg(required = true, value_name = "KEPT")]
        ids: Vec<String>,
        /// Do not ask for confirmation
        #[arg(long)]
        yes: bool,
    },
    /// Give kept data to a service as its data from now on (the service must be disabled and
    /// have no data of its own), e.g. after removing it by mistake and adding it again
    Give {
        /// The kept data, as `tails-server kept-data list` names it
        #[arg(value_name = "KEPT")]
        id: String,
        /// The service to give it to (see `tails-server list`)
        service: ServiceName,
    },
}

/// Direct mode: the stores on this computer.
pub fn run(cli: &Cli, command: &KeptCommand, out: &Printer) -> Result<()> {
    match command {
        KeptCommand::List => list(&open(cli)?.kept_data()?, out),
        KeptCommand::Delete { ids, yes } => {
            if !yes {
                confirm_deletion(ids)?;
            }
            deleted(&open(cli)?.delete_kept_data(ids)?, out)
        }
        KeptCommand::Give { id, service } => {
            let (kept, _) = open(cli)?.give_kept_data(id, service)?;
            given(&Given { kept, service: service.to_string() }, out)
        }
    }
}

/// What `give` did.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Given {
    pub kept: KeptData,
    pub service: String,
}

pub fn given(given: &Given, out: &Printer) -> Result<()> {
    if out.structured(given)? {
        return Ok(());
    }
    println!(
        "{} ({}, the data of {}) is now {}'s: its program has it when you enable {}.",
        given.kept.id,
        size(given.kept.bytes),
        given.kept.service,
        given.service,
        given.service
    );
    Ok(())
}

/// Deleting kept data cannot be taken back: asked on a terminal, refused without one.
pub fn confirm_deletion(ids: &[String]) -> Result<()> {
    let what = ids.join(", ");
    if !std::io::stdin().is_terminal() {
        bail!("deleting {what} destroys it for good; add --yes to confirm when not running in a terminal");
    }
    eprint!("Deleting {what} destroys it for good: no service can have it back.\nType delete to confirm: ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).context("cannot read the confirmation")?;
    if answer.trim() != "delete" {
        bail!("not confirmed; nothing was deleted");
    }
    Ok(())
}

fn store(kept: &KeptData) -> &'static str {
    if kept.persistent {
        "persistent"
    } else {
        "until shutdown"
    }
}

/// A size as people read it: 512 B, 12.0 KiB, 3.4 MiB.
pub(super) fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

pub fn list(kept: &[KeptData], out: &Printer) -> Result<()> {
    if out.structured(&kept)? {
        return Ok(());
    }
    if kept.is_empty() {
        eprintln!("Nothing is kept. `tails-server remove --keep-data` sets a service's data aside here.");
        return Ok(());
    }
    let width = kept.iter().map(|k| k.id.len()).max().unwrap_or(4).max(4);
    let service_width = kept.iter().map(|k| k.service.len()).max().unwrap_or(7).max(7);
    let mut text =
        format!("{:width$}  {:service_width$}  {:20}  {:>10}  STORE\n", "KEPT", "SERVICE", "SET ASIDE", "SIZE");
    for k in kept {
        text.push_str(&format!(
            "{:width$}  {:service_width$}  {:20}  {:>10}  {}\n",
            k.id,
            k.service,
            if k.set_aside == 0 { "unknown".to_owned() } else { rfc3339(k.set_aside) },
            size(k.bytes),
            store(k)
        ));
    }
    print!("{text}");
    Ok(())
}

pub fn deleted(kept: &[KeptData], out: &Printer) -> Result<()> {
    if out.structured(&kept)? {
        return Ok(());
    }
    for k in kept {
        println!(
            "Deleted {} ({}, the data of {}): its programs' keys were overwritten first.",
            k.id,
            size(k.bytes),
            k.service
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_as_people_read_them() {
        assert_eq!(super::size(512), "512 B");
        assert_eq!(super::size(12 * 1024), "12.0 KiB");
        assert_eq!(super::size(3 * 1024 * 1024 + 400 * 1024), "3.4 MiB");
    }
}
