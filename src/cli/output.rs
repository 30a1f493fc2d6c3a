//! Everything printed: data to stdout (human, YAML or JSON), guidance to stderr.
//! The YAML/JSON key names are a stable interface, documented in docs/using.md.

use std::io::Write;

use anyhow::Result;
use clap::ValueEnum;
use serde::Serialize;

use tails_server_core::catalog::Catalog;
use tails_server_core::model::{ClientRecord, ServiceRecord, MAX_CLIENTS};
use tails_server_core::names::ServiceName;
use tails_server_core::options::OptionValue;
use tails_server_core::Manager;

use super::CredentialForm;
use tails_server_dbus::views::{client_view, service_view, ClientView, ServiceView};
pub use tails_server_dbus::views::{rfc3339, status_view, StatusView, TorState};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Human,
    Yaml,
    Json,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct CredentialView<'a> {
    service: &'a str,
    client: &'a str,
    address: String,
    form: &'a str,
    value: &'a str,
}

pub struct Printer {
    format: Format,
}

/// What `remove` reports of a service that no longer exists.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct RemovedService {
    pub name: String,
    pub address: String,
    /// Where its data was set aside (`--keep-data`); null: deleted with it.
    #[serde(rename = "data-kept-at")]
    pub data_kept_at: Option<String>,
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

impl Printer {
    pub fn new(format: Format) -> Self {
        Self { format }
    }

    /// Prints structured data as YAML or JSON. Returns false in human mode.
    pub fn structured<T: Serialize>(&self, value: &T) -> Result<bool> {
        let mut stdout = std::io::stdout().lock();
        match self.format {
            Format::Human => return Ok(false),
            Format::Json => {
                serde_json::to_writer_pretty(&mut stdout, value)?;
                writeln!(stdout)?;
            }
            Format::Yaml => write!(stdout, "{}", serde_yaml::to_string(value)?)?,
        }
        Ok(true)
    }

    fn human(&self, text: &str) -> Result<()> {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(text.as_bytes())?;
        Ok(())
    }

