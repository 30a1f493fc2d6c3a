//! Adding a service: the catalog's kinds, each saying what it is and whether its program is
//! installed; then the kind's options with their bounds (secrets in password rows). Client
//! authorization is not a choice anywhere: every service gets a first friend's key.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

use adw::prelude::*;
use tails_server_core::catalog::KindDefinition;
use tails_server_core::options::{OptionType, OptionValue};
use tails_server_core::tails::{InstalledPackages, DPKG_STATUS};

use crate::friends::with_presence;
use crate::model::{sentence, TorOutcome};
use crate::tr;
use crate::window::{describe, WeakWindow, Window};

/// What a kind's row says under its name.
pub fn kind_line(kind: &KindDefinition, installed: bool) -> String {
    if installed {
        crate::i18n::catalog(&kind.description)
    } else {
        tr!(
            "{description} Its program ({packages}) is not installed yet: add it with Additional Software \
             (“tails-server setup --with {kind}”, once, as an administrator), then restart Tails.",
            description = crate::i18n::catalog(&kind.description),
            packages = kind.packages.join(", "),
            kind = kind.name
        )
    }
}

/// One field of the options page and how to read it back.
enum Field {
    Text(adw::EntryRow),
    Secret(adw::PasswordEntryRow),
    Switch(gtk::Switch),
    Number(gtk::SpinButton),
}

impl Field {
    fn value(&self) -> String {
        match self {
            Field::Text(row) => row.text().to_string(),
            Field::Secret(row) => row.text().to_string(),
            Field::Switch(switch) => switch.is_active().to_string(),
            Field::Number(spin) => (spin.value() as i64).to_string(),
        }
    }

    fn set(&self, value: &str) {
        match self {
            Field::Text(row) => row.set_text(value),
            Field::Secret(row) => row.set_text(value),
            Field::Switch(switch) => switch.set_active(value == "true"),
            Field::Number(spin) => spin.set_value(value.parse().unwrap_or_default()),
        }
    }
}

/// The "Add a Service" window.
#[derive(Clone)]
pub struct AddWindow {
    pub window: adw::Window,
    parts: Rc<Parts>,
}

struct Parts {
    stack: gtk::Stack,
    kinds: Vec<KindDefinition>,
    chosen: RefCell<Option<KindDefinition>>,
    fields: RefCell<Vec<(String, Field)>>,
    options_group: adw::PreferencesGroup,
    error: gtk::Label,
    owner: WeakWindow,
}

/// What the window's own buttons hold: a strong reference would keep the window, its
/// widgets and their handlers alive in a cycle after it closed.
#[derive(Clone)]
struct WeakAddWindow {
    window: gtk::glib::WeakRef<adw::Window>,
    parts: std::rc::Weak<Parts>,
}

impl WeakAddWindow {
    fn upgrade(&self) -> Option<AddWindow> {
        Some(AddWindow { window: self.window.upgrade()?, parts: self.parts.upgrade()? })
    }
}

impl AddWindow {
    pub fn new(owner: &Window, kinds: Vec<KindDefinition>) -> AddWindow {
        let installed = InstalledPackages::read(Path::new(DPKG_STATUS));
        let stack = gtk::Stack::builder().transition_type(gtk::StackTransitionType::SlideLeft).build();

        let list = adw::PreferencesGroup::builder()
            .title(tr!("What Do You Want to Share?"))
            .description(tr!("Only the friends you give a key to can find and reach it, through Tor."))
            .build();
        let page = adw::PreferencesPage::new();
        page.add(&list);
        stack.add_named(&page, Some("kinds"));

        let options_group = adw::PreferencesGroup::new();
        let error = gtk::Label::builder().wrap(true).xalign(0.0).visible(false).build();
        error.add_css_class("error");
        let add = gtk::Button::builder().label(tr!("Add")).halign(gtk::Align::Center).build();
        add.add_css_class("pill");
        add.add_css_class("suggested-action");
        let column = gtk::Box::new(gtk::Orientation::Vertical, 12);
        column.append(&error);
        column.append(&add);
        let options_page = adw::PreferencesPage::new();
        options_page.add(&options_group);
        let footer = adw::PreferencesGroup::new();
        footer.add(&column);
        options_page.add(&footer);
        stack.add_named(&options_page, Some("options"));

        let content = gtk::Box::new(gtk::Orientation::Vertical, 0);
        content.append(&adw::HeaderBar::new());
        stack.set_vexpand(true);
        content.append(&stack);
        let window = adw::Window::builder()
            .title(tr!("Add a Service"))
            .transient_for(owner.widget())
            .modal(true)
            .default_width(520)
            .default_height(640)
            .content(&content)
            .build();
        let this = AddWindow {
            window,
            parts: Rc::new(Parts {
                stack,
                kinds,
                chosen: RefCell::default(),
                fields: RefCell::default(),
                options_group,
                error,
                owner: owner.downgrade(),
            }),
        };
        for kind in this.parts.kinds.iter() {
            let ready = installed.all(&kind.packages);
            let row = adw::ActionRow::builder()
                .title(crate::i18n::catalog(&kind.name_in_gui).as_str())
                .subtitle(gtk::glib::markup_escape_text(&kind_line(kind, ready)).as_str())
                .activatable(true)
                .build();
            // A button, not only an activatable row: GTK 4.8 gives list rows no accessible
            // action, so a screen reader (and Dogtail) could not choose one otherwise.
            let choose = gtk::Button::builder().icon_name("go-next-symbolic").valign(gtk::Align::Center).build();
            choose.add_css_class("flat");
            let about = crate::i18n::catalog(&kind.description);
            describe(&choose, &tr!("Choose {kind}", kind = crate::i18n::catalog(&kind.name_in_gui)), Some(&about));
            row.add_suffix(&choose);
            // Not the row's activatable widget: libadwaita 1.7 would then name the button by
            // the row's title, and "Choose" would be lost for screen readers (found by the
            // Dogtail run on Debian 13). Clicking the row chooses as well.
            let (adding, name) = (this.downgrade(), kind.name.clone());
            let choose_this = move || {
                if let Some(adding) = adding.upgrade() {
                    adding.choose(&name);
                }
            };
            let by_row = choose_this.clone();
            row.connect_activated(move |_| by_row());
            choose.connect_clicked(move |_| choose_this());
            list.add(&row);
        }
        let adding = this.downgrade();
        add.connect_clicked(move |_| {
            if let Some(adding) = adding.upgrade() {
                adding.submit();
            }
        });
        this
    }

