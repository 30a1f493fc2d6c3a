//! What the window says, worked out from the service's documents. No widgets here: every
//! word the window shows and every state it draws is decided in this module, and tested as
//! plain Rust (in English: the tests run without a translation).

use tails_server_dbus::views::{StatusView, TorState};
use tails_server_dbus::{ErrorKind, ServiceError};

use crate::{tr, trn};

/// How far a service has come, from the person's switch to a friend's connection. Each rung
/// is true only when every rung below it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rung {
    /// The person turned it off: tor does not publish it.
    Off,
    /// Wanted, but tor is not connected (or could not be asked): it is published when tor is.
    TorOff,
    /// Being handed to tor, or tor still runs an older version of it.
    Publishing,
    /// tor runs it; its descriptor is not uploaded yet, so nobody can find it yet.
    Registered,
    /// The descriptor is uploaded: a friend holding a key can connect.
    Uploaded,
    /// A connection through tor reached it.
    Reachable,
}

impl Rung {
    /// Where tor's answers put a service the person wants (`enabled`) or not.
    pub fn of(enabled: bool, tor: &TorState) -> Rung {
        if !enabled {
            return Rung::Off;
        }
        // Tor's bootstrap does not hold a service back from tor: it is registered while tor
        // connects, and announced once it has.
        let connected = tor.tor_error.is_none() && tor.network_enabled != Some(false);
        if !connected {
            Rung::TorOff
        } else if tor.registered != Some(true) || tor.published_as_stored == Some(false) {
            Rung::Publishing
        } else if tor.uploaded != Some(true) {
            Rung::Registered
        } else if tor.reachable == Some(true) {
            Rung::Reachable
        } else {
            Rung::Uploaded
        }
    }

    /// Something is under way that ends by itself (the window shows a spinner).
    pub fn busy(&self) -> bool {
        matches!(self, Rung::Publishing | Rung::Registered)
    }

    /// The service's line under its name.
    pub fn words(&self, tor: &TorState) -> String {
        match self {
            Rung::Off => tr!("Off: Tor does not publish it"),
            Rung::TorOff => tr!("Saved; Tor will publish it when it is connected"),
            Rung::Publishing => tr!("Publishing…"),
            Rung::Registered => match tor.bootstrap {
                Some(percent) if percent < 100 => {
                    tr!("Registered with Tor; announced once Tor has connected ({percent}%)", percent)
                }
                _ => tr!("Registered with Tor; announcing it on the Tor network…"),
            },
            Rung::Uploaded => match (tor.reachable, &tor.probe_detail) {
                (Some(false), Some(detail)) => tr!("Published, but the last check did not reach it: {detail}", detail),
                (Some(false), None) => tr!("Published, but the last check did not reach it"),
                _ => tr!("Published: friends holding a key can connect"),
            },
            Rung::Reachable => tr!("Reachable through Tor"),
        }
    }
}

/// Where a step of the ladder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Done,
    /// Under way now (tor is working on it).
    Now,
    NotYet,
}

/// The steps drawn in a service's details, from the switch to a friend's connection.
pub fn steps() -> [String; 4] {
    [tr!("Tor connected"), tr!("Registered with Tor"), tr!("Announced"), tr!("Reached by a check")]
}

impl Rung {
    /// The ladder drawn in a service's details: each of [`steps`] done, under way or not yet;
    /// None when the service is off (there is no way to climb).
    pub fn ladder(&self) -> Option<[Step; 4]> {
        let reached = match self {
            Rung::Off => return None,
            Rung::TorOff => 0,
            Rung::Publishing => 1,
            Rung::Registered => 2,
            Rung::Uploaded => 3,
            Rung::Reachable => 4,
        };
        let busy = self.busy();
        Some(std::array::from_fn(|step| match step {
            s if s < reached => Step::Done,
            s if s == reached && busy => Step::Now,
            _ => Step::NotYet,
        }))
    }
}

/// One step as a screen reader says it: "Registered with Tor: done".
pub fn step_words(step: &str, state: Step) -> String {
    match state {
        Step::Done => tr!("{step}: done", step),
        Step::Now => tr!("{step}: under way", step),
        Step::NotYet => tr!("{step}: not yet", step),
    }
}

