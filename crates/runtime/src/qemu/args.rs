//! The QEMU command line of a zone, and the files it uses in the zone directory.
//!
//! The machine is `microvm`: no PCI, no firmware tables to build, virtio devices on MMIO. The
//! guest bundle's initrd carries `virtio_mmio`, `virtio_blk` and `virtio_console`. Disks are
//! found by content inside the guest, so their order here does not matter to it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::LaunchSpec;
use crate::qemu::accel::Accel;

/// Longest Unix socket path (`sun_path` holds 108 bytes with the terminating NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// What the backend keeps in a zone's directory.
#[derive(Debug, Clone)]
pub struct ZoneFiles {
    /// hvc0: spored listens, QEMU connects.
    pub console: PathBuf,
    /// hvc1, the IDM channel: spored listens, QEMU connects.
    pub idm: PathBuf,
    /// QMP: QEMU listens, spored connects.
    pub qmp: PathBuf,
    pub pidfile: PathBuf,
    /// QEMU's own stdout and stderr.
    pub log: PathBuf,
}

impl ZoneFiles {
    pub fn new(zone_dir: &Path) -> ZoneFiles {
        ZoneFiles {
            console: zone_dir.join("console.sock"),
            idm: zone_dir.join("idm.sock"),
            qmp: zone_dir.join("qmp.sock"),
            pidfile: zone_dir.join("qemu.pid"),
            log: zone_dir.join("qemu.log"),
        }
    }

    /// Every file, for cleanup.
    pub fn all(&self) -> [&Path; 5] {
        [
            &self.console,
            &self.idm,
            &self.qmp,
            &self.pidfile,
            &self.log,
        ]
    }

    /// The sockets must fit in `sun_path`.
    pub fn check_socket_paths(&self) -> Result<(), String> {
        for sock in [&self.console, &self.idm, &self.qmp] {
            let len = sock.as_os_str().len();
            if len > MAX_SOCKET_PATH {
                return Err(format!(
                    "socket path {} is {len} bytes, longer than the {MAX_SOCKET_PATH} a Unix socket allows: use a shorter state directory",
                    sock.display()
                ));
            }
        }
        Ok(())
    }
}

/// Host-dependent settings of every zone.
#[derive(Debug, Clone)]
pub struct MachineOptions {
    pub accel: Accel,
    /// TCG's translation cache in MiB (QEMU's default is 1 GiB of address space, much of it
    /// resident after a boot); `None` keeps QEMU's default.
    pub tcg_tb_size_mib: Option<u32>,
    /// `tsc_early_khz=` for TCG guests: they otherwise calibrate the TSC against the emulated
    /// PIT, which on a busy host sometimes hangs the boot.
    pub tsc_khz: Option<u64>,
}

/// QEMU option values are comma-separated: a comma in a path is written twice.
fn escape(path: &Path) -> String {
    path.to_string_lossy().replace(',', ",,")
}

/// The kernel command line: spored's, plus what this machine needs.
pub fn kernel_cmdline(spec: &LaunchSpec, machine: &MachineOptions) -> String {
    // panic=-1: a guest kernel panic reboots, and -no-reboot turns that into QEMU exiting.
    // pci=off: microvm has no PCI bus; probing it only costs boot time.
    let mut cmdline = format!("{} panic=-1 pci=off", spec.kernel_cmdline);
    if machine.accel == Accel::Tcg {
        // microvm has no HPET or ACPI PM timer to check the TSC against: on a busy host the
        // guest would mark it unstable and fall back to 4 ms jiffies for every timestamp.
        cmdline.push_str(" tsc=reliable");
        if let Some(khz) = machine.tsc_khz {
            cmdline.push_str(&format!(" tsc_early_khz={khz}"));
        }
    }
    cmdline
}

