//! Test support shared by spore's integration suites: where the guest bundle is, and a
//! [`Reaper`] that ends the zone VMs a test started even when the test fails or is killed.
//!
//! Tests only: no product crate depends on this one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// The guest bundle the QEMU suites boot: `SPORE_GUEST_DIR`, else `<repo>/target/guest`
/// (`kernel/build-bundle.sh` writes it). Panics naming the command when a file is missing.
pub fn guest_bundle() -> PathBuf {
    let dir = std::env::var_os("SPORE_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/guest"));
    for f in ["kernel", "vmlinux", "initrd"] {
        assert!(
            dir.join(f).is_file(),
            "guest bundle missing: {} has no {f}; run kernel/build-bundle.sh (or set SPORE_GUEST_DIR)",
            dir.display()
        );
    }
    dir
}

/// The workspace root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/testkit sits two levels below the workspace root")
        .to_path_buf()
}

/// What the watchdog runs once its stdin closes: SIGKILL to every zone QEMU under the zones
/// root `$1`, found by its pidfile and confirmed by the zone id in its command line (`-name
/// spore-<id>`), so a recycled pid is never hit. Prints what it killed, for the test log.
const REAP: &str = r#"
cat >/dev/null
for pidfile in "$1"/*/qemu.pid; do
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile" 2>/dev/null) || continue
  zone=$(basename "$(dirname "$pidfile")")
  if tr '\0' '\n' < "/proc/$pid/cmdline" 2>/dev/null | grep -q "^spore-$zone"; then
    kill -9 "$pid" && echo "testkit reaper: killed QEMU $pid of zone $zone (left by a failed test)" >&2
  fi
done
"#;

/// Ends the zone VMs under a zones root when the test that made them ends, however it ends:
/// on drop (a passing test, or a failing one unwinding), and, through a watchdog process in its
/// own session, when the test process is killed (a nextest timeout kills the test's process
/// group with SIGKILL; zone QEMUs run in sessions of their own, so nothing else ends them).
///
/// Declare it before the temporary directory that holds the zones root, so it runs first.
pub struct Reaper {
    /// The watchdog's stdin: closing it (drop, or the test process dying) sets it off.
    trigger: Option<ChildStdin>,
    watchdog: Child,
}

impl Reaper {
    /// Watches `zones_root` (`<state>/zones`: one directory per zone id holding `qemu.pid`).
    pub fn new(zones_root: &Path) -> Reaper {
        // setsid: out of the test's process group, so a timeout's group kill spares it.
        let mut watchdog = Command::new("setsid")
            .args(["sh", "-c", REAP, "spore-testkit-reaper"])
            .arg(zones_root)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start the reaper (setsid and sh, from util-linux and dash)");
        Reaper {
            trigger: watchdog.stdin.take(),
            watchdog,
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(mut trigger) = self.trigger.take() {
            let _ = trigger.flush();
        }
        // Wait (bounded) so the zones are gone before the caller removes their directories.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match self.watchdog.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| !s.contains(") Z ") && !s.contains(") X "))
    }

    /// A stand-in for a zone's QEMU: a process whose command line carries `spore-<zone>`.
    fn fake_zone(root: &Path, zone: &str) -> Child {
        // `read` is a builtin: one process, with the marker among its arguments.
        let child = Command::new("sh")
            .args(["-c", "read x", &format!("spore-{zone}")])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        std::fs::create_dir_all(root.join(zone)).unwrap();
        std::fs::write(root.join(zone).join("qemu.pid"), child.id().to_string()).unwrap();
        child
    }

    #[test]
    fn drop_kills_the_zones_and_only_them() {
        let dir = std::env::temp_dir().join(format!("spore-testkit-{}", std::process::id()));
        let root = dir.join("zones");
        let mut zone = fake_zone(&root, "0f0e0d0c-0000-4000-8000-000000000001");
        // A pidfile naming a process that is not that zone's: left alone.
        let mut stranger = Command::new("sleep").arg("60").spawn().unwrap();
        std::fs::create_dir_all(root.join("other")).unwrap();
        std::fs::write(root.join("other/qemu.pid"), stranger.id().to_string()).unwrap();
        drop(Reaper::new(&root));
        let _stdin = zone.stdin.take();
        let status = zone.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        assert!(
            alive(stranger.id()),
            "the reaper killed a process that was no zone's"
        );
        stranger.kill().unwrap();
        stranger.wait().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_killed_test_process_still_sets_it_off() {
        // The "test process" is a child holding the reaper's trigger; SIGKILL it as nextest
        // does on a timeout, and the zone still goes.
        let dir = std::env::temp_dir().join(format!("spore-testkit-k{}", std::process::id()));
        let root = dir.join("zones");
        let mut zone = fake_zone(&root, "0f0e0d0c-0000-4000-8000-000000000002");
        let mut reaper = Reaper::new(&root);
        let trigger = reaper.trigger.take().unwrap();
        let mut holder = Command::new("sleep")
            .arg("60")
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(trigger)))
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert!(alive(zone.id()), "set off before its trigger closed");
        holder.kill().unwrap();
        holder.wait().unwrap();
        // wait() would close the zone's stdin, which ends `read`: keep it open.
        let _stdin = zone.stdin.take();
        let status = zone.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        drop(reaper);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
