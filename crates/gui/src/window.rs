//! The main window: the services, one row each, or a page saying why they cannot be shown.
//! Everything it says comes from [`crate::model`]; everything it does goes through
//! [`Backend`]. It asks the service again when the service says something changed, never on
//! a timer.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use adw::prelude::*;
use gtk::glib;
use tails_server_dbus::views::{ServiceView, StatusView, TorState};

use crate::backend::{Backend, Event};
use crate::model::{self, Failure, Problem, ServiceRow, TorOutcome};

/// The stack's pages, by name.
pub mod page {
    pub const CONNECTING: &str = "connecting";
    pub const PROBLEM: &str = "problem";
    pub const EMPTY: &str = "empty";
    pub const SERVICES: &str = "services";
}

/// The window, cheap to clone (one shared state).
#[derive(Clone)]
pub struct Window {
    inner: Rc<Inner>,
}

struct Inner {
    window: adw::ApplicationWindow,
    toasts: adw::ToastOverlay,
    stack: gtk::Stack,
    problem: adw::StatusPage,
    tor_notice: gtk::Label,
    list: gtk::ListBox,
    rows: RefCell<BTreeMap<String, Row>>,
    backend: RefCell<Option<Backend>>,
    /// Each kind's name for people ("Mumble"), from the service's catalog.
    kinds: RefCell<HashMap<String, String>>,
    loading: Cell<bool>,
    load_again: Cell<bool>,
    last_notice: RefCell<Option<String>>,
}

/// One service's row and the widgets in it.
struct Row {
    row: adw::ActionRow,
    switch: gtk::Switch,
    spinner: gtk::Spinner,
    /// Set while the window itself moves the switch, so that moving it is not a request.
    updating: Rc<Cell<bool>>,
    /// A request to tor is under way from this row.
    in_flight: Rc<Cell<bool>>,
    busy: Cell<bool>,
}

