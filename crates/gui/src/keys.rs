//! Keys you received: the friend's side. A key another person's service gave you is kept by
//! the service (across reboots, unless asked not to) and given to tor at every login, so
//! their service opens for you in Tor Browser or your Mumble client.

use std::cell::RefCell;
use std::rc::Rc;

use adw::prelude::*;
use tails_server_dbus::views::KeyView;
use zeroize::Zeroizing;

use crate::tr;
use crate::window::{describe, Window};

/// The "Keys You Received" page.
#[derive(Clone)]
pub struct KeysPage {
    pub widget: gtk::ScrolledWindow,
    list: adw::PreferencesGroup,
    rows: Rc<RefCell<Vec<(KeyView, adw::ActionRow)>>>,
    empty: adw::ActionRow,
}

impl KeysPage {
    pub fn new(owner: &Window) -> KeysPage {
        let add = gtk::Button::builder().label(tr!("Add a Key…")).valign(gtk::Align::Center).name("add-key").build();
        add.add_css_class("suggested-action");
        describe(&add, &tr!("Add a key you received"), None);
        let list = adw::PreferencesGroup::builder()
            .title(tr!("Keys You Received"))
            .description(tr!(
                "A key someone gave you for their onion service. Tails Server keeps it and gives it to Tor at \
                 every start, so their service opens for you."
            ))
            .header_suffix(&add)
            .build();
        let empty = adw::ActionRow::builder().title(tr!("No keys yet")).build();
        list.add(&empty);
        let page = adw::PreferencesPage::new();
        page.add(&list);
        let widget = gtk::ScrolledWindow::builder().hscrollbar_policy(gtk::PolicyType::Never).child(&page).build();
        let owner = owner.downgrade();
        add.connect_clicked(move |_| {
            let Some(owner) = owner.upgrade() else { return };
            gtk::glib::spawn_future_local(async move { ask_and_add(&owner).await });
        });
        KeysPage { widget, list, rows: Rc::default(), empty }
    }

    /// Shows the keys the service keeps.
    pub fn show(&self, owner: &Window, keys: &[KeyView]) {
        let mut rows = self.rows.borrow_mut();
        let unchanged = rows.len() == keys.len()
            && rows.iter().zip(keys).all(|((a, _), b)| a.name == b.name && a.address == b.address);
        if unchanged {
            return;
        }
        for (_, row) in rows.drain(..) {
            self.list.remove(&row);
        }
        self.empty.set_visible(keys.is_empty());
        for key in keys {
            let subtitle = if key.persistent {
                tr!("{address} · kept across reboots", address = key.address)
            } else {
                tr!("{address} · forgotten at shutdown", address = key.address)
            };
            let row = adw::ActionRow::builder().title(key.name.as_str()).subtitle(subtitle.as_str()).build();
            let remove = gtk::Button::builder().label(tr!("Remove")).valign(gtk::Align::Center).build();
            describe(&remove, &tr!("Remove the key {key}", key = key.name), None);
            let (owner, name) = (owner.downgrade(), key.name.clone());
            remove.connect_clicked(move |_| {
                if let Some(owner) = owner.upgrade() {
                    owner.remove_received_key(&name);
                }
            });
            row.add_suffix(&remove);
            self.list.add(&row);
            rows.push((key.clone(), row));
        }
    }

    /// The keys as listed (names).
    pub fn names(&self) -> Vec<String> {
        self.rows.borrow().iter().map(|(key, _)| key.name.clone()).collect()
    }
}

/// Asks for a key (its name, the key or the `.auth_private` line, the address when only the
/// key is given, whether to keep it) and hands it to the service.
async fn ask_and_add(owner: &Window) {
    let form = gtk::Box::new(gtk::Orientation::Vertical, 8);
    let field = |name: &str, placeholder: &str, accessible: &str| {
        let entry = gtk::Entry::builder().placeholder_text(placeholder).name(name).build();
        describe(&entry, accessible, None);
        form.append(&entry);
        entry
    };
    let name = field("key-name", &tr!("Name (for you: bob-mumble)"), &tr!("The key's name"));
    let secret = gtk::PasswordEntry::builder().show_peek_icon(true).name("key-text").build();
    secret.set_property("placeholder-text", tr!("The key, or the whole .auth_private line"));
    describe(&secret, &tr!("The key"), Some(&tr!("The key, or the whole line of the .auth_private file")));
    form.append(&secret);
    let address =
        field("key-address", &tr!("Address (xxxx.onion), unless given in the line"), &tr!("The service's address"));
    let keep = gtk::CheckButton::builder().label(tr!("Keep it after shutdown")).active(true).name("key-keep").build();
    form.append(&keep);
    let heading = tr!("Add a Key You Received");
    let body = tr!("Paste the key exactly as you received it.");
    let (suggested, label) = (adw::ResponseAppearance::Suggested, tr!("Add"));
    let added = owner.ask(&heading, &body, Some(form.upcast_ref()), ("add", &label), suggested).await;
    let text = Zeroizing::new(secret.text().to_string());
    secret.set_text("");
    if added {
        owner.add_received_key(name.text().trim(), text, address.text().trim(), keep.is_active());
    }
}
