//! allow-lan-connections: the firewall rules that let the local networks reach a port.
//! Tails drops every incoming connection except through rules added with its session
//! helper; the program's door then also listens on the port of every IPv4 address, and the
//! rules admit only the private ranges.

use std::path::Path;

use crate::error::{Error, Result};

/// Tails' helper that adds an iptables rule for this session (kept across the firewall
/// reloads that every network change causes).
pub const SESSION_FIREWALL_HELPER: &str = "/usr/local/sbin/tails-add-session-firewall-rule";

/// The networks a "LAN" is: RFC 1918's private ranges.
pub const PRIVATE_RANGES: &[&str] = &["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"];

/// The iptables arguments that let the LAN reach `port` over TCP, one rule per range.
pub fn firewall_rules(port: u16) -> Vec<Vec<String>> {
    PRIVATE_RANGES
        .iter()
        .map(|range| {
            ["-I", "INPUT", "-s", range, "-p", "tcp", "--dport", &port.to_string(), "-j", "ACCEPT"]
                .iter()
                .map(|s| s.to_string())
                .collect()
        })
        .collect()
}

/// Opens `port` to the LAN for this session, through Tails' helper (run by systemd, as
/// root: the firewall is beyond tails-server's own sandbox).
pub async fn open(systemd: &super::systemd::Systemd, service: &crate::names::ServiceName, port: u16) -> Result<()> {
    for (i, rule) in firewall_rules(port).into_iter().enumerate() {
        let mut argv = vec![SESSION_FIREWALL_HELPER.to_owned(), "--apply".to_owned()];
        argv.extend(rule);
        systemd.run(&lan_unit(service, "open", i), &argv).await?;
    }
    Ok(())
}

/// Closes what [`open`] opened: deletes the rules (every copy) and takes them out of the
/// session's list, so that the next firewall reload does not add them again. Fails if a
/// rule is still there afterwards.
pub async fn close(systemd: &super::systemd::Systemd, service: &crate::names::ServiceName, port: u16) -> Result<()> {
    for (i, rule) in firewall_rules(port).into_iter().enumerate() {
        // The helper stores each rule as its arguments joined by spaces.
        let line = rule.join(" ");
        let spec = rule[2..].join(" ");
        // Only our own fixed strings (ranges, a port number) reach this shell.
        let script = format!(
            "while iptables -C INPUT {spec} 2>/dev/null; do iptables -D INPUT {spec} || exit 1; done; \
             f={SESSION_RULES}; if [ -f \"$f\" ]; then grep -vxF -e '{line}' \"$f\" > \"$f.new\"; \
             mv \"$f.new\" \"$f\" || exit 1; fi; ! grep -qxF -e '{line}' \"$f\" 2>/dev/null"
        );
        let argv = vec!["/bin/sh".to_owned(), "-c".to_owned(), script];
        systemd.run(&lan_unit(service, "close", i), &argv).await?;
    }
    Ok(())
}

/// A dot cannot appear in a service name, so these never clash with a service's own unit.
fn lan_unit(service: &crate::names::ServiceName, what: &str, i: usize) -> String {
    format!("tails-server.lan.{service}.{what}-{i}.service")
}

/// Where Tails' helper keeps the session's rules (replayed at every firewall reload).
pub const SESSION_RULES: &str = "/var/lib/iptables/session-rules";

/// Fails with a clear "not supported here" when this system has no session firewall helper.
pub fn check_supported(helper: &Path) -> Result<()> {
    if helper.is_file() {
        return Ok(());
    }
    Err(Error::NotSupported {
        what: "allow-lan-connections".into(),
        reason: format!(
            "it needs Tails' firewall helper {}, which this system does not have; \
             set allow-lan-connections to false",
            helper.display()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_open_the_port_to_private_ranges_only() {
        let rules = firewall_rules(64738);
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[0].join(" "), "-I INPUT -s 10.0.0.0/8 -p tcp --dport 64738 -j ACCEPT");
    }

    #[test]
    fn a_missing_helper_is_not_supported_here() {
        let error = check_supported(Path::new("/nonexistent/helper")).unwrap_err();
        assert!(
            error.to_string().contains("allow-lan-connections") && error.to_string().contains("/nonexistent/helper")
        );
    }
}
