//! The main window: the services, one row each, or a page saying why they cannot be shown.
//! Everything it says comes from [`crate::model`]; everything it does goes through
//! [`Backend`]. It asks the service again when the service says something changed, never on
//! a timer.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

use adw::prelude::*;
use gtk::glib;
use tails_server_dbus::views::{KeyView, ServiceView, StatusView, TorState};

use crate::add::AddWindow;
use crate::backend::{Backend, Event};
use crate::backup::BackupPage;
use crate::friends::{self, ShareSheet};
use crate::kept::KeptGroup;
use crate::keys::KeysPage;
use crate::model::{self, Failure, Problem, ServiceRow, Step, TorOutcome};
use crate::tr;
use tails_server_core::catalog::KindDefinition;
use tails_server_core::manager::KeptData;

/// The window's pages, by name: connecting, a problem, or (once the service answers) the
/// services (or the page saying there are none yet).
pub mod page {
    pub const CONNECTING: &str = "connecting";
    pub const PROBLEM: &str = "problem";
    pub const EMPTY: &str = "empty";
    pub const SERVICES: &str = "services";
    /// The outer stack's page holding the two tabs (services, keys you received).
    pub(crate) const READY: &str = "ready";
}

/// The window, cheap to clone (one shared state).
#[derive(Clone)]
pub struct Window {
    inner: Rc<Inner>,
}

/// A window that may be gone: what the window's own widgets hold, so that no reference
/// cycle keeps a closed window (its widgets, its bus connection and thread) alive.
#[derive(Clone)]
pub struct WeakWindow(std::rc::Weak<Inner>);

impl WeakWindow {
    pub fn upgrade(&self) -> Option<Window> {
        self.0.upgrade().map(|inner| Window { inner })
    }

    /// Whether everything the window held (widgets, its bus connection and thread) is freed.
    pub fn is_gone(&self) -> bool {
        self.0.upgrade().is_none()
    }
}

struct Inner {
    window: adw::ApplicationWindow,
    toasts: adw::ToastOverlay,
    /// connecting, problem, or ready (the tabs)
    stack: gtk::Stack,
    /// empty or services, inside the services tab
    services: gtk::Stack,
    tabs: adw::ViewStack,
    keys: RefCell<Option<KeysPage>>,
    kept: KeptGroup,
    problem: adw::StatusPage,
    tor_notice: gtk::Label,
    /// Above the services tab while tails-server is not installed at every login.
    setup_notice: gtk::Box,
    list: gtk::ListBox,
    rows: RefCell<BTreeMap<String, Row>>,
    backend: RefCell<Option<Backend>>,
    /// Each kind's words for people ("Mumble", how a friend connects), from the service's catalog.
    kinds: RefCell<Vec<KindDefinition>>,
    loading: Cell<bool>,
    load_again: Cell<bool>,
    last_notice: RefCell<Option<String>>,
    /// The question asked now, if any (one at a time: they are modal).
    dialog: RefCell<Option<adw::MessageDialog>>,
    share_sheet: RefCell<Option<ShareSheet>>,
    add_window: RefCell<Option<AddWindow>>,
    /// "Add a service": usable once the service answered with its services.
    add: gtk::Button,
}

/// One service's row and the widgets in it.
struct Row {
    row: adw::ExpanderRow,
    /// The rows inside (address, friends, actions), and what they were made from.
    details: RefCell<Vec<adw::ActionRow>>,
    details_of: RefCell<String>,
    switch: gtk::Switch,
    spinner: gtk::Spinner,
    /// Set while the window itself moves the switch, so that moving it is not a request.
    updating: Rc<Cell<bool>>,
    /// A request to tor is under way from this row.
    in_flight: Rc<Cell<bool>>,
    /// The service as last listed.
    view: RefCell<Option<ServiceView>>,
    /// The last "Check Now": what it found (for the ladder) and its words, and its row.
    checked: RefCell<Option<Option<bool>>>,
    check_text: RefCell<String>,
    check_row: RefCell<Option<adw::ActionRow>>,
    busy: Cell<bool>,
    /// The ladder drawn first in the details: one label per step of [`model::steps`].
    ladder: gtk::ListBoxRow,
    steps: Vec<gtk::Label>,
    /// Where each step stands, as last drawn (None: off, no ladder).
    climbed: Cell<Option<[Step; 4]>>,
}

