//! How the Xen backend recognises its own domains.
//!
//! A zone's domain carries the zone UUID twice, both out of the guest's reach: as Xen's
//! domain handle (set at createdomain, immutable) and as `/local/domain/<domid>/spore/zone`,
//! written by dom0 with the domain's home, owned by dom0 and only readable by the guest.
//! `spore/owner` names the zones root of the spored that made it, so two daemons (or a test
//! beside a daemon) never adopt or destroy each other's domains. A domain whose handle names
//! a zone directory under our root but that has no xenstore home at all was caught between
//! createdomain and introduce: it is ours, half-built, and listed as stopped so spored
//! destroys it.

use std::io::{Read, Write};
use std::path::Path;

use spore_xen::xs::XsClient;
use spore_xen::{DomId, DomainInfo, Hypervisor};
use uuid::Uuid;

/// Dom0-owned key holding the zone UUID.
pub const ZONE_KEY: &str = "spore/zone";
/// Dom0-owned key naming the zones root of the spored that owns the domain.
pub const OWNER_KEY: &str = "spore/owner";
/// Domains listed per getdomaininfolist call.
const LIST_BATCH: u32 = 256;

/// What xenstore says about a domain's ownership, read from dom0-owned nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    pub zone: String,
    pub owner: Option<String>,
    /// The domain that owns the `spore/zone` node (0 when dom0 wrote it).
    pub node_owner: DomId,
}

/// One of our domains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owned {
    pub zone: Uuid,
    pub domid: DomId,
    pub running: bool,
    /// False for a domain caught between createdomain and introduce.
    pub built: bool,
}

/// Decides whether a domain is ours from its hypervisor info, its xenstore marker and
/// whether its zone directory exists.
pub fn classify(
    info: &DomainInfo,
    marker: Option<&Marker>,
    home_exists: bool,
    zone_dir_exists: bool,
    owner: &str,
) -> Option<Owned> {
    if info.domid == 0 {
        return None;
    }
    let zone = Uuid::from_bytes(info.handle);
    if zone.is_nil() {
        return None;
    }
    let running = info.shutdown_reason().is_none() && !info.is_dying();
    match marker {
        Some(m) => {
            let ours = m.node_owner == 0
                && m.zone == zone.to_string()
                && m.owner.as_deref() == Some(owner);
            ours.then_some(Owned {
                zone,
                domid: info.domid,
                running,
                built: true,
            })
        }
        None => (!home_exists && zone_dir_exists).then_some(Owned {
            zone,
            domid: info.domid,
            running: false,
            built: false,
        }),
    }
}

/// Every domain on the host (blocking hypercalls).
pub fn all_domains<H: Hypervisor>(hv: &H) -> spore_xen::Result<Vec<DomainInfo>> {
    let mut out = Vec::new();
    let mut first: DomId = 0;
    loop {
        let batch = hv.list_domains(first, LIST_BATCH)?;
        let n = batch.len();
        let last = batch.last().map(|d| d.domid);
        out.extend(batch);
        match last {
            Some(d) if n as u32 == LIST_BATCH && d < DomId::MAX => first = d + 1,
            _ => return Ok(out),
        }
    }
}

/// Reads a domain's marker; `None` when it has no `spore/zone` node.
pub fn read_marker<T: Read + Write>(
    xs: &mut XsClient<T>,
    domid: DomId,
) -> spore_xen::Result<Option<Marker>> {
    let path = format!("/local/domain/{domid}/{ZONE_KEY}");
    let Some(zone) = xs.read(&path)? else {
        return Ok(None);
    };
    let node_owner = xs.get_perms(&path)?.first().map_or(DomId::MAX, |p| p.domid);
    let owner = xs
        .read(&format!("/local/domain/{domid}/{OWNER_KEY}"))?
        .map(|v| String::from_utf8_lossy(&v).into_owned());
    Ok(Some(Marker {
        zone: String::from_utf8_lossy(&zone).into_owned(),
        owner,
        node_owner,
    }))
}