    fn downgrade(&self) -> WeakAddWindow {
        WeakAddWindow { window: self.window.downgrade(), parts: Rc::downgrade(&self.parts) }
    }

    /// Goes to `kind`'s options, as choosing its row does.
    pub fn choose(&self, kind: &str) {
        let Some(kind) = self.parts.kinds.iter().find(|k| k.name == kind).cloned() else { return };
        let group = &self.parts.options_group;
        for (_, field) in self.parts.fields.borrow_mut().drain(..) {
            let row: gtk::Widget = match field {
                Field::Text(row) => row.upcast(),
                Field::Secret(row) => row.upcast(),
                Field::Switch(w) => w.ancestor(adw::ActionRow::static_type()).unwrap(),
                Field::Number(w) => w.ancestor(adw::ActionRow::static_type()).unwrap(),
            };
            group.remove(&row);
        }
        group.set_title(&crate::i18n::catalog(&kind.name_in_gui));
        group.set_description(Some(&gtk::glib::markup_escape_text(&crate::i18n::catalog(&kind.description))));
        let mut fields = Vec::new();
        let text = |title: &str, value: &str, about: &str| {
            let row = adw::EntryRow::builder().title(title).text(value).build();
            describe(&row, title, Some(about));
            row.set_tooltip_text(Some(about));
            group.add(&row);
            Field::Text(row)
        };
        fields.push((
            "name".to_owned(),
            text(&tr!("Name"), &kind.name, &tr!("How you will find this service in the list")),
        ));
        fields.push((
            "first-client".to_owned(),
            text(&tr!("First friend's name"), "friend-1", &tr!("Their key is made now; invite more friends later")),
        ));
        // A kind without a program of its own (custom) asks for the port of the one it publishes.
        if kind.local_port.is_none() {
            fields.push((
                "local-port".to_owned(),
                text(&tr!("Local port"), "", &tr!("The port on 127.0.0.1 where your program listens")),
            ));
        }
        for (name, spec) in &kind.options {
            let key = format!("option.{name}");
            let title = crate::i18n::catalog(&name.replace('-', " "));
            let about = crate::i18n::catalog(&spec.description);
            let field = match (spec.value_type, spec.secret) {
                (OptionType::String, true) => {
                    let row = adw::PasswordEntryRow::builder().title(title.as_str()).build();
                    describe(&row, &title, Some(&about));
                    row.set_tooltip_text(Some(&about));
                    group.add(&row);
                    Field::Secret(row)
                }
                (OptionType::String, false) => {
                    let value = match &spec.default {
                        OptionValue::String(s) => s.clone(),
                        _ => String::new(),
                    };
                    text(&title, &value, &about)
                }
                (OptionType::Bool, _) => {
                    let switch = gtk::Switch::builder()
                        .valign(gtk::Align::Center)
                        .active(spec.default == OptionValue::Bool(true))
                        .build();
                    describe(&switch, &title, Some(&about));
                    let row = adw::ActionRow::builder()
                        .title(title.as_str())
                        .subtitle(gtk::glib::markup_escape_text(&about).as_str())
                        .build();
                    row.add_suffix(&switch);
                    row.set_activatable_widget(Some(&switch));
                    group.add(&row);
                    Field::Switch(switch)
                }
                (OptionType::Integer | OptionType::Port, _) => {
                    let (low, high) =
                        if spec.value_type == OptionType::Port { (1, 65535) } else { (0, i64::from(i32::MAX)) };
                    let (min, max) = (spec.min.unwrap_or(low) as f64, spec.max.unwrap_or(high) as f64);
                    let spin = gtk::SpinButton::with_range(min, max, 1.0);
                    spin.set_valign(gtk::Align::Center);
                    if let OptionValue::Integer(value) = spec.default {
                        spin.set_value(value as f64);
                    }
                    describe(&spin, &title, Some(&about));
                    let row = adw::ActionRow::builder()
                        .title(title.as_str())
                        .subtitle(gtk::glib::markup_escape_text(&about).as_str())
                        .build();
                    row.add_suffix(&spin);
                    group.add(&row);
                    Field::Number(spin)
                }
            };
            fields.push((key, field));
        }
        *self.parts.fields.borrow_mut() = fields;
        *self.parts.chosen.borrow_mut() = Some(kind);
        self.parts.error.set_visible(false);
        self.parts.stack.set_visible_child_name("options");
        // Typing starts with the name, as a person would expect after choosing.
        if let Some((_, Field::Text(name))) = self.parts.fields.borrow().first() {
            name.grab_focus();
        }
    }

