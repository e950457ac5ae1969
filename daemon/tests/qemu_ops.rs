//! Operating running zones end to end on the QEMU backend (issue 14): the real spored and
//! sporectl, real QEMU (TCG here), the guest bundle and the busybox demo image. `exec` as
//! `docker exec` does it (streams, codes, stdin, a terminal and its size, users, concurrency,
//! Ctrl+C, hang-up), `top` and `stats`, `run -d` and `logs -f`, `run --rm -it` on a terminal,
//! and spored's memory while a guest floods exec output.
//!
//! Measurements print with `--no-capture` (docs/architecture.md quotes them):
//! `cargo nextest run -p spored --test qemu_ops --no-capture`.

mod support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use spore_api::v1;
use support::Spored;
use support::pty::Pty;
use tokio_stream::StreamExt;
use tonic::Code;

/// A boot under TCG takes seconds; on a loaded two-core machine, a minute or more.
const ZONE_TIMEOUT: Duration = Duration::from_secs(180);
/// One sporectl command against a running zone.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

fn sporectl_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_spored")).with_file_name("sporectl");
    assert!(
        bin.is_file(),
        "{} is missing: build it first (cargo build -p sporectl)",
        bin.display()
    );
    bin
}

/// spored on a state dir holding the guest bundle, with the demo image imported as `demo`.
struct Host {
    // Declared first, dropped first: a failed test's zones end before spored and their files.
    _reaper: spore_testkit::Reaper,
    _dir: tempfile::TempDir,
    spored: Spored,
}

impl Host {
    fn start() -> Host {
        let dir = tempfile::Builder::new()
            .prefix("spore-ops-")
            .tempdir_in("/tmp")
            .unwrap();
        let guest = dir.path().join("state/guest");
        std::fs::create_dir_all(&guest).unwrap();
        for f in ["kernel", "initrd"] {
            std::fs::copy(spore_testkit::guest_bundle().join(f), guest.join(f)).unwrap();
        }
        let reaper = spore_testkit::Reaper::new(&dir.path().join("state/zones"));
        let config = dir.path().join("spored.toml");
        std::fs::write(&config, "[zones]\ndefault_memory_mib = 128\n").unwrap();
        let spored = Spored::start_with_config(dir.path(), &config);
        let host = Host {
            _reaper: reaper,
            spored,
            _dir: dir,
        };
        let layout = support::demo_image(host._dir.path(), "demo");
        let out = host.ctl(&["image", "import", layout.to_str().unwrap(), "--tag", "demo"]);
        assert!(out.status.success(), "import: {}", text(&out));
        host
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(sporectl_bin());
        command.arg("--socket").arg(&self.spored.socket).args(args);
        command
    }

