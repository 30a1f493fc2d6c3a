//! Who may call what. Every method names one polkit action (read, change, reveal a secret);
//! the caller is checked per call, through the polkit authority on the system bus, as
//! Tails' own Persistent Storage service does. A second backend, an allow-list of user ids,
//! exists for tests on a private bus where no polkit runs; it is never the default.

use std::collections::HashMap;

use tails_server_dbus::ServiceError;

#[zbus::proxy(
    interface = "org.freedesktop.PolicyKit1.Authority",
    default_service = "org.freedesktop.PolicyKit1",
    default_path = "/org/freedesktop/PolicyKit1/Authority"
)]
trait PolkitAuthority {
    #[allow(clippy::type_complexity)]
    fn check_authorization(
        &self,
        subject: &(&str, HashMap<&str, zbus::Variant<'_>>),
        action_id: &str,
        details: HashMap<&str, &str>,
        flags: u32,
        cancellation_id: &str,
    ) -> zbus::Result<(bool, bool, HashMap<String, String>)>;
}

/// polkit may ask the user (an administration password) when the action's defaults say so.
const ALLOW_USER_INTERACTION: u32 = 1;

#[derive(Debug, Clone)]
pub enum Authority {
    /// `org.freedesktop.PolicyKit1` decides (the default, and the only one for real use).
    Polkit,
    /// Callers running as one of these user ids may do everything: for tests on a
    /// private bus without polkit.
    AllowUids(Vec<u32>),
}

impl Authority {
    /// Parses `polkit` or `uids:0,1000`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text == "polkit" {
            return Ok(Authority::Polkit);
        }
        let list = text.strip_prefix("uids:").ok_or_else(|| format!("{text:?}: expected polkit or uids:UID,..."))?;
        list.split(',')
            .map(|u| u.trim().parse().map_err(|_| format!("{u:?} is not a user id")))
            .collect::<Result<_, _>>()
            .map(Authority::AllowUids)
    }

    /// Refuses the call unless `sender` may do `action`.
    pub async fn check(&self, connection: &zbus::Connection, sender: &str, action: &str) -> Result<(), ServiceError> {
        let refused = || {
            ServiceError::NotAuthorized(format!(
                "not authorized: {action} was refused to this caller (polkit decides; see \"Who can do \
                 what\" in /usr/share/doc/tails-server/dbus.md)"
            ))
        };
        match self {
            Authority::AllowUids(uids) => {
                let dbus = zbus::fdo::DBusProxy::new(connection).await?;
                let name = zbus::names::BusName::try_from(sender).map_err(|e| ServiceError::Failed(e.to_string()))?;
                let uid = dbus.get_connection_unix_user(name).await.map_err(|e| ServiceError::Failed(e.to_string()))?;
                if uids.contains(&uid) {
                    Ok(())
                } else {
                    Err(refused())
                }
            }
            Authority::Polkit => {
                let polkit = PolkitAuthorityProxy::new(connection).await?;
                let subject = ("system-bus-name", HashMap::from([("name", zbus::Variant::from(sender))]));
                let (authorized, _, _) = polkit
                    .check_authorization(&subject, action, HashMap::new(), ALLOW_USER_INTERACTION, "")
                    .await
                    .map_err(|e| ServiceError::NotAuthorized(format!("cannot ask polkit about {action}: {e}")))?;
                if authorized {
                    Ok(())
                } else {
                    Err(refused())
                }
            }
        }
    }
}
