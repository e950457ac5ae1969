//! Every raw system call spore-init makes, wrapped in safe functions, one subsystem per file.
//! Nothing else in spore-init's product code uses `unsafe`: the calls the spawn path makes
//! between fork and exec are here too, in [`child`].
//!
//! Constants and structs come from the `libc` crate, which mirrors the kernel UAPI headers.
//!
//! - `fs`: mounts, chroot, kernel modules, unmount, sync
//! - `proc`: kill, reaping and wait statuses, PID 1's signals and its signalfd
//! - `tty`: the controlling terminal, termios, output queue, window size, ptys
//! - `io`: poll, pipes, blocking mode, netlink send and recv
//! - `system`: the boot clock, host name, kernel release, sysconf, power off
//! - [`child`]: fork and what the child calls before exec

pub mod child;
mod fs;
mod io;
mod proc;
mod system;
mod tty;

pub use fs::*;
pub use io::*;
pub use libc::pid_t;
pub use proc::*;
pub use system::*;
pub use tty::*;

use std::ffi::CString;

fn check(ret: libc::c_int) -> std::io::Result<libc::c_int> {
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cstr(s: &str) -> std::io::Result<CString> {
    CString::new(s)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL byte in string"))
}
