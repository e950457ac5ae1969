//! Shared by the integration tests: run the real `sporectl` binary and capture its outcome.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
    let mut child = Command::new(env!("CARGO_BIN_EXE_sporectl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("SPORE_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run sporectl");
    let started = Instant::now();
    loop {
        if child.try_wait().expect("wait for sporectl").is_some() {
            break;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collect sporectl output");
            panic!(
                "sporectl {args:?} did not finish within {deadline:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("collect sporectl output");
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
    let started = Instant::now();
    while child.try_wait().expect("wait for sporectl").is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("sporectl {args:?} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = writer.join();
    let out = child.wait_with_output().expect("collect sporectl output");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
