//! A built domain's xenstore home (`/local/domain/<domid>`, `/vm/<uuid>`) and its
//! introduction to xenstored. Nodes the guest may write (control/shutdown, data, drivers,
//! feature, attr, error) are owned by the guest; everything else is owned by dom0 and only
//! readable by the guest, so nothing spore later reads back from dom0-owned nodes can have
//! been forged by the guest.

use std::io::{Read, Write};

use super::{BuiltDomain, DomainConfig};
use crate::xs::{Access, Perm, XsClient};
use crate::{DomId, Result};

/// Permissions for a node owned by dom0 that the guest may read.
pub fn guest_readable(domid: DomId) -> [Perm; 2] {
    [Perm::new(0, Access::None), Perm::new(domid, Access::Read)]
}

/// Permissions for a node the guest owns (dom0, being privileged, still has full access).
pub fn guest_owned(domid: DomId) -> [Perm; 1] {
    [Perm::new(domid, Access::None)]
}

/// `/local/domain/<domid>`.
pub fn domain_path(domid: DomId) -> String {
    format!("/local/domain/{domid}")
}

/// `/vm/<uuid>` for a domain handle.
pub fn vm_path(handle: &[u8; 16]) -> String {
    format!("/vm/{}", uuid::Uuid::from_bytes(*handle))
}

/// Writes the domain's xenstore nodes in one transaction, then sends INTRODUCE so the guest
/// can reach xenstored. `extra` keys (relative to the domain path, e.g. `spore/zone`) are
/// dom0-owned and guest-readable: the place for the daemon's own bookkeeping.
pub fn introduce<T: Read + Write>(
    xs: &mut XsClient<T>,
    built: &BuiltDomain,
    cfg: &DomainConfig,
    name: &str,
    extra: &[(&str, &str)],
) -> Result<()> {
    let domid = built.domid;
    let d = domain_path(domid);
    let vm = vm_path(&cfg.handle);
    let ro = guest_readable(domid);
    let rw = guest_owned(domid);
    let mem_kib = (cfg.memory_mib * 1024).to_string();
    let uuid = uuid::Uuid::from_bytes(cfg.handle).to_string();
    let store_mfn = built.store_mfn.to_string();
    let store_port = built.store_port.to_string();
    let con_mfn = built.console_mfn.to_string();
    let con_port = built.console_port.to_string();
    xs.transaction(|tx| {
        // A node created by WRITE takes its parent's permissions with the creator (dom0) as
        // owner, which is exactly `ro` below the domain home: only subtree roots and
        // guest-owned nodes need an explicit SET_PERMS (one round trip each).
        let mut put = |path: String, value: &str, perms: &[Perm]| -> Result<()> {
            tx.write(&path, value.as_bytes())?;
            if perms == ro.as_slice() && path != d {
                return Ok(());
            }
            tx.set_perms(&path, perms)
        };
        put(vm.clone(), "", &[Perm::new(0, Access::None)])?;
        put(format!("{vm}/uuid"), &uuid, &[Perm::new(0, Access::None)])?;
        put(format!("{vm}/name"), name, &[Perm::new(0, Access::None)])?;
        put(d.clone(), "", &ro)?;
        put(format!("{d}/vm"), &vm, &ro)?;
        put(format!("{d}/name"), name, &ro)?;
        put(format!("{d}/domid"), &domid.to_string(), &ro)?;
        put(format!("{d}/memory"), "", &ro)?;
        put(format!("{d}/memory/static-max"), &mem_kib, &ro)?;
        put(format!("{d}/memory/target"), &mem_kib, &ro)?;
        put(format!("{d}/cpu"), "", &ro)?;
        for v in 0..cfg.vcpus {
            put(format!("{d}/cpu/{v}"), "", &ro)?;
            put(format!("{d}/cpu/{v}/availability"), "online", &ro)?;
        }
        put(format!("{d}/control"), "", &ro)?;
        for k in [
            "shutdown",
            "feature-poweroff",
            "feature-reboot",
            "feature-suspend",
            "sysrq",
        ] {
            put(format!("{d}/control/{k}"), "", &rw)?;
        }
        for k in ["data", "drivers", "feature", "attr", "error"] {
            put(format!("{d}/{k}"), "", &rw)?;
        }
        put(format!("{d}/device"), "", &ro)?;
        put(format!("{d}/store"), "", &ro)?;
        put(format!("{d}/store/port"), &store_port, &ro)?;
        put(format!("{d}/store/ring-ref"), &store_mfn, &ro)?;
        // The PV console from start_info. type "spore" keeps xenconsoled away: spore's own
        // backend serves it.
        put(format!("{d}/console"), "", &ro)?;
        put(format!("{d}/console/port"), &con_port, &ro)?;
        put(format!("{d}/console/ring-ref"), &con_mfn, &ro)?;
        put(format!("{d}/console/limit"), "1048576", &ro)?;
        put(format!("{d}/console/type"), "spore", &ro)?;
        put(format!("{d}/console/output"), "spore", &ro)?;
        for (k, v) in extra {
            put(format!("{d}/{k}"), v, &ro)?;
        }
        Ok(())
    })?;
    xs.introduce(domid, built.store_mfn, built.store_port)
}
