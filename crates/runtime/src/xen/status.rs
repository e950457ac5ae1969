//! A zone's domain as the hypervisor reports it: running, or stopped and why.

use spore_xen::{DomId, DomainInfo, ShutdownReason, XenError};
use uuid::Uuid;

use crate::{StopReason, VmStop};

/// What `getdomaininfo` says about a zone's domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainState {
    Running,
    Stopped(VmStop),
}

/// Maps a `getdomaininfo` answer for `domid` (which should be `zone`'s domain) to its state.
/// Errors other than "no such domain" are returned: the domain's fate is then unknown.
pub fn state_of(
    zone: Uuid,
    domid: DomId,
    info: Result<DomainInfo, XenError>,
) -> Result<DomainState, XenError> {
    let gone = || {
        DomainState::Stopped(VmStop {
            reason: StopReason::Killed,
            detail: format!("domain {domid} no longer exists: it was destroyed outside spore"),
        })
    };
    let info = match info {
        Ok(info) => info,
        Err(XenError::NoSuchDomain(_)) => return Ok(gone()),
        Err(XenError::Hypercall { source, .. }) if source.raw_os_error() == Some(libc::ESRCH) => {
            return Ok(gone());
        }
        Err(e) => return Err(e),
    };
    // The domid was reused by a domain that is not this zone's.
    if info.handle != *zone.as_bytes() {
        return Ok(gone());
    }
    let stop = |reason, detail: String| Ok(DomainState::Stopped(VmStop { reason, detail }));
    match info.shutdown_reason() {
        None if info.is_dying() => stop(
            StopReason::Killed,
            format!("domain {domid} is being destroyed"),
        ),
        None => Ok(DomainState::Running),
        Some(ShutdownReason::Poweroff) => stop(
            StopReason::Poweroff,
            format!("the guest powered off (domain {domid})"),
        ),
        Some(ShutdownReason::Crash) => stop(
            StopReason::Crash,
            format!("the guest kernel crashed (domain {domid}): see the zone's console log"),
        ),
        Some(ShutdownReason::Watchdog) => stop(
            StopReason::Crash,
            format!("the guest's watchdog fired (domain {domid})"),
        ),
        Some(ShutdownReason::Reboot) => stop(
            StopReason::Crash,
            format!(
                "the guest rebooted (domain {domid}); spore-init never reboots, so its kernel panicked: see the zone's console log"
            ),
        ),
        Some(ShutdownReason::Suspend) => stop(
            StopReason::Crash,
            format!("the guest suspended itself (domain {domid}); spore does not resume zones"),
        ),
        Some(ShutdownReason::Other(n)) => stop(
            StopReason::Crash,
            format!("the guest shut down with unknown reason {n} (domain {domid})"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(zone: Uuid, flags: u32) -> DomainInfo {
        crate::xen::testing::domain_info(4, zone, flags)
    }

    /// `XEN_DOMINF_shutdown` with a reason in bits 16..24.
    fn shut(reason: u32) -> u32 {
        (1 << 2) | (reason << 16)
    }

    fn reason(s: DomainState) -> StopReason {
        match s {
            DomainState::Stopped(stop) => stop.reason,
            DomainState::Running => panic!("still running"),
        }
    }

    #[test]
    fn shutdown_reasons_map_to_stop_reasons() {
        let z = Uuid::new_v4();
        assert_eq!(
            state_of(z, 4, Ok(info(z, 0))).unwrap(),
            DomainState::Running
        );
        let at = |flags| reason(state_of(z, 4, Ok(info(z, flags))).unwrap());
        assert_eq!(at(shut(0)), StopReason::Poweroff);
        assert_eq!(at(shut(1)), StopReason::Crash); // reboot: a panic
        assert_eq!(at(shut(2)), StopReason::Crash); // suspend
        assert_eq!(at(shut(3)), StopReason::Crash);
        assert_eq!(at(shut(4)), StopReason::Crash); // watchdog
        assert_eq!(at(shut(200)), StopReason::Crash);
        assert_eq!(at(1), StopReason::Killed); // dying
    }

    #[test]
    fn a_vanished_or_reused_domain_was_killed() {
        let z = Uuid::new_v4();
        let s = state_of(z, 4, Err(XenError::NoSuchDomain(4))).unwrap();
        assert_eq!(reason(s.clone()), StopReason::Killed);
        assert!(
            matches!(&s, DomainState::Stopped(d) if d.detail.contains("destroyed outside spore")),
            "{s:?}"
        );
        let esrch = XenError::Hypercall {
            what: "getdomaininfo".into(),
            source: std::io::Error::from_raw_os_error(libc::ESRCH),
        };
        assert_eq!(
            reason(state_of(z, 4, Err(esrch)).unwrap()),
            StopReason::Killed
        );
        // domid 4 now belongs to another zone's domain.
        let other = info(Uuid::new_v4(), 0);
        assert_eq!(
            reason(state_of(z, 4, Ok(other)).unwrap()),
            StopReason::Killed
        );
        // Other failures say nothing about the domain.
        let eperm = XenError::Hypercall {
            what: "getdomaininfo".into(),
            source: std::io::Error::from_raw_os_error(libc::EPERM),
        };
        assert!(state_of(z, 4, Err(eperm)).is_err());
    }
}
