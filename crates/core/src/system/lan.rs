//! allow-lan-connections: the addresses of this computer on its local networks, and the
//! firewall rule that lets those networks reach a port. Tails drops every incoming
//! connection except through rules added with its session helper.

use std::net::Ipv4Addr;
use std::path::Path;

use crate::error::{Error, Result};

/// Tails' helper that adds an iptables rule for this session (kept across the firewall
/// reloads that every network change causes).
pub const SESSION_FIREWALL_HELPER: &str = "/usr/local/sbin/tails-add-session-firewall-rule";

/// The networks a "LAN" is: RFC 1918's private ranges.
pub const PRIVATE_RANGES: &[&str] = &["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"];

/// Whether an address is on a private network (RFC 1918).
pub fn is_lan(address: Ipv4Addr) -> bool {
    address.is_private()
}

/// This computer's private IPv4 addresses, in interface order.
pub fn lan_addresses() -> Vec<Ipv4Addr> {
    let mut found = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list freed below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return found;
    }
    let mut cursor = list;
    while !cursor.is_null() {
        // SAFETY: `cursor` walks the list getifaddrs returned; ifa_addr may be null.
        let entry = unsafe { &*cursor };
        if !entry.ifa_addr.is_null() && unsafe { (*entry.ifa_addr).sa_family } as i32 == libc::AF_INET {
            // SAFETY: an AF_INET address is a sockaddr_in.
            let sin = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in) };
            let address = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            if is_lan(address) && !found.contains(&address) {
                found.push(address);
            }
        }
        cursor = entry.ifa_next;
    }
    // SAFETY: `list` came from getifaddrs.
    unsafe { libc::freeifaddrs(list) };
    found
}

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
        systemd.run(&format!("tails-server-lan-{service}-{i}.service"), &argv).await?;
    }
    Ok(())
}

/// Closes what [`open`] opened: deletes the rules and takes them out of the session's list,
/// so that the next firewall reload does not add them again.
pub async fn close(systemd: &super::systemd::Systemd, service: &crate::names::ServiceName, port: u16) -> Result<()> {
    for (i, rule) in firewall_rules(port).into_iter().enumerate() {
        let line = rule.join(" ");
        let delete = rule.iter().map(|a| if a == "-I" { "-D".to_owned() } else { a.clone() }).collect::<Vec<_>>().join(" ");
        // Only our own fixed strings (ranges, a port number) reach this shell.
        let script = format!(
            "iptables {delete} 2>/dev/null; f={SESSION_RULES}; \
             if [ -f \"$f\" ]; then grep -vxF -e '{line}' \"$f\" > \"$f.new\"; mv \"$f.new\" \"$f\"; fi; exit 0"
        );
        let argv = vec!["/bin/sh".to_owned(), "-c".to_owned(), script];
        systemd.run(&format!("tails-server-lan-{service}-close-{i}.service"), &argv).await?;
    }
    Ok(())
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
    fn only_private_ranges_are_lan() {
        assert!(is_lan(Ipv4Addr::new(192, 168, 1, 2)) && is_lan(Ipv4Addr::new(10, 1, 2, 3)));
        assert!(is_lan(Ipv4Addr::new(172, 20, 0, 1)) && !is_lan(Ipv4Addr::new(172, 32, 0, 1)));
        assert!(!is_lan(Ipv4Addr::LOCALHOST) && !is_lan(Ipv4Addr::new(8, 8, 8, 8)));
        // The loopback address is always there but is no LAN address.
        assert!(!lan_addresses().contains(&Ipv4Addr::LOCALHOST));
    }

    #[test]
    fn rules_open_the_port_to_private_ranges_only() {
        let rules = firewall_rules(64738);
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[0].join(" "), "-I INPUT -s 10.0.0.0/8 -p tcp --dport 64738 -j ACCEPT");
    }

    #[test]
    fn a_missing_helper_is_not_supported_here() {
        let error = check_supported(Path::new("/nonexistent/helper")).unwrap_err();
        assert!(error.to_string().contains("allow-lan-connections") && error.to_string().contains("/nonexistent/helper"));
    }
}