    /// Fills a field, as typing in it does (`name`, `first-client`, `local-port`, `option.NAME`).
    pub fn set(&self, field: &str, value: &str) {
        if let Some((_, f)) = self.parts.fields.borrow().iter().find(|(name, _)| name == field) {
            f.set(value);
        }
    }

    /// The page shown: `kinds` or `options`.
    pub fn page(&self) -> String {
        self.parts.stack.visible_child_name().map(|n| n.to_string()).unwrap_or_default()
    }

    /// Whether the pages are still sliding.
    pub fn transition_running(&self) -> bool {
        self.parts.stack.is_transition_running()
    }

    /// Why the last attempt was refused, when it was.
    pub fn error(&self) -> Option<String> {
        self.parts.error.is_visible().then(|| self.parts.error.label().to_string())
    }

    /// Asks the service to add the service, as "Add" does; the window closes when it has.
    pub fn submit(&self) {
        let Some(kind) = self.parts.chosen.borrow().clone() else { return };
        let mut options: HashMap<String, String> = HashMap::new();
        for (name, field) in self.parts.fields.borrow().iter() {
            let value = field.value();
            // An empty secret or text keeps the kind's default; the name and ports are required.
            if !value.is_empty() {
                options.insert(name.clone(), value);
            }
        }
        let this = self.clone();
        gtk::glib::spawn_future_local(async move {
            let Some(owner) = this.parts.owner.upgrade() else { return };
            let kind_name = kind.name.clone();
            // A login key, write access or the local network asks for the person's presence.
            let why = tr!(
                "Adding a service that lets more people in, or lets them see or do more, needs the passphrase of your \
                 Persistent Storage, the one you type in the Welcome Screen: no program running in the background \
                 can type it."
            );
            let added = with_presence(&owner, &why, move |server| {
                let (kind_name, options) = (kind_name.clone(), options.clone());
                async move { server.add(&kind_name, options).await }
            });
            match added.await {
                // The person cancelled the passphrase: the window stays, as it was.
                Ok(None) => {}
                Ok(Some(json)) => {
                    #[derive(serde::Deserialize)]
                    struct Added {
                        name: String,
                        tor: TorOutcome,
                    }
                    let added = serde_json::from_str::<Added>(&json).ok();
                    let name = added.as_ref().map(|a| a.name.clone()).unwrap_or_default();
                    let tor = added.map(|a| a.tor.notice()).unwrap_or_default();
                    owner.notify(
                        &tor.unwrap_or_else(|| tr!("{service} is added. Switch it on to publish it.", service = name)),
                    );
                    this.window.close();
                }
                Err(failure) => {
                    this.parts.error.set_label(&sentence(&failure.message()));
                    this.parts.error.set_visible(true);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_whose_program_is_missing_says_how_to_add_it() {
        let kind: KindDefinition = serde_json::from_value(serde_json::json!({
            "name": "mumble",
            "name-in-gui": "Mumble",
            "description": "Voice chat.",
            "packages": ["mumble-server"],
            "local-port": 64738,
        }))
        .unwrap();
        assert_eq!(kind_line(&kind, true), "Voice chat.");
        let missing = kind_line(&kind, false);
        assert!(missing.starts_with("Voice chat. Its program (mumble-server) is not installed yet"), "{missing}");
        assert!(missing.contains("Additional Software") && missing.contains("--with mumble"), "{missing}");
        assert!(kind.local_port.is_some(), "a kind with its own program asks for no port");
    }
}