    pub fn message(&self, text: &str) -> Result<()> {
        #[derive(Serialize)]
        struct Message<'a> {
            message: &'a str,
        }
        if !self.structured(&Message { message: text })? {
            self.human(&format!("{text}\n"))?;
        }
        Ok(())
    }

    pub fn setup_report(&self, report: &tails_server_core::tails::setup::SetupReport, undo: bool) -> Result<()> {
        #[derive(Serialize)]
        struct Step<'a> {
            what: &'a str,
            changed: bool,
        }
        #[derive(Serialize)]
        struct Report<'a> {
            version: Option<&'a str>,
            steps: Vec<Step<'a>>,
        }
        let steps = report.steps.iter().map(|s| Step { what: &s.what, changed: s.changed }).collect();
        if self.structured(&Report { version: report.version.as_deref(), steps })? {
            return Ok(());
        }
        let mut text = String::new();
        for step in &report.steps {
            text.push_str(&format!("{} {}\n", if step.changed { "done:   " } else { "already:" }, step.what));
        }
        if undo {
            text.push_str(
                "tails-server will not be installed at the next login. Your services and their keys are kept in the \
                 Persistent Storage (tails-server remove deletes them).\n",
            );
        } else {
            text.push_str(
                "From the next login on, Additional Software installs tails-server and its service republishes your \
                 onion services, with no command to type.\n",
            );
        }
        self.human(&text)
    }

    pub fn catalog(&self, catalog: &Catalog) -> Result<()> {
        let kinds: Vec<_> = catalog.kinds().collect();
        if self.structured(&kinds)? {
            return Ok(());
        }
        let mut text = String::new();
        for kind in kinds {
            let ports = match (kind.local_port, kind.remote_port) {
                (Some(l), Some(r)) => format!("onion port {r} -> local {l}"),
                (Some(l), None) => format!("port {l}"),
                (None, _) => "any local port (--local-port)".into(),
            };
            let packages = if kind.packages.is_empty() { "none".to_owned() } else { kind.packages.join(", ") };
            text.push_str(&format!(
                "{}  ({})\n    {}\n    {ports}; packages: {packages}\n",
                kind.name, kind.name_in_gui, kind.description
            ));
            if !kind.options.is_empty() {
                text.push_str(&format!(
                    "    options: {}\n",
                    kind.options.keys().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        self.human(&text)
    }

    pub fn list(&self, manager: &Manager, records: &[ServiceRecord]) -> Result<()> {
        let views: Vec<_> = records.iter().map(|r| service_view(manager, r)).collect();
        self.list_views(&views)
    }

    /// `list` from the documents themselves (direct mode builds them, client mode receives
    /// them from the service): one printer for both.
    pub fn list_views(&self, views: &[ServiceView]) -> Result<()> {
        if self.structured(&views)? {
            return Ok(());
        }
        if views.is_empty() {
            eprintln!("No services yet. Add one with `tails-server add KIND` (kinds: `tails-server catalog`).");
            return Ok(());
        }
        let width = views.iter().map(|v| v.name.len()).max().unwrap_or(4).max(4);
        let mut text = format!("{:width$}  {:8}  {:62}  {:7}  CLIENTS\n", "NAME", "KIND", "ADDRESS", "ENABLED");
        for v in views {
            let clients = if v.client_authorization { v.clients.len().to_string() } else { "anyone!".into() };
            text.push_str(&format!(
                "{:width$}  {:8}  {:62}  {:7}  {clients}\n",
                v.name,
                v.kind,
                v.address,
                yes_no(v.enabled)
            ));
        }
        self.human(&text)
    }

    pub fn info(&self, manager: &Manager, record: &ServiceRecord, details: bool) -> Result<()> {
        let view = service_view(manager, record);
        self.info_view(
            &view,
            manager.kind_of(record),
            &manager.option_specs(record),
            &manager.data_dir(record),
            details,
        )
    }

    /// `info` from the document, with the kind's definition (from the catalog) when known.
    pub fn info_view(
        &self,
        view: &ServiceView,
        kind: Option<&tails_server_core::catalog::KindDefinition>,
        specs: &std::collections::BTreeMap<String, tails_server_core::options::OptionSpec>,
        data_dir: &std::path::Path,
        details: bool,
    ) -> Result<()> {
        if self.structured(view)? {
            return Ok(());
        }
        let gui = kind.map(|k| k.name_in_gui.as_str()).unwrap_or("kind no longer defined");
        let mut t = format!("Service:   {} ({}, {gui})\n", view.name, view.kind);
        t += &format!("Address:   {}\n", view.address);
        t += &match kind.and_then(|k| k.daemon.as_ref()) {
            // As root, tails-server runs it in a network of its own (behind its door);
            // elsewhere the person runs it on 127.0.0.1.
            Some(_) => {
                format!("Ports:     onion port {} -> port {} of its program\n", view.remote_port, view.local_port)
            }
            None => format!("Ports:     onion port {} -> 127.0.0.1:{}\n", view.remote_port, view.local_port),
        };
        let packages = kind.map(|k| k.packages.join(", ")).unwrap_or_default();
        t += &format!(
            "Installed: {}{}\n",
            yes_no(view.installed),
            if view.installed || packages.is_empty() { String::new() } else { format!(" (needs {packages})") }
        );
        t += &format!("Enabled:   {}\n", yes_no(view.enabled));
        if view.client_authorization {
            t += &format!("Client authorization: on ({} of at most {MAX_CLIENTS} clients)\n", view.clients.len());
        } else {
            t += "Client authorization: OFF - anyone who knows the address can reach this service\n";
        }
        t += "Options:\n";
        let width = view.options.keys().map(String::len).max().unwrap_or(0);
        for (name, value) in &view.options {
            let shown = match value {
                OptionValue::String(s) if s.is_empty() => "(empty)".to_owned(),
                v => v.to_string(),
            };
            t += &format!("  {name:width$}  {shown}\n");
            if details {
                if let Some(spec) = specs.get(name) {
                    let default = match &spec.default {
                        OptionValue::String(s) if s.is_empty() => "empty".to_owned(),
                        v => v.to_string(),
                    };
                    let range = match (spec.min, spec.max) {
                        (Some(min), Some(max)) => format!(" from {min} to {max}"),
                        (Some(min), None) => format!(", at least {min}"),
                        (None, Some(max)) => format!(", at most {max}"),
                        (None, None) => String::new(),
                    };
                    // Wrapped, each line under the value it describes.
                    let text = format!("{}{range} (default: {default}). {}", spec.value_type, spec.description);
                    t += &wrap(&text, &" ".repeat(width + 6));
                }
            }
        }
        if let Some(size) = view.data_size {
            t += &match view.data_used {
                Some(used) => format!("Data:      {} used of {}\n", super::kept::size(used), super::kept::size(size)),
                // Mounted when its program first starts after the computer does.
                None => format!("Data:      at most {}\n", super::kept::size(size)),
            };
        }
        if view.client_authorization {
            t += "Clients:\n";
            for c in &view.clients {
                let key = if c.private_key_stored { "key can be shown again" } else { "public key only" };
                t += &format!("  {}  (added {}, {key})\n", c.name, c.created);
            }
        }
        if details {
            for folder in kind.map(|k| k.persistent_paths.as_slice()).unwrap_or_default() {
                t += &format!("Files:     {}\n", data_dir.join(folder).display());
            }
            if view.client_authorization {
                t += &format!("How a client (CLIENT) connects:\n{}", wrap(&steps(kind, view, "CLIENT"), "  "));
            }
            if let Some(kind) = kind {
                t += &format!("Description: {}\n", kind.description);
                if let Some(doc) = &kind.documentation {
                    t += &format!("Documentation: {doc}\n");
                }
            }
        }
        self.human(&t)
    }

    pub fn status(&self, mut view: StatusView, tor: TorState) -> Result<()> {
        view.tor = tor;
        if self.structured(&view)? {
            return Ok(());
        }
        // Each line says what is known and, when it is not, why and what would tell.
        let unasked = view.tor.tor_error.is_some();
        let unknown = |otherwise: &str| {
            if unasked {
                "unknown (tor cannot be asked: see `tor:` below)".to_owned()
            } else {
                format!("unknown ({otherwise})")
            }
        };
        let mut t = format!("{}: {}\n", view.name, if view.enabled { "enabled" } else { "disabled" });
        t += &format!("  address:    {}\n  installed:  {}\n", view.address, yes_no(view.installed));
        let registered = match view.tor.registered {
            Some(true) => "yes (tor runs it)".to_owned(),
            Some(false) => "no (tor does not run it)".to_owned(),
            None => unknown("tor did not say"),
        };
        t += &format!("  registered: {registered}\n");
        if view.tor.registered == Some(true) {
            let current = match view.tor.published_as_stored {
                Some(true) => "yes (with the stored clients and ports)".to_owned(),
                Some(false) => "no (an older version: it is republished at the next reconcile)".to_owned(),
                None => unknown("published by another process"),
            };
            t += &format!("  current:    {current}\n");
        }
        let network = match (view.tor.network_enabled, view.tor.bootstrap) {
            (Some(false), _) => Some(
                "not connected: tor waits for you to connect to the Tor network (Tor Connection); \
                 your services are uploaded then"
                    .to_owned(),
            ),
            (Some(true), Some(p)) if p < 100 => Some(format!("connecting to the Tor network ({p} %)")),
            (Some(true), Some(_)) => Some("connected".to_owned()),
            _ => None,
        };
        if let Some(network) = &network {
            t += &format!("  network:    {network}\n");
        }
        let waiting = view.tor.network_enabled == Some(false) || view.tor.bootstrap.is_some_and(|p| p < 100);
        let uploaded = match (view.tor.uploaded, view.tor.uploaded_at.as_deref()) {
            (Some(true), Some(at)) => format!("yes, at {at} (its descriptor is in the directories)"),
            (Some(true), None) => "yes (its descriptor is in the directories)".to_owned(),
            (Some(false), _) => "no".to_owned(),
            (None, _) if waiting => "not yet (tor is not connected to the Tor network)".to_owned(),
            (None, _) => unknown("no running daemon saw the upload; `enable --wait` waits for it"),
        };
        t += &format!("  uploaded:   {uploaded}\n");
        let reachable = match (view.tor.reachable, &view.tor.probe_detail) {
            (Some(r), Some(detail)) => format!("{} ({detail})", yes_no(r)),
            (Some(r), None) => yes_no(r).to_owned(),
            (None, Some(detail)) => format!("unknown ({detail})"),
            (None, None) if unasked => unknown(""),
            (None, None) => "not probed (add --probe to try a connection through tor)".to_owned(),
        };
        t += &format!("  reachable:  {reachable}\n");
        if let Some(e) = &view.tor.tor_error {
            t += &format!("  tor:        {e}\n");
        }
        for (name, value) in &view.options {
            t += &format!("  {name}: {value}\n");
        }
        self.human(&t)
    }

    /// `status`, then its exit status: 0 when tor runs the service as stored (or, disabled,
    /// does not run it), 3 ([`super::TorPending`]) when tor cannot be asked or does not run
    /// what is stored yet, 4 ([`super::Unreachable`]) when `--probe` could not connect.
    pub fn status_and_outcome(&self, view: StatusView, tor: TorState) -> Result<()> {
        let (name, enabled) = (view.name.clone(), view.enabled);
        let outcome = match (&tor.tor_error, tor.registered, tor.published_as_stored, tor.reachable) {
            (Some(_), ..) => Err(super::TorPending(format!("{name}: tor cannot be asked, so its state is unknown")).into()),
            (None, Some(true), _, _) if !enabled => Err(super::TorPending(format!(
                "{name} is disabled but tor still runs it (the daemon, or the next command that reaches tor, removes it)"
            ))
            .into()),
            (None, Some(false), ..) if enabled => Err(super::TorPending(format!(
                "{name} is enabled but tor does not run it yet (`tails-server restore` publishes it)"
            ))
            .into()),
            (None, Some(true), Some(false), _) => Err(super::TorPending(format!(
                "tor runs {name} with older clients or ports (the next reconcile republishes it)"
            ))
            .into()),
            (None, _, _, Some(false)) => Err(super::Unreachable(format!("{name} could not be reached through tor")).into()),
            _ => Ok(()),
        };
        self.status(view, tor)?;
        outcome
    }

    pub fn restore_report(&self, report: &tails_server_core::reconcile::SyncReport) -> Result<()> {
        #[derive(Serialize)]
        #[serde(rename_all = "kebab-case")]
        struct Failed {
            name: String,
            error: String,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "kebab-case")]
        struct View {
            published: Vec<String>,
            republished: Vec<String>,
            already_published: Vec<String>,
            removed: Vec<String>,
            failed: Vec<Failed>,
            elapsed_ms: f64,
        }
        use tails_server_core::reconcile::Action;
        let view = View {
            published: report.names(Action::Published),
            republished: report.names(Action::Republished),
            already_published: report.names(Action::Unchanged),
            removed: report.names(Action::Removed),
            failed: report.failed.iter().map(|(n, e)| Failed { name: n.clone(), error: e.to_string() }).collect(),
            elapsed_ms: report.elapsed.as_secs_f64() * 1e3,
        };
        if self.structured(&view)? {
            return Ok(());
        }
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_owned()
            } else {
                v.join(", ")
            }
        };
        let mut t = format!("published: {}\n", list(&view.published));
        if !view.republished.is_empty() {
            t += &format!("republished (clients or ports changed): {}\n", list(&view.republished));
        }
        t += &format!("already running: {}\n", list(&view.already_published));
        if !view.removed.is_empty() {
            t += &format!("removed from tor: {}\n", list(&view.removed));
        }
        for (name, error) in &report.failed {
            t += &format!("FAILED: {name}: {error}\n");
        }
        self.human(&t)
    }

    pub fn option_value(&self, name: &ServiceName, option: &str, value: &OptionValue) -> Result<()> {
        #[derive(Serialize)]
        struct View<'a> {
            name: &'a str,
            option: &'a str,
            value: &'a OptionValue,
        }
        if !self.structured(&View { name: name.as_str(), option, value })? {
            self.human(&format!("{value}\n"))?;
        }
        Ok(())
    }

    /// What a change did: the sentence for people; with `--format`, the sentence and the
    /// changed object under `key` (`service`, `removed`).
    pub fn changed<T: Serialize>(&self, text: &str, key: &str, object: &T) -> Result<()> {
        let document = serde_json::json!({ "message": text, key: object });
        if !self.structured(&document)? {
            self.human(&format!("{text}\n"))?;
        }
        Ok(())
    }

    pub fn removed(&self, removed: &RemovedService) -> Result<()> {
        let data = match &removed.data_kept_at {
            None => "its data is deleted".to_owned(),
            Some(at) => format!("its data is kept in {at}"),
        };
        let text = format!(
            "Removed service {} ({}) from the store. Its onion key and client keys are destroyed, and {data}.",
            removed.name, removed.address
        );
        self.changed(&text, "removed", removed)
    }

    /// `set-option`'s report. A secret option's values, new or previous, are never printed.
    pub fn option_changed(
        &self,
        service: &ServiceView,
        option: &str,
        secret: bool,
        new: &OptionValue,
        previous: &OptionValue,
    ) -> Result<()> {
        let name = &service.name;
        let text = if !secret {
            format!("{name}: {option} = {new} (was {previous})")
        } else if new == previous {
            format!("{name}: {option} unchanged")
        } else if *new == OptionValue::String(String::new()) {
            format!("{name}: {option} changed (now empty)")
        } else {
            format!("{name}: {option} changed")
        };
        self.changed(&text, "service", service)
    }

    pub fn added(&self, manager: &Manager, record: &ServiceRecord) -> Result<()> {
        let first = record.clients.first();
        let key = first.and_then(|c| c.secret_key.as_ref()).map(|k| k.to_base32());
        let line = first.and_then(|c| c.secret_key.as_ref()).map(|k| k.auth_private_line(&record.address()));
        let secret = match (first, &key, &line) {
            (Some(c), Some(k), Some(l)) => Some(SecretView { name: c.name.as_str(), key: k, auth_private: l }),
            _ => None,
        };
        self.added_view(service_view(manager, record), manager.kind_of(record), &manager.data_dir(record), secret)
    }

    /// A new service and its first client's key, shown once.
    pub fn added_view(
        &self,
        service: ServiceView,
        kind: Option<&tails_server_core::catalog::KindDefinition>,
        data_dir: &std::path::Path,
        first_client: Option<SecretView<'_>>,
    ) -> Result<()> {
        #[derive(Serialize)]
        #[serde(rename_all = "kebab-case")]
        struct Added<'a> {
            #[serde(flatten)]
            service: &'a ServiceView,
            first_client: &'a Option<SecretView<'a>>,
        }
        if self.structured(&Added { service: &service, first_client: &first_client })? {
            return Ok(());
        }
        // "Added service mumble (mumble)" says nothing twice.
        let kind_note = if service.kind == service.name { String::new() } else { format!(" ({})", service.kind) };
        let mut t = format!("Added service {}{kind_note}. It is not enabled yet.\n\n", service.name);
        t += "Address (share it with the people who should reach the service):\n";
        t += &format!("    {}\n", service.address);
        if let Some(client) = &first_client {
            t += &credential_text(client.name, client.key, &steps(kind, &service, client.name));
        }
        for folder in kind.map(|k| k.persistent_paths.as_slice()).unwrap_or_default() {
            t += &format!("\nPut the files it serves in {}\n", data_dir.join(folder).display());
        }
        t += &format!("\nEnable it with: tails-server enable {}\n", service.name);
        self.human(&t)
    }

    pub fn client_added(&self, record: &ServiceRecord, client: &ClientRecord, steps: &str) -> Result<()> {
        let key = client.secret_key.as_ref().map(|k| k.to_base32());
        let line = client.secret_key.as_ref().map(|k| k.auth_private_line(&record.address()));
        let new_key = match (&key, &line) {
            (Some(key), Some(line)) => NewKey::Shown { key, line },
            _ => NewKey::PublicOnly,
        };
        self.client_added_view(
            record.name.as_str(),
            &record.address().to_string(),
            &client_view(client),
            new_key,
            steps,
        )
    }

    /// `client add` from the documents (client mode gets them from the service).
    pub fn client_added_view(
        &self,
        service: &str,
        address: &str,
        client: &ClientView,
        new_key: NewKey<'_>,
        steps: &str,
    ) -> Result<()> {
        let view = match new_key {
            NewKey::Shown { key, line } => Some(SecretView { name: client.name.as_str(), key, auth_private: line }),
            _ => None,
        };
        #[derive(Serialize)]
        #[serde(rename_all = "kebab-case")]
        struct Added<'a> {
            service: &'a str,
            address: &'a str,
            client: &'a ClientView,
            credential: Option<SecretView<'a>>,
        }
        if self.structured(&Added { service, address, client, credential: view })? {
            return Ok(());
        }
        let mut t = format!("Added client {} to service {service} ({address}).\n", client.name);
        match new_key {
            NewKey::Shown { key, .. } => t += &credential_text(client.name.as_str(), key, steps),
            NewKey::Withheld => {
                t += &format!(
                    "Its key is kept for it; show it with: tails-server client show {service} {}\n",
                    client.name
                )
            }
            NewKey::PublicOnly => t += "It was added with its public key: its holder already has the private key.\n",
        }
        self.human(&t)
    }

    pub fn clients(&self, record: &ServiceRecord) -> Result<()> {
        let views: Vec<_> = record.clients.iter().map(client_view).collect();
        self.client_list(record.name.as_str(), record.client_auth, &views)
    }

    /// `client list` from a service's document (client mode).
    pub fn client_views(&self, service: &ServiceView) -> Result<()> {
        self.client_list(&service.name, service.client_authorization, &service.clients)
    }

    fn client_list(&self, name: &str, client_auth: bool, views: &[ClientView]) -> Result<()> {
        if self.structured(&views)? {
            return Ok(());
        }
        if !client_auth {
            eprintln!("Service {name} has no client authorization: anyone with its address can connect.");
            return Ok(());
        }
        let width = views.iter().map(|v| v.name.len()).max().unwrap_or(6).max(6);
        let mut t = format!("{:width$}  {:20}  PRIVATE KEY\n", "CLIENT", "ADDED");
        for v in views {
            t += &format!(
                "{:width$}  {:20}  {}\n",
                v.name,
                v.created,
                if v.private_key_stored { "stored" } else { "not stored" }
            );
        }
        self.human(&t)
    }

    pub fn is_structured(&self) -> bool {
        self.format != Format::Human
    }

    /// `client show --as qr --format json|yaml`: the key's document, with the two codes.
    pub fn credential_qr(&self, who: &CredentialOf<'_>, value: &str, address_qr: &str, key_qr: &str) -> Result<()> {
        let view = CredentialView {
            service: who.service,
            client: who.client,
            address: who.address.to_owned(),
            form: "key",
            value,
        };
        #[derive(Serialize)]
        #[serde(rename_all = "kebab-case")]
        struct QrView<'a> {
            #[serde(flatten)]
            view: CredentialView<'a>,
            address_qr: &'a str,
            key_qr: &'a str,
        }
        self.structured(&QrView { view, address_qr, key_qr }).map(drop)
    }

    pub fn credential(&self, who: &CredentialOf<'_>, form: CredentialForm, value: &str) -> Result<()> {
        let form_name = match form {
            CredentialForm::Qr => unreachable!("QR codes are rendered by the caller"),
            CredentialForm::AuthPrivate => "auth-private",
            CredentialForm::Key => "key",
            CredentialForm::Auth => "auth",
        };
        let view = CredentialView {
            service: who.service,
            client: who.client,
            address: who.address.to_owned(),
            form: form_name,
            value,
        };
        if self.structured(&view)? {
            return Ok(());
        }
        self.human(&format!("{value}\n"))?;
        let (service, client, address) = (who.service, who.client, who.address);
        match form {
            CredentialForm::AuthPrivate => eprintln!(
                "This line is SECRET: it lets its holder reach {service}. Save it as {client}.auth_private in the \
                 directory named by tor's ClientOnionAuthDir."
            ),
            CredentialForm::Key => eprintln!(
                "This key is SECRET: give it only to {client}, privately. `tails-server info {service} --details` \
                 says how they connect to {address}."
            ),
            CredentialForm::Auth => eprintln!(
                "This is {client}'s public key, for the service side (authorized_clients/{client}.auth); it is not secret."
            ),
            CredentialForm::Qr => {}
        }
        Ok(())
    }
}

