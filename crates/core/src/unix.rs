//! The few facts about Unix users the library needs: who we run as, and which user ids
//! stand behind a name. Read from `/etc/passwd` rather than NSS: the names that matter
//! (root, tor's own user) are local system users.

/// The effective user id of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The user id of a local user, or None when there is no such user.
pub fn uid_of(name: &str) -> Option<u32> {
    passwd_entries().find(|(n, _)| n == name).map(|(_, uid)| uid)
}

/// The user id and primary group id of a local user.
pub fn ids_of(name: &str) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() > 3 && fields[0] == name).then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))?
    })
}

/// The name of a user id, for messages.
pub fn name_of(uid: u32) -> Option<String> {
    passwd_entries().find(|(_, u)| *u == uid).map(|(n, _)| n)
}

fn passwd_entries() -> impl Iterator<Item = (String, u32)> {
    let text = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?.to_owned();
            let uid = fields.nth(1)?.parse().ok()?;
            Some((name, uid))
        })
        .collect::<Vec<_>>()
        .into_iter()
}

/// "uid 1001 (mallory)", or "uid 1001" for a user id without a name.
pub fn describe_uid(uid: u32) -> String {
    match name_of(uid) {
        Some(name) => format!("uid {uid} ({name})"),
        None => format!("uid {uid}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_uid_zero() {
        assert_eq!(uid_of("root"), Some(0));
        assert_eq!(name_of(0).as_deref(), Some("root"));
        assert_eq!(uid_of("no-such-user-here"), None);
    }
}
