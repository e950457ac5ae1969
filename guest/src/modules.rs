//! Loads the kernel modules shipped in the initrd, in the order kernel/build-bundle.sh computed
//! from modules.dep (`/modules/order`, one file name per line).
//!
//! Modules for the other hypervisor refuse to load (xen-blkfront says ENODEV under QEMU):
//! that is expected and only noted in verbose mode. Module parameters given on the kernel
//! command line (`virtio_mmio.device=...`) are passed on, as modprobe would.

use std::fs::File;
use std::os::fd::AsFd;

use crate::console::{alert, info};
use crate::sys;

pub const MODULE_DIR: &str = "/modules";

fn normalise(name: &str) -> String {
    name.replace('-', "_")
}

/// `name.param=value` words of the kernel command line that belong to `module`.
pub fn params_for(module: &str, cmdline: &str) -> String {
    let module = normalise(module);
    cmdline
        .split_ascii_whitespace()
        .filter_map(|word| {
            let (prefix, rest) = word.split_once('.')?;
            (normalise(prefix) == module && !rest.is_empty()).then_some(rest)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Loads every module in the order file. Returns how many were loaded.
pub fn load_all() -> usize {
    let order = match std::fs::read_to_string(format!("{MODULE_DIR}/order")) {
        Ok(order) => order,
        Err(e) => {
            alert!("no module list ({MODULE_DIR}/order: {e}); relying on built-in drivers");
            return 0;
        }
    };
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let mut loaded = 0;
    for file_name in order.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let module = file_name.trim_end_matches(".ko");
        let path = format!("{MODULE_DIR}/{file_name}");
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                alert!("module {module}: cannot open {path}: {e}");
                continue;
            }
        };
        match sys::finit_module(file.as_fd(), &params_for(module, &cmdline)) {
            Ok(()) => loaded += 1,
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {
                info!("module {module}: no such device here ({e})");
            }
            Err(e) => alert!("module {module}: load failed: {e}"),
        }
    }
    loaded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_from_cmdline() {
        let cmdline = "console=hvc0 virtio_mmio.device=512@0xfeb00000:12 quiet \
                       virtio-mmio.x=1 xen_blkfront.max=64 virtio_mmio.flag";
        assert_eq!(
            params_for("virtio_mmio", cmdline),
            "device=512@0xfeb00000:12 x=1 flag"
        );
        assert_eq!(params_for("xen-blkfront", cmdline), "max=64");
        assert_eq!(params_for("squashfs", cmdline), "");
    }
}
