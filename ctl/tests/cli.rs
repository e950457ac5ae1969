//! sporectl on its own: what it says when spored is not there, and what needs no daemon.

mod support;

use std::path::Path;

use support::{assert_readable_error, sporectl};

#[test]
fn missing_socket_names_the_path_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("absent.sock");
    for args in [
        &["host", "status"][..],
        &["zone", "list", "-o", "json"][..],
        &["image", "list"][..],
    ] {
        let run = sporectl(&socket, args);
        assert_eq!(run.code, 1, "{args:?}: {run:?}");
        assert_readable_error(&run);
        assert_eq!(
            run.stderr.trim_end(),
            format!(
                "sporectl: cannot reach spored at {}: no such file (is spored running? see systemctl status spored)",
                socket.display()
            )
        );
        assert!(run.stdout.is_empty(), "{run:?}");
    }
}

#[test]
fn dead_socket_says_spored_is_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let run = sporectl(&socket, &["zone", "list"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_readable_error(&run);
    assert!(run.stderr.contains("connection refused"), "{}", run.stderr);
}

#[test]
fn attached_launch_without_daemon_exits_125() {
    let run = sporectl(
        Path::new("/nonexistent/spored.sock"),
        &["zone", "launch", "-a", "busybox"],
    );
    assert_eq!(run.code, 125, "{run:?}");
    assert_readable_error(&run);
}

#[test]
fn bad_arguments_fail_before_connecting() {
    let socket = Path::new("/nonexistent/spored.sock");
    let run = sporectl(socket, &["zone", "launch", "--memory", "lots", "busybox"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("invalid memory size \"lots\""),
        "{}",
        run.stderr
    );
    let run = sporectl(socket, &["zone", "launch", "-p", "99999:80", "busybox"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("host port \"99999\" is not in 1-65535"),
        "{}",
        run.stderr
    );
    let run = sporectl(
        socket,
        &["zone", "launch", "-e", "SPORE_TEST_UNSET_VAR", "busybox"],
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert_readable_error(&run);
    assert!(
        run.stderr.contains("SPORE_TEST_UNSET_VAR"),
        "{}",
        run.stderr
    );
    let run = sporectl(socket, &["zone", "resources", "web"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("nothing to change"), "{}", run.stderr);
    let run = sporectl(socket, &["image", "import", "/nonexistent/image.tar"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("/nonexistent/image.tar"),
        "{}",
        run.stderr
    );
}

#[test]
fn raw_streams_refuse_structured_output() {
    let socket = Path::new("/nonexistent/spored.sock");
    let run = sporectl(socket, &["-o", "json", "zone", "attach", "web"]);
    assert_eq!(run.code, 125, "{run:?}");
    assert_eq!(
        run.stderr,
        "sporectl: zone attach prints a raw byte stream; -o json does not apply to it\n"
    );
    let run = sporectl(socket, &["completions", "bash", "-o", "yaml"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("-o yaml does not apply"),
        "{}",
        run.stderr
    );
}

#[test]
fn completions_for_each_shell() {
    let socket = Path::new("/nonexistent/spored.sock");
    let run = sporectl(socket, &["completions", "bash"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("_sporectl()"),
        "not a bash completion script"
    );
    for word in [
        "launch",
        "attach",
        "reservations",
        "--publish",
        // The docker-style verbs and their own flags.
        "run",
        "ps",
        "exec",
        "logs",
        "rm",
        "inspect",
        "pull",
        "images",
        "rmi",
        "top",
        "stats",
        "--detach",
        "--interactive",
        "--no-stream",
        "--force",
    ] {
        assert!(run.stdout.contains(word), "bash completions lack {word}");
    }
    for shell in ["zsh", "fish"] {
        let run = sporectl(socket, &["completions", shell]);
        assert_eq!(run.code, 0, "{shell}: {run:?}");
        assert!(
            run.stdout.contains("launch"),
            "{shell} completions lack launch"
        );
    }
    // The bash script is valid bash.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("sporectl.bash");
    std::fs::write(&script, run_bash(socket)).unwrap();
    let status = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .unwrap();
    assert!(status.success(), "bash -n rejects the completion script");
}

fn run_bash(socket: &Path) -> String {
    sporectl(socket, &["completions", "bash"]).stdout
}

#[test]
fn usage_errors_exit_1_and_help_exits_0() {
    let socket = Path::new("/nonexistent/spored.sock");
    let run = sporectl(socket, &["zone", "list", "--bogus"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("--bogus"), "{}", run.stderr);
    let run = sporectl(socket, &["zone", "launch", "--help"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .contains("sporectl zone launch --attach busybox echo hello")
    );
}
