//! spore-init's own messages: to hvc0 once it exists, to the kernel log (/dev/kmsg) before
//! that, so even the earliest failure shows up (on a serial console when debugging).
//!
//! Single-threaded program, so a plain global behind a Mutex is enough.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Mutex;

struct State {
    console: Option<File>,
    kmsg: Option<File>,
    verbose: bool,
}

static STATE: Mutex<State> = Mutex::new(State {
    console: None,
    kmsg: None,
    verbose: false,
});

fn with_state(f: impl FnOnce(&mut State)) {
    // A poisoned lock cannot happen with panic=abort; recover anyway rather than panic.
    let mut guard = STATE.lock().unwrap_or_else(|e| e.into_inner());
    f(&mut guard);
}

/// Starts logging to the kernel log (after /dev is mounted).
pub fn use_kmsg() {
    with_state(|s| {
        s.kmsg = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open("/dev/kmsg")
            .ok();
    });
}

/// Switches to the real console.
pub fn use_console(file: File) {
    with_state(|s| s.console = Some(file));
}

pub fn set_verbose(verbose: bool) {
    with_state(|s| s.verbose = verbose);
}

pub fn is_verbose() -> bool {
    let mut v = false;
    with_state(|s| v = s.verbose);
    v
}

/// Writes a line; `level` is the kmsg priority (3 = err, 4 = warning, 6 = info).
pub fn write_line(level: u8, message: &str) {
    with_state(|s| {
        if let Some(console) = s.console.as_mut() {
            let _ = console.write_all(format!("spore-init: {message}\n").as_bytes());
        } else if let Some(kmsg) = s.kmsg.as_mut() {
            // One write per record; kmsg splits nothing and caps records at ~1 KiB.
            let line: String = message.chars().take(900).collect();
            let _ = kmsg.write_all(format!("<{level}>spore-init: {line}\n").as_bytes());
        }
    });
}

/// Always shown.
macro_rules! alert {
    ($($arg:tt)*) => { $crate::console::write_line(4, &format!($($arg)*)) };
}

/// Shown when the launch config asks for `verbose`.
macro_rules! info {
    ($($arg:tt)*) => {
        if $crate::console::is_verbose() {
            $crate::console::write_line(6, &format!($($arg)*))
        }
    };
}

pub(crate) use {alert, info};
