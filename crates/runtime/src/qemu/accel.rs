//! Which accelerator QEMU uses: KVM only when the zones' own kernel really boots under it.
//!
//! `/dev/kvm` existing proves little, and neither does a tiny firmware running: under nested
//! virtualisation the Debian kernel can stop early in its boot with "KVM internal error ...
//! emulation failure" (an instruction the outer hypervisor does not emulate) while a probe
//! of a few instructions passes. So the probe boots the guest bundle's kernel with the zones'
//! machine and CPU model and no root file system: a kernel that runs its whole boot panics
//! with "VFS: Unable to mount root fs", `panic=-1` reboots, `-no-reboot` ends QEMU. That end,
//! with the panic on the serial console, within the timeout, means KVM runs zones; anything
//! else means TCG, with the reason.
//!
//! The verdict is cached per (kernel bytes, QEMU version, host kernel and CPU), so the probe
//! costs a boot once, not at every daemon start.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The accelerator zones run under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// What the operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccelChoice {
    /// KVM when the probe boot works, TCG otherwise.
    #[default]
    Auto,
    Kvm,
    Tcg,
}

/// The accelerator picked and why, in words for the log and host status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccelDecision {
    pub accel: Accel,
    pub reason: String,
}

/// How to probe KVM.
#[derive(Debug, Clone)]
pub struct KvmProbe {
    /// `qemu-system-x86_64`, or a path to it.
    pub qemu: String,
    /// QEMU's version line: part of the cache key.
    pub qemu_version: String,
    /// The kernel zones boot under KVM (the guest bundle's bzImage); `None` when unknown.
    pub kernel: Option<PathBuf>,
    /// Where the verdict is cached and the probe's console log is written.
    pub dir: PathBuf,
    /// How long the probe boot may take: a kernel reaches its root mount in well under a
    /// second under working KVM.
    pub timeout: Duration,
}

/// What the serial console shows once the kernel ran its whole boot (no root to mount).
const END_OF_BOOT: &str = "Kernel panic - not syncing";
/// Name of the verdict cache in [`KvmProbe::dir`].
const VERDICT_FILE: &str = "kvm-verdict.json";

/// A cached probe result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Verdict {
    key: String,
    kvm: bool,
    reason: String,
}

/// Decides the accelerator. `Kvm` as a choice is still probed, so a broken KVM is an error
/// at daemon start instead of hung zones.
pub fn decide(choice: AccelChoice, probe: &KvmProbe) -> Result<AccelDecision, String> {
    match choice {
        AccelChoice::Tcg => Ok(AccelDecision {
            accel: Accel::Tcg,
            reason: "configured: tcg".into(),
        }),
        AccelChoice::Auto => Ok(match probe.verdict() {
            Ok(why) => AccelDecision {
                accel: Accel::Kvm,
                reason: why,
            },
            Err(why) => AccelDecision {
                accel: Accel::Tcg,
                reason: format!("KVM unusable ({why}); using TCG"),
            },
        }),
        AccelChoice::Kvm => probe
            .verdict()
            .map(|why| AccelDecision {
                accel: Accel::Kvm,
                reason: format!("configured: kvm; {why}"),
            })
            .map_err(|why| format!("qemu.accel is kvm but KVM is unusable: {why}")),
    }
}

impl KvmProbe {
    /// Ok(why KVM works) or Err(why not), from the cache when its key matches.
    fn verdict(&self) -> Result<String, String> {
        if !Path::new("/dev/kvm").exists() {
            return Err("/dev/kvm is missing".into());
        }
        let Some(kernel) = &self.kernel else {
            return Err("no guest kernel to probe with".into());
        };
        let key = self.key(kernel)?;
        let cache = self.dir.join(VERDICT_FILE);
        if let Some(cached) = read_verdict(&cache).filter(|v| v.key == key) {
            let reason = format!("{} (cached probe result)", cached.reason);
            return if cached.kvm { Ok(reason) } else { Err(reason) };
        }
        let result = self.boot(kernel);
        let verdict = Verdict {
            key,
            kvm: result.is_ok(),
            reason: match &result {
                Ok(why) | Err(why) => why.clone(),
            },
        };
        if let Err(e) = write_verdict(&cache, &verdict) {
            tracing::warn!(
                "cannot cache the KVM probe's result in {}: {e}",
                cache.display()
            );
        }
        result
    }