impl Window {
    pub fn new(application: Option<&adw::Application>) -> Window {
        static LANGUAGE: std::sync::Once = std::sync::Once::new();
        LANGUAGE.call_once(crate::i18n::init);
        let stack = gtk::Stack::builder().transition_type(gtk::StackTransitionType::Crossfade).vexpand(true).build();

        let connecting = adw::StatusPage::builder()
            .title(tr!("Connecting to Tails Server…"))
            .icon_name("network-server-symbolic")
            .build();
        stack.add_named(&connecting, Some(page::CONNECTING));

        let problem = adw::StatusPage::builder().icon_name("dialog-warning-symbolic").build();
        let retry = gtk::Button::builder().label(tr!("Try Again")).halign(gtk::Align::Center).build();
        retry.add_css_class("pill");
        retry.add_css_class("suggested-action");
        problem.set_child(Some(&retry));
        stack.add_named(&problem, Some(page::PROBLEM));

        let empty = adw::StatusPage::builder()
            .title(tr!("No Onion Services Yet"))
            .description(tr!("An onion service makes a program on this computer (a Mumble server, a web site, shared \
                 files) reachable through Tor, only by the friends you give a key to. Add one with the + \
                 button."))
            .icon_name("network-server-symbolic")
            .build();
        let services = gtk::Stack::builder().vexpand(true).build();
        services.add_named(&empty, Some(page::EMPTY));

        let tor_notice = gtk::Label::builder().wrap(true).xalign(0.0).visible(false).build();
        tor_notice.add_css_class("warning");
        let list = gtk::ListBox::builder().selection_mode(gtk::SelectionMode::None).build();
        list.add_css_class("boxed-list");
        describe(&list, &tr!("Your onion services"), None);
        let heading = gtk::Label::builder().label(tr!("Your Onion Services")).xalign(0.0).build();
        heading.add_css_class("heading");
        let column = gtk::Box::builder()
            .orientation(gtk::Orientation::Vertical)
            .spacing(12)
            .margin_top(24)
            .margin_bottom(24)
            .margin_start(12)
            .margin_end(12)
            .build();
        column.append(&tor_notice);
        column.append(&heading);
        column.append(&list);
        let clamp = adw::Clamp::builder().maximum_size(640).child(&column).build();
        let scrolled = gtk::ScrolledWindow::builder().hscrollbar_policy(gtk::PolicyType::Never).child(&clamp).build();
        services.add_named(&scrolled, Some(page::SERVICES));
        let setup_notice = not_set_up_notice();
        let services_tab = gtk::Box::new(gtk::Orientation::Vertical, 0);
        services_tab.append(&setup_notice);
        services_tab.append(&services);
        let tabs = adw::ViewStack::new();
        tabs.add_titled(&services_tab, Some("services"), &tr!("Your Services"))
            .set_icon_name(Some("network-server-symbolic"));
        stack.add_named(&tabs, Some(page::READY));

        let toasts = adw::ToastOverlay::new();
        toasts.set_child(Some(&stack));
        let content = gtk::Box::new(gtk::Orientation::Vertical, 0);
        let switcher = adw::ViewSwitcherTitle::builder().stack(&tabs).title(tr!("Onion Services")).build();
        let header = adw::HeaderBar::builder().title_widget(&switcher).build();
        let add = gtk::Button::builder().icon_name("list-add-symbolic").sensitive(false).build();
        add.set_tooltip_text(Some(&tr!("Add a Service")));
        describe(&add, &tr!("Add a service"), None);
        header.pack_start(&add);
        content.append(&header);
        content.append(&toasts);
        let window = adw::ApplicationWindow::builder()
            .title(tr!("Onion Services"))
            .default_width(560)
            .default_height(620)
            .content(&content)
            .build();
        if let Some(application) = application {
            window.set_application(Some(application));
        }

        let this = Window {
            inner: Rc::new(Inner {
                window,
                toasts,
                stack,
                services,
                tabs,
                keys: RefCell::default(),
                kept: KeptGroup::new(),
                problem,
                tor_notice,
                setup_notice,
                list,
                rows: RefCell::default(),
                backend: RefCell::default(),
                kinds: RefCell::default(),
                loading: Cell::new(false),
                load_again: Cell::new(false),
                last_notice: RefCell::default(),
                dialog: RefCell::default(),
                share_sheet: RefCell::default(),
                add_window: RefCell::default(),
                add: add.clone(),
            }),
        };
        let weak = Rc::downgrade(&this.inner);
        retry.connect_clicked(move |_| {
            if let Some(inner) = weak.upgrade() {
                Window { inner }.start();
            }
        });
        // Setup is done in a terminal: coming back to the window asks again.
        let weak = Rc::downgrade(&this.inner);
        this.inner.window.connect_is_active_notify(move |window| {
            if let (true, Some(inner)) = (window.is_active(), weak.upgrade()) {
                Window { inner }.reload();
            }
        });
        // The window's state lives as long as its GTK window, whoever made it: this handler
        // holds it until the window is destroyed (gtk_window_destroy unrealizes it; GTK's
        // `destroy` signal waits for the last reference, which this would be). (Found end to end:
        // the binary's window forgot its state once `activate` returned, and its buttons did
        // nothing.)
        let keep = RefCell::new(Some(this.clone()));
        this.inner.window.connect_unrealize(move |_| {
            let Some(this) = keep.borrow_mut().take() else { return };
            // The windows it opened go first: one outliving this window would, once freed,
            // reach back to it as its parent (GLib CRITICALs in GTK 4.8).
            let sheet = this.inner.share_sheet.borrow_mut().take().map(|s| s.window.upcast::<gtk::Window>());
            let adding = this.inner.add_window.borrow_mut().take().map(|a| a.window.upcast::<gtk::Window>());
            let dialog = this.inner.dialog.borrow_mut().take().map(|d| d.upcast::<gtk::Window>());
            for window in [sheet, adding, dialog].into_iter().flatten() {
                window.set_transient_for(None::<&gtk::Window>);
                window.destroy();
            }
        });
        let keys = KeysPage::new(&this);
        this.inner
            .tabs
            .add_titled(&keys.widget, Some("keys"), &tr!("Keys You Received"))
            .set_icon_name(Some("dialog-password-symbolic"));
        *this.inner.keys.borrow_mut() = Some(keys);
        let backup = BackupPage::new(&this);
        backup.page.add(&this.inner.kept.widget);
        this.inner
            .tabs
            .add_titled(&backup.widget, Some("backup"), &tr!("Backup"))
            .set_icon_name(Some("document-save-symbolic"));
        let weak = Rc::downgrade(&this.inner);
        add.connect_clicked(move |_| {
            if let Some(inner) = weak.upgrade() {
                Window { inner }.open_add();
            }
        });
        this
    }

    pub fn downgrade(&self) -> WeakWindow {
        WeakWindow(Rc::downgrade(&self.inner))
    }

    pub fn widget(&self) -> &adw::ApplicationWindow {
        &self.inner.window
    }

    /// Connects to the service and shows what it answers; from then on follows its signals.
    pub fn start(&self) {
        self.inner.add.set_sensitive(false);
        self.inner.stack.set_visible_child_name(page::CONNECTING);
        let this = self.clone();
        glib::spawn_future_local(async move {
            let backend = match Backend::connect().await {
                Ok(backend) => backend,
                Err(failure) => return this.show_failure(&failure),
            };
            let first = this.inner.backend.borrow().is_none();
            *this.inner.backend.borrow_mut() = Some(backend.clone());
            if first {
                this.follow(backend.events());
            }
            if !backend.running().await {
                return this.show_failure(&Failure::NotRunning);
            }
            this.reload();
        });
    }

    fn follow(&self, mut events: tokio::sync::mpsc::UnboundedReceiver<Event>) {
        let weak = Rc::downgrade(&self.inner);
        glib::spawn_future_local(async move {
            while let Some(event) = events.recv().await {
                let Some(inner) = weak.upgrade() else { return };
                let this = Window { inner };
                match event {
                    Event::ServiceRunning(false) => this.show_failure(&Failure::NotRunning),
                    Event::Changed | Event::StorageUnlocked(_) | Event::ServiceRunning(true) => this.reload(),
                }
            }
        });
    }