    /// Runs sporectl to completion (no stdin), bounded by [`COMMAND_TIMEOUT`].
    fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_stdin(args, None)
    }

    fn ctl_stdin(&self, args: &[&str], input: Option<&[u8]>) -> Output {
        let mut child = self
            .command(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run sporectl");
        if let Some(input) = input {
            let mut stdin = child.stdin.take().unwrap();
            let input = input.to_vec();
            std::thread::spawn(move || {
                let _ = stdin.write_all(&input);
            });
        }
        wait_output(child, args, COMMAND_TIMEOUT)
    }

    /// Starts sporectl with piped stdout/stderr, not waiting.
    fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run sporectl")
    }

    async fn client(&self) -> spore_api::ControlClient {
        self.spored.client().await
    }

    async fn state(&self, zone: &str) -> Result<v1::ZoneState, tonic::Status> {
        let zone = self
            .client()
            .await
            .get_zone(v1::GetZoneRequest { zone: zone.into() })
            .await?
            .into_inner()
            .zone
            .unwrap();
        Ok(zone.status.unwrap().state())
    }

    /// Waits until the zone is in `state`; fails the test with the log if it ends otherwise.
    async fn wait_state(&self, zone: &str, want: v1::ZoneState) {
        let start = Instant::now();
        loop {
            let state = self.state(zone).await.unwrap();
            if state == want {
                return;
            }
            assert!(
                !matches!(state, v1::ZoneState::Failed | v1::ZoneState::Exited)
                    || want == v1::ZoneState::Exited,
                "zone {zone} is {state:?}, waiting for {want:?}; spored log:\n{}",
                self.spored.log()
            );
            assert!(
                start.elapsed() < ZONE_TIMEOUT,
                "zone {zone} not {want:?} within {ZONE_TIMEOUT:?} (is {state:?})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts a detached zone running `command` and waits until it runs.
    async fn running(&self, name: &str, command: &[&str]) {
        let mut args = vec!["run", "-d", "--name", name, "demo"];
        args.extend_from_slice(command);
        let out = self.ctl(&args);
        assert!(out.status.success(), "{}", text(&out));
        self.wait_state(name, v1::ZoneState::Running).await;
    }

    fn rss_kib(&self) -> u64 {
        status_field(self.spored.child.id(), "VmRSS:")
    }
}

/// A /proc/PID/status field in KiB.
fn status_field(pid: u32, name: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn wait_output(child: Child, args: &[&str], timeout: Duration) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // SAFETY: kill(2) on a child we started and have not reaped.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            let out = rx.recv().unwrap().unwrap();
            panic!(
                "sporectl {args:?} did not finish within {timeout:?}: {}",
                text(&out)
            );
        }
    }
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `f` until it holds, at most `timeout`.
fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One exec through the API: `true`, from the request to its exit status.
async fn exec_true(client: &mut spore_api::ControlClient, zone: &str) -> Duration {
    let started = Instant::now();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(v1::ExecInZoneRequest {
        kind: Some(v1::exec_in_zone_request::Kind::Start(v1::ExecStart {
            zone: zone.into(),
            command: vec!["true".into()],
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    tx.send(v1::ExecInZoneRequest {
        kind: Some(v1::exec_in_zone_request::Kind::StdinClosed(true)),
    })
    .await
    .unwrap();
    let mut stream = client
        .exec_in_zone(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    while let Some(message) = stream.next().await {
        if let Some(v1::exec_in_zone_response::Kind::Exited(exit)) = message.unwrap().kind {
            assert_eq!(exit.status, Some(v1::exit_status::Status::Code(0)));
            return started.elapsed();
        }
    }
    panic!("the exec stream ended without an exit status");
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_behaves_like_docker_exec() {
    let host = Host::start();
    host.running("box", &["sh", "-c", "echo ready; exec sleep 100000"])
        .await;

    let out = host.ctl(&["exec", "box", "echo", "hello"]);
    assert_eq!(
        (out.status.code(), stdout(&out).as_str()),
        (Some(0), "hello\n"),
        "{}",
        text(&out)
    );
    let out = host.ctl(&["exec", "box", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    // stdout and stderr stay apart without a terminal.
    let out = host.ctl(&["zone", "exec", "box", "sh", "-c", "echo out; echo err >&2"]);
    assert_eq!(stdout(&out), "out\n", "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "err\n",
        "{}",
        text(&out)
    );
    // cat fed from stdin, its end passed on; then more input than the guest's stdin window.
    let out = host.ctl_stdin(&["exec", "-i", "box", "cat"], Some(b"line one\nline two\n"));
    assert_eq!(
        (out.status.code(), stdout(&out).as_str()),
        (Some(0), "line one\nline two\n")
    );
    let big: Vec<u8> = (0..1_500_000u32).map(|i| (i % 253) as u8).collect();
    let out = host.ctl_stdin(
        &["exec", "-i", "box", "sh", "-c", "cat | wc -c"],
        Some(&big),
    );
    assert_eq!(stdout(&out).trim(), "1500000", "{}", text(&out));
    // Without -i the process reads end-of-file at once, as with docker exec.
    let out = host.ctl_stdin(&["exec", "box", "cat"], Some(b"not forwarded"));
    assert_eq!(
        (out.status.code(), stdout(&out).as_str()),
        (Some(0), ""),
        "{}",
        text(&out)
    );
    // A named user, environment and working directory, resolved in the guest.
    let out = host.ctl(&[
        "exec",
        "-u",
        "demo",
        "-e",
        "GREETING=hi",
        "-w",
        "/tmp",
        "box",
        "sh",
        "-c",
        "echo $(id -un) $GREETING $(pwd) $HOME",
    ]);
    assert_eq!(stdout(&out), "demo hi /tmp /home/demo\n", "{}", text(&out));
    // docker's 127 for a command that is not there, with its message.
    let out = host.ctl(&["exec", "box", "no-such-program"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("exec: \"no-such-program\": executable file not found in $PATH"),
        "{}",
        text(&out)
    );

    // A terminal: its size at the start, and after a resize, as `stty size` sees them.
    let mut pty = Pty::spawn(
        host.command(&[
            "exec",
            "-it",
            "box",
            "sh",
            "-c",
            "stty size; tty; read line; stty size; echo got $line; exit 4",
        ]),
        24,
        80,
    );
    pty.expect("24 80", COMMAND_TIMEOUT);
    pty.expect("/dev/pts/", COMMAND_TIMEOUT);
    pty.resize(33, 101);
    // The resize reaches the guest before the line does (one ordered stream), but give
    // sporectl's SIGWINCH handler a moment to run first.
    std::thread::sleep(Duration::from_millis(500));
    pty.write(b"typed\r");
    pty.expect("33 101", COMMAND_TIMEOUT);
    assert_eq!(pty.wait(COMMAND_TIMEOUT), Some(4), "{:?}", pty.output);
    assert!(pty.output.contains("got typed"), "{:?}", pty.output);

    // Two execs at once: the reader finishes only because the writer runs beside it.
    let out = host.ctl(&["exec", "box", "mkfifo", "/tmp/pipe"]);
    assert!(out.status.success(), "{}", text(&out));
    let reader = host.spawn(&["exec", "box", "cat", "/tmp/pipe"]);
    let writer = host.spawn(&["exec", "box", "sh", "-c", "echo together > /tmp/pipe"]);
    let (reader, writer) = (
        wait_output(reader, &["exec reader"], COMMAND_TIMEOUT),
        wait_output(writer, &["exec writer"], COMMAND_TIMEOUT),
    );
    assert!(writer.status.success(), "{}", text(&writer));
    assert_eq!(stdout(&reader), "together\n", "{}", text(&reader));

    // Ctrl+C without a terminal is passed on to the process.
    let mut trapped = host.spawn(&[
        "exec",
        "box",
        "sh",
        "-c",
        "trap 'echo got INT; exit 7' INT; echo armed; while true; do sleep 1; done",
    ]);
    let mut line = [0u8; 6];
    trapped
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut line)
        .unwrap();
    assert_eq!(&line, b"armed\n");
    // SAFETY: kill(2) on a child we started.
    unsafe { libc::kill(trapped.id() as i32, libc::SIGINT) };
    let out = wait_output(trapped, &["exec trap"], COMMAND_TIMEOUT);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    assert!(stdout(&out).contains("got INT"), "{}", text(&out));

    // A client that goes away has its process killed in the guest.
    let mut orphan = host.spawn(&["exec", "box", "sh", "-c", "echo $$; exec sleep 100000"]);
    let mut pid = String::new();
    let mut byte = [0u8; 1];
    while !pid.ends_with('\n') {
        orphan
            .stdout
            .as_mut()
            .unwrap()
            .read_exact(&mut byte)
            .unwrap();
        pid.push(byte[0] as char);
    }
    let pid = pid.trim().to_string();
    orphan.kill().unwrap();
    orphan.wait().unwrap();
    let probe = format!("kill -0 {pid} 2>/dev/null && echo alive || echo gone");
    eventually("the orphaned exec to be killed", COMMAND_TIMEOUT, || {
        stdout(&host.ctl(&["exec", "box", "sh", "-c", &probe])) == "gone\n"
    });

    // top shows the workload; stats every running zone.
    let out = host.ctl(&["top", "-n", "1", "box"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(stdout(&out).contains("sleep 100000"), "{}", text(&out));
    assert!(!stdout(&out).contains("[kthreadd]"), "{}", text(&out));
    let out = host.ctl(&["stats", "--no-stream"]);
    let stats = stdout(&out);
    let row = stats
        .lines()
        .find(|l| l.contains(" box "))
        .unwrap_or_else(|| panic!("{}", text(&out)));
    assert!(row.contains("MiB / ") && row.contains('%'), "{stats}");
    let metrics = host
        .client()
        .await
        .read_zone_metrics(v1::ReadZoneMetricsRequest {
            zone: "box".into(),
            omit_processes: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(metrics.zone_name, "box");
    assert!(
        metrics.memory_used_bytes > 0 && metrics.memory_used_bytes < metrics.memory_total_bytes
    );
    assert!(
        metrics
            .processes
            .iter()
            .any(|p| p.cmdline == "sleep 100000"),
        "{metrics:?}"
    );

    // The exec round trip (request to exit status), median of 20, through the API and
    // through sporectl (a process start and a connection more).
    let mut client = host.client().await;
    let mut api = Vec::new();
    for _ in 0..20 {
        api.push(exec_true(&mut client, "box").await);
    }
    let mut cli = Vec::new();
    for _ in 0..20 {
        let start = Instant::now();
        let out = host.ctl(&["exec", "box", "true"]);
        assert!(out.status.success(), "{}", text(&out));
        cli.push(start.elapsed());
    }
    eprintln!(
        "timing: exec true round trip, median of 20: API {:.1} ms (min {:.1}, max {:.1}); sporectl exec {:.1} ms",
        median(api.clone()).as_secs_f64() * 1e3,
        api.iter().min().unwrap().as_secs_f64() * 1e3,
        api.iter().max().unwrap().as_secs_f64() * 1e3,
        median(cli).as_secs_f64() * 1e3
    );
    let out = host.ctl(&["rm", "-f", "box"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_detached_then_logs_follow_and_exec_into_an_ended_zone_is_refused() {
    let host = Host::start();
    let out = host.ctl(&[
        "run",
        "-d",
        "--name",
        "job",
        "demo",
        "sh",
        "-c",
        "echo first; sleep 3; echo second; exit 6",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let id = stdout(&out).trim().to_string();
    assert_eq!(id.len(), 36, "run -d prints the id: {}", text(&out));
    // Follows until the zone ends; everything printed, in order.
    let out = wait_output(
        host.spawn(&["logs", "-f", "job"]),
        &["logs -f"],
        ZONE_TIMEOUT,
    );
    assert!(out.status.success(), "{}", text(&out));
    let logs = stdout(&out);
    let (first, second) = (logs.find("first"), logs.find("second"));
    assert!(first.is_some() && second > first, "{logs}");
    host.wait_state("job", v1::ZoneState::Exited).await;
    let out = host.ctl(&["ps"]);
    assert!(
        !stdout(&out).contains("job"),
        "ps lists only zones that have not ended: {}",
        text(&out)
    );
    let out = host.ctl(&["ps", "-a"]);
    assert!(stdout(&out).contains("exited 6"), "{}", text(&out));

    // exec into an ended zone: FAILED_PRECONDITION naming its state; sporectl exits 125.
    let out = host.ctl(&["exec", "job", "true"]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("zone job is exited: exec needs a running zone"),
        "{}",
        text(&out)
    );
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(v1::ExecInZoneRequest {
        kind: Some(v1::exec_in_zone_request::Kind::Start(v1::ExecStart {
            zone: id.clone(),
            command: vec!["true".into()],
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let err = host
        .client()
        .await
        .exec_in_zone(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let err = host
        .client()
        .await
        .read_zone_metrics(v1::ReadZoneMetricsRequest {
            zone: id.clone(),
            omit_processes: true,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    // rm without -f takes an ended zone.
    let out = host.ctl(&["rm", "job"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(host.state(&id).await.unwrap_err().code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_rm_it_behaves_like_docker_run_rm_it() {
    let host = Host::start();
    let mut pty = Pty::spawn(
        host.command(&["run", "--rm", "-it", "--name", "tty", "demo", "sh"]),
        30,
        90,
    );
    // busybox sh's prompt: the shell reads the zone's terminal.
    pty.expect("# ", ZONE_TIMEOUT);
    pty.write(b"tty; stty size; exit 5\r");
    assert_eq!(pty.wait(ZONE_TIMEOUT), Some(5), "{:?}", pty.output);
    assert!(pty.output.contains("/dev/hvc0"), "{:?}", pty.output);
    // --rm: gone when run returns, as with docker.
    assert_eq!(host.state("tty").await.unwrap_err().code(), Code::NotFound);

    // rm refuses a zone that runs without -f.
    host.running("keep", &["sleep", "100000"]).await;
    let out = host.ctl(&["rm", "keep"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("zone keep is running: use rm -f"),
        "{}",
        text(&out)
    );
    let out = host.ctl(&["rm", "-f", "keep"]);
    assert!(out.status.success(), "{}", text(&out));
}

/// A guest writing exec output as fast as it can, to clients that read nothing and to one that
/// reads as fast as it can: spored's memory stays bounded (each session holds at most its
/// window), and the zone's other traffic gets through meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_floods_leave_spored_memory_bounded() {
    let host = Host::start();
    host.running("flood", &["sleep", "100000"]).await;
    // Warm up the paths a flood uses, then take the baseline.
    for _ in 0..3 {
        let out = host.ctl(&["exec", "flood", "head", "-c", "1000000", "/dev/zero"]);
        assert_eq!(out.stdout.len(), 1_000_000, "{}", text(&out));
    }
    let baseline = host.rss_kib();
    let spored = host.spored.child.id();
    let mut peak = baseline;
    let sample = |peak: &mut u64| *peak = (*peak).max(status_field(spored, "VmRSS:"));

    // Four floods whose clients read nothing: their pipes fill, and then the guest stops.
    let stalled: Vec<Child> = (0..4)
        .map(|_| host.spawn(&["exec", "flood", "cat", "/dev/zero"]))
        .collect();
    // One flood read as fast as this test can.
    let mut fast = host.spawn(&["exec", "flood", "cat", "/dev/zero"]);
    let mut fast_out = fast.stdout.take().unwrap();
    let counted = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let reader = std::thread::spawn({
        let counted = counted.clone();
        move || {
            let mut buf = vec![0u8; 1 << 16];
            while let Ok(n) = fast_out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                counted.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    let flood_start = Instant::now();
    // Meanwhile the zone answers: another exec and metrics, promptly.
    let mut answered = Vec::new();
    while flood_start.elapsed() < Duration::from_secs(20) {
        sample(&mut peak);
        let start = Instant::now();
        let out = host.ctl(&["exec", "flood", "echo", "still here"]);
        assert_eq!(stdout(&out), "still here\n", "{}", text(&out));
        let metrics = host
            .client()
            .await
            .read_zone_metrics(v1::ReadZoneMetricsRequest {
                zone: "flood".into(),
                omit_processes: true,
            })
            .await;
        assert!(metrics.is_ok(), "{metrics:?}");
        answered.push(start.elapsed());
        sample(&mut peak);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let seconds = flood_start.elapsed().as_secs_f64();
    let bytes = counted.load(std::sync::atomic::Ordering::Relaxed);
    sample(&mut peak);
    for mut child in stalled.into_iter().chain([fast]) {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = reader.join();
    eprintln!(
        "timing: exec flood: spored RSS {:.1} MiB before, peak {:.1} MiB (+{:.1} MiB) with 4 unread floods and 1 read at {:.1} MB/s over {seconds:.0} s; exec echo + metrics meanwhile: median {:.0} ms, max {:.0} ms",
        baseline as f64 / 1024.0,
        peak as f64 / 1024.0,
        (peak - baseline) as f64 / 1024.0,
        bytes as f64 / seconds / 1e6,
        median(answered.clone()).as_secs_f64() * 1e3,
        answered.iter().max().unwrap().as_secs_f64() * 1e3,
    );
    assert!(bytes > 1_000_000, "the fast reader got only {bytes} bytes");
    // Five sessions at 256 KiB of output each, their response queues and HTTP/2 windows:
    // a few MiB. Unbounded buffering would take hundreds of MiB in 20 s.
    assert!(
        peak - baseline < 32 * 1024,
        "spored grew from {baseline} KiB to {peak} KiB"
    );
    // The clients are gone: their processes are killed in the guest.
    eventually("the floods to be killed", COMMAND_TIMEOUT, || {
        stdout(&host.ctl(&[
            "exec",
            "flood",
            "sh",
            "-c",
            "ps -o args | grep -c '^cat /dev/zero' || true",
        ]))
        .trim()
            == "0"
    });
    let out = host.ctl(&["rm", "-f", "flood"]);
    assert!(out.status.success(), "{}", text(&out));
}
