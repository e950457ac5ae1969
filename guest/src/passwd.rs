//! `/etc/passwd` and `/etc/group` of the image, and resolving a docker `--user` value against
//! them the way runc does (libcontainer/user `GetExecUser`).
//!
//! The files come from the image, so they are untrusted: malformed lines are skipped, numbers
//! are range-checked, nothing panics.

use std::fmt;

/// The highest id runc accepts (ids are int32 in its API).
const MAX_ID: u64 = i32::MAX as u64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

fn parse_id(s: &str) -> Option<u32> {
    let n: u64 = s.parse().ok()?;
    (n <= MAX_ID).then_some(n as u32)
}

/// Parses passwd lines `name:password:uid:gid:gecos:home:shell`, skipping bad ones.
pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 || f[0].is_empty() {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: parse_id(f[2])?,
                gid: parse_id(f[3])?,
                home: f.get(5).map(|h| h.to_string()).unwrap_or_default(),
            })
        })
        .collect()
}

/// Parses group lines `name:password:gid:member,member`, skipping bad ones.
pub fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 3 || f[0].is_empty() {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: parse_id(f[2])?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Who the workload runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (setgroups); empty clears root's.
    pub groups: Vec<u32>,
    pub home: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserError {
    /// A name that is not in /etc/passwd (numeric uids need no entry).
    NoSuchUser(String),
    NoSuchGroup(String),
    IdOutOfRange(String),
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserError::NoSuchUser(u) => write!(
                f,
                "unable to find user {u}: no matching entries in the image's /etc/passwd"
            ),
            UserError::NoSuchGroup(g) => write!(
                f,
                "unable to find group {g}: no matching entries in the image's /etc/group"
            ),
            UserError::IdOutOfRange(id) => {
                write!(f, "id {id} is out of range (0 to {MAX_ID})")
            }
        }
    }
}

fn numeric(s: &str) -> Result<Option<u32>, UserError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    parse_id(s)
        .map(Some)
        .ok_or_else(|| UserError::IdOutOfRange(s.to_string()))
}

/// Resolves `spec` (`""`, `name`, `uid`, `name:group`, `uid:gid`, ...) like runc:
/// - a user found by name (or by uid if numeric) gives uid, primary gid and home;
/// - a numeric uid without an entry runs with gid 0 and home `/`;
/// - an explicit group (name or gid) sets the primary gid and no supplementary groups;
/// - otherwise the supplementary groups are those listing the user's name as a member.
pub fn resolve_user(
    spec: &str,
    passwd: &[PasswdEntry],
    groups: &[GroupEntry],
) -> Result<User, UserError> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    // An empty user part means root, as docker's default.
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let uid_arg = numeric(user_part)?;
    let entry = passwd.iter().find(|e| match uid_arg {
        Some(uid) => e.uid == uid,
        None => e.name == user_part,
    });
    let mut user = match (entry, uid_arg) {
        (Some(e), _) => User {
            uid: e.uid,
            gid: e.gid,
            groups: Vec::new(),
            home: if e.home.is_empty() {
                "/".into()
            } else {
                e.home.clone()
            },
        },
        (None, Some(uid)) => User {
            uid,
            gid: 0,
            groups: Vec::new(),
            home: "/".into(),
        },
        (None, None) => return Err(UserError::NoSuchUser(user_part.to_string())),
    };
    match group_part.filter(|g| !g.is_empty()) {
        Some(group) => {
            user.gid = match numeric(group)? {
                Some(gid) => gid,
                None => groups
                    .iter()
                    .find(|g| g.name == group)
                    .map(|g| g.gid)
                    .ok_or_else(|| UserError::NoSuchGroup(group.to_string()))?,
            };
        }
        None => {
            if let Some(e) = entry {
                let mut sgids: Vec<u32> = groups
                    .iter()
                    .filter(|g| g.members.contains(&e.name))
                    .map(|g| g.gid)
                    .collect();
                sgids.dedup();
                user.groups = sgids;
            }
        }
    }
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
# a comment
broken line
app:x:1000:1000:App,,,:/home/app:/bin/sh
nohome:x:1001:50::
huge:x:99999999999:1:::
web:x:33:33:www-data:/var/www:/bin/false
";

    const GROUP: &str = "\
root:x:0:
daemon:x:1:
staff:x:50:app,web
app:x:1000:
video:x:44:app
bad:x:notanumber:app
";

    fn resolve(spec: &str) -> Result<User, UserError> {
        resolve_user(spec, &parse_passwd(PASSWD), &parse_group(GROUP))
    }

    fn user(uid: u32, gid: u32, groups: &[u32], home: &str) -> User {
        User {
            uid,
            gid,
            groups: groups.to_vec(),
            home: home.into(),
        }
    }

    #[test]
    fn parsing_skips_bad_lines() {
        let p = parse_passwd(PASSWD);
        assert_eq!(
            p.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            ["root", "daemon", "app", "nohome", "web"]
        );
        let g = parse_group(GROUP);
        assert_eq!(g.len(), 5);
        assert_eq!(g[2].members, ["app", "web"]);
    }

    #[test]
    fn docker_user_cases() {
        // (spec, expected) — the cases docker/runc documents for --user.
        let cases: Vec<(&str, Result<User, UserError>)> = vec![
            ("", Ok(user(0, 0, &[], "/root"))),
            ("root", Ok(user(0, 0, &[], "/root"))),
            ("app", Ok(user(1000, 1000, &[50, 44], "/home/app"))),
            ("1000", Ok(user(1000, 1000, &[50, 44], "/home/app"))),
            ("app:staff", Ok(user(1000, 50, &[], "/home/app"))),
            ("app:44", Ok(user(1000, 44, &[], "/home/app"))),
            ("1000:1000", Ok(user(1000, 1000, &[], "/home/app"))),
            // Numeric ids without entries are allowed: gid 0, home /.
            ("4242", Ok(user(4242, 0, &[], "/"))),
            ("4242:4343", Ok(user(4242, 4343, &[], "/"))),
            ("4242:staff", Ok(user(4242, 50, &[], "/"))),
            ("nohome", Ok(user(1001, 50, &[], "/"))),
            ("web:", Ok(user(33, 33, &[50], "/var/www"))),
            (":staff", Ok(user(0, 50, &[], "/root"))),
            ("nobody", Err(UserError::NoSuchUser("nobody".into()))),
            ("app:wheel", Err(UserError::NoSuchGroup("wheel".into()))),
            (
                "99999999999",
                Err(UserError::IdOutOfRange("99999999999".into())),
            ),
            (
                "1:2147483648",
                Err(UserError::IdOutOfRange("2147483648".into())),
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(resolve(spec), want, "--user {spec:?}");
        }
    }

    #[test]
    fn missing_files_allow_numeric_only() {
        assert_eq!(resolve_user("7:8", &[], &[]), Ok(user(7, 8, &[], "/")));
        assert_eq!(resolve_user("", &[], &[]), Ok(user(0, 0, &[], "/")));
        assert_eq!(
            resolve_user("app", &[], &[]),
            Err(UserError::NoSuchUser("app".into()))
        );
    }

    #[test]
    fn hostile_files_do_not_panic() {
        let junk = ":::::\n::\n\u{0}\u{1}:x:1:1\nx:x:-1:0\nx:x:1:18446744073709551616\n".repeat(50);
        assert!(parse_passwd(&junk).iter().all(|e| e.uid <= MAX_ID as u32));
        assert!(parse_group(&junk).iter().all(|e| e.gid <= MAX_ID as u32));
        let _ = resolve_user("x", &parse_passwd(&junk), &parse_group(&junk));
    }
}
