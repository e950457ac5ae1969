//! Terminals: the controlling terminal, termios modes, output queue, window size, ptys.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::check;

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
