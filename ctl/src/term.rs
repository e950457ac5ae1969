//! The local terminal: raw mode while a console or exec session is interactive, its size, and a
//! thread that forwards standard input (and recognises the detach key).

use std::io::{IsTerminal, Read};
use std::os::fd::AsFd;

use anyhow::{Context as _, Result};
use rustix::termios::{self, OptionalActions, Termios};
use tokio::sync::mpsc;

/// Ctrl+], the detach key of `zone attach` and `zone launch --attach`.
pub const DETACH_KEY: u8 = 0x1d;

pub fn stdin_is_tty() -> bool {
    std::io::stdin().is_terminal()
}

pub fn stdout_is_tty() -> bool {
    std::io::stdout().is_terminal()
}

pub fn stderr_is_tty() -> bool {
    std::io::stderr().is_terminal()
}

/// Puts the terminal on stdin into raw mode until dropped, so keystrokes (Ctrl+C included)
/// reach the zone instead of the local line discipline.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    pub fn enable() -> Result<Self> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).context("cannot read the terminal mode")?;
        let mut raw = saved.clone();
        raw.make_raw();
        termios::tcsetattr(stdin.as_fd(), OptionalActions::Now, &raw)
            .context("cannot put the terminal into raw mode")?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // Nothing useful can be done if restoring fails; the shell's `reset` fixes it.
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), OptionalActions::Now, &self.saved);
    }
}

/// The size of the terminal on stdout (or stdin), when there is one.
pub fn size() -> Option<(u16, u16)> {
    for fd in [std::io::stdout().as_fd(), std::io::stdin().as_fd()] {
        if let Ok(ws) = termios::tcgetwinsize(fd)
            && ws.ws_row > 0
            && ws.ws_col > 0
        {
            return Some((ws.ws_row, ws.ws_col));
        }
    }
    None
}

/// What the stdin thread reports.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    Data(Vec<u8>),
    /// The detach key was typed; bytes before it were sent as `Data` first.
    Detach,
    /// Standard input ended (or failed).
    Eof,
}

/// Reads standard input on its own thread (a blocking read cannot be cancelled, so the thread
/// is left behind when the command ends). With `detach_key`, Ctrl+] ends the session.
pub fn spawn_stdin(detach_key: bool) -> mpsc::Receiver<Input> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = vec![0u8; 4096];
        loop {
            let n = match stdin.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = tx.blocking_send(Input::Eof);
                    return;
                }
                Ok(n) => n,
            };
            for event in split_input(&buf[..n], detach_key) {
                let stop = event == Input::Detach;
                if tx.blocking_send(event).is_err() || stop {
                    return;
                }
            }
        }
    });
    rx
}

/// Splits one read into data and, when enabled, a detach at the first Ctrl+].
fn split_input(bytes: &[u8], detach_key: bool) -> Vec<Input> {
    let position = if detach_key {
        bytes.iter().position(|&b| b == DETACH_KEY)
    } else {
        None
    };
    match position {
        Some(0) => vec![Input::Detach],
        Some(i) => vec![Input::Data(bytes[..i].to_vec()), Input::Detach],
        None => vec![Input::Data(bytes.to_vec())],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_key_splits_input() {
        assert_eq!(split_input(b"ls\r", true), [Input::Data(b"ls\r".to_vec())]);
        assert_eq!(split_input(b"\x1d", true), [Input::Detach]);
        assert_eq!(
            split_input(b"ab\x1dcd", true),
            [Input::Data(b"ab".to_vec()), Input::Detach]
        );
        // From a pipe the byte is data.
        assert_eq!(
            split_input(b"a\x1d", false),
            [Input::Data(b"a\x1d".to_vec())]
        );
    }
}
