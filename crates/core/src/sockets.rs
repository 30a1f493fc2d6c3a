//! The kernel's TCP socket tables (`/proc/net/tcp`, `/proc/net/tcp6`): who owns a listening
//! port, and who serves one connection. Reading them needs no privilege and opens no
//! connection, which matters on Tails, where root may open local connections only to tor's
//! control port: who holds a port (the LAN's, for a program's door) and a control port's
//! owner are read here instead.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The tables, IPv4 then IPv6.
pub const TABLES: &[&str] = &["/proc/net/tcp", "/proc/net/tcp6"];

/// `st` of a listening socket in the tables.
const LISTEN: &str = "0A";

/// A listening TCP socket: its address and the user id that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    pub address: SocketAddr,
    pub uid: u32,
}

/// Every listening socket on `port`, from both tables (an unreadable table counts as empty).
pub fn listeners(port: u16) -> Vec<Listener> {
    let mut found = Vec::new();
    for table in TABLES {
        if let Ok(text) = std::fs::read_to_string(table) {
            found.extend(listeners_in(&text, port));
        }
    }
    found
}

/// The listening sockets on `port` in one table's text.
pub fn listeners_in(table: &str, port: u16) -> Vec<Listener> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, state, uid) = (fields.get(1)?, fields.get(3)?, fields.get(7)?);
            let address = parse_table_addr(local)?;
            (*state == LISTEN && address.port() == port).then_some(Listener { address, uid: uid.parse().ok()? })
        })
        .collect()
}

/// The owner of the socket serving the connection `client` → `server`, from the tables: an
/// accepted connection carries its listener's owner, so this is who answers *this*
/// connection (not whoever listens on the port now). Only once the server has accepted it
/// (a socket, inode ≠ 0): before, some kernels show root for it, whoever listens.
pub fn server_owner(server: SocketAddr, client: SocketAddr) -> Option<u32> {
    // Both tables as one: an exact match in either wins over a rewritten source in either.
    let text: String = TABLES.iter().filter_map(|table| std::fs::read_to_string(table).ok()).collect();
    connection_uid(&text, server, client)
}

/// Unmaps `::ffff:a.b.c.d`, so that either table's form compares equal.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

