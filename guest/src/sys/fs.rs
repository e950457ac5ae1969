//! Filesystems: mounts, the root switch, kernel modules, unmounts and sync.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use super::{check, cstr};

/// mount(2). `data` is the filesystem's option string.
pub fn mount(
    source: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let (source, target, fstype) = (cstr(source)?, cstr(target)?, cstr(fstype)?);
    let data = data.map(cstr).transpose()?;
    let data_ptr = data
        .as_ref()
        .map_or(std::ptr::null(), |d| d.as_ptr().cast::<libc::c_void>());
    // SAFETY: all pointers are NUL-terminated strings that live until the call returns (or null
    // for data, which mount accepts).
    check(unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data_ptr,
        )
    })?;
    Ok(())
}

/// Moves the mount at `source` to `target` (mount --move).
pub fn move_mount(source: &str, target: &str) -> io::Result<()> {
    let (source, target) = (cstr(source)?, cstr(target)?);
    // SAFETY: NUL-terminated strings; MS_MOVE ignores fstype and data, which may be null.
    check(unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            std::ptr::null(),
            libc::MS_MOVE,
            std::ptr::null(),
        )
    })?;
    Ok(())
}

pub fn chroot(path: &str) -> io::Result<()> {
    let path = cstr(path)?;
    // SAFETY: NUL-terminated string.
    check(unsafe { libc::chroot(path.as_ptr()) })?;
    Ok(())
}

/// finit_module(2): loads the module in `file` with `params` ("name=value ...").
pub fn finit_module(file: BorrowedFd<'_>, params: &str) -> io::Result<()> {
    let params = cstr(params)?;
    // SAFETY: a valid open fd, a NUL-terminated parameter string, flags 0.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            file.as_raw_fd(),
            params.as_ptr(),
            0 as libc::c_int,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// umount2(MNT_DETACH).
pub fn unmount_detach(path: &str) -> io::Result<()> {
    let path = cstr(path)?;
    // SAFETY: NUL-terminated path.
    check(unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) })?;
    Ok(())
}

pub fn sync() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}