    /// Asks the service for every service and its state; one load at a time, and one more
    /// when something changed meanwhile.
    pub fn reload(&self) {
        if self.inner.loading.replace(true) {
            self.inner.load_again.set(true);
            return;
        }
        let Some(backend) = self.inner.backend.borrow().clone() else {
            self.inner.loading.set(false);
            return;
        };
        let this = self.clone();
        let need_kinds = self.inner.kinds.borrow().is_empty();
        glib::spawn_future_local(async move {
            let answer = backend
                .call(move |server| async move {
                    let kinds = if need_kinds { Some(server.catalog().await?) } else { None };
                    let services: Vec<ServiceView> = parse(&server.list().await?)?;
                    let mut statuses = Vec::with_capacity(services.len());
                    for service in &services {
                        let status = parse::<StatusView>(&server.status(&service.name, false).await?)?;
                        statuses.push((service.clone(), status));
                    }
                    let keys: Vec<KeyView> = parse(&server.keys().await?)?;
                    // A service older than the method has none to show; any other failure is
                    // said, as for the other calls (never an empty list that looks like "nothing").
                    let kept: Vec<KeptData> = match server.kept_data().await {
                        Ok(json) => parse(&json)?,
                        Err(tails_server_dbus::ServiceError::ZBus(zbus::Error::MethodError(name, _, _)))
                            if name.as_str() == "org.freedesktop.DBus.Error.UnknownMethod" =>
                        {
                            Vec::new()
                        }
                        Err(e) => return Err(e),
                    };
                    // A service older than the property cannot say: no notice then.
                    let set_up = server.installed_at_every_login().await.unwrap_or(true);
                    Ok((kinds, statuses, keys, kept, set_up))
                })
                .await;
            match answer {
                Ok((kinds, statuses, keys, kept, set_up)) => {
                    if let Some(kinds) = kinds {
                        this.learn_kinds(&kinds);
                    }
                    this.inner.setup_notice.set_visible(!set_up);
                    let off = statuses
                        .iter()
                        .filter(|(_, status)| !status.enabled)
                        .map(|(view, _)| (view.name.clone(), is_persistent(view)))
                        .collect();
                    this.inner.kept.show(&this, &kept, off);
                    this.show_services(&statuses);
                    if let Some(page) = this.inner.keys.borrow().as_ref() {
                        page.show(&this, &keys);
                    }
                }
                Err(failure) => this.show_failure(&failure),
            }
            this.inner.loading.set(false);
            if this.inner.load_again.replace(false) {
                this.reload();
            }
        });
    }

    fn learn_kinds(&self, catalog: &str) {
        if let Ok(kinds) = serde_json::from_str::<Vec<KindDefinition>>(catalog) {
            *self.inner.kinds.borrow_mut() = kinds;
        }
    }

    /// A kind's name for people ("Mumble"), or the kind itself when the catalog does not know it.
    fn name_in_gui(&self, kind: &str) -> String {
        let kinds = self.inner.kinds.borrow();
        kinds.iter().find(|k| k.name == kind).map_or_else(|| kind.to_owned(), |k| crate::i18n::catalog(&k.name_in_gui))
    }

    /// How a friend connects to a service of this kind (the catalog's `connect`).
    fn connect_of(&self, kind: &str) -> Option<String> {
        self.inner.kinds.borrow().iter().find(|k| k.name == kind).and_then(|k| k.connect.clone())
    }

    pub(crate) fn backend(&self) -> Option<Backend> {
        self.inner.backend.borrow().clone()
    }

    /// Asks a question over the window: `extra` (a form) under the text, then Cancel and
    /// `action` (response id, label). The default answer is the action when it is suggested,
    /// Cancel when it is destructive; Escape cancels. True when the action was chosen.
    pub(crate) async fn ask(
        &self,
        heading: &str,
        body: &str,
        extra: Option<&gtk::Widget>,
        (action, label): (&str, &str),
        appearance: adw::ResponseAppearance,
    ) -> bool {
        let dialog =
            adw::MessageDialog::builder().transient_for(self.widget()).modal(true).heading(heading).body(body).build();
        dialog.set_extra_child(extra);
        dialog.add_responses(&[("cancel", tr!("Cancel").as_str()), (action, label)]);
        dialog.set_response_appearance(action, appearance);
        let default = if appearance == adw::ResponseAppearance::Destructive { "cancel" } else { action };
        dialog.set_default_response(Some(default));
        dialog.set_close_response("cancel");
        self.run_dialog(&dialog).await == action
    }

    /// Shows `dialog` and waits for the person's answer (a response id).
    pub(crate) async fn run_dialog(&self, dialog: &adw::MessageDialog) -> String {
        // (`choose` is libadwaita 1.3's.)
        let (send, answer) = tokio::sync::oneshot::channel();
        let send = RefCell::new(Some(send));
        dialog.connect_response(None, move |_, response| {
            if let Some(send) = send.borrow_mut().take() {
                let _ = send.send(response.to_owned());
            }
        });
        *self.inner.dialog.borrow_mut() = Some(dialog.clone());
        dialog.present();
        let response = answer.await.unwrap_or_default();
        self.inner.dialog.borrow_mut().take();
        // Answered: it no longer needs its parent, and whoever still holds it (a test) may
        // free it after the parent without it reaching back.
        dialog.set_transient_for(None::<&gtk::Window>);
        response
    }

    pub fn set_share_sheet(&self, sheet: Option<ShareSheet>) {
        *self.inner.share_sheet.borrow_mut() = sheet;
    }

    /// Opens the "Add a Service" window with the service's catalog (asked with the first list).
    pub fn open_add(&self) {
        let kinds = self.inner.kinds.borrow().clone();
        if kinds.is_empty() {
            return self.notify(&tr!("The service answered something unexpected for its catalog."));
        }
        let adding = AddWindow::new(self, kinds);
        adding.window.present();
        *self.inner.add_window.borrow_mut() = Some(adding);
    }

