//! A person's presence. polkit's `allow_active` lets every process of the logged-in session
//! act as the session, and on Tails the session usually has no password to ask for: a
//! background process running as amnesia could take every key with one `Export`. So the
//! calls that let a secret leave the service or widen who may reach a service also need
//! the Persistent Storage passphrase, which only the person knows: the service checks it
//! against the volume's LUKS header (cryptsetup, without unlocking anything) and remembers
//! it for that caller's connection only, for a few minutes. A process that has not seen the
//! passphrase typed cannot complete the step; threats beyond that (a process that reads the
//! keyboard) are in docs/threat-model.md.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use zeroize::Zeroizing;

use tails_server_dbus::ServiceError;

/// How long a proven presence lasts, for the connection that proved it.
pub const KEPT_FOR: Duration = Duration::from_secs(5 * 60);

/// Where Tails' Persistent Storage is: the GPT partition labelled TailsData.
pub const TAILS_DATA_PARTITION: &str = "/dev/disk/by-partlabel/TailsData";

/// cryptsetup, by its full path (Debian's, Tails' too): no PATH lookup for a program that
/// is handed the passphrase.
const CRYPTSETUP: &str = "/usr/sbin/cryptsetup";

/// The longest passphrase taken (cryptsetup's own limit for a typed one is 512 bytes).
const MAX_PASSPHRASE: usize = 512;

/// What proves a person is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresenceCheck {
    /// The passphrase of this LUKS volume (or header file).
    LuksPassphrase(PathBuf),
    /// No step beyond polkit: a system without a Persistent Storage (not Tails), where
    /// polkit's own rules (an administration password) are the way to ask for a person.
    PolkitOnly,
}

impl PresenceCheck {
    /// Parses `luks:PATH` or `polkit-only`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text == "polkit-only" {
            return Ok(PresenceCheck::PolkitOnly);
        }
        match text.strip_prefix("luks:") {
            Some(path) if path.starts_with('/') => Ok(PresenceCheck::LuksPassphrase(path.into())),
            _ => Err(format!("{text:?}: expected luks:/PATH/OF/THE/VOLUME or polkit-only")),
        }
    }
}

/// The callers who proved their presence, by unique bus name (never reused on a bus: a
/// proof dies with its connection), until when. Expired entries are dropped at the next
/// proof, so the table holds at most the last few minutes' callers.
pub struct Presence {
    check: PresenceCheck,
    proven: Mutex<HashMap<String, Instant>>,
}

impl Presence {
    pub fn new(check: PresenceCheck) -> Self {
        Presence { check, proven: Mutex::new(HashMap::new()) }
    }

    /// Refuses the call unless `sender` proved its presence less than [`KEPT_FOR`] ago.
    /// `what` says what the call would do, for the message.
    pub fn require(&self, sender: &str, what: &str) -> Result<(), ServiceError> {
        if self.is_proven(sender) {
            Ok(())
        } else {
            Err(Self::refusal(what))
        }
    }

    /// Whether `sender` may now do what needs a person (always, where polkit alone decides).
    pub fn is_proven(&self, sender: &str) -> bool {
        if self.check == PresenceCheck::PolkitOnly {
            return true;
        }
        let proven = self.proven.lock().expect("presence table");
        proven.get(sender).is_some_and(|until| *until > Instant::now())
    }

    /// The error for a call refused for want of a person's presence.
    pub fn refusal(what: &str) -> ServiceError {
        ServiceError::PresenceRequired(format!(
            "{what} needs the Persistent Storage passphrase: it proves that a person, not a program \
             running in the background, is asking. Type it when asked (nothing is unlocked or changed by it)"
        ))
    }

    /// Checks `passphrase`; on success `sender` is present for [`KEPT_FOR`]. A wrong
    /// passphrase also takes back a presence proven before.
    pub async fn prove(&self, sender: &str, passphrase: Zeroizing<String>) -> Result<Duration, ServiceError> {
        let PresenceCheck::LuksPassphrase(volume) = &self.check else {
            // Nothing to prove here: polkit alone decides.
            return Ok(Duration::ZERO);
        };
        if passphrase.is_empty() || passphrase.len() > MAX_PASSPHRASE {
            return Err(ServiceError::InvalidInput(format!(
                "a Persistent Storage passphrase is 1 to {MAX_PASSPHRASE} bytes long"
            )));
        }
        let permit = crate::KEY_DERIVATION.acquire().await.map_err(|e| ServiceError::Failed(e.to_string()))?;
        let right = luks_passphrase_opens(volume, &passphrase).await;
        drop(permit);
        let mut proven = self.proven.lock().expect("presence table");
        let now = Instant::now();
        // Old entries go as new ones come: the table stays as small as the callers of the
        // last few minutes.
        proven.retain(|_, until| *until > now);
        match right {
            Ok(true) => {
                proven.insert(sender.to_owned(), now + KEPT_FOR);
                Ok(KEPT_FOR)
            }
            Ok(false) => {
                proven.remove(sender);
                Err(ServiceError::NotAuthorized(
                    "that is not the Persistent Storage passphrase (nothing was revealed or changed)".into(),
                ))
            }
            Err(e) => Err(e),
        }
    }
}

/// Whether `passphrase` opens a key slot of the LUKS volume `volume`: cryptsetup's
/// `--test-passphrase`, which activates nothing. The passphrase goes through a pipe, never
/// the command line; `--disable-locks` because the service may not write /run/cryptsetup
/// (a read of the header needs no lock).
async fn luks_passphrase_opens(volume: &std::path::Path, passphrase: &str) -> Result<bool, ServiceError> {
    let unavailable =
        |why: String| ServiceError::System(format!("cannot check the Persistent Storage passphrase: {why}"));
    let mut child = tokio::process::Command::new(CRYPTSETUP)
        .args(["open", "--test-passphrase", "--disable-locks", "--key-file", "-"])
        .arg(volume)
        .env_clear()
        .env("LC_ALL", "C")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| unavailable(format!("{CRYPTSETUP}: {e}")))?;
    let mut stdin = child.stdin.take().expect("piped");
    // A key file read from standard input is taken whole, to its end: exactly the typed bytes.
    stdin.write_all(passphrase.as_bytes()).await.map_err(|e| unavailable(format!("writing to cryptsetup: {e}")))?;
    drop(stdin);
    let out = child.wait_with_output().await.map_err(|e| unavailable(format!("cryptsetup: {e}")))?;
    match out.status.code() {
        Some(0) => Ok(true),
        // cryptsetup's "No key available with this passphrase".
        Some(2) => Ok(false),
        _ => Err(unavailable(format!(
            "cryptsetup on {} failed ({}): {}",
            volume.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_parse() {
        assert_eq!(PresenceCheck::parse("polkit-only"), Ok(PresenceCheck::PolkitOnly));
        assert_eq!(
            PresenceCheck::parse("luks:/dev/disk/by-partlabel/TailsData"),
            Ok(PresenceCheck::LuksPassphrase(TAILS_DATA_PARTITION.into()))
        );
        for bad in ["luks:", "luks:relative", "none", ""] {
            assert!(PresenceCheck::parse(bad).unwrap_err().contains("expected"), "{bad}");
        }
    }
}
