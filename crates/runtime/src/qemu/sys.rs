//! The one unsafe operation of the QEMU backend: detaching QEMU into its own session.

use std::os::unix::process::CommandExt;
use std::process::Command;

/// Makes the command's process the leader of a new session when it starts, so that QEMU has
/// no controlling terminal and no signal aimed at spored's session or process group reaches it.
pub fn new_session(command: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and only calls setsid(2),
    // which is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            rustix::process::setsid()?;
            Ok(())
        });
    }
}

/// Registers a pidfd with tokio's reactor (readable once the process exits).
pub fn async_pidfd(
    pidfd: std::os::fd::OwnedFd,
) -> std::io::Result<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    // SAFETY: an OwnedFd is a valid open descriptor that stays open, and keeps returning the
    // same number from as_raw_fd, until it is dropped, which happens only with the AsyncFd.
    unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE)
    }
    .map_err(std::io::Error::from)
}
