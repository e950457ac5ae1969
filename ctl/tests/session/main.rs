//! The streaming commands (`zone launch --attach`, `zone attach`, `zone exec`, `image pull`)
//! driven end to end through the real sporectl binary against a scripted stand-in for spored.
//!
//! The stand-in (test code only) serves the real gRPC contract on a Unix socket and plays
//! the races sporectl must survive: console output written before any client attached,
//! console attach refused until the zone starts, a zone that ends before any attach could
//! succeed, failure and signal death. The real daemon cannot yet run zones (no backend has
//! landed), so these paths are exercised here; `tests/spored.rs` covers the real daemon.

mod double;
#[path = "../support/mod.rs"]
mod support;

use std::time::Duration;

use double::serve;
use support::{assert_readable_error, sporectl, sporectl_stdin};

#[test]
fn attached_launch_shows_output_from_before_the_attach_and_exits_with_the_code() {
    let server = serve();
    let run = sporectl(
        &server.socket,
        &["zone", "launch", "-a", "--name", "job", "scenario/exit7"],
    );
    assert_eq!(run.code, 7, "{run:?}");
    // Nothing lost (the boot line was written before the zone had a console to attach to),
    // nothing repeated.
    assert_eq!(run.stdout, "booting\nhello from zone\n", "{run:?}");
    assert_eq!(run.stderr, "", "{run:?}");
}

#[test]
fn broken_console_is_reattached_without_repeating_output() {
    let server = serve();
    let run = sporectl(&server.socket, &["zone", "launch", "-a", "scenario/flaky"]);
    assert_eq!(run.code, 7, "{run:?}");
    assert_eq!(run.stdout, "booting\nhello from zone\n", "{run:?}");
}