    /// What the verdict depends on: the kernel's bytes, QEMU, the host's kernel and CPU.
    fn key(&self, kernel: &Path) -> Result<String, String> {
        let bytes = std::fs::read(kernel)
            .map_err(|e| format!("cannot read the guest kernel {}: {e}", kernel.display()))?;
        let host = rustix::system::uname();
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|l| l.starts_with("model name"))
                    .map(str::to_string)
            })
            .unwrap_or_default();
        Ok(format!(
            "kernel sha256:{} | {} | host {} {} | {cpu}",
            hex::encode(Sha256::digest(&bytes)),
            self.qemu_version,
            host.release().to_string_lossy(),
            host.version().to_string_lossy(),
        ))
    }

    /// Boots `kernel` under KVM to its root-mount panic; Ok(how long it took) in words.
    fn boot(&self, kernel: &Path) -> Result<String, String> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        let log_path = self
            .dir
            .join(format!("kvm-probe-{}.log", std::process::id()));
        let log = std::fs::File::create(&log_path)
            .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("cannot duplicate a file handle: {e}"))?;
        let vcpus = std::thread::available_parallelism().map_or(1, |n| n.get().min(2));
        let started = Instant::now();
        let spawned = Command::new(&self.qemu)
            // The zones' machine and CPU model (args.rs): what must work is what zones use.
            .args([
                "-accel", "kvm", "-M", "microvm", "-cpu", "host", "-m", "128",
            ])
            .args(["-smp", &vcpus.to_string()])
            .args(["-nodefaults", "-no-user-config", "-display", "none"])
            .args(["-serial", "stdio", "-no-reboot", "-kernel"])
            .arg(kernel)
            .args(["-append", "console=ttyS0 panic=-1 pci=off"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn();
        let result = match spawned {
            Err(e) => Err(format!("cannot run {}: {e}", self.qemu)),
            Ok(mut child) => {
                let status = loop {
                    match child.try_wait() {
                        Ok(Some(status)) => break Ok(status),
                        Ok(None) if started.elapsed() >= self.timeout => {
                            let _ = child.kill();
                            let _ = child.wait();
                            break Err(format!(
                                "the guest kernel did not finish booting under KVM within {} ms",
                                self.timeout.as_millis()
                            ));
                        }
                        Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                        Err(e) => {
                            let _ = child.kill();
                            let _ = child.wait();
                            break Err(format!("waiting for the probe VM: {e}"));
                        }
                    }
                };
                let output = std::fs::read(&log_path).unwrap_or_default();
                judge(status, &String::from_utf8_lossy(&output), started.elapsed())
            }
        };
        let _ = std::fs::remove_file(&log_path);
        result
    }
}

/// The probe's outcome from QEMU's end (or why it was stopped) and its console output.
fn judge(
    status: Result<std::process::ExitStatus, String>,
    output: &str,
    took: Duration,
) -> Result<String, String> {
    // What QEMU or the kernel said last is the useful part of a failure ("KVM internal
    // error. Suberror: 1", "emulation failure", a kernel oops).
    let last = || {
        output
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.contains("KVM") || l.contains("error") || l.contains("qemu"))
            .or_else(|| output.lines().rev().find(|l| !l.trim().is_empty()))
            .map(|l| format!(": {}", l.trim()))
            .unwrap_or_default()
    };
    match status {
        Err(why) => Err(format!("{why}{}", last())),
        Ok(status) if status.success() && output.contains(END_OF_BOOT) => Ok(format!(
            "the guest kernel booted under KVM in {} ms",
            took.as_millis()
        )),
        Ok(status) if status.success() => Err(format!(
            "the guest kernel ended under KVM before the end of its boot{}",
            last()
        )),
        Ok(status) => Err(format!("the probe VM ended with {status}{}", last())),
    }
}