    /// The last "Add a Service" window opened.
    pub fn add_window(&self) -> Option<AddWindow> {
        self.inner.add_window.borrow().clone()
    }

    /// Invites `client` to `service`: a key pair made and kept by the service, then the share
    /// sheet (after the passphrase, when the service asks for it).
    pub fn invite(&self, service: &str, client: &str) {
        let Some(view) = self.service_view(service) else { return };
        let (this, client) = (self.clone(), client.to_owned());
        glib::spawn_future_local(async move {
            let Some(backend) = this.backend() else { return };
            let (name, friend) = (view.name.clone(), client.clone());
            let added = backend.call(move |server| async move { server.add_client(&name, &friend, "").await }).await;
            match added.map(|json| serde_json::from_str::<Changed>(&json).map(|c| c.tor).unwrap_or_default()) {
                Ok(tor) => {
                    if let Some(text) = tor.notice() {
                        this.notify(&text);
                    }
                }
                Err(failure) => return this.show_failure(&failure),
            }
            let connect = this.connect_of(&view.kind);
            friends::show_key(&this, &view.name, &client, &view.address, view.remote_port, connect).await;
        });
    }

    /// Shows a friend's key again.
    pub fn show_key(&self, service: &str, client: &str) {
        let Some(view) = self.service_view(service) else { return };
        let (this, client) = (self.clone(), client.to_owned());
        glib::spawn_future_local(async move {
            let connect = this.connect_of(&view.kind);
            friends::show_key(&this, &view.name, &client, &view.address, view.remote_port, connect).await;
        });
    }

    /// Connects to a service through tor, as a friend would, and says what it found and when.
    pub fn check_now(&self, service: &str) {
        let Some(backend) = self.backend() else { return };
        self.set_check_text(service, &tr!("Checking through Tor… (this can take a minute)"));
        let (this, name) = (self.clone(), service.to_owned());
        glib::spawn_future_local(async move {
            let asked = name.clone();
            let answer = backend.call(move |server| async move { server.status(&asked, true).await }).await;
            let at = glib::DateTime::now_local().and_then(|now| now.format("%H:%M")).map(|t| t.to_string());
            let at = at.unwrap_or_default();
            let text = match answer.as_ref().map(|json| parse::<StatusView>(json)) {
                Ok(Ok(status)) => {
                    let detail = status.tor.probe_detail.as_deref().or(status.tor.tor_error.as_deref());
                    if let Some(row) = this.inner.rows.borrow().get(&name) {
                        *row.checked.borrow_mut() = Some(status.tor.reachable);
                    }
                    model::check_words(status.tor.reachable, detail, &at)
                }
                Ok(Err(e)) => model::check_words(None, Some(&e.message()), &at),
                Err(failure) => model::check_words(None, Some(&failure.message()), &at),
            };
            this.set_check_text(&name, &text);
            this.reload();
        });
    }

    fn set_check_text(&self, service: &str, text: &str) {
        if let Some(row) = self.inner.rows.borrow().get(service) {
            *row.check_text.borrow_mut() = text.to_owned();
            if let Some(check) = row.check_row.borrow().as_ref() {
                check.set_subtitle(&glib::markup_escape_text(text));
            }
        }
    }

    /// What the last "Check Now" of a service found, in words.
    pub fn last_check(&self, service: &str) -> Option<String> {
        self.inner.rows.borrow().get(service).map(|row| row.check_text.borrow().clone())
    }

    /// Saves a backup of everything in `path`, as "Save a Backup…" does once the person chose
    /// the file.
    pub fn back_up_to(&self, path: &std::path::Path) {
        let (this, path) = (self.clone(), path.to_owned());
        glib::spawn_future_local(async move { crate::backup::back_up_to(&this, &path).await });
    }

    /// Restores from the backup in `path`, as "Restore From a Backup…" does once the person
    /// chose the file.
    pub fn restore_from(&self, path: &std::path::Path) {
        let (this, path) = (self.clone(), path.to_owned());
        glib::spawn_future_local(async move { crate::backup::restore_from(&this, &path).await });
    }

    /// Revokes a friend's key, once the person confirmed.
    pub fn revoke(&self, service: &str, client: &str) {
        let (this, service, client) = (self.clone(), service.to_owned(), client.to_owned());
        glib::spawn_future_local(async move {
            if !friends::confirm(&this, model::revoke_words(&service, &client), &tr!("Revoke")).await {
                return;
            }
            let Some(backend) = this.backend() else { return };
            let (name, friend) = (service.clone(), client.clone());
            match backend.call(move |server| async move { server.remove_client(&name, &friend).await }).await {
                Ok(json) => {
                    let tor = serde_json::from_str::<Changed>(&json).map(|c| c.tor).unwrap_or_default();
                    this.notify(
                        &tor.notice()
                            .unwrap_or_else(|| tr!("{client} can no longer connect to {service}.", client, service)),
                    );
                }
                Err(failure) => this.show_failure(&failure),
            }
        });
    }

    /// Removes a service and destroys its keys and data, once the person confirmed.
    pub fn remove(&self, service: &str) {
        let (this, service) = (self.clone(), service.to_owned());
        glib::spawn_future_local(async move {
            if !friends::confirm(&this, model::remove_words(&service), &tr!("Remove")).await {
                return;
            }
            let Some(backend) = this.backend() else { return };
            let name = service.clone();
            match backend.call(move |server| async move { server.remove(&name, false).await }).await {
                Ok(_) => this.notify(&tr!("{service} is removed.", service)),
                Err(failure) => this.show_failure(&failure),
            }
        });
    }

    fn service_view(&self, name: &str) -> Option<ServiceView> {
        self.inner.rows.borrow().get(name).and_then(|row| row.view.borrow().clone())
    }

    pub(crate) fn show_failure(&self, failure: &Failure) {
        match failure.page() {
            Some(problem) => self.show_problem(&problem),
            None => self.notify(&failure.message()),
        }
    }

