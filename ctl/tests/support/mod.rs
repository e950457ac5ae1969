//! Shared by the integration tests: run the real `sporectl` binary and capture its outcome.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// What one sporectl run produced.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `sporectl --socket SOCKET ARGS...` with no stdin and a deadline.
pub fn sporectl(socket: &Path, args: &[&str]) -> Run {
    sporectl_with(socket, args, Duration::from_secs(60))
}

pub fn sporectl_with(socket: &Path, args: &[&str], deadline: Duration) -> Run {
    let child = Command::new(env!("CARGO_BIN_EXE_sporectl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("SPORE_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run sporectl");
    collect(child, args, deadline)
}

/// Waits for `child` while reading its output (a reader that waited first would deadlock on
/// output larger than a pipe's buffer), killing it after `deadline`.
fn collect(child: std::process::Child, args: &[&str], deadline: Duration) -> Run {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(deadline) {
        Ok(out) => out.expect("collect sporectl output"),
        Err(_) => {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_raw(pid as i32).expect("a child's pid"),
                rustix::process::Signal::KILL,
            );
            let out = rx.recv().expect("the killed child is collected").ok();
            panic!(
                "sporectl {args:?} did not finish within {deadline:?}\nstdout: {}\nstderr: {}",
                out.as_ref()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default(),
                out.as_ref()
                    .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                    .unwrap_or_default()
            );
        }
    };
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// An error a person reads: one `sporectl: ...` line, no Rust debug formatting.
pub fn assert_readable_error(run: &Run) {
    let stderr = run.stderr.trim_end();
    assert!(stderr.starts_with("sporectl: "), "stderr: {stderr:?}");
    assert_eq!(stderr.lines().count(), 1, "stderr: {stderr:?}");
    for debug in ["Status {", "code: ", "metadata:", "Error {", "{ kind:"] {
        assert!(!stderr.contains(debug), "debug output in {stderr:?}");
    }
}

/// Runs sporectl with `input` on its stdin (then EOF).
pub fn sporectl_stdin(socket: &Path, args: &[&str], input: &[u8]) -> Run {
    use std::io::Write as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_sporectl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("SPORE_SOCKET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run sporectl");
    let mut stdin = child.stdin.take().expect("stdin pipe");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let run = collect(child, args, Duration::from_secs(60));
    let _ = writer.join();
    run
}