/// Whose credential is shown.
pub struct CredentialOf<'a> {
    pub service: &'a str,
    pub address: &'a str,
    pub client: &'a str,
}

/// One form of a client's credential: its name and the text.
pub fn credential_value(
    record: &ServiceRecord,
    client: &ClientRecord,
    form: CredentialForm,
) -> Result<(&'static str, zeroize::Zeroizing<String>)> {
    let secret = || {
        client.secret_key.as_ref().ok_or_else(|| tails_server_core::Error::NoPrivateKey {
            service: record.name.to_string(),
            client: client.name.to_string(),
        })
    };
    Ok(match form {
        CredentialForm::AuthPrivate => ("auth-private", secret()?.auth_private_line(&record.address())),
        CredentialForm::Key | CredentialForm::Qr => ("key", secret()?.to_base32()),
        CredentialForm::Auth => ("auth", zeroize::Zeroizing::new(client.public_key.auth_line())),
    })
}

/// A new client's key, as `client add` shows it.
#[derive(Clone, Copy)]
pub enum NewKey<'a> {
    /// The new key pair's secret forms: the key alone, and the `.auth_private` line.
    Shown { key: &'a str, line: &'a str },
    /// Added with its public key: its holder has the private key.
    PublicOnly,
    /// Made by the service and kept, not shown (the person's presence was not proven).
    Withheld,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct SecretView<'a> {
    pub name: &'a str,
    pub key: &'a str,
    pub auth_private: &'a str,
}