    fn show_problem(&self, problem: &Problem) {
        self.inner.add.set_sensitive(false);
        self.inner.tabs.set_visible_child_name("services");
        let page = &self.inner.problem;
        page.set_title(&problem.title);
        page.set_description(Some(&glib::markup_escape_text(&problem.body)));
        page.set_icon_name(Some(problem.icon));
        self.inner.stack.set_visible_child_name(page::PROBLEM);
    }

    pub(crate) fn notify(&self, text: &str) {
        *self.inner.last_notice.borrow_mut() = Some(text.to_owned());
        self.inner.toasts.add_toast(adw::Toast::new(&glib::markup_escape_text(text)));
    }

    fn show_services(&self, services: &[(ServiceView, StatusView)]) {
        let rows: Vec<(ServiceRow, TorState)> = services
            .iter()
            .map(|(view, status)| {
                // A check's answer holds while the descriptor it reached is still the one up.
                let mut status = status.clone();
                if status.tor.uploaded == Some(true) && status.tor.reachable.is_none() {
                    let shown = self.inner.rows.borrow();
                    if let Some(Some(reachable)) = shown.get(&view.name).map(|row| *row.checked.borrow()) {
                        status.tor.reachable = reachable;
                    }
                }
                (ServiceRow::new(&status, &self.name_in_gui(&view.kind)), status.tor.clone())
            })
            .collect();
        match model::tor_notice(&rows) {
            Some(text) => {
                self.inner.tor_notice.set_label(&text);
                self.inner.tor_notice.set_visible(true);
            }
            None => self.inner.tor_notice.set_visible(false),
        }
        let mut shown = self.inner.rows.borrow_mut();
        shown.retain(|name, row| {
            let keep = rows.iter().any(|(r, _)| &r.name == name);
            if !keep {
                self.inner.list.remove(&row.row);
            }
            keep
        });
        for ((row, _), (view, _)) in rows.iter().zip(services) {
            let widgets = shown.entry(row.name.clone()).or_insert_with(|| self.new_row(&row.name));
            widgets.show(row);
            widgets.show_details(self, view);
        }
        drop(shown);
        let page = if rows.is_empty() { page::EMPTY } else { page::SERVICES };
        self.inner.services.set_visible_child_name(page);
        self.inner.stack.set_visible_child_name(page::READY);
        self.inner.add.set_sensitive(true);
    }

    fn new_row(&self, name: &str) -> Row {
        let switch = gtk::Switch::builder().valign(gtk::Align::Center).build();
        let spinner = gtk::Spinner::builder().valign(gtk::Align::Center).visible(false).build();
        describe(&spinner, &tr!("Publishing"), None);
        let row = adw::ExpanderRow::builder().title(name).build();
        // The row's own header opens it by mouse and keyboard only; GTK 4.8 gives it no
        // accessible action, so assistive technologies get a button of their own.
        let details = gtk::ToggleButton::builder().label(tr!("Details")).valign(gtk::Align::Center).build();
        details.add_css_class("flat");
        describe(
            &details,
            &tr!("Details of {service}", service = name),
            Some(&tr!("Its address, friends and actions")),
        );
        details.bind_property("active", &row, "expanded").bidirectional().sync_create().build();
        row.add_action(&spinner);
        row.add_action(&details);
        row.add_action(&switch);
        let (ladder, steps) = ladder_row();
        row.add_row(&ladder);
        self.inner.list.append(&row);
        let updating = Rc::new(Cell::new(false));
        let in_flight = Rc::new(Cell::new(false));
        let this = Rc::downgrade(&self.inner);
        let name = name.to_owned();
        let (flag, flight, turning) = (updating.clone(), in_flight.clone(), spinner.clone());
        switch.connect_state_set(move |switch, wanted| {
            let Some(inner) = this.upgrade() else { return glib::Propagation::Proceed };
            if flag.get() {
                return glib::Propagation::Proceed;
            }
            flight.set(true);
            turning.set_visible(true);
            turning.set_spinning(true);
            let window = Window { inner };
            let (switch, name, flight, turning) = (switch.clone(), name.clone(), flight.clone(), turning.clone());
            glib::spawn_future_local(async move {
                let Some(backend) = window.inner.backend.borrow().clone() else { return };
                let asked = name.clone();
                let answer = backend
                    .call(move |server| async move {
                        if wanted {
                            server.enable(&asked).await
                        } else {
                            server.disable(&asked).await
                        }
                    })
                    .await;
                flight.set(false);
                turning.set_spinning(false);
                turning.set_visible(false);
                match answer {
                    Ok(json) => {
                        switch.set_state(wanted);
                        let outcome = serde_json::from_str::<Changed>(&json).map(|c| c.tor).unwrap_or_default();
                        if let Some(text) = outcome.notice() {
                            window.notify(&text);
                        }
                    }
                    Err(failure) => {
                        switch.set_state(!wanted);
                        window.show_failure(&failure);
                    }
                }
                window.reload();
            });
            glib::Propagation::Stop
        });
        Row {
            row,
            details: RefCell::default(),
            details_of: RefCell::default(),
            view: RefCell::default(),
            checked: RefCell::default(),
            check_text: RefCell::new(tr!("Not checked yet: a check connects to it through Tor, as a friend would")),
            check_row: RefCell::default(),
            switch,
            spinner,
            updating,
            in_flight,
            busy: Cell::new(false),
            ladder,
            steps,
            climbed: Cell::new(None),
        }
    }

    /// The page shown now (a name from [`page`]).
    pub fn page(&self) -> String {
        let name = |stack: &gtk::Stack| stack.visible_child_name().map(|n| n.to_string()).unwrap_or_default();
        match name(&self.inner.stack) {
            ready if ready == page::READY => name(&self.inner.services),
            other => other,
        }
    }

    /// Shows a tab: `services` or `keys`.
    pub fn show_tab(&self, tab: &str) {
        self.inner.tabs.set_visible_child_name(tab);
    }

    /// The received keys the keys tab lists.
    pub fn received_keys(&self) -> Vec<String> {
        self.inner.keys.borrow().as_ref().map(KeysPage::names).unwrap_or_default()
    }

