//! Which accelerator QEMU uses: KVM only when a probe VM really runs under it.
//!
//! `/dev/kvm` existing proves little: with nested virtualisation the device opens and a VM can
//! still hang on its first instruction. The probe boots a 64 KiB firmware whose reset vector
//! writes to QEMU's `isa-debug-exit` port; QEMU then exits with status `(1 << 1) | 1 = 3`. That
//! status within the timeout means KVM runs guest code; anything else means TCG. The probe uses
//! the zones' machine and CPU model, since those are what must work.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
    /// KVM when the probe VM runs, TCG otherwise.
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

/// The exit status QEMU reports after the firmware writes 1 to the debug-exit port.
const PROBE_EXIT: i32 = 3;

/// 64 KiB of firmware (QEMU wants a multiple of 64 KiB); the CPU starts at 0xFFFF0, which is
/// offset 0xFFF0 of a BIOS mapped just below 1 MiB: `mov al, 1; out 0xf4, al; hlt`.
fn probe_firmware() -> Vec<u8> {
    let mut rom = vec![0xf4u8; 64 * 1024];
    rom[0xfff0..0xfff5].copy_from_slice(&[0xb0, 0x01, 0xe6, 0xf4, 0xf4]);
    rom
}

/// Decides the accelerator. `Kvm` as a choice is still probed, so a broken KVM is an error
/// at daemon start instead of hung zones.
pub fn decide(
    qemu: &str,
    choice: AccelChoice,
    scratch: &Path,
    timeout: Duration,
) -> Result<AccelDecision, String> {
    match choice {
        AccelChoice::Tcg => Ok(AccelDecision {
            accel: Accel::Tcg,
            reason: "configured: tcg".into(),
        }),
        AccelChoice::Auto => Ok(match probe_kvm(qemu, scratch, timeout) {
            Ok(took) => AccelDecision {
                accel: Accel::Kvm,
                reason: format!("a KVM probe VM ran in {} ms", took.as_millis()),
            },
            Err(why) => AccelDecision {
                accel: Accel::Tcg,
                reason: format!("KVM unusable ({why}); using TCG"),
            },
        }),
        AccelChoice::Kvm => probe_kvm(qemu, scratch, timeout)
            .map(|took| AccelDecision {
                accel: Accel::Kvm,
                reason: format!("configured: kvm; a probe VM ran in {} ms", took.as_millis()),
            })
            .map_err(|why| format!("qemu.accel is kvm but KVM is unusable: {why}")),
    }
}

/// Runs the probe VM under KVM; returns how long it took, or why KVM is unusable.
fn probe_kvm(qemu: &str, scratch: &Path, timeout: Duration) -> Result<Duration, String> {
    if !Path::new("/dev/kvm").exists() {
        return Err("/dev/kvm is missing".into());
    }
    std::fs::create_dir_all(scratch)
        .map_err(|e| format!("cannot create {}: {e}", scratch.display()))?;
    let firmware = scratch.join(format!("kvm-probe-{}.rom", std::process::id()));
    std::fs::write(&firmware, probe_firmware())
        .map_err(|e| format!("cannot write {}: {e}", firmware.display()))?;
    let started = Instant::now();
    let result = Command::new(qemu)
        // The zones' machine and CPU model: nested KVM can run a default-CPU VM and still
        // abort on `-cpu host` (an MSR the outer hypervisor refuses).
        .args(["-accel", "kvm", "-M", "microvm", "-cpu", "host", "-m", "16"])
        .arg("-nodefaults")
        .args(["-no-user-config", "-display", "none", "-bios"])
        .arg(&firmware)
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {qemu}: {e}"))
        .and_then(|mut child| {
            let outcome = loop {
                match child.try_wait() {
                    Ok(Some(status)) => break Ok(status),
                    Ok(None) if started.elapsed() >= timeout => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break Err(format!(
                            "the probe VM did not finish within {} ms",
                            timeout.as_millis()
                        ));
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                    Err(e) => break Err(format!("waiting for the probe VM: {e}")),
                }
            };
            let mut stderr = String::new();
            if let Some(mut err) = child.stderr.take() {
                let _ = err.read_to_string(&mut stderr);
            }
            let status = outcome?;
            if status.code() == Some(PROBE_EXIT) {
                Ok(started.elapsed())
            } else {
                Err(format!(
                    "the probe VM ended with {status}: {}",
                    stderr.trim().lines().last().unwrap_or("no message")
                ))
            }
        });
    let _ = std::fs::remove_file(&firmware);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firmware_reset_vector_exits_through_the_debug_port() {
        let rom = probe_firmware();
        assert_eq!(rom.len() % 65536, 0);
        assert_eq!(&rom[0xfff0..0xfff5], &[0xb0, 0x01, 0xe6, 0xf4, 0xf4]);
    }

    #[test]
    fn tcg_choice_is_not_probed() {
        let d = decide(
            "/nonexistent/qemu",
            AccelChoice::Tcg,
            Path::new("/nonexistent"),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(d.accel, Accel::Tcg);
    }

    #[test]
    fn auto_falls_back_to_tcg_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let d = decide(
            "/nonexistent/qemu",
            AccelChoice::Auto,
            dir.path(),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(d.accel, Accel::Tcg);
        assert!(d.reason.contains("KVM unusable"), "{}", d.reason);
    }

    #[test]
    fn forced_kvm_that_cannot_run_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = decide(
            "/nonexistent/qemu",
            AccelChoice::Kvm,
            dir.path(),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(e.contains("KVM is unusable"), "{e}");
    }
}