/// Parses one `ADDR:PORT` field of the kernel's tables. The kernel prints the address's
/// bytes (network order in memory) as 32-bit words read in host order: the words' native
/// bytes are the address.
fn parse_table_addr(field: &str) -> Option<SocketAddr> {
    let (hex_ip, hex_port) = field.split_once(':')?;
    let port = u16::from_str_radix(hex_port, 16).ok()?;
    let ip = match hex_ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(u32::from_str_radix(hex_ip, 16).ok()?.to_ne_bytes())),
        32 => {
            let mut octets = [0u8; 16];
            for (i, chunk) in hex_ip.as_bytes().chunks(8).enumerate() {
                let word = u32::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
                octets[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(canonical(SocketAddr::new(ip, port)))
}

/// The uid column of the entry for the server's end of the connection `client` → `server`.
/// Where a rule rewrote our source address on the way (a NAT rule for a bridge's address),
/// the server's end shows another remote address with our port: that entry counts when it is
/// the only one of the server with our port.
pub fn connection_uid(table: &str, server: SocketAddr, client: SocketAddr) -> Option<u32> {
    let (server, client) = (canonical(server), canonical(client));
    let entries: Vec<(SocketAddr, SocketAddr, u32)> = table
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, remote, uid, inode) = (fields.get(1)?, fields.get(2)?, fields.get(7)?, fields.get(9)?);
            // A connection not accepted yet has no socket: its owner is not known.
            (*inode != "0").then_some(())?;
            Some((parse_table_addr(local)?, parse_table_addr(remote)?, uid.parse().ok()?))
        })
        .collect();
    if let Some((_, _, uid)) = entries.iter().find(|(l, r, _)| *l == server && *r == client) {
        return Some(*uid);
    }
    let rewritten: Vec<u32> = entries
        .iter()
        .filter(|(l, r, _)| *l == server && r.port() == client.port() && r.port() != 0)
        .map(|(_, _, uid)| *uid)
        .collect();
    match rewritten.as_slice() {
        [uid] => Some(*uid),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str =
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
       0: 0100007F:2382 00000000:0000 0A 00000000:00000000 00:00000000 00000000   108        0 1 1 0\n\
       1: 0100007F:2382 0100007F:9C40 01 00000000:00000000 00:00000000 00000000   108        0 2 1 0\n\
       2: 0100007F:9C40 0100007F:2382 01 00000000:00000000 00:00000000 00000000  1000        0 3 1 0\n\
       3: 0100007F:2382 0100007F:9C41 01 00000000:00000000 00:00000000 00000000  1001        0 4 1 0\n\
       4: 00000000:FC32 00000000:0000 0A 00000000:00000000 00:00000000 00000000   117        0 5 1 0\n";

    fn at(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_owner_of_our_connection_is_read_from_the_kernel_table() {
        let server = at("127.0.0.1:9090");
        assert_eq!(connection_uid(TABLE, server, at("127.0.0.1:40000")), Some(108), "the server's end, not ours");
        assert_eq!(connection_uid(TABLE, server, at("127.0.0.1:40001")), Some(1001), "each connection its own");
        assert_eq!(connection_uid(TABLE, server, at("127.0.0.1:40002")), None);
        assert_eq!(connection_uid(TABLE, server, at("[::ffff:127.0.0.1]:40000")), Some(108), "v4-mapped");
        let table6 = "  sl  local_address                         remote_address                        st\n\
           0: 00000000000000000000000001000000:2382 00000000000000000000000001000000:9C40 01 00000000:00000000 00:00000000 00000000     0        0 1\n\
           1: 0000000000000000FFFF00000100007F:2383 0000000000000000FFFF00000100007F:9C40 01 00000000:00000000 00:00000000 00000000   108        0 2\n";
        assert_eq!(connection_uid(table6, at("[::1]:9090"), at("[::1]:40000")), Some(0));
        assert_eq!(connection_uid(table6, at("127.0.0.1:9091"), at("127.0.0.1:40000")), Some(108), "mapped in tcp6");
    }

    #[test]
    fn a_connection_the_server_has_not_accepted_yet_has_no_owner() {
        // Measured on Linux 6.18: before accept() the server's end has inode 0 and the
        // listener's uid. Nobody answers on it yet, so it proves nothing about who will.
        let table =
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
           0: 0100007F:A79F 00000000:0000 0A 00000000:00000000 00:00000000 00000000 65534        0 275874 1 0\n\
           1: 0100007F:EB9A 0100007F:A79F 01 00000000:00000000 00:00000000 00000000     0        0 274973 1 0\n\
           2: 0100007F:A79F 0100007F:EB9A 01 00000000:00000000 00:00000000 00000000 65534        0 0 1 0\n";
        assert_eq!(connection_uid(table, at("127.0.0.1:42911"), at("127.0.0.1:60314")), None);
        let accepted = table.replace("65534        0 0 1 0\n", "65534        0 276206 1 0\n");
        assert_eq!(connection_uid(&accepted, at("127.0.0.1:42911"), at("127.0.0.1:60314")), Some(65534));
    }

    #[test]
    fn a_source_address_rewritten_on_the_way_still_finds_the_server_s_end_when_it_is_the_only_one() {
        // Connected from 172.17.0.1:46678 to 172.17.0.1:53935; a NAT rule made the server see
        // 192.0.2.2:46678 (measured on this machine, Docker's bridge address).
        let table =
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
           0: 010011AC:D2AF 00000000:0000 0A 00000000:00000000 00:00000000 00000000   108        0 1 1 0\n\
          14: 010011AC:D2AF 020200C0:B656 01 00000000:00000000 00:00000000 00000000   108        0 2 1 0\n\
          62: 010011AC:B656 010011AC:D2AF 01 00000000:00000000 00:00000000 00000000     0        0 3 2 0\n";
        let (server, client) = (at("172.17.0.1:53935"), at("172.17.0.1:46678"));
        assert_eq!(connection_uid(table, server, client), Some(108));
        // Two of the server's connections with our port (from two addresses): undecidable.
        let twice = format!(
            "{table}  63: 010011AC:D2AF 030200C0:B656 01 00000000:00000000 00:00000000 00000000  1001        0 4 1 0\n"
        );
        assert_eq!(connection_uid(&twice, server, client), None);
    }

    #[test]
    fn listeners_are_the_listening_entries_of_a_port_with_their_owner() {
        assert_eq!(listeners_in(TABLE, 9090), vec![Listener { address: at("127.0.0.1:9090"), uid: 108 }]);
        assert_eq!(listeners_in(TABLE, 64562), vec![Listener { address: at("0.0.0.0:64562"), uid: 117 }]);
        assert!(listeners_in(TABLE, 40000).is_empty(), "a connection's end is not a listener");
        assert!(listeners_in("garbage\nnot a table at all\n", 9090).is_empty());
    }

    #[test]
    fn this_process_s_own_listener_is_found_with_its_uid() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let found = listeners(port);
        assert!(
            found.iter().any(|l| l.address == listener.local_addr().unwrap() && l.uid == crate::unix::euid()),
            "{found:?}"
        );
        drop(listener);
        assert!(listeners(port).is_empty());
    }
}