/// A service as one row shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRow {
    pub name: String,
    /// The kind's name for people ("Mumble"), or the kind itself when the catalog does not know it.
    pub kind: String,
    pub address: String,
    pub enabled: bool,
    pub installed: bool,
    pub clients: usize,
    pub rung: Rung,
    /// The line under the name.
    pub state: String,
}

impl ServiceRow {
    pub fn new(status: &StatusView, kind_in_gui: &str) -> ServiceRow {
        let rung = Rung::of(status.enabled, &status.tor);
        let mut state = rung.words(&status.tor);
        if !status.installed {
            state = tr!(
                "{kind}'s program is not installed: add it with Additional Software. {state}",
                kind = kind_in_gui,
                state
            );
        }
        ServiceRow {
            name: status.name.clone(),
            kind: kind_in_gui.to_owned(),
            address: status.address.clone(),
            enabled: status.enabled,
            installed: status.installed,
            clients: status.clients,
            rung,
            state,
        }
    }

    /// What a screen reader says for the row's switch.
    pub fn switch_name(&self) -> String {
        tr!("Publish {service}", service = self.name)
    }
}

/// Tor's state for the whole window: shown above the list when it keeps services back.
pub fn tor_notice(rows: &[(ServiceRow, TorState)]) -> Option<String> {
    let waiting = rows.iter().filter(|(row, _)| row.rung == Rung::TorOff).count();
    if waiting == 0 {
        return None;
    }
    let tor = &rows.iter().find(|(row, _)| row.rung == Rung::TorOff)?.1;
    Some(if tor.network_enabled == Some(false) {
        trn!(
            "Tor is not connected yet. Connect to Tor with the Tor Connection assistant: {n} service will be \
             published as soon as it is connected.",
            "Tor is not connected yet. Connect to Tor with the Tor Connection assistant: {n} services will be \
             published as soon as it is connected.",
            waiting
        )
    } else {
        trn!(
            "Tor cannot be reached right now: {n} service will be published as soon as it is connected.",
            "Tor cannot be reached right now: {n} services will be published as soon as it is connected.",
            waiting
        )
    })
}

/// Shown above the services while Additional Software does not install tails-server at
/// every login (`InstalledAtEveryLogin` false): what is lost at a restart, and the one
/// command that keeps it, which needs the administration password.
pub fn not_set_up() -> [String; 3] {
    [
        tr!("Not Installed at Every Login"),
        tr!("Tails forgets Tails Server when it shuts down. Your services and their keys are kept in the \
             Persistent Storage, but after a restart nothing publishes them until Tails Server is set up, \
             once, with the administration password. In a terminal, in the folder that holds both packages:"),
        // A command, typed as it is in every language.
        "sudo tails-server setup --deb tails-server_*.deb --deb tails-server-gui_*.deb".to_owned(),
    ]
}

/// Something that stops the window from showing the services: a page of its own, saying
/// what is wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub title: String,
    pub body: String,
    pub icon: &'static str,
}

/// Why the service could not be asked at all.
#[derive(Debug)]
pub enum Failure {
    /// The system bus answers, but nothing owns the service's name.
    NotRunning,
    /// The system bus itself cannot be reached.
    NoBus(String),
    /// The service answered with an error.
    Refused(ServiceError),
}

impl Failure {
    /// The words the person sees for a failed call that is not worth a page (a refused change).
    pub fn message(&self) -> String {
        match self {
            Failure::NotRunning => tr!("The Tails Server service stopped."),
            Failure::NoBus(why) => tr!("The system bus cannot be reached: {why}", why),
            Failure::Refused(error) => sentence(&error.message()),
        }
    }

