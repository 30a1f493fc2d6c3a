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

/// The "Kept Data" group.
#[derive(Clone)]
pub struct KeptGroup {
    pub widget: adw::PreferencesGroup,
    rows: Rc<RefCell<Vec<(KeptData, adw::ActionRow)>>>,
    empty: adw::ActionRow,
    /// The services data can be given to (off), as last listed.
    off_services: Rc<RefCell<Vec<String>>>,
}

impl KeptGroup {
    pub(crate) fn new() -> KeptGroup {
        let widget = adw::PreferencesGroup::builder()
            .title(tr!("Kept Data"))
            .description(tr!(
                "Files of removed services, kept because you asked to. No program uses them: delete them, or give \
                 them to a service that is off and has no files of its own."
            ))
            .build();
        let empty = adw::ActionRow::builder().title(tr!("Nothing kept")).build();
        widget.add(&empty);
        KeptGroup { widget, rows: Rc::default(), empty, off_services: Rc::default() }
    }

    /// Shows what the service keeps; `off_services`: the services it may be given to.
    pub fn show(&self, owner: &Window, kept: &[KeptData], off_services: Vec<String>) {
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
                    owner.give_kept_data(&id, None);
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

/// Asks which service gets the kept data `id` (`to`: already chosen, as a test chooses),
/// then gives it, after the Persistent Storage passphrase when the service asks for it.
pub(crate) async fn give(owner: &Window, group: &KeptGroup, id: &str, to: Option<String>) {
    let Some(data) = group.find(id) else { return };
    let services = group.off_services.borrow().clone();
    let service = match to {
        Some(service) => service,
        None => {
            if services.is_empty() {
                return owner.notify(&tr!(
                    "No service is off: turn off the service that should get these files, or add it again, then \
                     give them to it."
                ));
            }
            let names: Vec<&str> = services.iter().map(String::as_str).collect();
            let choice = gtk::DropDown::from_strings(&names);
            choice.set_widget_name("kept-data-to");
            describe(&choice, &tr!("The service that gets these files"), None);
            // A service of the same name first: the usual case (removed by mistake, added again).
            if let Some(same) = services.iter().position(|s| *s == data.service) {
                choice.set_selected(same as u32);
            }
            let (heading, body) = model::give_kept_words(&data.service);
            let (label, suggested) = (tr!("Give"), adw::ResponseAppearance::Suggested);
            if !owner.ask(&heading, &body, Some(choice.upcast_ref()), ("give", &label), suggested).await {
                return;
            }
            match services.get(choice.selected() as usize) {
                Some(service) => service.clone(),
                None => return,
            }
        }
    };
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