fn credential_text(client: &str, key: &str, steps: &str) -> String {
    format!(
        "\nKey of client {client} (SECRET: whoever holds it can reach the service; give it only to that \
         person, privately):\n    {key}\n\nHow {client} connects:\n{}",
        wrap(steps, "    ")
    )
}

/// Words wrapped at 88 columns, every line indented.
fn wrap(text: &str, indent: &str) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && indent.len() + line.len() + 1 + word.len() > 88 {
            out += &format!("{indent}{line}\n");
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line += word;
    }
    if !line.is_empty() {
        out += &format!("{indent}{line}\n");
    }
    out
}

/// How a client reaches a service of this kind (the catalog's words).
pub fn steps(kind: Option<&tails_server_core::catalog::KindDefinition>, service: &ServiceView, client: &str) -> String {
    tails_server_core::catalog::how_to_connect(kind, &service.name, &service.address, service.remote_port, client)
}

pub fn warn_no_client_auth(name: &ServiceName) {
    eprintln!(
        "\n\
         ************************************************************************\n\
         WARNING: client authorization is OFF for service {name}.\n\
         Anyone who learns its address can connect to it. Worse, Tails does not\n\
         keep its Tor entry guards across restarts, so someone who knows the\n\
         address gets a fresh chance, at every restart, to find out where your\n\
         computer is. With client authorization (the default) only the people\n\
         holding a client key can even find the service.\n\
         To undo this: tails-server remove {name}, then add it again without\n\
         --allow-anyone-with-the-address.\n\
         ************************************************************************\n"
    );
}
