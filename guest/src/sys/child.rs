//! The child's side of a fork: fork itself and the only calls the child makes before exec.
//! Each is one system call, which neither allocates nor takes a lock, as the child of a fork
//! must not.

use std::ffi::CStr;
use std::io;
use std::os::fd::RawFd;

use super::{HANDLED_SIGNALS, JOB_CONTROL_SIGNALS, check, pid_t};

/// fork(2). `Ok(0)` in the child, the child's pid in the parent.
///
/// Only sound because spore-init is single-threaded: no other thread can hold a lock the
/// child would need.
pub fn fork() -> io::Result<pid_t> {
    // SAFETY: the process is single-threaded (spore-init starts no threads), so the child
    // inherits no lock held by another thread.
    check(unsafe { libc::fork() })
}

pub fn setsid() -> io::Result<()> {
    // SAFETY: no arguments.
    check(unsafe { libc::setsid() })?;
    Ok(())
}

/// A new process group led by this process (in the caller's session).
pub fn own_process_group() -> io::Result<()> {
    // SAFETY: no memory effects.
    check(unsafe { libc::setpgid(0, 0) })?;
    Ok(())
}

/// Puts this process's group in the foreground of `fd`, the session's controlling terminal.
/// Needs SIGTTOU ignored or blocked when called from the background.
pub fn take_foreground(fd: RawFd) -> io::Result<()> {
    // SAFETY: getpgrp and tcsetpgrp have no memory effects.
    check(unsafe { libc::tcsetpgrp(fd, libc::getpgrp()) })?;
    Ok(())
}

/// Makes `fd` (a terminal) the controlling terminal of this session, stealing it if needed.
pub fn set_controlling_tty(fd: RawFd) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an int argument by value.
    check(unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 1 as libc::c_int) })?;
    Ok(())
}

pub fn open(path: &CStr, flags: libc::c_int) -> io::Result<RawFd> {
    // SAFETY: NUL-terminated path.
    check(unsafe { libc::open(path.as_ptr(), flags) })
}

pub fn dup2(from: RawFd, to: RawFd) -> io::Result<()> {
    // SAFETY: dup2 on fds; an invalid `from` is reported as EBADF.
    check(unsafe { libc::dup2(from, to) })?;
    Ok(())
}

/// Clears close-on-exec (dup2 onto the same number leaves it set).
pub fn clear_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an fd with an integer argument.
    check(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) })?;
    Ok(())
}

pub fn close(fd: RawFd) {
    // SAFETY: closing an fd the child owns; errors do not matter here.
    unsafe { libc::close(fd) };
}

/// Unblocks every signal and restores default dispositions (PID 1 blocks some for its
/// signalfd; the mask survives exec).
pub fn reset_signals() -> io::Result<()> {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    // SIGPIPE too: Rust's runtime ignores it in init, and an ignored disposition would
    // survive exec.
    for sig in HANDLED_SIGNALS
        .into_iter()
        .chain(JOB_CONTROL_SIGNALS)
        .chain([libc::SIGPIPE])
    {
        // SAFETY: restoring the default action of a catchable signal.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    // SAFETY: valid sigset_t; the old mask is not needed.
    check(unsafe { libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) })?;
    Ok(())
}

/// setrlimit(2) with a resource number from `libc::RLIMIT_*`.
pub fn setrlimit(resource: u32, soft: u64, hard: u64) -> io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: `limit` is a valid rlimit; the resource type differs between glibc and musl,
    // hence the inferred cast.
    check(unsafe { libc::setrlimit(resource as _, &limit) })?;
    Ok(())
}

pub fn setgroups(groups: &[libc::gid_t]) -> io::Result<()> {
    // SAFETY: pointer and length describe `groups`; the length type differs by libc.
    check(unsafe { libc::setgroups(groups.len() as _, groups.as_ptr()) })?;
    Ok(())
}

pub fn setgid(gid: libc::gid_t) -> io::Result<()> {
    // SAFETY: no memory effects.
    check(unsafe { libc::setgid(gid) })?;
    Ok(())
}

pub fn setuid(uid: libc::uid_t) -> io::Result<()> {
    // SAFETY: no memory effects.
    check(unsafe { libc::setuid(uid) })?;
    Ok(())
}

pub fn chdir(path: &CStr) -> io::Result<()> {
    // SAFETY: NUL-terminated path.
    check(unsafe { libc::chdir(path.as_ptr()) })?;
    Ok(())
}

/// execve(2); returns only on failure.
pub fn execve(
    path: &CStr,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> io::Error {
    debug_assert!(argv.last().is_some_and(|p| p.is_null()));
    debug_assert!(envp.last().is_some_and(|p| p.is_null()));
    // SAFETY: `path` is NUL-terminated; argv and envp are null-terminated arrays of pointers
    // to NUL-terminated strings the caller keeps alive.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    io::Error::last_os_error()
}

/// write(2) of the whole buffer, ignoring errors (used for the exec-status pipe).
pub fn write_all(fd: RawFd, mut buf: &[u8]) {
    while !buf.is_empty() {
        // SAFETY: pointer and length describe `buf`.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n <= 0 {
            return;
        }
        buf = &buf[n as usize..];
    }
}

/// _exit(2): no atexit handlers, no stdio flushing.
pub fn exit(code: libc::c_int) -> ! {
    // SAFETY: _exit never returns and touches no process memory.
    unsafe { libc::_exit(code) }
}
