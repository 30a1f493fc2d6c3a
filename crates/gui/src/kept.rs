//! Kept data: what a removed service left behind when the person asked to keep it (or what
//! was found under a new service's name). No program sees it; the person can delete it for
//! good, or give it to a service that is off and has none (one removed by mistake and added
//! again at a new address): its friends then see it, so that takes the Persistent Storage
//! passphrase. Shown on the Backup tab, below backup and restore.

use std::cell::RefCell;
use std::rc::Rc;

use adw::prelude::*;
use tails_server_core::manager::KeptData;

use crate::friends::with_presence;
use crate::model;
use crate::tr;
use crate::window::{describe, Window};

/// A service that is off, and whether it is persistent (None: it does not say).
pub type OffService = (String, Option<bool>);

/// The "Kept Data" group.
#[derive(Clone)]
pub struct KeptGroup {
    pub widget: adw::PreferencesGroup,
    rows: Rc<RefCell<Vec<(KeptData, adw::ActionRow)>>>,
    empty: adw::ActionRow,
    /// The services that are off, as last listed, and whether each is persistent (None:
    /// unknown): data can be given only to one of them in its own store.
    off_services: Rc<RefCell<Vec<OffService>>>,
}

impl KeptGroup {
    pub(crate) fn new() -> KeptGroup {
        let widget = adw::PreferencesGroup::builder()
            .title(tr!("Kept Data"))
            .description(tr!(
                "Files of removed services, kept because you asked to or found under a new service's name. No \
                 program uses them: delete them, or give them to a service that is off and has no files of its own."
            ))
            .build();
        let empty = adw::ActionRow::builder().title(tr!("Nothing kept")).build();
        widget.add(&empty);
        KeptGroup { widget, rows: Rc::default(), empty, off_services: Rc::default() }
    }

    /// Shows what the service keeps; `off_services`: the services that are off, and whether
    /// each is persistent.
    pub fn show(&self, owner: &Window, kept: &[KeptData], off_services: Vec<OffService>) {
        *self.off_services.borrow_mut() = off_services;
        let mut rows = self.rows.borrow_mut();
        let unchanged = rows.len() == kept.len() && rows.iter().zip(kept).all(|((a, _), b)| a == b);
        if unchanged {
            return;
        }
        for (_, row) in rows.drain(..) {
            self.widget.remove(&row);
        }
        self.empty.set_visible(kept.is_empty());
        for data in kept {
            let when = gtk::glib::DateTime::from_unix_local(data.set_aside as i64)
                .and_then(|t| t.format("%Y-%m-%d %H:%M"))
                .map(|t| t.to_string())
                .unwrap_or_default();
            let size = gtk::glib::format_size(data.bytes).to_string();
            let (title, subtitle) = model::kept_words(&data.service, &when, &size, data.persistent);
            let row = adw::ActionRow::builder().title(title.as_str()).subtitle(subtitle.as_str()).build();
            let give = gtk::Button::builder().label(tr!("Give…")).valign(gtk::Align::Center).build();
            describe(&give, &tr!("Give the data of {service} to a service", service = data.service), None);
            let delete = gtk::Button::builder().label(tr!("Delete…")).valign(gtk::Align::Center).build();
            delete.add_css_class("destructive-action");
            describe(&delete, &tr!("Delete the data of {service}", service = data.service), None);
            let (weak, id) = (owner.downgrade(), data.id.clone());
            give.connect_clicked(move |_| {
                if let Some(owner) = weak.upgrade() {
                    owner.give_kept_data(&id);
                }
            });
            let (weak, id) = (owner.downgrade(), data.id.clone());
            delete.connect_clicked(move |_| {
                if let Some(owner) = weak.upgrade() {
                    owner.delete_kept_data(&id);
                }
            });
            row.add_suffix(&give);
            row.add_suffix(&delete);
            self.widget.add(&row);
            rows.push((data.clone(), row));
        }
    }

    /// The kept data as listed (ids).
    pub fn ids(&self) -> Vec<String> {
        self.rows.borrow().iter().map(|(data, _)| data.id.clone()).collect()
    }

