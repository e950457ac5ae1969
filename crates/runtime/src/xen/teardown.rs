//! Tearing a zone's domain down (blocking; run on a blocking thread).
//!
//! Order matters. Every device's backend goes to Closing at once so a running guest closes
//! its frontends in parallel (bounded by one deadline: a dead or hostile guest cannot hold
//! us), then Closed and its nodes are removed, which makes blkback and netback release the
//! guest's rings and their block devices. Only then is the domain destroyed: a destroyed
//! domain lingers as "dying" while anyone maps its pages. Last, the domain's xenstore tree
//! goes, and the read-only loop devices are freed (they carry autoclear, so the kernel
//! detaches each one when blkback, its last user, lets go).
//!
//! Every path is computed from the domid and the zone UUID; nothing a guest wrote is
//! followed. Before touching anything under a domid, the domain's handle is checked to still
//! be the zone's UUID (a domid freed and reused by another domain is left alone).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use spore_xen::devices::{self, Kind};
use spore_xen::xs::XsClient;
use spore_xen::{DomId, Hypervisor, XenError};
use uuid::Uuid;

use super::platform::{Disk, XsConnect};

/// Bounds on the teardown's waits.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// For a running guest to close its frontends.
    pub devices: Duration,
    /// For the kernel backends to let go and the domain to vanish.
    pub release: Duration,
}

/// The devices spore may give a domain, as (kind, device id).
pub fn devices() -> [(Kind, u32); 4] {
    [
        (Kind::Vbd, devices::xvd_devid(0)),
        (Kind::Vbd, devices::xvd_devid(1)),
        (Kind::Vif, 0),
        (Kind::Console, 1),
    ]
}

/// The sysfs nodes of a kernel backend device (`vbd-<domid>-<devid>`; for a vif also its
/// network interface `vif<domid>.<devid>`), gone once the backend driver has let go. A vif
/// left behind would keep a later domain with the same domid from getting its interface.
fn backend_sysfs(kind: Kind, domid: DomId, devid: u32) -> Vec<PathBuf> {
    let device = PathBuf::from(format!(
        "/sys/bus/xen-backend/devices/{}-{domid}-{devid}",
        kind.as_str()
    ));
    match kind {
        Kind::Vbd => vec![device],
        Kind::Vif => vec![
            device,
            PathBuf::from(format!("/sys/class/net/vif{domid}.{devid}")),
        ],
        // Console 1 is served by spored itself.
        Kind::Console => Vec::new(),
    }
}