    /// Hands a received key to the service (`AddKey`): kept, and given to tor.
    pub fn add_received_key(&self, name: &str, text: zeroize::Zeroizing<String>, address: &str, persistent: bool) {
        let Some(backend) = self.backend() else { return };
        let (this, name, address) = (self.clone(), name.to_owned(), address.to_owned());
        glib::spawn_future_local(async move {
            let asked = name.clone();
            let answer = backend
                .call(move |server| async move { server.add_key(&asked, &text, &address, persistent).await })
                .await;
            match answer {
                Ok(json) => {
                    let tor = serde_json::from_str::<Changed>(&json).map(|c| c.tor).unwrap_or_default();
                    this.notify(&tor.key_notice(&name));
                }
                Err(failure) => this.show_failure(&failure),
            }
        });
    }

    /// Forgets a received key (`RemoveKey`): its stored copies destroyed, taken back from tor.
    pub fn remove_received_key(&self, name: &str) {
        let Some(backend) = self.backend() else { return };
        let (this, name) = (self.clone(), name.to_owned());
        glib::spawn_future_local(async move {
            let asked = name.clone();
            match backend.call(move |server| async move { server.remove_key(&asked).await }).await {
                Ok(_) => this.notify(&tr!("The key {name} is forgotten.", name)),
                Err(failure) => this.show_failure(&failure),
            }
        });
    }

    /// Deletes the kept data `id`, after asking (the Delete… button of its row).
    pub fn delete_kept_data(&self, id: &str) {
        let (this, id) = (self.clone(), id.to_owned());
        glib::spawn_future_local(async move { crate::kept::delete(&this, &this.inner.kept, &id).await });
    }

    /// Gives the kept data `id` to the service the person chooses (its Give… button).
    pub fn give_kept_data(&self, id: &str) {
        let (this, id) = (self.clone(), id.to_owned());
        glib::spawn_future_local(async move { crate::kept::give(&this, &this.inner.kept, &id).await });
    }

    /// The kept data as listed (ids).
    pub fn kept_data(&self) -> Vec<String> {
        self.inner.kept.ids()
    }

    /// Whether the pages are still crossfading.
    pub fn transition_running(&self) -> bool {
        self.inner.stack.is_transition_running()
    }

    /// The problem page's title and text.
    pub fn problem(&self) -> (String, String) {
        let page = &self.inner.problem;
        (page.title().to_string(), page.description().map(|d| d.to_string()).unwrap_or_default())
    }

    /// Each row as shown: name, the line under it, the switch's position and whether a
    /// spinner turns.
    pub fn rows(&self) -> Vec<RowShown> {
        self.inner
            .rows
            .borrow()
            .iter()
            .map(|(name, row)| RowShown {
                name: name.clone(),
                state: row.row.subtitle().to_string(),
                switched_on: row.switch.is_active(),
                busy: row.spinner.is_visible(),
            })
            .collect()
    }

    /// Opens or closes a service's details, as its Details button does.
    pub fn show_details_of(&self, name: &str, open: bool) {
        if let Some(row) = self.inner.rows.borrow().get(name) {
            row.row.set_expanded(open);
        }
    }

    /// A service's ladder as a screen reader says it ("Tor connected: done", …); None when
    /// not drawn (the service is off).
    pub fn ladder(&self, name: &str) -> Option<Vec<String>> {
        self.inner.rows.borrow().get(name).and_then(Row::ladder_words)
    }

    /// A service's switch, as a person would use it.
    pub fn switch(&self, name: &str) -> Option<gtk::Switch> {
        self.inner.rows.borrow().get(name).map(|row| row.switch.clone())
    }

    /// The notice that tails-server is not installed at every login, when shown.
    pub fn setup_notice(&self) -> Option<String> {
        let notice = &self.inner.setup_notice;
        let mut lines = Vec::new();
        let mut child = notice.first_child();
        while let Some(label) = child {
            child = label.next_sibling();
            lines.extend(label.downcast::<gtk::Label>().ok().map(|l| l.label().to_string()));
        }
        notice.is_visible().then(|| lines.join("\n"))
    }

    /// The notice about tor above the list, when shown.
    pub fn tor_notice(&self) -> Option<String> {
        let label = &self.inner.tor_notice;
        label.is_visible().then(|| label.label().to_string())
    }

    /// The question the window asks now, if any.
    pub fn dialog(&self) -> Option<adw::MessageDialog> {
        self.inner.dialog.borrow().clone()
    }

    /// The last share sheet opened.
    pub fn share_sheet(&self) -> Option<ShareSheet> {
        self.inner.share_sheet.borrow().clone()
    }

    /// The friends a row lists (its details, once expanded or not).
    pub fn friends(&self, service: &str) -> Vec<String> {
        self.service_view(service).map(|v| v.clients.into_iter().map(|c| c.name).collect()).unwrap_or_default()
    }

    /// The last notification shown.
    pub fn last_notice(&self) -> Option<String> {
        self.inner.last_notice.borrow().clone()
    }
}

/// A row as the person sees it (for tests and screen readers alike).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowShown {
    pub name: String,
    pub state: String,
    pub switched_on: bool,
    pub busy: bool,
}

impl Row {
    fn show(&self, shown: &ServiceRow) {
        self.row.set_subtitle(&glib::markup_escape_text(&shown.state));
        describe(&self.switch, &shown.switch_name(), Some(&shown.state));
        if !self.in_flight.get() {
            self.updating.set(true);
            self.switch.set_active(shown.enabled);
            self.switch.set_state(shown.enabled);
            self.updating.set(false);
        }
        self.busy.set(shown.rung.busy());
        let turning = self.busy.get() || self.in_flight.get();
        self.spinner.set_visible(turning);
        self.spinner.set_spinning(turning);
        let ladder = shown.rung.ladder();
        self.climbed.set(ladder);
        self.ladder.set_visible(ladder.is_some());
        for ((label, step), state) in self.steps.iter().zip(model::steps()).zip(ladder.unwrap_or([Step::NotYet; 4])) {
            let (mark, style) = match state {
                Step::Done => ("✓", "success"),
                Step::Now => ("…", "accent"),
                Step::NotYet => ("○", "dim-label"),
            };
            label.set_label(&format!("{mark} {step}"));
            for class in ["success", "accent", "dim-label"] {
                label.remove_css_class(class);
            }
            label.add_css_class(style);
            describe(label, &model::step_words(&step, state), None);
        }
    }

