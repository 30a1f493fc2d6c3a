//! Backup and restore: every service (its address, its friends' keys, its options) and the
//! keys you received, in one file encrypted with a passphrase of the person's choosing, the
//! format of the CLI's `export` and `import`. Saving a backup lets every key out, so it takes
//! the Persistent Storage passphrase first; a restore is shown before anything changes, and
//! the service never lets one come back more open than it was (see `Import` in docs/dbus).

use std::io::Read;
use std::path::Path;

use adw::prelude::*;
use tails_server_core::backup::MAX_BACKUP_SIZE;
use zeroize::Zeroizing;

use crate::friends::{save_new_secret_file, with_presence};
use crate::model::{self, ImportReport, RestorePreview, TorOutcome};
use crate::tr;
use crate::window::{choose_file, describe, password_entry, Window};

/// The "Backup" tab.
pub struct BackupPage {
    pub widget: gtk::ScrolledWindow,
    /// Its groups (the window adds the kept data's below).
    pub(crate) page: adw::PreferencesPage,
}

impl BackupPage {
    pub fn new(owner: &Window) -> BackupPage {
        let save =
            gtk::Button::builder().label(tr!("Save a Backup…")).halign(gtk::Align::Start).name("save-backup").build();
        save.add_css_class("suggested-action");
        describe(&save, &tr!("Save a backup"), Some(&tr!("An encrypted file with every service and key")));
        let saving = adw::PreferencesGroup::builder()
            .title(tr!("Back Up"))
            .description(tr!(
                "One file with every service, its address and its friends' keys, and the keys you received, \
                 encrypted with a passphrase you choose. Keep it away from this USB stick, and keep its passphrase \
                 safe: with both, anyone can run your services at their addresses."
            ))
            .build();
        saving.add(&save);
        let restore = gtk::Button::builder()
            .label(tr!("Restore From a Backup…"))
            .halign(gtk::Align::Start)
            .name("restore-backup")
            .build();
        describe(&restore, &tr!("Restore from a backup"), Some(&tr!("Shows what would change before anything does")));
        let restoring = adw::PreferencesGroup::builder()
            .title(tr!("Restore"))
            .description(tr!(
                "Brings services and keys back from a backup file, at their old addresses. You see what it would \
                 change before anything does; restored services stay off until you turn them on."
            ))
            .build();
        restoring.add(&restore);
        let page = adw::PreferencesPage::new();
        page.add(&saving);
        page.add(&restoring);
        let widget = gtk::ScrolledWindow::builder().hscrollbar_policy(gtk::PolicyType::Never).child(&page).build();

        let weak = owner.downgrade();
        save.connect_clicked(move |_| {
            let Some(owner) = weak.upgrade() else { return };
            gtk::glib::spawn_future_local(async move {
                let today = gtk::glib::DateTime::now_local().and_then(|now| now.format("%Y-%m-%d"));
                let name = model::backup_file_name(today.as_deref().unwrap_or("today"));
                let (parent, save) = (owner.widget(), gtk::FileChooserAction::Save);
                let (title, accept) = (tr!("Save the Backup"), tr!("Save"));
                let chosen = choose_file(parent, save, &title, &accept, &name).await;
                if let Some(path) = chosen {
                    back_up_to(&owner, &path).await;
                }
            });
        });
        let weak = owner.downgrade();
        restore.connect_clicked(move |_| {
            let Some(owner) = weak.upgrade() else { return };
            gtk::glib::spawn_future_local(async move {
                let (parent, open) = (owner.widget(), gtk::FileChooserAction::Open);
                let (title, accept) = (tr!("Choose a Backup"), tr!("Open"));
                let chosen = choose_file(parent, open, &title, &accept, "").await;
                if let Some(path) = chosen {
                    restore_from(&owner, &path).await;
                }
            });
        });
        BackupPage { widget, page }
    }
}

/// Asks for a new backup passphrase, twice, until it is usable; None when cancelled.
async fn ask_new_passphrase(owner: &Window) -> Option<Zeroizing<String>> {
    let mut body = tr!(
        "Choose a passphrase for this backup, and keep it somewhere safe: without it the backup cannot be restored."
    );
    loop {
        let form = gtk::Box::new(gtk::Orientation::Vertical, 8);
        let first = password_entry("backup-passphrase", &tr!("The backup's passphrase"));
        let again = password_entry("backup-passphrase-again", &tr!("The backup's passphrase, again"));
        again.set_activates_default(true);
        form.append(&first);
        form.append(&again);
        let (heading, label) = (tr!("Choose the Backup's Passphrase"), tr!("Save"));
        let suggested = adw::ResponseAppearance::Suggested;
        let chosen = owner.ask(&heading, &body, Some(form.upcast_ref()), ("save", &label), suggested).await;
        let (typed, repeated) = (Zeroizing::new(first.text().to_string()), Zeroizing::new(again.text().to_string()));
        first.set_text("");
        again.set_text("");
        if !chosen {
            return None;
        }
        match model::backup_passphrase_problem(&typed, &repeated) {
            None => return Some(typed),
            Some(problem) => body = problem,
        }
    }
}