    /// The page for a failure that leaves nothing to show; None when the list can stay (the
    /// error then goes in a notification with [`Failure::message`]).
    pub fn page(&self) -> Option<Problem> {
        let problem = |title: String, body: String, icon| Problem { title, body, icon };
        match self {
            Failure::NotRunning => Some(problem(
                tr!("Tails Server is not running"),
                tr!("Nothing answers for your onion services on this computer. If you just added Tails Server \
                     with Additional Software, wait until the installation has finished, then restart Tails. \
                     If it keeps happening, an administrator can see why with “journalctl -u tails-server”."),
                "dialog-warning-symbolic",
            )),
            Failure::NoBus(why) => Some(problem(
                tr!("The system cannot be reached"),
                tr!("This window talks to Tails Server through the system bus, which does not answer: {why}", why),
                "dialog-error-symbolic",
            )),
            Failure::Refused(error) => match error {
                ServiceError::PersistentStorageLocked(_) => Some(problem(
                    tr!("Unlock your Persistent Storage"),
                    tr!("Your onion services, their addresses and your friends' keys are kept in the Persistent \
                         Storage. Unlock it in the Welcome Screen when you start Tails, then open this window again."),
                    "system-lock-screen-symbolic",
                )),
                ServiceError::PresenceRequired(_) => None,
                e if e.kind() == Some(ErrorKind::NotAuthorized) => Some(problem(
                    tr!("You may not manage onion services here"),
                    // The service's words stay in English; the advice around them is translated.
                    tr!(
                        "{refusal} Ask the person who administers this computer.",
                        refusal = sentence(&error.message())
                    ),
                    "action-unavailable-symbolic",
                )),
                ServiceError::ZBus(_) => Some(problem(
                    tr!("Tails Server does not answer"),
                    sentence(&error.message()),
                    "dialog-error-symbolic",
                )),
                _ => None,
            },
        }
    }
}

/// A message as a sentence: capital first letter, final full stop.
pub fn sentence(message: &str) -> String {
    let message = message.trim();
    let mut chars = message.chars();
    let Some(first) = chars.next() else { return String::new() };
    let mut text: String = first.to_uppercase().chain(chars).collect();
    if !text.ends_with(['.', '!', '?']) {
        text.push('.');
    }
    text
}

/// What a change's answer says about tor (`tor` in the service's answers).
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct TorOutcome {
    pub applied: bool,
    #[serde(default)]
    pub pending: Vec<String>,
    #[serde(default)]
    pub failed: Vec<String>,
}

impl TorOutcome {
    /// The notification after a change, when there is something to say.
    pub fn notice(&self) -> Option<String> {
        if !self.failed.is_empty() {
            Some(sentence(&tr!("Saved, but {failures}", failures = self.failed.join("; "))))
        } else if !self.applied || !self.pending.is_empty() {
            Some(tr!("Saved; Tor will publish it when it is back."))
        } else {
            None
        }
    }
}

/// The result of "Check Now" (a connection through tor to the service), at `at` (HH:MM).
pub fn check_words(reachable: Option<bool>, detail: Option<&str>, at: &str) -> String {
    match (reachable, detail) {
        (Some(true), _) => tr!("Reached through Tor at {at}", at),
        (Some(false), Some(detail)) => tr!("Not reached at {at}: {detail}", at, detail),
        (Some(false), None) => tr!("Not reached at {at}", at),
        (None, Some(detail)) => tr!("Could not check at {at}: {detail}", at, detail),
        (None, None) => tr!("Could not check at {at}", at),
    }
}

/// The share sheet for one friend: the address first, the key second, as two steps, so that
/// each can go through a channel of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invitation {
    pub address_title: String,
    pub address_body: String,
    pub key_title: String,
    pub key_body: String,
    /// How this kind connects, from the catalog.
    pub how: String,
    pub hint: String,
    /// The file name the key is offered to be saved as.
    pub file_name: String,
}

impl Invitation {
    /// `connect`: how the service's kind says a friend connects (the catalog's `connect`,
    /// with `{service}`, `{address}`, `{port}` and `{client}`).
    pub fn new(service: &str, client: &str, address: &str, port: u16, connect: Option<&str>) -> Invitation {
        let how = match connect {
            Some(template) => crate::i18n::catalog(template)
                .replace("{service}", service)
                .replace("{address}", address)
                .replace("{port}", &port.to_string())
                .replace("{client}", client),
            None => {
                tr!("{client} connects to {address}, port {port}, through Tor, with this key.", client, address, port)
            }
        };
        Invitation {
            address_title: tr!("Step 1 of 2: The Address"),
            address_body: tr!(
                "Send {client} the address of {service}. Anyone can see an address: it is useless without the key.",
                client,
                service
            ),
            key_title: tr!("Step 2 of 2: {client}'s Key", client),
            key_body: tr!(
                "This key lets {client}, and only {client}, find and reach {service}. Whoever holds it can \
                 connect as {client}: send it to nobody else.",
                client,
                service
            ),
            how,
            hint: tr!("Send the address and the key through different channels (for example, one in person and the \
                       other in an encrypted message): somebody who reads one channel then still cannot connect."),
            file_name: format!("{client}.auth_private"),
        }
    }
}

