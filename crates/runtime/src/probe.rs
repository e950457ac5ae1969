//! Which backends this host can run zones on, and why not the others.
//!
//! Xen is usable when `/dev/xen/privcmd` opens and xenstored answers; QEMU when
//! `qemu-system-x86_64 --version` runs. The daemon picks Xen first (`auto`), or the backend the
//! operator named.

use std::fmt;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A hypervisor backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    Xen,
    Qemu,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::Xen => "xen",
            BackendKind::Qemu => "qemu",
        })
    }
}

/// The outcome of probing one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendProbe {
    pub kind: BackendKind,
    pub usable: bool,
    /// What was found, or why it is not usable and what would fix it.
    pub detail: String,
}

/// Where the probes look; tests point these at temporary paths.
#[derive(Debug, Clone)]
pub struct HostProbe {
    pub privcmd: std::path::PathBuf,
    pub xenstored_socket: std::path::PathBuf,
    pub xenbus: std::path::PathBuf,
    pub qemu_binary: String,
}

impl Default for HostProbe {
    fn default() -> Self {
        HostProbe {
            privcmd: "/dev/xen/privcmd".into(),
            xenstored_socket: "/run/xenstored/socket".into(),
            xenbus: "/dev/xen/xenbus".into(),
            qemu_binary: "qemu-system-x86_64".into(),
        }
    }
}

impl HostProbe {
    /// Probes every backend, Xen first.
    pub fn probe_all(&self) -> Vec<BackendProbe> {
        vec![self.probe_xen(), self.probe_qemu()]
    }

    /// Xen: the privcmd device must open (we run in dom0 with the Xen modules loaded) and
    /// xenstored must accept a connection.
    pub fn probe_xen(&self) -> BackendProbe {
        let unusable = |detail: String| BackendProbe {
            kind: BackendKind::Xen,
            usable: false,
            detail,
        };
        if let Err(e) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.privcmd)
        {
            return unusable(match e.kind() {
                std::io::ErrorKind::NotFound => format!(
                    "{} is missing: this host is not a Xen dom0 (boot Xen, or load xen-privcmd)",
                    self.privcmd.display()
                ),
                _ => format!("cannot open {}: {e}", self.privcmd.display()),
            });
        }
        match UnixStream::connect(&self.xenstored_socket) {
            Ok(_) => BackendProbe {
                kind: BackendKind::Xen,
                usable: true,
                detail: format!(
                    "{} opens and xenstored answers on {}",
                    self.privcmd.display(),
                    self.xenstored_socket.display()
                ),
            },
            Err(_) if Path::new(&self.xenbus).exists() => BackendProbe {
                kind: BackendKind::Xen,
                usable: true,
                detail: format!(
                    "{} opens; xenstore through {}",
                    self.privcmd.display(),
                    self.xenbus.display()
                ),
            },
            Err(e) => unusable(format!(
                "xenstored does not answer on {} ({e}): start xenstored (systemctl start xenstored)",
                self.xenstored_socket.display()
            )),
        }
    }

    /// QEMU: the emulator must run and say its version.
    pub fn probe_qemu(&self) -> BackendProbe {
        match run_with_timeout(&self.qemu_binary, &["--version"], Duration::from_secs(10)) {
            Ok(out) => {
                let version = out.lines().next().unwrap_or("").trim().to_string();
                BackendProbe {
                    kind: BackendKind::Qemu,
                    usable: true,
                    detail: format!("{} runs: {version}", self.qemu_binary),
                }
            }
            Err(why) => BackendProbe {
                kind: BackendKind::Qemu,
                usable: false,
                detail: format!("{why} (install it: apt-get install qemu-system-x86)"),
            },
        }
    }
}

/// Runs a command and returns its stdout, or why it did not run.
fn run_with_timeout(program: &str, args: &[&str], timeout: Duration) -> Result<String, String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!("{program} is not installed"),
            _ => format!("{program} does not start: {e}"),
        })?;
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let mut out = String::new();
                if let Some(mut stdout) = child.stdout.take() {
                    // A short version banner; a read error leaves it empty.
                    let _ = stdout.read_to_string(&mut out);
                }
                return if status.success() {
                    Ok(out)
                } else {
                    Err(format!("{program} {} failed with {status}", args.join(" ")))
                };
            }
            Ok(None) if started.elapsed() < timeout => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{program} {} did not answer within {timeout:?}",
                    args.join(" ")
                ));
            }
            Err(e) => return Err(format!("waiting for {program} failed: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe_in(dir: &Path) -> HostProbe {
        HostProbe {
            privcmd: dir.join("privcmd"),
            xenstored_socket: dir.join("xenstored.sock"),
            xenbus: dir.join("xenbus"),
            qemu_binary: "qemu-system-x86_64".into(),
        }
    }

    fn tempdir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("spore-probe-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn xen_without_privcmd_says_not_dom0() {
        let dir = tempdir("noxen");
        let p = probe_in(&dir).probe_xen();
        assert!(!p.usable);
        assert!(p.detail.contains("not a Xen dom0"), "{}", p.detail);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn xen_with_privcmd_but_no_xenstored_says_start_it() {
        let dir = tempdir("noxs");
        std::fs::write(dir.join("privcmd"), b"").unwrap();
        let p = probe_in(&dir).probe_xen();
        assert!(!p.usable);
        assert!(p.detail.contains("start xenstored"), "{}", p.detail);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn xen_with_privcmd_and_xenstored_is_usable() {
        let dir = tempdir("xen");
        std::fs::write(dir.join("privcmd"), b"").unwrap();
        let _listener = std::os::unix::net::UnixListener::bind(dir.join("xenstored.sock")).unwrap();
        let p = probe_in(&dir).probe_xen();
        assert!(p.usable, "{}", p.detail);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn missing_qemu_says_what_to_install() {
        let probe = HostProbe {
            qemu_binary: "/nonexistent/qemu-system-x86_64".into(),
            ..HostProbe::default()
        };
        let p = probe.probe_qemu();
        assert!(!p.usable);
        assert!(p.detail.contains("is not installed"), "{}", p.detail);
        assert!(
            p.detail.contains("apt-get install qemu-system-x86"),
            "{}",
            p.detail
        );
    }

    #[test]
    fn installed_qemu_reports_its_version() {
        let p = HostProbe::default().probe_qemu();
        assert!(p.usable, "{}", p.detail);
        assert!(p.detail.contains("QEMU emulator version"), "{}", p.detail);
    }
}
