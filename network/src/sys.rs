//! The raw kernel interfaces sporenet needs that rustix has no safe call for: attaching a
//! tap device (`TUNSETIFF`). Everything above this module is safe, typed Rust.

use std::ffi::c_int;
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{Mode, OFlags};
use rustix::ioctl::{self, Updater, opcode};

/// `struct ifreq` with the `ifr_flags` member of its union (`include/uapi/linux/if.h`): 16
/// bytes of name, then the 24-byte union.
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: i16,
    _pad: [u8; 22],
}

/// `TUNSETIFF` = `_IOW('T', 202, int)` (`include/uapi/linux/if_tun.h`); the kernel reads a
/// whole `struct ifreq` despite the `int` in the number.
const TUNSETIFF: ioctl::Opcode = opcode::write::<c_int>(b'T', 202);
/// `IFF_TAP | IFF_NO_PI` (`include/uapi/linux/if_tun.h`): Ethernet frames, no packet-info
/// prefix.
const IFF_TAP_NO_PI: i16 = 0x0002 | 0x1000;

/// Opens `/dev/net/tun` and attaches it to the tap `name` in the calling thread's network
/// namespace (creating a non-persistent tap when none by that name exists). Non-blocking.
pub fn open_tap(name: &str) -> std::io::Result<OwnedFd> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() > 15 || bytes.contains(&0) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{name:?} is not a valid interface name (1-15 bytes, no NUL)"),
        ));
    }
    let fd = rustix::fs::open(
        "/dev/net/tun",
        OFlags::RDWR | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut req = IfReq {
        name: [0; 16],
        flags: IFF_TAP_NO_PI,
        _pad: [0; 22],
    };
    req.name[..bytes.len()].copy_from_slice(bytes);
    // SAFETY: TUNSETIFF takes a pointer to a `struct ifreq`, which `IfReq` lays out exactly
    // (40 bytes, name then flags); the kernel reads and writes only within it.
    unsafe { ioctl::ioctl(fd.as_fd(), Updater::<TUNSETIFF, IfReq>::new(&mut req)) }?;
    Ok(fd)
}

/// Hands `fd` to tokio's reactor, to be woken when it is readable.
pub fn watch_readable(fd: OwnedFd) -> std::io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: `OwnedFd` keeps the descriptor open and unchanged for as long as the `AsyncFd`
    // owns it, and `as_raw_fd` always returns that descriptor.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifreq_matches_the_kernel_layout_and_opcode() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
        assert_eq!(TUNSETIFF, 0x4004_54ca);
    }

    #[test]
    fn bad_names_are_refused_before_any_syscall() {
        for name in ["", "0123456789abcdef", "a\0b"] {
            let err = open_tap(name).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{name:?}");
        }
    }
}