    fn find(&self, id: &str) -> Option<KeptData> {
        self.rows.borrow().iter().find(|(data, _)| data.id == id).map(|(data, _)| data.clone())
    }
}

/// Asks, then deletes the kept data `id` for good.
pub(crate) async fn delete(owner: &Window, group: &KeptGroup, id: &str) {
    let Some(data) = group.find(id) else { return };
    let (heading, body) = model::delete_kept_words(&data.service);
    let (label, destructive) = (tr!("Delete"), adw::ResponseAppearance::Destructive);
    if !owner.ask(&heading, &body, None, ("confirm", &label), destructive).await {
        return;
    }
    let Some(backend) = owner.backend() else { return };
    let id = data.id.clone();
    match backend.call(move |server| async move { server.delete_kept_data(&[id.as_str()]).await }).await {
        Ok(_) => {
            owner.notify(&tr!("The data of {service} is deleted.", service = data.service));
            owner.reload();
        }
        Err(failure) => owner.show_failure(&failure),
    }
}

/// Asks which service gets the kept data `id`, then gives it, after the Persistent Storage
/// passphrase when the service asks for it.
pub(crate) async fn give(owner: &Window, group: &KeptGroup, id: &str) {
    let Some(data) = group.find(id) else { return };
    // Only the services the service would give it to: off, in the same store.
    let services: Vec<String> = group
        .off_services
        .borrow()
        .iter()
        .filter(|(_, persistent)| persistent.is_none_or(|p| p == data.persistent))
        .map(|(name, _)| name.clone())
        .collect();
    if services.is_empty() {
        return owner.notify(&tr!(
            "No service in the same storage is off: turn off the service that should get these files, or \
             add it again, then give them to it."
        ));
    }
    let names: Vec<&str> = services.iter().map(String::as_str).collect();
    let choice = gtk::DropDown::from_strings(&names);
    choice.set_widget_name("kept-data-to");
    describe(&choice, &tr!("The service that gets these files"), None);
    let (heading, body) = model::give_kept_words(&data.service);
    let dialog = adw::MessageDialog::builder()
        .transient_for(owner.widget())
        .modal(true)
        .heading(heading.as_str())
        .body(body.as_str())
        .extra_child(&choice)
        .build();
    dialog.add_response("cancel", &tr!("Cancel"));
    dialog.add_response("give", &tr!("Give"));
    dialog.set_response_appearance("give", adw::ResponseAppearance::Suggested);
    dialog.set_close_response("cancel");
    // The service of the same name is chosen for the person (the usual case: removed by
    // mistake, added again); any other must be chosen, never given by a stray Enter.
    match services.iter().position(|s| *s == data.service) {
        Some(same) => {
            choice.set_selected(same as u32);
            dialog.set_default_response(Some("give"));
        }
        None => {
            choice.set_selected(gtk::INVALID_LIST_POSITION);
            dialog.set_response_enabled("give", false);
            dialog.set_default_response(Some("cancel"));
        }
    }
    let answering = dialog.downgrade();
    choice.connect_selected_notify(move |choice| {
        if let Some(dialog) = answering.upgrade() {
            dialog.set_response_enabled("give", choice.selected() != gtk::INVALID_LIST_POSITION);
        }
    });
    if owner.run_dialog(&dialog).await != "give" {
        return;
    }
    let Some(service) = services.get(choice.selected() as usize).cloned() else { return };
    let why =
        tr!("Giving kept files to a service needs the passphrase of your Persistent Storage, the one you type in the \
         Welcome Screen: no program running in the background can type it.");
    let (asked_id, asked_service) = (data.id.clone(), service.clone());
    let given = with_presence(owner, &why, move |server| {
        let (id, service) = (asked_id.clone(), asked_service.clone());
        async move { server.give_kept_data(&id, &service).await }
    })
    .await;
    match given {
        Ok(Some(_)) => {
            owner.notify(&tr!(
                "The data of {kept} is now {service}'s. Turn {service} on to serve it.",
                kept = data.service,
                service
            ));
            owner.reload();
        }
        Ok(None) => {}
        Err(failure) => owner.show_failure(&failure),
    }
}