/// The confirmation before a friend's key is revoked: what happens, said before it does.
pub fn revoke_words(service: &str, client: &str) -> (String, String) {
    (
        tr!("Revoke {client}'s Key?", client),
        tr!(
            "{client} will no longer be able to find or reach {service}. Tor publishes {service} again without this \
             key, so friends connected now are disconnected and reconnect by themselves.",
            client,
            service
        ),
    )
}

/// The confirmation before a service is removed.
pub fn remove_words(service: &str) -> (String, String) {
    (
        tr!("Remove {service}?", service),
        tr!(
            "The onion address of {service}, every friend's key and its data are destroyed. Nobody can ever connect to this \
             address again: a new service gets a new address, and your friends new keys.",
            service
        ),
    )
}

impl TorOutcome {
    /// The notification after a received key was kept.
    pub fn key_notice(&self, name: &str) -> String {
        if !self.failed.is_empty() {
            sentence(&tr!("The key {name} is kept, but {failures}", name, failures = self.failed.join("; ")))
        } else if !self.applied || !self.pending.is_empty() {
            tr!("The key {name} is kept; Tor gets it when it is back.", name)
        } else {
            tr!("The key {name} is kept and given to Tor.", name)
        }
    }
}

/// A row of kept data: whose it was; when it was set aside, its size, and whether it
/// survives a shutdown (`when` and `size` already in the person's format).
pub fn kept_words(service: &str, when: &str, size: &str, persistent: bool) -> (String, String) {
    let title = tr!("Files of {service}", service);
    let subtitle = if persistent {
        tr!("Kept {when} · {size} · kept across reboots", when, size)
    } else {
        tr!("Kept {when} · {size} · forgotten at shutdown", when, size)
    };
    (title, subtitle)
}

/// The confirmation before kept data is deleted.
pub fn delete_kept_words(service: &str) -> (String, String) {
    (
        tr!("Delete the Files of {service}?", service),
        tr!(
            "These files, once the data of {service}, are destroyed for good; its program's keys are \
             overwritten first. No service can get them back.",
            service
        ),
    )
}

/// The question before kept data is given to a service.
pub fn give_kept_words(service: &str) -> (String, String) {
    (
        tr!("Give the Files of {service} to a Service?", service),
        tr!("For a service removed by mistake and added again: the service you choose gets these files and its \
             program's keys back, and its friends see them. It must be off and have no files of its own."),
    )
}

/// Below this many characters a backup passphrase is refused: the backup holds every onion
/// key, and whoever guesses its passphrase can run your services at their addresses.
pub const SHORTEST_BACKUP_PASSPHRASE: usize = 12;

/// What is wrong with a new backup passphrase typed twice; None when it can be used.
pub fn backup_passphrase_problem(first: &str, again: &str) -> Option<String> {
    let length = first.chars().count();
    if length == 0 {
        Some(tr!("Type a passphrase for the backup."))
    } else if first != again {
        Some(tr!("The two passphrases are not the same. Type the same one twice."))
    } else if length < SHORTEST_BACKUP_PASSPHRASE {
        Some(trn!(
            "This passphrase has {n} character; use at least {shortest}. The backup holds every \
             key: whoever guesses its passphrase can run your services at their addresses.",
            "This passphrase has {n} characters; use at least {shortest}. The backup holds every \
             key: whoever guesses its passphrase can run your services at their addresses.",
            length,
            shortest = SHORTEST_BACKUP_PASSPHRASE
        ))
    } else {
        None
    }
}

/// The file name a backup is offered to be saved as, on `date` (YYYY-MM-DD).
pub fn backup_file_name(date: &str) -> String {
    format!("tails-server-backup-{date}.age")
}

/// What a restore did, or (a dry run) would do: the service's `Import` answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ImportReport {
    #[serde(default)]
    pub added: Vec<String>,
    #[serde(default)]
    pub replaced: Vec<String>,
    #[serde(default)]
    pub skipped: Vec<String>,
    /// What the service held back rather than lowering protection (turned off, no LAN).
    #[serde(default)]
    pub held_back: Vec<String>,
    /// What Replace would let in that today's services do not (friends, login keys…).
    #[serde(default)]
    pub replacing_widens: Vec<String>,
}

