//! Who may use the control socket: root, or members of group `spore`. Checked on every
//! request from the connection's peer credentials (SO_PEERCRED), so a socket mode mistake
//! cannot widen access.

use std::path::Path;

use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Status};

/// The group whose members may use spored besides root.
pub const GROUP: &str = "spore";

/// The gid of a group named in an /etc/group-format file.
pub fn group_gid(group_file: &Path, name: &str) -> Option<u32> {
    let text = std::fs::read_to_string(group_file).ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name)
            .then(|| fields.nth(1)?.parse().ok())
            .flatten()
    })
}

/// The supplementary groups of a process, from /proc/PID/status.
fn process_groups(pid: i32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|groups| {
            groups
                .split_whitespace()
                .filter_map(|g| g.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a peer may use the API.
pub fn allowed(uid: u32, gid: u32, pid: Option<i32>, spore_gid: Option<u32>) -> bool {
    if uid == 0 {
        return true;
    }
    let Some(spore_gid) = spore_gid else {
        return false;
    };
    gid == spore_gid || pid.is_some_and(|pid| process_groups(pid).contains(&spore_gid))
}

/// The interceptor applied to every service.
pub fn check(request: Request<()>) -> Result<Request<()>, Status> {
    let cred = request
        .extensions()
        .get::<UdsConnectInfo>()
        .and_then(|info| info.peer_cred);
    let Some(cred) = cred else {
        tracing::warn!("refused a request without peer credentials");
        return Err(Status::permission_denied(
            "spored could not read the caller's credentials",
        ));
    };
    let spore_gid = group_gid(Path::new("/etc/group"), GROUP);
    if allowed(cred.uid(), cred.gid(), cred.pid(), spore_gid) {
        return Ok(request);
    }
    tracing::warn!(
        uid = cred.uid(),
        gid = cred.gid(),
        pid = cred.pid(),
        "refused a caller that is neither root nor in group {GROUP}"
    );
    Err(Status::permission_denied(format!(
        "uid {} may not use spored: run as root or join group {GROUP}",
        cred.uid()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_allowed_and_strangers_are_not() {
        assert!(allowed(0, 0, None, None));
        assert!(!allowed(1000, 1000, None, None));
        assert!(!allowed(1000, 1000, None, Some(999)));
        assert!(allowed(1000, 999, None, Some(999)));
    }

    #[test]
    fn supplementary_group_membership_counts() {
        // This test process's own supplementary groups, read back through /proc.
        let me = std::process::id() as i32;
        if let Some(&g) = process_groups(me).first() {
            assert!(allowed(1000, 1000, Some(me), Some(g)));
        }
        assert!(!allowed(1000, 1000, Some(me), Some(4_000_000)));
    }

    #[test]
    fn group_file_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("group");
        std::fs::write(&file, "root:x:0:\nspore:x:977:alice,bob\nbroken\n").unwrap();
        assert_eq!(group_gid(&file, "spore"), Some(977));
        assert_eq!(group_gid(&file, "root"), Some(0));
        assert_eq!(group_gid(&file, "nobody"), None);
    }
}