impl Window {
    pub fn new(application: Option<&adw::Application>) -> Window {
        let stack = gtk::Stack::builder().transition_type(gtk::StackTransitionType::Crossfade).vexpand(true).build();

        let connecting = adw::StatusPage::builder()
            .title("Connecting to Tails Server…")
            .icon_name("network-server-symbolic")
            .build();
        stack.add_named(&connecting, Some(page::CONNECTING));

        let problem = adw::StatusPage::builder().icon_name("dialog-warning-symbolic").build();
        let retry = gtk::Button::builder().label("Try Again").halign(gtk::Align::Center).build();
        retry.add_css_class("pill");
        retry.add_css_class("suggested-action");
        problem.set_child(Some(&retry));
        stack.add_named(&problem, Some(page::PROBLEM));

        let empty = adw::StatusPage::builder()
            .title("No Onion Services Yet")
            .description(
                "An onion service makes a program on this computer (a Mumble server, a web site, shared \
                 files) reachable through Tor, only by the friends you give a key to. Add one with \
                 “tails-server add” for now.",
            )
            .icon_name("network-server-symbolic")
            .build();
        stack.add_named(&empty, Some(page::EMPTY));

        let tor_notice = gtk::Label::builder().wrap(true).xalign(0.0).visible(false).build();
        tor_notice.add_css_class("warning");
        let list = gtk::ListBox::builder().selection_mode(gtk::SelectionMode::None).build();
        list.add_css_class("boxed-list");
        describe(&list, "Your onion services", None);
        let heading = gtk::Label::builder().label("Your Onion Services").xalign(0.0).build();
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
        stack.add_named(&scrolled, Some(page::SERVICES));

        let toasts = adw::ToastOverlay::new();
        toasts.set_child(Some(&stack));
        let content = gtk::Box::new(gtk::Orientation::Vertical, 0);
        content.append(&adw::HeaderBar::builder().title_widget(&adw::WindowTitle::new("Onion Services", "")).build());
        content.append(&toasts);
        let window = adw::ApplicationWindow::builder()
            .title("Onion Services")
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
                problem,
                tor_notice,
                list,
                rows: RefCell::default(),
                backend: RefCell::default(),
                kinds: RefCell::default(),
                loading: Cell::new(false),
                load_again: Cell::new(false),
                last_notice: RefCell::default(),
            }),
        };
        let weak = Rc::downgrade(&this.inner);
        retry.connect_clicked(move |_| {
            if let Some(inner) = weak.upgrade() {
                Window { inner }.start();
            }
        });
        this
    }

    pub fn widget(&self) -> &adw::ApplicationWindow {
        &self.inner.window
    }

    /// Connects to the service and shows what it answers; from then on follows its signals.
    pub fn start(&self) {
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
                        statuses.push((service.kind.clone(), status));
                    }
                    Ok((kinds, statuses))
                })
                .await;
            match answer {
                Ok((kinds, statuses)) => {
                    if let Some(kinds) = kinds {
                        this.learn_kinds(&kinds);
                    }
                    this.show_services(&statuses);
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
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "kebab-case")]
        struct Kind {
            name: String,
            name_in_gui: String,
        }
        if let Ok(kinds) = serde_json::from_str::<Vec<Kind>>(catalog) {
            *self.inner.kinds.borrow_mut() = kinds.into_iter().map(|k| (k.name, k.name_in_gui)).collect();
        }
    }

    fn show_failure(&self, failure: &Failure) {
        match failure.page() {
            Some(problem) => self.show_problem(&problem),
            None => self.notify(&failure.message()),
        }
    }

    fn show_problem(&self, problem: &Problem) {
        let page = &self.inner.problem;
        page.set_title(&problem.title);
        page.set_description(Some(&glib::markup_escape_text(&problem.body)));
        page.set_icon_name(Some(problem.icon));
        self.inner.stack.set_visible_child_name(page::PROBLEM);
    }

    fn notify(&self, text: &str) {
        *self.inner.last_notice.borrow_mut() = Some(text.to_owned());
        self.inner.toasts.add_toast(adw::Toast::new(&glib::markup_escape_text(text)));
    }

    fn show_services(&self, statuses: &[(String, StatusView)]) {
        let rows: Vec<(ServiceRow, TorState)> = {
            let kinds = self.inner.kinds.borrow();
            statuses
                .iter()
                .map(|(kind, status)| {
                    let kind = kinds.get(kind).unwrap_or(kind);
                    (ServiceRow::new(status, kind), status.tor.clone())
                })
                .collect()
        };
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
        for (row, _) in &rows {
            let widgets = shown.entry(row.name.clone()).or_insert_with(|| self.new_row(&row.name));
            widgets.show(row);
        }
        drop(shown);
        let page = if rows.is_empty() { page::EMPTY } else { page::SERVICES };
        self.inner.stack.set_visible_child_name(page);
    }

    fn new_row(&self, name: &str) -> Row {
        let switch = gtk::Switch::builder().valign(gtk::Align::Center).build();
        let spinner = gtk::Spinner::builder().valign(gtk::Align::Center).visible(false).build();
        describe(&spinner, "Publishing", None);
        let row = adw::ActionRow::builder().title(name).build();
        row.add_suffix(&spinner);
        row.add_suffix(&switch);
        row.set_activatable_widget(Some(&switch));
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
        Row { row, switch, spinner, updating, in_flight, busy: Cell::new(false) }
    }

    /// The page shown now (a name from [`page`]).
    pub fn page(&self) -> String {
        self.inner.stack.visible_child_name().map(|n| n.to_string()).unwrap_or_default()
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
                state: row.row.subtitle().map(|s| s.to_string()).unwrap_or_default(),
                switched_on: row.switch.is_active(),
                busy: row.spinner.is_visible(),
            })
            .collect()
    }

    /// A service's switch, as a person would use it.
    pub fn switch(&self, name: &str) -> Option<gtk::Switch> {
        self.inner.rows.borrow().get(name).map(|row| row.switch.clone())
    }

    /// The notice about tor above the list, when shown.
    pub fn tor_notice(&self) -> Option<String> {
        let label = &self.inner.tor_notice;
        label.is_visible().then(|| label.label().to_string())
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
    }
}

/// A change's answer: only what tor did matters here.
#[derive(serde::Deserialize)]
struct Changed {
    tor: TorOutcome,
}

fn parse<T: for<'de> serde::Deserialize<'de>>(json: &str) -> Result<T, tails_server_dbus::ServiceError> {
    serde_json::from_str(json)
        .map_err(|e| tails_server_dbus::ServiceError::Failed(format!("the service answered something unexpected: {e}")))
}

/// Sets what a screen reader says for a widget. gtk4-rs binds GtkAccessible only from GTK
/// 4.10 on, but this C function is GTK 4.0's: declared here, the window still runs on 4.8.
pub fn describe(widget: &impl IsA<gtk::Widget>, label: &str, description: Option<&str>) {
    use gtk::glib::translate::{IntoGlib, ToGlibPtr};
    extern "C" {
        fn gtk_accessible_update_property_value(
            accessible: *mut gtk::ffi::GtkWidget,
            n_properties: std::os::raw::c_int,
            properties: *mut gtk::ffi::GtkAccessibleProperty,
            values: *const gtk::glib::gobject_ffi::GValue,
        );
    }
    let mut properties = vec![gtk::AccessibleProperty::Label.into_glib()];
    let mut values = vec![label.to_value()];
    if let Some(description) = description {
        properties.push(gtk::AccessibleProperty::Description.into_glib());
        values.push(description.to_value());
    }
    // SAFETY: every widget is a GtkAccessible; as many properties as values, each a string
    // as GTK documents for these two; glib::Value has GValue's layout.
    unsafe {
        gtk_accessible_update_property_value(
            widget.as_ref().to_glib_none().0,
            properties.len() as std::os::raw::c_int,
            properties.as_mut_ptr(),
            values.as_ptr() as *const gtk::glib::gobject_ffi::GValue,
        );
    }
}