/// The full argument list (without the binary).
pub fn build(spec: &LaunchSpec, files: &ZoneFiles, machine: &MachineOptions) -> Vec<OsString> {
    let accel = match (machine.accel, machine.tcg_tb_size_mib) {
        (Accel::Kvm, _) => "kvm".to_string(),
        (Accel::Tcg, Some(mib)) => format!("tcg,tb-size={mib}"),
        (Accel::Tcg, None) => "tcg".to_string(),
    };
    let cpu = match machine.accel {
        Accel::Kvm => "host",
        Accel::Tcg => "max",
    };
    let name = spec.vm_name();
    let mut args: Vec<String> = vec![
        // The name marks the process as this zone's: list() checks it in /proc/PID/cmdline.
        "-name".into(),
        format!("{name},process={}", short_process_name(spec)),
        "-accel".into(),
        accel,
        "-M".into(),
        "microvm".into(),
        "-cpu".into(),
        cpu.into(),
        "-m".into(),
        spec.memory_mib.to_string(),
        "-smp".into(),
        spec.vcpus.to_string(),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-display".into(),
        "none".into(),
        "-serial".into(),
        "none".into(),
        "-nic".into(),
        "none".into(),
        // The guest powering off or rebooting ends QEMU; a zone is never rebooted in place.
        "-no-reboot".into(),
        "-kernel".into(),
        spec.kernel.to_string_lossy().into_owned(),
        "-initrd".into(),
        spec.initrd.to_string_lossy().into_owned(),
        "-append".into(),
        kernel_cmdline(spec, machine),
        "-device".into(),
        "virtio-serial-device,max_ports=2".into(),
    ];
    // hvc0 is a console; IDM is a plain serial port (the guest's /dev/vport0p1): QEMU drops
    // what a virtconsole writes while the socket to spored is full, but throttles a serial
    // port, so a burst of guest output (exec) waits for spored instead of being lost.
    for (id, path, device) in [
        (
            "console",
            &files.console,
            "virtconsole,chardev=console,nr=0",
        ),
        (
            "idm",
            &files.idm,
            "virtserialport,chardev=idm,nr=1,name=spore.idm",
        ),
    ] {
        args.push("-chardev".into());
        // A client with reconnect: output never starts before spored listens, and a restarted
        // spored gets the connection back by listening again.
        args.push(format!("socket,id={id},path={},reconnect=1", escape(path)));
        args.push("-device".into());
        args.push(device.into());
    }
    for (id, path) in [("root", &spec.root_image), ("config", &spec.config_block)] {
        args.push("-drive".into());
        args.push(format!(
            "if=none,id={id},file={},format=raw,readonly=on",
            escape(path)
        ));
        args.push("-device".into());
        args.push(format!("virtio-blk-device,drive={id}"));
    }
    args.push("-qmp".into());
    args.push(format!("unix:{},server=on,wait=off", escape(&files.qmp)));
    args.push("-pidfile".into());
    args.push(files.pidfile.to_string_lossy().into_owned());
    args.into_iter().map(OsString::from).collect()
}

/// The thread name QEMU sets (15 bytes survive): `spore-` and the id's first 8 hex digits.
fn short_process_name(spec: &LaunchSpec) -> String {
    let id = spec.zone_id.simple().to_string();
    format!("spore-{}", &id[..8])
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn spec(dir: &Path) -> LaunchSpec {
        LaunchSpec {
            zone_id: Uuid::from_u128(0x1234_5678_9abc_def0_1234_5678_9abc_def0),
            name: "web".into(),
            kernel: "/g/vmlinux".into(),
            initrd: "/g/initrd".into(),
            kernel_cmdline: "console=hvc0 quiet".into(),
            root_image: "/images/a,b.squashfs".into(),
            config_block: dir.join("config.blk"),
            vcpus: 2,
            memory_mib: 128,
            zone_dir: dir.to_path_buf(),
            nic: None,
        }
    }

    fn joined(args: &[OsString]) -> String {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn tcg_command_line() {
        let dir = Path::new("/var/lib/spore/zones/z");
        let spec = spec(dir);
        let files = ZoneFiles::new(dir);
        let machine = MachineOptions {
            accel: Accel::Tcg,
            tcg_tb_size_mib: Some(64),
            tsc_khz: Some(2_600_000),
        };
        let line = joined(&build(&spec, &files, &machine));
        for want in [
            "-name spore-12345678-9abc-def0-1234-56789abcdef0,process=spore-12345678",
            "-accel tcg,tb-size=64 -M microvm -cpu max -m 128 -smp 2",
            "-append console=hvc0 quiet panic=-1 pci=off tsc=reliable tsc_early_khz=2600000",
            "socket,id=console,path=/var/lib/spore/zones/z/console.sock,reconnect=1",
            "virtconsole,chardev=console,nr=0",
            "virtserialport,chardev=idm,nr=1,name=spore.idm",
            // The comma in the image path is doubled.
            "if=none,id=root,file=/images/a,,b.squashfs,format=raw,readonly=on",
            "-qmp unix:/var/lib/spore/zones/z/qmp.sock,server=on,wait=off",
            "-pidfile /var/lib/spore/zones/z/qemu.pid",
            "-no-reboot",
        ] {
            assert!(line.contains(want), "{want:?} not in {line}");
        }
    }

    #[test]
    fn kvm_uses_the_host_cpu_and_no_tsc_hint() {
        let dir = Path::new("/z");
        let machine = MachineOptions {
            accel: Accel::Kvm,
            tcg_tb_size_mib: Some(64),
            tsc_khz: Some(1),
        };
        let line = joined(&build(&spec(dir), &ZoneFiles::new(dir), &machine));
        assert!(line.contains("-accel kvm -M microvm -cpu host"), "{line}");
        assert!(!line.contains("tsc"), "{line}");
    }

    #[test]
    fn long_socket_paths_are_refused() {
        let long = PathBuf::from(format!("/{}", "d".repeat(100)));
        let e = ZoneFiles::new(&long).check_socket_paths().unwrap_err();
        assert!(e.contains("longer than the 107"), "{e}");
        ZoneFiles::new(Path::new("/var/lib/spore/zones/x"))
            .check_socket_paths()
            .unwrap();
    }
}