/// The domains this backend owns, running or not.
pub fn owned_domains<H: Hypervisor, T: Read + Write>(
    hv: &H,
    xs: &mut XsClient<T>,
    owner: &str,
    zones_root: &Path,
) -> spore_xen::Result<Vec<Owned>> {
    let mut found = Vec::new();
    for info in all_domains(hv)? {
        if info.domid == 0 {
            continue;
        }
        let marker = read_marker(xs, info.domid)?;
        let home_exists =
            marker.is_some() || xs.read(&format!("/local/domain/{}", info.domid))?.is_some();
        let zone = Uuid::from_bytes(info.handle);
        let zone_dir_exists = zones_root.join(zone.to_string()).is_dir();
        if let Some(o) = classify(&info, marker.as_ref(), home_exists, zone_dir_exists, owner) {
            found.push(o);
        }
    }
    Ok(found)
}

/// The domain of `zone`, if this backend owns one.
pub fn find<H: Hypervisor, T: Read + Write>(
    hv: &H,
    xs: &mut XsClient<T>,
    owner: &str,
    zones_root: &Path,
    zone: Uuid,
) -> spore_xen::Result<Option<Owned>> {
    Ok(owned_domains(hv, xs, owner, zones_root)?
        .into_iter()
        .find(|o| o.zone == zone))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xen::testing::domain_info as info;

    const OWNER: &str = "/var/lib/spore/zones";

    fn marker(zone: &Uuid, owner: &str, node_owner: DomId) -> Marker {
        Marker {
            zone: zone.to_string(),
            owner: Some(owner.into()),
            node_owner,
        }
    }

    #[test]
    fn a_marked_domain_is_ours_and_its_state_comes_from_the_hypervisor() {
        let z = Uuid::new_v4();
        let m = marker(&z, OWNER, 0);
        let o = classify(&info(5, z, 0), Some(&m), true, true, OWNER).unwrap();
        assert_eq!(
            o,
            Owned {
                zone: z,
                domid: 5,
                running: true,
                built: true
            }
        );
        // XEN_DOMINF_shutdown (bit 2) with reason poweroff: listed, not running.
        let o = classify(&info(5, z, 1 << 2), Some(&m), true, false, OWNER).unwrap();
        assert!(!o.running && o.built);
        // Dying (bit 0).
        let o = classify(&info(5, z, 1), Some(&m), true, true, OWNER).unwrap();
        assert!(!o.running);
    }

    #[test]
    fn forged_or_foreign_markers_are_not_ours() {
        let z = Uuid::new_v4();
        // The node claims another zone than the domain handle.
        let other = marker(&Uuid::new_v4(), OWNER, 0);
        assert_eq!(
            classify(&info(5, z, 0), Some(&other), true, true, OWNER),
            None
        );
        // The guest owns the node (a toolstack gave it write access to its home).
        let forged = marker(&z, OWNER, 5);
        assert_eq!(
            classify(&info(5, z, 0), Some(&forged), true, true, OWNER),
            None
        );
        // Another spored's domain.
        let foreign = marker(&z, "/srv/other/zones", 0);
        assert_eq!(
            classify(&info(5, z, 0), Some(&foreign), true, true, OWNER),
            None
        );
        let no_owner = Marker {
            owner: None,
            ..marker(&z, OWNER, 0)
        };
        assert_eq!(
            classify(&info(5, z, 0), Some(&no_owner), true, true, OWNER),
            None
        );
        // dom0 itself and nil handles never are.
        assert_eq!(
            classify(
                &info(0, z, 0),
                Some(&marker(&z, OWNER, 0)),
                true,
                true,
                OWNER
            ),
            None
        );
        assert_eq!(
            classify(&info(7, Uuid::nil(), 0), None, false, true, OWNER),
            None
        );
    }

    #[test]
    fn a_domain_without_a_home_but_with_our_zone_dir_is_half_built() {
        let z = Uuid::new_v4();
        let o = classify(&info(9, z, 0), None, false, true, OWNER).unwrap();
        assert_eq!(
            o,
            Owned {
                zone: z,
                domid: 9,
                running: false,
                built: false
            }
        );
        // Someone else's domain (xl's) has a home but no marker: not ours.
        assert_eq!(classify(&info(9, z, 0), None, true, true, OWNER), None);
        // No zone directory under our root: not ours either.
        assert_eq!(classify(&info(9, z, 0), None, false, false, OWNER), None);
    }
}