#[test]
fn watch_resumes_after_being_cut_off_without_gaps_or_repeats() {
    use std::process::{Command, Stdio};

    let server = serve();
    // The stand-in holds events 1-5 and cuts the first watch off after two of them.
    let mut child = Command::new(env!("CARGO_BIN_EXE_sporectl"))
        .arg("--socket")
        .arg(&server.socket)
        .args(["-o", "json", "zone", "watch", "--from", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let sequences: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let event: serde_json::Value = serde_json::from_str(line).unwrap();
            event["sequence"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(
        sequences,
        [1, 2, 3, 4, 5],
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn signal_death_maps_to_128_plus_the_signal() {
    let server = serve();
    let run = sporectl(&server.socket, &["zone", "launch", "-a", "scenario/signal"]);
    assert_eq!(run.code, 137, "{run:?}");
}

#[test]
fn failed_zone_prints_the_reason_and_exits_125() {
    let server = serve();
    let run = sporectl(
        &server.socket,
        &["zone", "launch", "-a", "--name", "bad", "scenario/fail"],
    );
    assert_eq!(run.code, 125, "{run:?}");
    assert_readable_error(&run);
    assert_eq!(
        run.stderr,
        "sporectl: zone bad failed: image \"scenario/fail\" not found in registry\n"
    );
}

#[test]
fn zone_that_ended_before_any_attach_prints_its_stored_log() {
    let server = serve();
    let run = sporectl(&server.socket, &["zone", "launch", "-a", "scenario/quick"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert_eq!(run.stdout, "booting\nquick output\n", "{run:?}");
}

#[test]
fn stdin_reaches_the_console() {
    let server = serve();
    let run = sporectl_stdin(
        &server.socket,
        &["zone", "launch", "-a", "scenario/echo"],
        b"hi\nthere\nquit\n",
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout, "booting\ngot: hi\ngot: there\n", "{run:?}");
}

#[test]
fn detached_launch_prints_the_id() {
    let server = serve();
    let run = sporectl(&server.socket, &["zone", "launch", "scenario/exit7"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout, "00000001-0000-4000-8000-000000000000\n");
    let run = sporectl(
        &server.socket,
        &["-o", "json", "zone", "launch", "scenario/exit7"],
    );
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["zoneId"], "00000002-0000-4000-8000-000000000000");
    assert_eq!(json["name"], "zone2");
}

#[test]
fn attach_follows_a_running_zone_and_refuses_an_exited_one() {
    let server = serve();
    let run = sporectl(
        &server.socket,
        &["zone", "launch", "--name", "svc", "scenario/exit7"],
    );
    assert_eq!(run.code, 0, "{run:?}");
    // Attach while it boots: waits for the console, then gets the live output and the code.
    let run = sporectl(&server.socket, &["zone", "attach", "--replay", "svc"]);
    assert_eq!(run.code, 7, "{run:?}");
    assert_eq!(run.stdout, "booting\nhello from zone\n", "{run:?}");
    let run = sporectl(&server.socket, &["zone", "attach", "svc"]);
    assert_eq!(run.code, 125, "{run:?}");
    assert_readable_error(&run);
    assert!(
        run.stderr.contains("sporectl zone logs svc"),
        "{}",
        run.stderr
    );
}

#[test]
fn exec_splits_streams_forwards_stdin_and_exits_with_the_code() {
    let server = serve();
    let run = sporectl(
        &server.socket,
        &["zone", "launch", "--name", "box", "scenario/echo"],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let run = sporectl_stdin(
        &server.socket,
        &["zone", "exec", "-i", "box", "upper"],
        b"abc\n",
    );
    assert_eq!(run.code, 5, "{run:?}");
    assert_eq!(run.stdout, "ABC\n");
    assert_eq!(run.stderr, "done\n");
    let run = sporectl(&server.socket, &["zone", "exec", "nobox", "upper"]);
    assert_eq!(run.code, 125, "{run:?}");
    assert!(
        run.stderr.contains("zone \"nobox\" not found"),
        "{}",
        run.stderr
    );
}

#[test]
fn pull_shows_plain_progress_lines_and_prints_the_image() {
    let server = serve();
    let run = sporectl(&server.socket, &["image", "pull", "-o", "json", "busybox"]);
    assert_eq!(run.code, 0, "{run:?}");
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["references"][0], "busybox");
    assert_eq!(json["manifestDigest"], "sha256:cccc");
    // One line per phase change, not per byte.
    assert_eq!(
        run.stderr,
        "resolving\ndownloading\n  sha256:aaaaaaaaaaaa downloading 1000 B\n  sha256:bbbbbbbbbbbb downloading 1000 B\n\
         \x20 sha256:aaaaaaaaaaaa done 1000 B\n  sha256:bbbbbbbbbbbb done 1000 B\npacking\n"
    );
    let run = sporectl(&server.socket, &["image", "pull", "-q", "busybox"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stderr, "");
    assert!(
        run.stdout.starts_with("image:    busybox\n"),
        "{}",
        run.stdout
    );
}

#[test]
fn unimplemented_prints_the_server_message() {
    let server = serve();
    let run = sporectl(&server.socket, &["image", "list"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        run.stderr,
        "sporectl: the image pipeline has not landed (issue 3)\n"
    );
    let run = sporectl(&server.socket, &["zone", "top", "whatever"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_readable_error(&run);
}

/// On a terminal (a pty from util-linux `script`), `-t` puts it in raw mode and Ctrl+]
/// detaches, leaving the zone running.
#[test]
fn ctrl_close_bracket_detaches_on_a_terminal() {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    use std::time::Instant;

    let server = serve();
    let command = format!(
        "{} --socket {} zone launch -a -t --name tty scenario/echo",
        env!("CARGO_BIN_EXE_sporectl"),
        server.socket.display()
    );
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("util-linux script runs");
    let mut stdin = child.stdin.take().unwrap();
    // Let sporectl attach and switch the terminal to raw mode; then type.
    std::thread::sleep(Duration::from_millis(1500));
    stdin.write_all(b"hi\n").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    stdin.write_all(&[0x1d]).unwrap();
    stdin.flush().unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "Ctrl+] did not detach"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("got: hi"), "{stdout:?}");
    assert!(
        stdout.contains("detached from zone tty; it keeps running"),
        "{stdout:?}"
    );
    // Raw mode: the typed line was not echoed by the local terminal.
    assert!(
        !stdout.contains("hi\r\n") && !stdout.starts_with("hi"),
        "{stdout:?}"
    );
}

/// On a terminal, pull progress is drawn as bars on stderr and the summary still follows.
#[test]
fn pull_draws_bars_on_a_terminal() {
    use std::process::{Command, Stdio};

    let server = serve();
    let command = format!(
        "{} --socket {} image pull busybox",
        env!("CARGO_BIN_EXE_sporectl"),
        server.socket.display()
    );
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("util-linux script runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("image:    busybox"), "{text:?}");
    assert!(text.contains("digest:   sha256:cccc"), "{text:?}");
    // The plain-line form is for pipes only.
    assert!(
        !text.contains("  sha256:aaaaaaaaaaaa downloading 1000 B\n"),
        "{text:?}"
    );
}