    /// The ladder's steps as a screen reader says them; None when it is not shown (off).
    fn ladder_words(&self) -> Option<Vec<String>> {
        // What is drawn: the row's visibility, then the steps it shows.
        if !self.ladder.is_visible() {
            return None;
        }
        // (`show` draws a ladder it was not given as every step not yet.)
        let drawn = self.climbed.get().unwrap_or([Step::NotYet; 4]);
        Some(model::steps().iter().zip(drawn).map(|(step, state)| model::step_words(step, state)).collect())
    }
}

/// The ladder's row: the steps side by side, wrapping when the window is narrow.
fn ladder_row() -> (gtk::ListBoxRow, Vec<gtk::Label>) {
    let steps: Vec<gtk::Label> = model::steps().iter().map(|_| gtk::Label::new(None)).collect();
    let flow = gtk::FlowBox::builder()
        .selection_mode(gtk::SelectionMode::None)
        .max_children_per_line(4)
        .column_spacing(12)
        .row_spacing(6)
        .margin_top(8)
        .margin_bottom(8)
        .margin_start(12)
        .margin_end(12)
        .build();
    for step in &steps {
        flow.insert(step, -1);
    }
    let row = gtk::ListBoxRow::builder().activatable(false).selectable(false).child(&flow).build();
    describe(&row, &tr!("How far it has come"), None);
    (row, steps)
}

impl Row {
    /// The rows inside: the address, each friend, inviting one, removing the service. Made
    /// again only when the address or the friends changed (so keyboard focus stays put).
    fn show_details(&self, window: &Window, view: &ServiceView) {
        *self.view.borrow_mut() = Some(view.clone());
        let clients: Vec<&str> = view.clients.iter().map(|c| c.name.as_str()).collect();
        let made_of = format!("{} {}", view.address, clients.join(" "));
        if *self.details_of.borrow() == made_of {
            return;
        }
        *self.details_of.borrow_mut() = made_of;
        for old in self.details.borrow_mut().drain(..) {
            self.row.remove(&old);
        }
        let service = view.name.clone();
        let mut rows = Vec::new();

        let address = adw::ActionRow::builder().title(tr!("Address")).subtitle(view.address.as_str()).build();
        let copy = button(&tr!("Copy"), &tr!("Copy the address of {service}", service), None);
        let shown = view.address.clone();
        let owner = window.downgrade();
        copy.connect_clicked(move |button| {
            button.clipboard().set_text(&shown);
            if let Some(owner) = owner.upgrade() {
                owner.notify(&tr!("The address is copied."));
            }
        });
        address.add_suffix(&copy);
        rows.push(address);

        let check = adw::ActionRow::builder()
            .title(tr!("Can Friends Reach It?"))
            .subtitle(glib::markup_escape_text(&self.check_text.borrow()).as_str())
            .build();
        let probe =
            button(&tr!("Check Now"), &tr!("Check whether {service} can be reached through Tor", service), None);
        let (owner, name) = (window.downgrade(), service.clone());
        probe.connect_clicked(move |_| {
            if let Some(owner) = owner.upgrade() {
                owner.check_now(&name);
            }
        });
        check.add_suffix(&probe);
        *self.check_row.borrow_mut() = Some(check.clone());
        rows.push(check);

        for client in &view.clients {
            let subtitle = if client.private_key_stored {
                tr!("Invited {date}", date = client.created.get(..10).unwrap_or(&client.created))
            } else {
                tr!("Their key was made elsewhere: only its public half is kept here")
            };
            let friend = adw::ActionRow::builder().title(client.name.as_str()).subtitle(subtitle).build();
            if client.private_key_stored {
                let show = button(&tr!("Show Key"), &tr!("Show {friend}'s key", friend = client.name), None);
                let (owner, service, client) = (window.downgrade(), service.clone(), client.name.clone());
                show.connect_clicked(move |_| {
                    if let Some(owner) = owner.upgrade() {
                        owner.show_key(&service, &client);
                    }
                });
                friend.add_suffix(&show);
            }
            let revoke =
                button(&tr!("Revoke"), &tr!("Revoke {friend}'s key", friend = client.name), Some("destructive-action"));
            let (owner, service_name, client_name) = (window.downgrade(), service.clone(), client.name.clone());
            revoke.connect_clicked(move |_| {
                if let Some(owner) = owner.upgrade() {
                    owner.revoke(&service_name, &client_name);
                }
            });
            friend.add_suffix(&revoke);
            rows.push(friend);
        }

        let invite = adw::ActionRow::builder()
            .title(tr!("Invite a Friend"))
            .subtitle(tr!("A key of their own, shown once you typed your Persistent Storage passphrase"))
            .build();
        let open = button(&tr!("Invite…"), &tr!("Invite a friend to {service}", service), Some("suggested-action"));
        let (owner, name) = (window.downgrade(), service.clone());
        open.connect_clicked(move |_| {
            let Some(owner) = owner.upgrade() else { return };
            let name = name.clone();
            glib::spawn_future_local(async move {
                if let Some(friend) = friends::ask_friend_name(&owner, &name).await {
                    owner.invite(&name, &friend);
                }
            });
        });
        invite.add_suffix(&open);
        rows.push(invite);

        let remove = adw::ActionRow::builder()
            .title(tr!("Remove This Service"))
            .subtitle(tr!("Destroys its address, keys and data"))
            .build();
        let destroy = button(&tr!("Remove…"), &tr!("Remove {service}", service), Some("destructive-action"));
        let owner = window.downgrade();
        destroy.connect_clicked(move |_| {
            if let Some(owner) = owner.upgrade() {
                owner.remove(&service);
            }
        });
        remove.add_suffix(&destroy);
        rows.push(remove);

        for row in &rows {
            self.row.add_row(row);
        }
        *self.details.borrow_mut() = rows;
    }
}

/// A button in a row, named for screen readers by what it does to what.
fn button(label: &str, accessible: &str, style: Option<&str>) -> gtk::Button {
    let button = gtk::Button::builder().label(label).valign(gtk::Align::Center).build();
    if let Some(style) = style {
        button.add_css_class(style);
    }
    describe(&button, accessible, None);
    button
}

