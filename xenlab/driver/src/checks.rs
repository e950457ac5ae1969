//! What the lab checks against Xen itself, independently of the backend's own view: which
//! loop devices serve a domain, xenstore permissions, and that nothing of a zone is left.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use spore_xen::xs::{Access, Perm, XsClient};
use spore_xen::{DomId, Hypervisor, PrivCmd};
use uuid::Uuid;

use crate::report::result;

/// The domid in a Xen zone's handle (`domid N`, maybe with a suffix).
pub fn domid_of(info: &spore_runtime::VmInfo) -> Result<DomId> {
    info.handle
        .strip_prefix("domid ")
        .and_then(|d| d.split(' ').next()?.parse().ok())
        .with_context(|| format!("handle {:?}", info.handle))
}

/// The loop devices blkback serves the domain's disks from (our own backend nodes).
pub fn loops_of(domid: DomId) -> Result<Vec<String>> {
    let mut xs = XsClient::open()?;
    let mut out = Vec::new();
    for devid in [51712, 51728] {
        let p = format!("/local/domain/0/backend/vbd/{domid}/{devid}/params");
        if let Some(v) = xs.read_string(&p)? {
            out.push(v.trim_start_matches("/dev/").to_string());
        }
    }
    Ok(out)
}

/// The trust rule in xenstored itself: backend nodes and our keys are dom0's (the guest may
/// only read them), frontend nodes are the guest's.
pub fn check_perms(domid: DomId) -> Result<()> {
    let mut xs = XsClient::open()?;
    let dom0 = vec![Perm::new(0, Access::None), Perm::new(domid, Access::Read)];
    let guest = vec![Perm::new(domid, Access::None), Perm::new(0, Access::Read)];
    let backend = "/local/domain/0/backend";
    let home = format!("/local/domain/{domid}");
    for (path, want) in [
        (
            format!("{backend}/vbd/{domid}/51712/physical-device"),
            &dom0,
        ),
        (format!("{backend}/vbd/{domid}/51728/state"), &dom0),
        (format!("{backend}/console/{domid}/1/state"), &dom0),
        (format!("{home}/spore/zone"), &dom0),
        (format!("{home}/console/port"), &dom0),
        (format!("{home}/device/vbd/51712/state"), &guest),
        (format!("{home}/device/console/1/backend"), &guest),
    ] {
        let got = xs.get_perms(&path)?;
        ensure!(got == *want, "{path}: permissions {got:?}, want {want:?}");
    }
    result("xenstore_permissions=OK");
    Ok(())
}

/// Asserts that nothing of the zone's domain is left: domain, xenstore nodes, loop devices.
pub async fn assert_clean(zone: Uuid, domid: DomId, loops: &[String]) -> Result<()> {
    let hv = PrivCmd::open()?;
    let alive = hv
        .list_domains(0, 1024)?
        .iter()
        .any(|d| d.domid == domid && d.handle == *zone.as_bytes());
    ensure!(!alive, "domain {domid} still exists");
    let mut xs = XsClient::open()?;
    let mut left = Vec::new();
    for p in [
        format!("/local/domain/{domid}"),
        format!("/vm/{zone}"),
        format!("/local/domain/0/backend/vbd/{domid}"),
        format!("/local/domain/0/backend/vif/{domid}"),
        format!("/local/domain/0/backend/console/{domid}"),
    ] {
        if xs.read(&p)?.is_some() {
            left.push(p);
        }
    }
    ensure!(left.is_empty(), "xenstore nodes left: {left:?}");
    // Autoclear detaches a loop device once blkback lets go: allow the kernel a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    for lo in loops {
        let f = format!("/sys/block/{lo}/loop/backing_file");
        while Path::new(&f).exists() {
            ensure!(Instant::now() < deadline, "{lo} is still attached");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    ensure!(
        !Path::new(&format!("/sys/bus/xen-backend/devices/vbd-{domid}-51712")).exists(),
        "blkback still has vbd-{domid}-51712"
    );
    Ok(())
}
