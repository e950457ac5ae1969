//! Every raw system call spore-init makes, wrapped in safe functions. Nothing else in the crate
//! uses `unsafe` except the spawn path, which must run code between fork and exec.
//!
//! Constants and structs come from the `libc` crate, which mirrors the kernel UAPI headers named
//! in each comment; the few the crate lacks are defined here with their source header.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

pub use libc::pid_t;

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in string"))
}

/// CLOCK_BOOTTIME in nanoseconds (time since the kernel started, suspend included).
pub fn boottime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_BOOTTIME exists on every kernel we boot.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000) + ts.tv_nsec as u64
}

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

pub fn sync() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// Powers the machine off. Only returns if the kernel refuses.
pub fn power_off() -> io::Error {
    // SAFETY: reboot(2) with a valid command; as PID 1 with CAP_SYS_BOOT it does not return.
    unsafe { libc::reboot(libc::RB_POWER_OFF) };
    io::Error::last_os_error()
}

pub fn sethostname(name: &str) -> io::Result<()> {
    // SAFETY: pointer and length describe `name`'s bytes.
    check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) })?;
    Ok(())
}

/// The running kernel's release (uname -r).
pub fn kernel_release() -> String {
    // SAFETY: utsname is plain old data; all-zero is a valid value.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable utsname.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return String::new();
    }
    // SAFETY: the kernel NUL-terminates every utsname field within its array.
    let release = unsafe { CStr::from_ptr(uts.release.as_ptr()) };
    release.to_string_lossy().into_owned()
}

/// sysconf(_SC_CLK_TCK): the unit of /proc/stat times.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 { v as u64 } else { 100 }
}

pub fn page_size() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if v > 0 { v as u64 } else { 4096 }
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

/// umount2(MNT_DETACH).
pub fn unmount_detach(path: &str) -> io::Result<()> {
    let path = cstr(path)?;
    // SAFETY: NUL-terminated path.
    check(unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) })?;
    Ok(())
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

/// Makes PID 1 a session leader with `fd` (a terminal) as its controlling terminal, so a
/// workload can have the terminal in its own foreground process group without leading the
/// session: when a session leader exits, the kernel hangs its (non-pty) terminal up, which
/// discards output not yet sent and leaves every open descriptor of it dead.
pub fn own_terminal(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: no arguments. EPERM: already a session (or group) leader, which is fine.
    if unsafe { libc::setsid() } < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EPERM) {
            return Err(err);
        }
    }
    // SAFETY: TIOCSCTTY takes an int by value; 1 steals the terminal from another session.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 1 as libc::c_int) })?;
    Ok(())
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

/// One entry of a poll(2) set.
pub type PollFd = libc::pollfd;
pub const POLLIN: i16 = libc::POLLIN;
pub const POLLOUT: i16 = libc::POLLOUT;
pub const POLLERR: i16 = libc::POLLERR;
pub const POLLHUP: i16 = libc::POLLHUP;

pub fn pollfd(fd: RawFd, events: i16) -> PollFd {
    PollFd {
        fd,
        events,
        revents: 0,
    }
}

/// poll(2); EINTR counts as "nothing ready".
pub fn poll(fds: &mut [PollFd], timeout_ms: i32) -> io::Result<usize> {
    // SAFETY: the pointer and length describe a valid, writable slice of pollfd.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if n < 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(err);
    }
    Ok(n as usize)
}

/// pipe2(O_CLOEXEC): (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two fds pipe2 writes.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 returned two new fds that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: fcntl on a valid fd with integer arguments.
    let flags = check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) })?;
    Ok(())
}

pub fn set_blocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: fcntl on a valid fd with integer arguments.
    let flags = check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) })?;
    Ok(())
}

fn get_termios(fd: BorrowedFd<'_>) -> io::Result<libc::termios> {
    // SAFETY: termios is plain data; tcgetattr fills it.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and writable termios.
    check(unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut t) })?;
    Ok(t)
}

fn set_termios(fd: BorrowedFd<'_>, t: &libc::termios) -> io::Result<()> {
    // SAFETY: valid fd and an initialised termios.
    check(unsafe { libc::tcsetattr(fd.as_raw_fd(), libc::TCSANOW, t) })?;
    Ok(())
}

/// cfmakeraw: no echo, no line editing, no CR/LF translation, 8-bit clean. The IDM port must
/// be raw or the line discipline rewrites binary frames.
pub fn make_raw(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut t = get_termios(fd)?;
    // SAFETY: `t` is an initialised termios.
    unsafe { libc::cfmakeraw(&mut t) };
    set_termios(fd, &t)
}

/// A terminal for interactive use: line editing, echo, signals, CR/LF output mapping.
pub fn make_sane(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut t = get_termios(fd)?;
    t.c_iflag = libc::ICRNL | libc::IXON | libc::IUTF8 | libc::BRKINT;
    t.c_oflag = libc::OPOST | libc::ONLCR;
    t.c_cflag = (t.c_cflag & !(libc::CSIZE | libc::PARENB)) | libc::CS8 | libc::CREAD;
    t.c_lflag = libc::ISIG
        | libc::ICANON
        | libc::ECHO
        | libc::ECHOE
        | libc::ECHOK
        | libc::ECHOCTL
        | libc::ECHOKE
        | libc::IEXTEN;
    set_termios(fd, &t)
}

/// Bytes written to a terminal that its driver has not sent yet (TIOCOUTQ).
pub fn output_queue_len(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ writes an int to the valid pointer.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCOUTQ, &mut n) })?;
    Ok(n.max(0) as usize)
}

/// Waits (until `deadline`) for a terminal to send what was written to it. Unlike tcdrain this
/// cannot hang when the host stops reading.
pub fn drain_tty(fd: BorrowedFd<'_>, deadline: std::time::Instant) {
    while std::time::Instant::now() < deadline {
        match output_queue_len(fd) {
            Ok(0) | Err(_) => return,
            Ok(_) => std::thread::sleep(std::time::Duration::from_millis(1)),
        }
    }
}

pub fn set_window_size(fd: BorrowedFd<'_>, rows: u16, columns: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: columns,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from the pointer, which is valid.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) })?;
    Ok(())
}

/// Opens a new pseudo-terminal: (master, path of the slave).
pub fn open_pty() -> io::Result<(OwnedFd, String)> {
    // SAFETY: posix_openpt returns a new fd or -1.
    let master =
        check(unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) })?;
    // SAFETY: the fd is new and owned by nobody else.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    let mut unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads an int from the valid pointer.
    check(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &mut unlock) })?;
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes an unsigned int to the valid pointer.
    check(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut n) })?;
    Ok((master, format!("/dev/pts/{n}")))
}

/// A netlink route socket (NETLINK_ROUTE), close-on-exec.
pub fn netlink_route_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments.
    let fd = check(unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    })?;
    // SAFETY: the fd is new and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// send(2) on a connected or netlink socket (the kernel is the default destination).
pub fn send(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: pointer and length describe `buf`.
    let n = unsafe { libc::send(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

pub fn recv(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: pointer and length describe the writable `buf`.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// The child's side of a fork: only these calls run between fork and exec.
pub mod child {
    use super::*;

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
}
