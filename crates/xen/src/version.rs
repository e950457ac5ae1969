//! Hypervisor release -> domctl/sysctl interface versions.
//!
//! Xen refuses a domctl or sysctl whose `interface_version` differs from its own, and the
//! payload layouts change with that number, so the version is read from the hypervisor at
//! start and mapped through this table. Each row was checked against
//! `XEN_DOMCTL_INTERFACE_VERSION` / `XEN_SYSCTL_INTERFACE_VERSION` in the release's
//! `xen/include/public/{domctl,sysctl}.h` (tags `RELEASE-4.x.0`; point releases keep them).

use crate::{Result, XenError};

/// A hypervisor version and the interface versions its toolstack ABI uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XenVersion {
    pub major: u16,
    pub minor: u16,
    pub domctl: u32,
    pub sysctl: u32,
}

/// (major, minor, domctl interface version, sysctl interface version).
const TABLE: &[(u16, u16, u32, u32)] = &[
    (4, 14, 0x12, 0x13),
    (4, 15, 0x13, 0x13),
    (4, 16, 0x14, 0x14),
    (4, 17, 0x15, 0x15),
    (4, 18, 0x16, 0x15),
    (4, 19, 0x17, 0x15),
    (4, 20, 0x17, 0x15),
    (4, 21, 0x17, 0x16),
    (4, 22, 0x18, 0x16),
];

impl XenVersion {
    /// Maps a hypervisor release to its interface versions; an unknown release is refused
    /// (guessing would send structs the hypervisor reads differently).
    pub fn for_release(major: u16, minor: u16) -> Result<Self> {
        TABLE
            .iter()
            .find(|(ma, mi, _, _)| *ma == major && *mi == minor)
            .map(|&(major, minor, domctl, sysctl)| Self {
                major,
                minor,
                domctl,
                sysctl,
            })
            .ok_or(XenError::UnsupportedXen { major, minor })
    }

    /// Decodes the `XENVER_version` hypercall result (`major << 16 | minor`).
    pub fn from_raw(raw: u64) -> Result<Self> {
        let major = ((raw >> 16) & 0xffff) as u16;
        let minor = (raw & 0xffff) as u16;
        Self::for_release(major, minor)
    }

    /// The releases this crate knows, as "4.14".."4.22", for messages and docs.
    pub fn supported() -> String {
        let first = TABLE
            .first()
            .map(|r| format!("{}.{}", r.0, r.1))
            .unwrap_or_default();
        let last = TABLE
            .last()
            .map(|r| format!("{}.{}", r.0, r.1))
            .unwrap_or_default();
        format!("{first}..{last}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_releases_map_to_header_values() {
        let v = XenVersion::from_raw((4 << 16) | 17).unwrap();
        assert_eq!((v.domctl, v.sysctl), (0x15, 0x15));
        let v = XenVersion::for_release(4, 14).unwrap();
        assert_eq!((v.domctl, v.sysctl), (0x12, 0x13));
        let v = XenVersion::for_release(4, 19).unwrap();
        assert_eq!((v.domctl, v.sysctl), (0x17, 0x15));
    }

    #[test]
    fn unknown_release_is_refused_by_name() {
        let err = XenVersion::from_raw((4 << 16) | 13).unwrap_err();
        assert!(matches!(
            err,
            XenError::UnsupportedXen {
                major: 4,
                minor: 13
            }
        ));
        let msg = err.to_string();
        assert!(msg.contains("4.13") && msg.contains("4.14..4.22"), "{msg}");
        assert!(XenVersion::for_release(5, 0).is_err());
    }
}