/// A kept key appears in a report as `key NAME`; services by their name.
fn services_and_keys(names: &[String]) -> (Vec<&str>, Vec<&str>) {
    let (keys, services): (Vec<&String>, Vec<&String>) = names.iter().partition(|n| n.starts_with("key "));
    (services.into_iter().map(String::as_str).collect(), keys.into_iter().map(|k| &k[4..]).collect())
}

/// The names, joined for a sentence's list.
fn joined(names: &[&str]) -> String {
    names.join(", ")
}

/// The question before a restore, from a dry run that skips what exists: what it would add,
/// what is already here (and would be replaced only if the person chooses so), and what is
/// held back. Nothing has changed yet when this is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestorePreview {
    pub heading: String,
    pub body: String,
    /// There is something to add.
    pub adds: bool,
    /// Some services or keys exist here already: "Replace" would overwrite them.
    pub conflicts: bool,
}

impl RestorePreview {
    pub fn new(dry_run: &ImportReport) -> RestorePreview {
        let (services, keys) = services_and_keys(&dry_run.added);
        let (existing_services, existing_keys) = services_and_keys(&dry_run.skipped);
        let mut lines: Vec<String> = Vec::new();
        if !services.is_empty() {
            lines.push(tr!("Services it adds: {names}.", names = joined(&services)));
        }
        if !keys.is_empty() {
            lines.push(tr!("Keys you received it adds: {names}.", names = joined(&keys)));
        }
        let existing: Vec<&str> = existing_services.iter().chain(&existing_keys).copied().collect();
        if !existing.is_empty() {
            lines.push(tr!(
                "Already here: {names}. Restore keeps them as they are; Replace puts the backup's in their place, so \
                 their addresses and friends' keys become the backup's, and today's are destroyed.",
                names = joined(&existing)
            ));
        }
        // The service's own words (English) inside the translated sentence.
        if !dry_run.replacing_widens.is_empty() {
            // Replace is a choice made on this text: what it opens is said before it.
            lines
                .push(tr!("Replace would let in more than today: {what}.", what = dry_run.replacing_widens.join("; ")));
        }
        if !dry_run.held_back.is_empty() {
            lines.push(tr!(
                "For your safety, nothing comes back more open than it is now: {what}.",
                what = dry_run.held_back.join("; ")
            ));
        }
        let adds = !dry_run.added.is_empty();
        let conflicts = !dry_run.skipped.is_empty();
        let heading = if adds || conflicts { tr!("Restore This Backup?") } else { tr!("Nothing to Restore") };
        if !adds && !conflicts {
            lines.push(tr!("The backup holds nothing."));
        }
        RestorePreview { heading, body: lines.join("\n\n"), adds, conflicts }
    }
}