/// Whether a service is kept across reboots (its `persistence` option); None when the
/// service does not say.
fn is_persistent(view: &ServiceView) -> Option<bool> {
    match view.options.get(tails_server_core::options::PERSISTENCE) {
        Some(tails_server_core::options::OptionValue::Bool(persistent)) => Some(*persistent),
        _ => None,
    }
}

/// A change's answer: only what tor did matters here.
#[derive(serde::Deserialize)]
struct Changed {
    tor: TorOutcome,
}

fn parse<T: for<'de> serde::Deserialize<'de>>(json: &str) -> Result<T, tails_server_dbus::ServiceError> {
    serde_json::from_str(json).map_err(|e| {
        tails_server_dbus::ServiceError::Failed(tr!("the service answered something unexpected: {error}", error = e))
    })
}

/// Sets what a screen reader says for a widget: its name and, when given, a description.
pub fn describe(widget: &impl IsA<gtk::Widget>, label: &str, description: Option<&str>) {
    let mut properties = vec![(gtk::AccessibleProperty::Label, label)];
    if let Some(description) = description {
        properties.push((gtk::AccessibleProperty::Description, description));
    }
    set_accessible(widget, &properties);
    // GTK 4.18 names a button by its label child, and an activatable widget by its row's
    // title (labelled-by relations, which come before a label): the name given here would
    // be lost ("Details" for every service's Details button; found by the Dogtail run on
    // Debian 13).
    use gtk::glib::translate::{IntoGlib, ToGlibPtr};
    extern "C" {
        fn gtk_accessible_reset_relation(
            accessible: *mut gtk::ffi::GtkWidget,
            relation: gtk::ffi::GtkAccessibleRelation,
        );
    }
    // SAFETY: every widget is a GtkAccessible; a GTK 4.0 function, declared here for the
    // reason given at `set_accessible`.
    unsafe {
        gtk_accessible_reset_relation(
            widget.as_ref().to_glib_none().0,
            gtk::AccessibleRelation::LabelledBy.into_glib(),
        );
    }
}

/// A password field named `name` (GtkWidget:name), `accessible` for screen readers.
pub(crate) fn password_entry(name: &str, accessible: &str) -> gtk::PasswordEntry {
    let entry = gtk::PasswordEntry::builder().show_peek_icon(true).name(name).build();
    describe(&entry, accessible, None);
    entry
}

/// The file the person chooses in the desktop's file chooser over `parent`; None when
/// cancelled. `name`: the name offered when saving.
pub(crate) async fn choose_file(
    parent: &impl IsA<gtk::Window>,
    action: gtk::FileChooserAction,
    title: &str,
    accept: &str,
    name: &str,
) -> Option<std::path::PathBuf> {
    // (GtkFileDialog is GTK 4.10's.)
    let chooser = gtk::FileChooserNative::new(Some(title), Some(parent), action, Some(accept), Some(&tr!("Cancel")));
    if !name.is_empty() {
        chooser.set_current_name(name);
    }
    let (send, chosen) = tokio::sync::oneshot::channel();
    let send = RefCell::new(Some(send));
    chooser.connect_response(move |chooser, response| {
        let path = (response == gtk::ResponseType::Accept).then(|| chooser.file().and_then(|f| f.path())).flatten();
        if let Some(send) = send.borrow_mut().take() {
            let _ = send.send(path);
        }
    });
    chooser.show();
    let path = chosen.await.ok().flatten();
    chooser.destroy();
    path
}

/// Sets only a widget's accessible description, keeping its name (a label's name is its
/// text, which is what a screen reader must read).
pub fn explain(widget: &impl IsA<gtk::Widget>, description: &str) {
    set_accessible(widget, &[(gtk::AccessibleProperty::Description, description)]);
}

/// gtk4-rs binds GtkAccessible only from GTK 4.10 on, but this C function is GTK 4.0's:
/// declared here, the window still runs on 4.8.
fn set_accessible(widget: &impl IsA<gtk::Widget>, properties: &[(gtk::AccessibleProperty, &str)]) {
    use gtk::glib::translate::{IntoGlib, ToGlibPtr};
    extern "C" {
        fn gtk_accessible_update_property_value(
            accessible: *mut gtk::ffi::GtkWidget,
            n_properties: std::os::raw::c_int,
            properties: *mut gtk::ffi::GtkAccessibleProperty,
            values: *const gtk::glib::gobject_ffi::GValue,
        );
    }
    let mut names: Vec<_> = properties.iter().map(|(property, _)| property.into_glib()).collect();
    let values: Vec<glib::Value> = properties.iter().map(|(_, value)| value.to_value()).collect();
    // SAFETY: every widget is a GtkAccessible; as many properties as values, each a string
    // as GTK documents for the label and the description; glib::Value has GValue's layout.
    unsafe {
        gtk_accessible_update_property_value(
            widget.as_ref().to_glib_none().0,
            names.len() as std::os::raw::c_int,
            names.as_mut_ptr(),
            values.as_ptr() as *const gtk::glib::gobject_ffi::GValue,
        );
    }
}

/// The notice above the services while tails-server is not installed at every login
/// ([`model::not_set_up`]); its command can be selected and copied.
fn not_set_up_notice() -> gtk::Box {
    let [heading, text, command] = model::not_set_up();
    let title = gtk::Label::builder().label(heading).xalign(0.0).margin_top(12).build();
    title.add_css_class("heading");
    let body = gtk::Label::builder().label(text).wrap(true).xalign(0.0).build();
    let command =
        gtk::Label::builder().label(command).wrap(true).xalign(0.0).selectable(true).margin_bottom(12).build();
    command.add_css_class("monospace");
    let notice = gtk::Box::builder()
        .orientation(gtk::Orientation::Vertical)
        .spacing(6)
        .margin_top(12)
        .margin_start(12)
        .margin_end(12)
        .visible(false)
        .build();
    notice.add_css_class("card");
    for label in [&title, &body, &command] {
        label.set_margin_start(12);
        label.set_margin_end(12);
        notice.append(label);
    }
    notice
}
