//! Processes and signals: kill, reaping, wait statuses, PID 1's signal handling, the signalfd.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::{check, pid_t};

pub fn kill(pid: pid_t, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: kill(2) has no memory effects.
    check(unsafe { libc::kill(pid, signal) })?;
    Ok(())
}

/// A reaped child: its pid and raw wait status.
#[derive(Debug, Clone, Copy)]
pub struct Reaped {
    pub pid: pid_t,
    pub status: libc::c_int,
}

/// The outcome of one non-blocking wait.
#[derive(Debug, Clone, Copy)]
pub enum Wait {
    Reaped(Reaped),
    /// Children exist, none has ended.
    Running,
    /// No children at all (ECHILD).
    NoChildren,
}

/// waitpid(-1, WNOHANG).
pub fn reap_one() -> io::Result<Wait> {
    let mut status = 0;
    // SAFETY: `status` is a valid out pointer.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    match pid {
        0 => Ok(Wait::Running),
        p if p > 0 => Ok(Wait::Reaped(Reaped { pid: p, status })),
        _ => {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ECHILD) {
                Ok(Wait::NoChildren)
            } else {
                Err(err)
            }
        }
    }
}

/// Blocking waitpid for one specific child (one known to be exiting).
pub fn wait_for(pid: pid_t) -> io::Result<libc::c_int> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r >= 0 {
            return Ok(status);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Decodes a wait status into (exit code) or (signal, core dumped).
pub fn decode_wait_status(status: libc::c_int) -> spore_idm::ExitStatus {
    if libc::WIFSIGNALED(status) {
        spore_idm::ExitStatus::Signal {
            signal: libc::WTERMSIG(status),
            core_dumped: libc::WCOREDUMP(status),
        }
    } else {
        spore_idm::ExitStatus::Code(libc::WEXITSTATUS(status))
    }
}

/// The signals PID 1 handles through its signalfd.
pub const HANDLED_SIGNALS: [libc::c_int; 6] = [
    libc::SIGCHLD,
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGPWR,
];

/// Job-control signals PID 1 ignores: it touches the console from the background while a tty
/// workload's process group is in the foreground, and a stop or a SIGTTOU that PID 1 cannot
/// take would otherwise make those calls fail or restart forever.
pub const JOB_CONTROL_SIGNALS: [libc::c_int; 3] = [libc::SIGTTOU, libc::SIGTTIN, libc::SIGTSTP];

pub fn ignore_job_control_signals() {
    for sig in JOB_CONTROL_SIGNALS {
        // SAFETY: setting a catchable signal's disposition to SIG_IGN.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
}

/// A signalfd for [`HANDLED_SIGNALS`], which are blocked so they queue on the fd.
#[derive(Debug)]
pub struct SignalFd {
    fd: OwnedFd,
}

impl SignalFd {
    pub fn new() -> io::Result<Self> {
        // SAFETY: sigset_t is plain data; sigemptyset initialises it before use.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid sigset_t for these calls.
        unsafe {
            libc::sigemptyset(&mut set);
            for sig in HANDLED_SIGNALS {
                libc::sigaddset(&mut set, sig);
            }
        }
        // SAFETY: `set` is initialised; the old mask is not needed.
        check(unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) })?;
        // SAFETY: -1 asks for a new fd; `set` is initialised.
        let fd =
            check(unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) })?;
        // SAFETY: signalfd returned a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd })
    }

    /// The next pending signal number, or `None` if none is queued.
    pub fn next(&self) -> io::Result<Option<libc::c_int>> {
        // SAFETY: signalfd_siginfo is plain data; all-zero is valid.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: `info` is writable for `size` bytes.
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut info as *mut libc::signalfd_siginfo).cast(),
                size,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            return match err.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
                _ => Err(err),
            };
        }
        if n as usize != size {
            return Ok(None);
        }
        Ok(Some(info.ssi_signo as libc::c_int))
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