/// Saves a backup of everything in `path` (never over an existing file): a new passphrase,
/// then the Persistent Storage passphrase when the service asks for it.
pub(crate) async fn back_up_to(owner: &Window, path: &Path) {
    let Some(passphrase) = ask_new_passphrase(owner).await else { return };
    let why = tr!(
        "Saving a backup needs the passphrase of your Persistent Storage, the one you type in the Welcome Screen: \
         no program running in the background can type it."
    );
    let exported = with_presence(owner, &why, move |server| {
        let passphrase = passphrase.clone();
        async move { server.export(Vec::new(), &passphrase).await }
    })
    .await;
    match exported {
        Ok(Some(backup)) => match save_new_secret_file(path, &backup) {
            Ok(()) => owner.notify(&tr!(
                "The backup is saved in {file}. Keep a copy away from this USB stick.",
                file = path.display()
            )),
            Err(problem) => owner.notify(&model::sentence(&problem)),
        },
        Ok(None) => {}
        Err(failure) => owner.show_failure(&failure),
    }
}

/// The service's answer to `Import`: the report, and what tor made of it.
#[derive(serde::Deserialize)]
struct Imported {
    #[serde(flatten)]
    result: ImportReport,
    #[serde(default)]
    tor: TorOutcome,
}

/// Restores from the backup in `path`: its passphrase, a dry run shown as a question (add
/// what is missing, or also replace what exists), then the import itself.
pub(crate) async fn restore_from(owner: &Window, path: &Path) {
    let backup = match read_backup(path) {
        Ok(backup) => backup,
        Err(problem) => return owner.notify(&problem),
    };
    let entry = password_entry("backup-passphrase", &tr!("The backup's passphrase"));
    entry.set_activates_default(true);
    let body = tr!("Type the passphrase chosen when {file} was saved.", file = display_name(path));
    let (heading, label) = (tr!("Open the Backup"), tr!("Open"));
    let suggested = adw::ResponseAppearance::Suggested;
    let opened = owner.ask(&heading, &body, Some(entry.upcast_ref()), ("open", &label), suggested).await;
    let passphrase = Zeroizing::new(entry.text().to_string());
    entry.set_text("");
    if !opened || passphrase.is_empty() {
        return;
    }
    let Some(backend) = owner.backend() else { return };
    // A dry run changes nothing and needs no presence: it only says what would happen.
    let (bytes, typed) = (backup.clone(), passphrase.clone());
    let dry_run = backend.call(move |server| async move { server.import(bytes, &typed, "skip", true).await }).await;
    let preview = match dry_run.map(|json| serde_json::from_str::<Imported>(&json)) {
        Ok(Ok(imported)) => RestorePreview::new(&imported.result),
        Ok(Err(_)) => return owner.notify(&tr!("The service answered something unexpected for this backup.")),
        Err(failure) => return owner.show_failure(&failure),
    };
    let Some(rule) = ask_restore(owner, &preview).await else { return };
    let why = tr!(
        "Restoring a backup needs the passphrase of your Persistent Storage, the one you type in the Welcome Screen: \
         no program running in the background can type it."
    );
    let restored = with_presence(owner, &why, move |server| {
        let (backup, passphrase) = (backup.clone(), passphrase.clone());
        async move { server.import(backup, &passphrase, rule, false).await }
    })
    .await;
    match restored.map(|answer| answer.map(|json| serde_json::from_str::<Imported>(&json))) {
        Ok(Some(Ok(imported))) => {
            let mut text = model::restored_words(&imported.result);
            if let Some(tor) = imported.tor.notice() {
                text = format!("{text} {tor}");
            }
            owner.notify(&text);
        }
        Ok(Some(Err(_))) => owner.notify(&tr!("Restored, but the service's answer was unexpected: check the list.")),
        Ok(None) => {}
        Err(failure) => owner.show_failure(&failure),
    }
}

/// The preview as a question: Restore (add what is missing), Replace (also put the backup's
/// in place of what exists; destructive), or Cancel, the default when something would be
/// destroyed. The conflict rule chosen; None when cancelled or when there is nothing to do.
async fn ask_restore(owner: &Window, preview: &RestorePreview) -> Option<&'static str> {
    let dialog = adw::MessageDialog::builder()
        .transient_for(owner.widget())
        .modal(true)
        .heading(preview.heading.as_str())
        .body(preview.body.as_str())
        .build();
    if !preview.adds && !preview.conflicts {
        dialog.add_response("cancel", &tr!("Close"));
        dialog.set_close_response("cancel");
        owner.run_dialog(&dialog).await;
        return None;
    }
    dialog.add_response("cancel", &tr!("Cancel"));
    if preview.conflicts {
        dialog.add_response("replace", &tr!("Replace Existing"));
        dialog.set_response_appearance("replace", adw::ResponseAppearance::Destructive);
    }
    if preview.adds {
        dialog.add_response("restore", &tr!("Restore"));
        dialog.set_response_appearance("restore", adw::ResponseAppearance::Suggested);
    }
    dialog.set_default_response(Some(if preview.adds && !preview.conflicts { "restore" } else { "cancel" }));
    dialog.set_close_response("cancel");
    match owner.run_dialog(&dialog).await.as_str() {
        "restore" => Some("skip"),
        "replace" => Some("replace"),
        _ => None,
    }
}

/// A backup file's bytes, bounded as the service bounds them (read once, never past the bound).
fn read_backup(path: &Path) -> Result<Vec<u8>, String> {
    let cannot = |e: std::io::Error| tr!("Cannot read {file}: {error}.", file = path.display(), error = e);
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_BACKUP_SIZE + 1).read_to_end(&mut bytes))
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_BACKUP_SIZE {
        return Err(tr!(
            "{file} is not a Tails Server backup: it is larger than {size} MiB.",
            file = path.display(),
            size = MAX_BACKUP_SIZE >> 20
        ));
    }
    Ok(bytes)
}

fn display_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}