fn read_verdict(path: &Path) -> Option<Verdict> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn write_verdict(path: &Path, verdict: &Verdict) -> std::io::Result<()> {
    let tmp = path.with_extension("json.new");
    std::fs::write(&tmp, serde_json::to_vec_pretty(verdict)?)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn probe(dir: &Path, qemu: &str, kernel: Option<PathBuf>) -> KvmProbe {
        KvmProbe {
            qemu: qemu.into(),
            qemu_version: "QEMU emulator version 0".into(),
            kernel,
            dir: dir.to_path_buf(),
            timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn tcg_choice_is_not_probed() {
        let d = decide(
            AccelChoice::Tcg,
            &probe(Path::new("/nonexistent"), "/nonexistent/qemu", None),
        )
        .unwrap();
        assert_eq!(d.accel, Accel::Tcg);
    }

    #[test]
    fn auto_without_a_kernel_falls_back_to_tcg_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let d = decide(AccelChoice::Auto, &probe(dir.path(), "qemu", None)).unwrap();
        assert_eq!(d.accel, Accel::Tcg);
        assert!(d.reason.contains("KVM unusable"), "{}", d.reason);
    }

    #[test]
    fn forced_kvm_that_cannot_run_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("kernel");
        std::fs::write(&kernel, b"not a kernel").unwrap();
        let e = decide(
            AccelChoice::Kvm,
            &probe(dir.path(), "/nonexistent/qemu", Some(kernel)),
        )
        .unwrap_err();
        assert!(e.contains("KVM is unusable"), "{e}");
    }

    #[test]
    fn only_a_boot_that_reached_its_end_counts() {
        let ok = std::process::ExitStatus::from_raw(0);
        let took = Duration::from_millis(420);
        let panic = "[    0.9] Kernel panic - not syncing: VFS: Unable to mount root fs\n";
        assert!(judge(Ok(ok), panic, took).unwrap().contains("420 ms"));
        // A triple fault early in boot also ends QEMU with 0 under -no-reboot.
        let early = judge(Ok(ok), "early console in setup code\n", took).unwrap_err();
        assert!(early.contains("before the end of its boot"), "{early}");
        let hung = judge(
            Err("the guest kernel did not finish booting under KVM within 10000 ms".into()),
            "KVM internal error. Suberror: 1\nemulation failure\nRAX=0\n",
            took,
        )
        .unwrap_err();
        assert!(hung.contains("KVM internal error"), "{hung}");
        let failed = judge(
            Ok(std::process::ExitStatus::from_raw(1 << 8)),
            "qemu-system-x86_64: linux kernel too old to load a ram disk\n",
            took,
        )
        .unwrap_err();
        assert!(failed.contains("too old"), "{failed}");
    }

    #[test]
    fn the_verdict_is_cached_per_key() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("kernel");
        std::fs::write(&kernel, b"kernel bytes").unwrap();
        let p = probe(dir.path(), "/nonexistent/qemu", Some(kernel.clone()));
        let key = p.key(&kernel).unwrap();
        write_verdict(
            &dir.path().join(VERDICT_FILE),
            &Verdict {
                key: key.clone(),
                kvm: true,
                reason: "the guest kernel booted under KVM in 1 ms".into(),
            },
        )
        .unwrap();
        if Path::new("/dev/kvm").exists() {
            // The QEMU binary does not exist: only the cache can say yes.
            let why = p.verdict().unwrap();
            assert!(why.contains("cached"), "{why}");
        }
        // Other kernel bytes: another key, a real probe (which fails here).
        std::fs::write(&kernel, b"other kernel bytes").unwrap();
        assert_ne!(p.key(&kernel).unwrap(), key);
        assert!(p.verdict().is_err());
    }
}
