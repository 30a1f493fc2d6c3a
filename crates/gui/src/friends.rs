//! A service's friends: inviting one (a key made by the service and shown in two steps),
//! showing a friend's key again, revoking one, removing the service; and the Persistent
//! Storage passphrase the service asks for before a key leaves it.

use std::future::Future;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use adw::prelude::*;
use tails_server_dbus::{ServerProxy, ServiceError};
use zeroize::Zeroizing;

use crate::model::{self, Failure, Invitation};
use crate::tr;
use crate::window::{choose_file, describe, explain, password_entry, WeakWindow, Window};

/// Makes `call`; when the service asks for a person's presence first, asks for the
/// Persistent Storage passphrase, proves it on this window's connection, and calls again.
/// `why`: the whole sentence saying what needs the passphrase, translated ("Saving a backup
/// needs the passphrase of your Persistent Storage, …"). `Ok(None)`: the person cancelled.
pub(crate) async fn with_presence<T, F, Fut>(window: &Window, why: &str, call: F) -> Result<Option<T>, Failure>
where
    F: Fn(ServerProxy<'static>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<T, ServiceError>> + Send + 'static,
    T: Send + 'static,
{
    let Some(backend) = window.backend() else { return Err(Failure::NotRunning) };
    let mut wrong = false;
    loop {
        match backend.call(call.clone()).await {
            Err(Failure::Refused(ServiceError::PresenceRequired(_))) => {}
            answer => return answer.map(Some),
        }
        let Some(passphrase) = ask_passphrase(window, why, wrong).await else { return Ok(None) };
        match backend.call(move |server| async move { server.prove_presence(&passphrase).await }).await {
            Ok(_) => wrong = false,
            // The service says a wrong passphrase is not authorized: ask again.
            Err(Failure::Refused(ServiceError::NotAuthorized(_))) => wrong = true,
            Err(failure) => return Err(failure),
        }
    }
}

async fn ask_passphrase(window: &Window, why: &str, wrong: bool) -> Option<Zeroizing<String>> {
    let entry = password_entry("storage-passphrase", &tr!("Persistent Storage passphrase"));
    entry.set_activates_default(true);
    let body = if wrong {
        tr!("This is not the passphrase of your Persistent Storage. Type the one you type in the Welcome Screen.")
    } else {
        // Two sentences: the first, whole, from the caller.
        format!("{why} {}", tr!("This window will not ask again for 5 minutes."))
    };
    let heading = tr!("Enter Your Persistent Storage Passphrase");
    let (suggested, label) = (adw::ResponseAppearance::Suggested, tr!("Continue"));
    let proved = window.ask(&heading, &body, Some(entry.upcast_ref()), ("prove", &label), suggested).await;
    let passphrase = Zeroizing::new(entry.text().to_string());
    entry.set_text("");
    (proved && !passphrase.is_empty()).then_some(passphrase)
}

/// Asks whom to invite; None when cancelled.
pub(crate) async fn ask_friend_name(window: &Window, service: &str) -> Option<String> {
    let entry = gtk::Entry::builder().activates_default(true).placeholder_text(tr!("alice")).build();
    describe(&entry, &tr!("Your friend's name"), Some(&tr!("Letters, digits, dots, dashes and underscores")));
    let invited = window
        .ask(
            &tr!("Invite a Friend to {service}", service),
            &tr!("Each friend gets a key of their own, so that you can revoke one without the others. The name is \
                 only for you: it is not sent to anybody."),
            Some(entry.upcast_ref()),
            ("invite", &tr!("Invite")),
            adw::ResponseAppearance::Suggested,
        )
        .await;
    let name = entry.text().trim().to_owned();
    (invited && !name.is_empty()).then_some(name)
}

/// Asks before something that cannot be undone; the default answer is Cancel.
pub(crate) async fn confirm(window: &Window, (heading, body): (String, String), action: &str) -> bool {
    window.ask(&heading, &body, None, ("confirm", action), adw::ResponseAppearance::Destructive).await
}

/// A client's credential as the service returns it; wiped when dropped.
#[derive(serde::Deserialize)]
struct Credential {
    value: Zeroizing<String>,
}

/// Fetches a friend's key (after the presence step) and shows the share sheet.
pub(crate) async fn show_key(
    window: &Window,
    service: &str,
    client: &str,
    address: &str,
    port: u16,
    connect: Option<String>,
) {
    let (asked_service, asked_client) = (service.to_owned(), client.to_owned());
    let why =
        tr!("Showing a friend's key needs the passphrase of your Persistent Storage, the one you type in the Welcome \
         Screen: no program running in the background can type it.");
    let forms = with_presence(window, &why, move |server| {
        let (service, client) = (asked_service.clone(), asked_client.clone());
        async move {
            let key = server.credential(&service, &client, "key").await?;
            let line = server.credential(&service, &client, "auth-private").await?;
            Ok((Zeroizing::new(key), Zeroizing::new(line)))
        }
    })
    .await;
    let (key, line) = match forms {
        Ok(Some(forms)) => forms,
        Ok(None) => return,
        Err(failure) => return window.show_failure(&failure),
    };
    let (Ok(key), Ok(line)) = (serde_json::from_str::<Credential>(&key), serde_json::from_str::<Credential>(&line))
    else {
        return window.notify(&tr!("The service answered something unexpected for this key."));
    };
    let invitation = Invitation::new(service, client, address, port, connect.as_deref());
    let sheet = ShareSheet::new(window, &invitation, address, &key.value, line.value);
    sheet.window.present();
}

/// The two steps of an invitation: the address, then the key.
#[derive(Clone)]
pub struct ShareSheet {
    pub window: adw::Window,
    stack: gtk::Stack,
    address: gtk::Label,
    key: gtk::Label,
}

impl ShareSheet {
    fn new(
        parent: &Window,
        invitation: &Invitation,
        address: &str,
        key: &str,
        auth_private: Zeroizing<String>,
    ) -> ShareSheet {
        let stack = gtk::Stack::builder().transition_type(gtk::StackTransitionType::SlideLeft).vexpand(true).build();
        let address_words = StepWords {
            what: tr!("The address"),
            picture: tr!("The address as a QR code"),
            copy: tr!("Copy Address"),
            copied: tr!("The address is copied."),
        };
        let (address_page, address_label) =
            step(&invitation.address_title, &invitation.address_body, address, address_words, parent);
        let next = gtk::Button::builder().label(tr!("Next: The Key")).halign(gtk::Align::Center).build();
        next.add_css_class("pill");
        next.add_css_class("suggested-action");
        address_page.append(&next);
        stack.add_named(&address_page, Some("address"));

        let key_words = StepWords {
            what: tr!("The key"),
            picture: tr!("The key as a QR code"),
            copy: tr!("Copy Key"),
            copied: tr!("The key is copied."),
        };
        let (key_page, key_label) = step(&invitation.key_title, &invitation.key_body, key, key_words, parent);
        for text in [&invitation.how, &invitation.hint] {
            let label = gtk::Label::builder().label(text.as_str()).wrap(true).xalign(0.0).selectable(true).build();
            key_page.append(&label);
        }
        let save =
            gtk::Button::builder().label(tr!("Save as File…")).halign(gtk::Align::Center).name("save-key").build();
        describe(&save, &tr!("Save the key as a file"), Some(&tr!("A .auth_private file for the friend's tor")));
        let done = gtk::Button::builder().label(tr!("Done")).halign(gtk::Align::Center).build();
        done.add_css_class("pill");
        done.add_css_class("suggested-action");
        key_page.append(&save);
        key_page.append(&done);
        stack.add_named(&key_page, Some("key"));

        let content = gtk::Box::new(gtk::Orientation::Vertical, 0);
        content.append(&adw::HeaderBar::new());
        let scrolled = gtk::ScrolledWindow::builder().hscrollbar_policy(gtk::PolicyType::Never).child(&stack).build();
        scrolled.set_vexpand(true);
        content.append(&scrolled);
        let window = adw::Window::builder()
            .title(tr!("Invite a Friend"))
            .transient_for(parent.widget())
            .modal(true)
            .default_width(460)
            .default_height(680)
            .content(&content)
            .build();
        let sheet = ShareSheet { window, stack, address: address_label, key: key_label };

        let shown = sheet.clone();
        next.connect_clicked(move |_| shown.stack.set_visible_child_name("key"));
        let shown = sheet.clone();
        done.connect_clicked(move |_| shown.window.close());
        let file_name = invitation.file_name.clone();
        let (sheet_window, owner) = (sheet.window.clone(), parent.downgrade());
        save.connect_clicked(move |_| save_key(&sheet_window, &owner, &file_name, auth_private.clone()));
        // The key leaves the labels when the sheet closes.
        let shown = sheet.clone();
        sheet.window.connect_close_request(move |_| {
            shown.key.set_label("");
            gtk::glib::Propagation::Proceed
        });
        parent.set_share_sheet(Some(sheet.clone()));
        sheet
    }

    /// The address as the first step shows it.
    pub fn address(&self) -> String {
        self.address.label().to_string()
    }

    /// The key as the second step shows it.
    pub fn key(&self) -> String {
        self.key.label().to_string()
    }

    /// Goes to the second step, as "Next" does.
    pub fn next(&self) {
        self.stack.set_visible_child_name("key");
    }

    /// Whether the steps are still sliding.
    pub fn transition_running(&self) -> bool {
        self.stack.is_transition_running()
    }

    /// The step shown: `address` or `key`.
    pub fn step(&self) -> String {
        self.stack.visible_child_name().map(|n| n.to_string()).unwrap_or_default()
    }
}

/// What a step of the sheet calls its text, each a whole phrase for translators.
struct StepWords {
    /// The text's accessible description ("The address").
    what: String,
    /// Its QR code's accessible name ("The address as a QR code").
    picture: String,
    /// The Copy button's label ("Copy Address").
    copy: String,
    /// The notification once copied ("The address is copied.").
    copied: String,
}

/// One step of the sheet: what it is, the text itself (selectable), its QR code, a Copy button.
fn step(title: &str, body: &str, text: &str, words: StepWords, parent: &Window) -> (gtk::Box, gtk::Label) {
    let page = gtk::Box::builder()
        .orientation(gtk::Orientation::Vertical)
        .spacing(12)
        .margin_top(18)
        .margin_bottom(18)
        .margin_start(18)
        .margin_end(18)
        .build();
    let heading = gtk::Label::builder().label(title).wrap(true).xalign(0.0).build();
    heading.add_css_class("title-2");
    page.append(&heading);
    page.append(&gtk::Label::builder().label(body).wrap(true).xalign(0.0).build());
    // Not selectable: a selection would put the key in X11's primary selection, readable by
    // every program of the session; Copy is the one way out, and the person's choice.
    let shown = gtk::Label::builder().label(text).wrap(true).wrap_mode(gtk::pango::WrapMode::Char).build();
    shown.add_css_class("monospace");
    explain(&shown, &words.what);
    page.append(&shown);
    if let Some(picture) = crate::qr::picture(text, &words.picture) {
        page.append(&picture);
    }
    let button = gtk::Button::builder().label(words.copy.as_str()).halign(gtk::Align::Center).build();
    let (label, owner, copied) = (shown.clone(), parent.downgrade(), words.copied);
    button.connect_clicked(move |button| {
        button.clipboard().set_text(&label.label());
        if let Some(owner) = owner.upgrade() {
            owner.notify(&copied);
        }
    });
    page.append(&button);
    (page, shown)
}

fn save_key(sheet: &adw::Window, owner: &WeakWindow, file_name: &str, line: Zeroizing<String>) {
    let (sheet, owner, file_name) = (sheet.clone(), owner.clone(), file_name.to_owned());
    gtk::glib::spawn_future_local(async move {
        let save = gtk::FileChooserAction::Save;
        let (title, accept) = (tr!("Save the Key"), tr!("Save"));
        let Some(path) = choose_file(&sheet, save, &title, &accept, &file_name).await else { return };
        let Some(owner) = owner.upgrade() else { return };
        let contents = Zeroizing::new(format!("{}\n", line.as_str()));
        match save_new_secret_file(&path, contents.as_bytes()) {
            Ok(()) => owner.notify(&tr!("The key is saved in {file}.", file = path.display())),
            Err(e) => owner.notify(&model::sentence(&e)),
        }
    });
}

/// Writes a file of secrets (a key, a backup) readable by its owner only, and never over an
/// existing file.
pub fn save_new_secret_file(path: &Path, contents: &[u8]) -> Result<(), String> {
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            tr!("{file} already exists: choose another name (nothing was overwritten)", file = path.display())
        } else {
            tr!("cannot create {file}: {error}", file = path.display(), error = e)
        }
    })?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| tr!("cannot write {file}: {error}", file = path.display(), error = e))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_key_file_is_its_owners_alone_and_never_written_over_another() {
        let dir = std::env::temp_dir().join(format!("tails-server-gui-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("alice.auth_private");
        let _ = std::fs::remove_file(&path);
        super::save_new_secret_file(&path, b"abc:descriptor:x25519:KEY\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "abc:descriptor:x25519:KEY\n");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let error = super::save_new_secret_file(&path, b"other").unwrap_err();
        assert!(error.contains("already exists"), "{error}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "abc:descriptor:x25519:KEY\n", "kept");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