/// Tears down `zone`'s domain `domid` and drops `disks` (this process's handles on its loop
/// devices) once the backends have let go. Idempotent. On failure, says what is left.
pub fn teardown<H: Hypervisor, X: XsConnect>(
    hv: &H,
    xs: &X,
    zone: Uuid,
    domid: Option<DomId>,
    disks: Vec<Box<dyn Disk>>,
    t: Timeouts,
) -> Result<(), String> {
    let mut problems = Vec::new();
    let mut xs = xs
        .connect()
        .map_err(|e| format!("cannot reach xenstored: {e}"))?;
    let handle = *zone.as_bytes();
    let domid = domid.filter(|&d| match hv.domain_info(d) {
        Ok(info) => info.handle == handle,
        // Gone already: its nodes may still be there.
        Err(_) => true,
    });
    if let Some(domid) = domid {
        let running = hv
            .domain_info(domid)
            .is_ok_and(|i| i.shutdown_reason().is_none() && !i.is_dying());
        close_devices(&mut xs, domid, running, t.devices, &mut problems);
        match hv.destroy(domid) {
            Ok(()) | Err(XenError::NoSuchDomain(_)) => {}
            Err(XenError::Hypercall { source, .. })
                if source.raw_os_error() == Some(libc::ESRCH) => {}
            Err(e) => problems.push(format!("destroying domain {domid} failed: {e}")),
        }
        wait_backends_released(domid, t.release, &mut problems);
        match spore_xen::hypervisor::wait_domain_gone(hv, domid, t.release) {
            Ok(true) => {}
            Ok(false) => problems.push(format!(
                "domain {domid} is still dying after {} s (something still maps its memory)",
                t.release.as_secs()
            )),
            Err(e) => problems.push(format!("cannot check that domain {domid} is gone: {e}")),
        }
        if let Err(e) = devices::remove_domain_nodes(&mut xs, domid, &handle) {
            problems.push(format!(
                "removing domain {domid}'s xenstore nodes failed: {e}"
            ));
        }
    } else if let Err(e) = xs.rm(&format!("/vm/{zone}")) {
        problems.push(format!("removing /vm/{zone} failed: {e}"));
    }
    // blkback has let go (or the domain never got that far): closing our handles lets
    // autoclear detach the devices.
    drop(disks);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Closes every device of `domid` that exists: all to Closing first, then each waited for
/// within one shared deadline (none for a guest that no longer runs) and removed.
fn close_devices<T: Read + Write>(
    xs: &mut XsClient<T>,
    domid: DomId,
    running: bool,
    timeout: Duration,
    problems: &mut Vec<String>,
) {
    let present: Vec<(Kind, u32)> = devices()
        .into_iter()
        .filter(|&(kind, devid)| {
            let b = devices::backend_path(kind, domid, devid);
            let f = devices::frontend_path(kind, domid, devid);
            matches!(xs.read(&b), Ok(Some(_))) || matches!(xs.read(&f), Ok(Some(_)))
        })
        .collect();
    for &(kind, devid) in &present {
        let state = format!("{}/state", devices::backend_path(kind, domid, devid));
        if let Ok(Some(_)) = xs.read(&state) {
            let closing = devices::state::CLOSING.to_string();
            if let Err(e) = xs.write(&state, closing.as_bytes()) {
                problems.push(format!("closing {state} failed: {e}"));
            }
        }
    }
    let deadline = Instant::now() + timeout;
    for (kind, devid) in present {
        let left = deadline.saturating_duration_since(Instant::now());
        let closed = if running {
            devices::close_device(xs, kind, domid, devid, left)
        } else {
            // A guest that no longer runs cannot answer: Closed, and the nodes go.
            remove_device(xs, kind, domid, devid)
        };
        if let Err(e) = closed {
            problems.push(format!(
                "closing {} {devid} of domain {domid} failed: {e}",
                kind.as_str()
            ));
        }
    }
}

fn remove_device<T: Read + Write>(
    xs: &mut XsClient<T>,
    kind: Kind,
    domid: DomId,
    devid: u32,
) -> spore_xen::Result<()> {
    let b = devices::backend_path(kind, domid, devid);
    let state = format!("{b}/state");
    if xs.read(&state)?.is_some() {
        xs.write(&state, devices::state::CLOSED.to_string().as_bytes())?;
    }
    xs.rm(&b)?;
    xs.rm(&devices::frontend_path(kind, domid, devid))
}

/// Waits until the kernel backends of `domid` have released their devices (blkback then
/// has closed its loop devices).
fn wait_backends_released(domid: DomId, timeout: Duration, problems: &mut Vec<String>) {
    let deadline = Instant::now() + timeout;
    for (kind, devid) in devices() {
        for node in backend_sysfs(kind, domid, devid) {
            while node.exists() {
                if Instant::now() >= deadline {
                    problems.push(format!(
                        "the kernel's {} backend still holds {} after {} s",
                        kind.as_str(),
                        node.display(),
                        timeout.as_secs()
                    ));
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_nodes_are_computed_from_the_domid() {
        assert_eq!(
            backend_sysfs(Kind::Vbd, 7, 51712),
            [PathBuf::from("/sys/bus/xen-backend/devices/vbd-7-51712")]
        );
        assert_eq!(
            backend_sysfs(Kind::Vif, 7, 0),
            [
                PathBuf::from("/sys/bus/xen-backend/devices/vif-7-0"),
                PathBuf::from("/sys/class/net/vif7.0")
            ]
        );
        assert!(backend_sysfs(Kind::Console, 7, 1).is_empty());
        let d = devices();
        assert_eq!(d[0], (Kind::Vbd, 51712));
        assert_eq!(d[1], (Kind::Vbd, 51728));
    }
}