/// The notification after a restore.
pub fn restored_words(report: &ImportReport) -> String {
    let mut names: Vec<&str> = Vec::new();
    let (services, keys) = services_and_keys(&report.added);
    let (replaced_services, replaced_keys) = services_and_keys(&report.replaced);
    names.extend(services.iter().chain(&replaced_services));
    names.extend(keys.iter().chain(&replaced_keys));
    if names.is_empty() {
        return tr!("Nothing was restored: everything in the backup is already here.");
    }
    if report.added.iter().chain(&report.replaced).any(|n| !n.starts_with("key ")) {
        tr!("Restored: {names}. Restored services are off: turn each on to publish it.", names = joined(&names))
    } else {
        tr!("Restored: {names}.", names = joined(&names))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tor() -> TorState {
        TorState {
            registered: Some(true),
            uploaded: Some(true),
            published_as_stored: Some(true),
            network_enabled: Some(true),
            bootstrap: Some(100),
            ..TorState::default()
        }
    }

    #[test]
    fn the_ladder_climbs_only_as_far_as_tor_says() {
        assert_eq!(Rung::of(false, &tor()), Rung::Off, "the person's switch comes first");
        assert_eq!(Rung::of(true, &tor()), Rung::Uploaded);
        assert_eq!(Rung::of(true, &TorState { reachable: Some(true), ..tor() }), Rung::Reachable);
        assert_eq!(Rung::of(true, &TorState { reachable: Some(false), ..tor() }), Rung::Uploaded);
        assert_eq!(Rung::of(true, &TorState { uploaded: Some(false), ..tor() }), Rung::Registered);
        assert_eq!(Rung::of(true, &TorState { uploaded: None, ..tor() }), Rung::Registered);
        assert_eq!(Rung::of(true, &TorState { registered: Some(false), ..tor() }), Rung::Publishing);
        assert_eq!(
            Rung::of(true, &TorState { published_as_stored: Some(false), ..tor() }),
            Rung::Publishing,
            "an older version with other clients is not this service yet"
        );
        assert_eq!(Rung::of(true, &TorState { network_enabled: Some(false), ..tor() }), Rung::TorOff);
        assert_eq!(
            Rung::of(true, &TorState { bootstrap: Some(45), uploaded: Some(false), ..tor() }),
            Rung::Registered,
            "tor takes services while it connects"
        );
        assert_eq!(Rung::of(true, &TorState { tor_error: Some("refused".into()), ..tor() }), Rung::TorOff);
        // Nothing known about tor at all (the service could not ask): not connected.
        assert_eq!(Rung::of(true, &TorState { tor_error: Some("x".into()), ..TorState::default() }), Rung::TorOff);
        assert!(Rung::Publishing.busy() && Rung::Registered.busy());
        assert!(!Rung::TorOff.busy() && !Rung::Uploaded.busy() && !Rung::Off.busy());
    }

    #[test]
    fn the_ladder_draws_each_step_done_under_way_or_not_yet() {
        use Step::*;
        assert_eq!(Rung::Off.ladder(), None, "an off service climbs nothing");
        assert_eq!(Rung::TorOff.ladder().unwrap(), [NotYet, NotYet, NotYet, NotYet]);
        assert_eq!(Rung::Publishing.ladder().unwrap(), [Done, Now, NotYet, NotYet]);
        assert_eq!(Rung::Registered.ladder().unwrap(), [Done, Done, Now, NotYet]);
        assert_eq!(Rung::Uploaded.ladder().unwrap(), [Done, Done, Done, NotYet], "only a check reaches it");
        assert_eq!(Rung::Reachable.ladder().unwrap(), [Done; 4]);
        assert_eq!(step_words(&steps()[1], Now), "Registered with Tor: under way");
    }

    #[test]
    fn each_rung_says_what_is_true_in_words() {
        let off = TorState { network_enabled: Some(false), ..tor() };
        assert_eq!(Rung::TorOff.words(&off), "Saved; Tor will publish it when it is connected");
        let connecting = TorState { bootstrap: Some(45), ..tor() };
        assert_eq!(Rung::Registered.words(&connecting), "Registered with Tor; announced once Tor has connected (45%)");
        assert_eq!(Rung::Registered.words(&tor()), "Registered with Tor; announcing it on the Tor network…");
        let failed = TorState { reachable: Some(false), probe_detail: Some("timed out".into()), ..tor() };
        assert_eq!(Rung::Uploaded.words(&failed), "Published, but the last check did not reach it: timed out");
        assert_eq!(Rung::Uploaded.words(&tor()), "Published: friends holding a key can connect");
    }

    fn status(enabled: bool, installed: bool, tor: TorState) -> StatusView {
        StatusView {
            name: "mumble".into(),
            address: "x.onion".into(),
            installed,
            enabled,
            client_authorization: true,
            clients: 2,
            options: Default::default(),
            tor,
        }
    }

    #[test]
    fn a_row_says_when_the_program_is_missing_and_how_to_add_it() {
        let row = ServiceRow::new(&status(true, false, tor()), "Mumble");
        assert_eq!(
            row.state,
            "Mumble's program is not installed: add it with Additional Software. Published: friends holding a key can connect"
        );
        assert_eq!(row.switch_name(), "Publish mumble");
        let row = ServiceRow::new(&status(false, true, tor()), "Mumble");
        assert_eq!(row.state, "Off: Tor does not publish it");
    }

    #[test]
    fn the_tor_notice_counts_the_services_waiting_and_says_why() {
        let waiting = |tor: TorState| (ServiceRow::new(&status(true, true, tor.clone()), "Mumble"), tor);
        assert_eq!(tor_notice(&[waiting(tor())]), None);
        let off = TorState { network_enabled: Some(false), ..tor() };
        assert_eq!(
            tor_notice(&[waiting(off.clone()), waiting(off), waiting(tor())]).unwrap(),
            "Tor is not connected yet. Connect to Tor with the Tor Connection assistant: 2 services will be \
             published as soon as it is connected."
        );
        let unreachable = TorState { tor_error: Some("no control socket".into()), ..tor() };
        assert_eq!(
            tor_notice(&[waiting(unreachable)]).unwrap(),
            "Tor cannot be reached right now: 1 service will be published as soon as it is connected."
        );
    }

    #[test]
    fn failures_that_leave_nothing_to_show_get_a_page_the_rest_a_notification() {
        let page = Failure::NotRunning.page().unwrap();
        assert_eq!(page.title, "Tails Server is not running");
        let locked = Failure::Refused(ServiceError::PersistentStorageLocked("the store is locked".into()));
        assert_eq!(locked.page().unwrap().title, "Unlock your Persistent Storage");
        let refused = Failure::Refused(ServiceError::NotAuthorized("not authorized by polkit".into()));
        let page = refused.page().unwrap();
        assert_eq!(page.title, "You may not manage onion services here");
        assert_eq!(page.body, "Not authorized by polkit. Ask the person who administers this computer.");
        // Asking for the passphrase is a dialog, not a dead end.
        assert_eq!(Failure::Refused(ServiceError::PresenceRequired("x".into())).page(), None);
        let conflict = Failure::Refused(ServiceError::Conflict("a service named mumble already exists".into()));
        assert_eq!(conflict.page(), None);
        assert_eq!(conflict.message(), "A service named mumble already exists.");
    }

    #[test]
    fn a_change_tor_could_not_take_yet_is_said_to_be_saved() {
        assert_eq!(TorOutcome { applied: true, ..Default::default() }.notice(), None);
        assert_eq!(
            TorOutcome { applied: false, pending: vec!["x".into()], ..Default::default() }.notice().unwrap(),
            "Saved; Tor will publish it when it is back."
        );
        assert_eq!(
            TorOutcome { applied: true, failed: vec!["murmurd did not start".into()], ..Default::default() }
                .notice()
                .unwrap(),
            "Saved, but murmurd did not start."
        );
    }

    #[test]
    fn the_share_sheet_says_each_step_and_how_this_kind_connects() {
        let web = "{client} opens http://{address}/ in Tor Browser and pastes the key when it asks.";
        let sheet = Invitation::new("site", "alice", "abc.onion", 80, Some(web));
        assert_eq!(sheet.how, "alice opens http://abc.onion/ in Tor Browser and pastes the key when it asks.");
        assert_eq!(sheet.key_title, "Step 2 of 2: alice's Key");
        assert_eq!(sheet.file_name, "alice.auth_private");
        assert!(sheet.hint.contains("different channels"), "{}", sheet.hint);
        let sheet = Invitation::new("mine", "bob", "abc.onion", 2222, None);
        assert_eq!(sheet.how, "bob connects to abc.onion, port 2222, through Tor, with this key.");
        let (title, body) = revoke_words("web", "alice");
        assert_eq!(title, "Revoke alice's Key?");
        assert!(body.contains("reconnect"), "the consequence is said: {body}");
    }

    #[test]
    fn a_received_key_is_said_kept_and_whether_tor_has_it() {
        let pending = TorOutcome { applied: false, pending: vec!["x".into()], ..Default::default() };
        assert_eq!(pending.key_notice("bob"), "The key bob is kept; Tor gets it when it is back.");
        assert_eq!(
            TorOutcome { applied: true, ..Default::default() }.key_notice("bob"),
            "The key bob is kept and given to Tor."
        );
    }

    #[test]
    fn a_check_says_when_and_what_it_found() {
        assert_eq!(check_words(Some(true), Some("connected"), "15:31"), "Reached through Tor at 15:31");
        assert_eq!(check_words(Some(false), Some("timed out"), "15:31"), "Not reached at 15:31: timed out");
        assert_eq!(
            check_words(None, Some("tor is not running"), "15:31"),
            "Could not check at 15:31: tor is not running"
        );
    }

    #[test]
    fn kept_data_says_whose_it_was_when_and_what_deleting_or_giving_does() {
        let (title, subtitle) = kept_words("site", "2026-12-07 03:30", "5 bytes", true);
        assert_eq!(title, "Files of site");
        assert_eq!(subtitle, "Kept 2026-12-07 03:30 · 5 bytes · kept across reboots");
        assert!(kept_words("site", "", "", false).1.ends_with("forgotten at shutdown"));
        let (heading, body) = delete_kept_words("site");
        assert_eq!(heading, "Delete the Files of site?");
        assert!(body.contains("destroyed for good"), "{body}");
        let (heading, body) = give_kept_words("site");
        assert_eq!(heading, "Give the Files of site to a Service?");
        assert!(body.contains("its friends see them"), "the consequence is said: {body}");
    }

    #[test]
    fn a_backup_passphrase_is_typed_twice_and_long_enough() {
        assert_eq!(backup_passphrase_problem("", "").unwrap(), "Type a passphrase for the backup.");
        assert!(backup_passphrase_problem("correct horse battery", "correct horse batery")
            .unwrap()
            .contains("not the same"));
        let short = backup_passphrase_problem("hunter2", "hunter2").unwrap();
        assert!(short.starts_with("This passphrase has 7 characters; use at least 12."), "{short}");
        assert_eq!(backup_passphrase_problem("correct horse battery", "correct horse battery"), None);
        assert_eq!(backup_file_name("2026-12-06"), "tails-server-backup-2026-12-06.age");
    }

    #[test]
    fn a_restore_says_what_it_adds_what_exists_and_what_is_held_back_before_it_does_it() {
        let dry_run = ImportReport {
            added: vec!["mumble".into(), "key bob-web".into()],
            skipped: vec!["web".into()],
            held_back: vec!["mumble: imported disabled (enable it to publish it)".into()],
            ..Default::default()
        };
        let preview = RestorePreview::new(&dry_run);
        assert_eq!(preview.heading, "Restore This Backup?");
        assert!(preview.adds && preview.conflicts);
        let lines: Vec<&str> = preview.body.split("\n\n").collect();
        assert_eq!(lines[0], "Services it adds: mumble.");
        assert_eq!(lines[1], "Keys you received it adds: bob-web.");
        assert!(lines[2].starts_with("Already here: web. Restore keeps them as they are; Replace"), "{}", lines[2]);
        assert_eq!(
            lines[3],
            "For your safety, nothing comes back more open than it is now: mumble: imported disabled (enable it to \
             publish it)."
        );
        let nothing = RestorePreview::new(&ImportReport::default());
        assert_eq!((nothing.heading.as_str(), nothing.adds, nothing.conflicts), ("Nothing to Restore", false, false));
        let only_existing =
            RestorePreview::new(&ImportReport { skipped: vec!["key bob".into()], ..Default::default() });
        assert!(only_existing.conflicts && !only_existing.adds);
        assert!(only_existing.body.starts_with("Already here: bob."), "{}", only_existing.body);
        let wider = RestorePreview::new(&ImportReport {
            skipped: vec!["sftp".into()],
            replacing_widens: vec!["sftp: clients whose keys it does not have today: mallory".into()],
            ..Default::default()
        });
        let lines: Vec<&str> = wider.body.split("\n\n").collect();
        assert_eq!(
            lines[1],
            "Replace would let in more than today: sftp: clients whose keys it does not have today: mallory."
        );
    }

    #[test]
    fn after_a_restore_the_window_says_what_came_back_and_that_services_are_off() {
        let report =
            ImportReport { added: vec!["mumble".into()], replaced: vec!["key bob".into()], ..Default::default() };
        assert_eq!(
            restored_words(&report),
            "Restored: mumble, bob. Restored services are off: turn each on to publish it."
        );
        let keys = ImportReport { added: vec!["key bob".into()], ..Default::default() };
        assert_eq!(restored_words(&keys), "Restored: bob.");
        assert_eq!(
            restored_words(&ImportReport { skipped: vec!["web".into()], ..Default::default() }),
            "Nothing was restored: everything in the backup is already here."
        );
    }

    #[test]
    fn sentences() {
        assert_eq!(sentence("tor refused it"), "Tor refused it.");
        assert_eq!(sentence("Done."), "Done.");
        assert_eq!(sentence("refused (polkit decides)"), "Refused (polkit decides).");
        assert_eq!(sentence(""), "");
    }
}
