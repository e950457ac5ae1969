//! End to end on the QEMU backend: the real spored and sporectl binaries, real QEMU (TCG on
//! these hosts), the guest bundle (`kernel/build-bundle.sh`, from `SPORE_GUEST_DIR` or
//! `target/guest`) and the busybox demo image imported as an OCI layout.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use futures::StreamExt;
use spore_api::v1;
use support::Spored;
use tonic::Code;

/// A boot under TCG takes seconds; on a loaded two-core CI machine, several times that.
const ZONE_TIMEOUT: Duration = Duration::from_secs(180);

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
    dir: tempfile::TempDir,
    spored: Spored,
}

impl Host {
    async fn start() -> Host {
        Host::start_with("").await
    }

    /// Like [`Host::start`] with `config` as spored's config file (TOML).
    async fn start_with(config: &str) -> Host {
        let dir = tempfile::Builder::new()
            .prefix("spore-e2e-")
            .tempdir_in("/tmp")
            .unwrap();
        let guest = dir.path().join("state/guest");
        std::fs::create_dir_all(&guest).unwrap();
        for f in ["kernel", "initrd"] {
            std::fs::copy(spore_testkit::guest_bundle().join(f), guest.join(f)).unwrap();
        }
        let reaper = spore_testkit::Reaper::new(&dir.path().join("state/zones"));
        let config_file = dir.path().join("spored.toml");
        std::fs::write(&config_file, config).unwrap();
        let spored = Spored::start_with_config(dir.path(), &config_file);
        let host = Host {
            _reaper: reaper,
            dir,
            spored,
        };
        let layout = support::demo_image(host.dir.path(), "demo");
        let out = host.ctl(&["image", "import", layout.to_str().unwrap(), "--tag", "demo"]);
        assert!(out.status.success(), "import: {}", text(&out));
        host
    }

    fn ctl(&self, args: &[&str]) -> Output {
        Command::new(sporectl_bin())
            .arg("--socket")
            .arg(&self.spored.socket)
            .args(args)
            .output()
            .expect("run sporectl")
    }

    async fn client(&self) -> spore_api::ControlClient {
        self.spored.client().await
    }

    async fn create(&self, command: &[&str], auto_remove: bool) -> String {
        let spec = v1::ZoneSpec {
            image: "demo".into(),
            cmd: Some(v1::StringList {
                values: command.iter().map(|s| s.to_string()).collect(),
            }),
            auto_remove,
            memory_mib: Some(128),
            ..Default::default()
        };
        self.client()
            .await
            .create_zone(v1::CreateZoneRequest { spec: Some(spec) })
            .await
            .unwrap()
            .into_inner()
            .zone_id
    }

    async fn zone(&self, id: &str) -> Result<v1::Zone, tonic::Status> {
        self.client()
            .await
            .get_zone(v1::GetZoneRequest { zone: id.into() })
            .await
            .map(|r| r.into_inner().zone.unwrap())
    }

    /// Polls until the zone is in `state` (or fails the test with its history).
    async fn wait_state(&self, id: &str, state: v1::ZoneState) -> v1::Zone {
        let start = Instant::now();
        loop {
            let zone = self.zone(id).await.unwrap();
            let status = zone.status.clone().unwrap();
            if status.state == state as i32 {
                return zone;
            }
            let terminal = [v1::ZoneState::Failed, v1::ZoneState::Exited];
            assert!(
                !terminal.iter().any(|s| *s as i32 == status.state),
                "zone {id} ended in {:?} ({}) while waiting for {state:?}; spored log:\n{}",
                status.state(),
                status.reason,
                self.spored.log()
            );
            assert!(
                start.elapsed() < ZONE_TIMEOUT,
                "zone {id} not {state:?} within {ZONE_TIMEOUT:?}: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until GetZone says NOT_FOUND.
    async fn wait_gone(&self, id: &str) {
        let start = Instant::now();
        loop {
            match self.zone(id).await {
                Err(e) if e.code() == Code::NotFound => return,
                Err(e) => panic!("GetZone {id}: {e}"),
                Ok(zone) => assert!(
                    start.elapsed() < ZONE_TIMEOUT,
                    "zone {id} still there: {:?}",
                    zone.status
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until zone `id`'s QEMU `pid` is gone and the zone no longer names a VM.
    async fn wait_vm_released(&self, id: &str, pid: i32) {
        let start = Instant::now();
        while process_alive(pid)
            || !self
                .zone(id)
                .await
                .unwrap()
                .status
                .unwrap()
                .domain
                .is_empty()
        {
            assert!(
                start.elapsed() < ZONE_TIMEOUT,
                "the VM of zone {id} (QEMU {pid}) was not released; spored log:\n{}",
                self.spored.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn zones(&self) -> Vec<v1::Zone> {
        self.client()
            .await
            .list_zones(v1::ListZonesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .zones
    }

    async fn logs(&self, id: &str) -> String {
        let mut stream = self
            .client()
            .await
            .read_zone_logs(v1::ReadZoneLogsRequest {
                zone: id.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend(chunk.unwrap().data);
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    fn zone_dir(&self, id: &str) -> PathBuf {
        self.spored.state_dir.join("zones").join(id)
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

/// The recorded exit of an ended zone.
fn exit_of(zone: v1::Zone) -> v1::exit_status::Status {
    zone.status
        .and_then(|s| s.exit)
        .and_then(|e| e.status)
        .expect("the zone has an exit status")
}

/// The QEMU pid from a zone's `domain` ("qemu pid N").
fn qemu_pid(zone: &v1::Zone) -> i32 {
    let domain = &zone.status.as_ref().unwrap().domain;
    domain
        .strip_prefix("qemu pid ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("domain {domain:?} names no QEMU pid"))
}

fn process_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| !stat.contains(") Z "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_attach_reports_output_exit_codes_and_signals() {
    let host = Host::start().await;
    let out = host.ctl(&[
        "zone",
        "launch",
        "--rm",
        "--attach",
        "demo",
        "sh",
        "-c",
        "echo Hello from a zone",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Hello from a zone"),
        "{}",
        text(&out)
    );
    let out = host.ctl(&["zone", "launch", "--attach", "demo", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    let out = host.ctl(&[
        "zone",
        "launch",
        "--name",
        "doomed",
        "--attach",
        "demo",
        "sh",
        "-c",
        "kill -9 $$",
    ]);
    assert_eq!(out.status.code(), Some(128 + 9), "{}", text(&out));
    let zone = host.wait_state("doomed", v1::ZoneState::Exited).await;
    let exit = exit_of(zone);
    assert_eq!(exit, v1::exit_status::Status::Signal(9));
    // --rm removed the first zone; the other two are listed as exited.
    let zones = host.zones().await;
    assert_eq!(zones.len(), 2, "{zones:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_zones_at_once_then_removed() {
    let host = Host::start().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let line = format!("zone number {i}");
        ids.push(
            host.create(&["sh", "-c", &format!("echo {line}; sleep 2")], false)
                .await,
        );
    }
    for (i, id) in ids.iter().enumerate() {
        let zone = host.wait_state(id, v1::ZoneState::Exited).await;
        let exit = exit_of(zone);
        assert_eq!(exit, v1::exit_status::Status::Code(0));
        let logs = host.logs(id).await;
        assert!(logs.contains(&format!("zone number {i}")), "{logs}");
    }
    for id in &ids {
        let out = host.ctl(&["zone", "destroy", id]);
        assert!(out.status.success(), "{}", text(&out));
        host.wait_gone(id).await;
        assert!(!host.zone_dir(id).exists());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_while_running_leaves_nothing_behind() {
    let host = Host::start().await;
    let id = host.create(&["sleep", "600"], false).await;
    let zone = host.wait_state(&id, v1::ZoneState::Running).await;
    let pid = qemu_pid(&zone);
    assert!(process_alive(pid));
    let dir = host.zone_dir(&id);
    for f in [
        "console.sock",
        "idm.sock",
        "qmp.sock",
        "qemu.pid",
        "config.blk",
    ] {
        assert!(dir.join(f).exists(), "{f} missing while running");
    }
    let out = host.ctl(&["zone", "destroy", &id]);
    assert!(out.status.success(), "{}", text(&out));
    host.wait_gone(&id).await;
    assert!(!process_alive(pid), "QEMU {pid} survived the destroy");
    assert!(!dir.exists(), "{} left behind", dir.display());
    let zones = host.zones().await;
    assert!(zones.is_empty(), "{zones:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zone_survives_a_spored_restart() {
    let mut host = Host::start().await;
    // Output written while spored is down is not logged (QEMU drops it while its console
    // socket has no listener): the workload prints its second line well after the restart.
    let id = host
        .create(
            &[
                "sh",
                "-c",
                "echo before; sleep 10; echo after the restart; exit 3",
            ],
            false,
        )
        .await;
    let zone = host.wait_state(&id, v1::ZoneState::Running).await;
    let start = Instant::now();
    while !host.logs(&id).await.contains("before") {
        assert!(
            start.elapsed() < ZONE_TIMEOUT,
            "no output before the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pid = qemu_pid(&zone);
    host.spored.stop();
    assert!(process_alive(pid), "QEMU died with spored");
    host.spored.restart();
    let zone = host.zone(&id).await.unwrap();
    assert_eq!(
        zone.status.as_ref().unwrap().state(),
        v1::ZoneState::Running,
        "{zone:?}"
    );
    // Still attachable: the attach ends with the workload and its exit code.
    let attach = Command::new(sporectl_bin())
        .arg("--socket")
        .arg(&host.spored.socket)
        .args(["zone", "attach", &id])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(attach.status.code(), Some(3), "{}", text(&attach));
    assert!(
        String::from_utf8_lossy(&attach.stdout).contains("after the restart"),
        "{}",
        text(&attach)
    );
    let zone = host.wait_state(&id, v1::ZoneState::Exited).await;
    let exit = exit_of(zone);
    assert_eq!(exit, v1::exit_status::Status::Code(3));
    let logs = host.logs(&id).await;
    assert!(
        logs.contains("before") && logs.contains("after the restart"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exit_while_spored_is_down_is_recorded_after_the_restart() {
    let mut host = Host::start().await;
    const SLEEP: Duration = Duration::from_secs(25);
    let id = host
        .create(&["sh", "-c", "sleep 25; echo done; exit 4"], false)
        .await;
    let zone = host.wait_state(&id, v1::ZoneState::Running).await;
    // The workload was exec'd before spored saw Started: it ends at most SLEEP after now
    // (plus however late the guest's timer fires on a loaded TCG host).
    let running = Instant::now();
    let pid = qemu_pid(&zone);
    host.spored.stop();
    assert!(
        running.elapsed() < SLEEP - Duration::from_secs(5),
        "spored took {:?} to stop: the exit may have happened before it went down",
        running.elapsed()
    );
    tokio::time::sleep((SLEEP + Duration::from_secs(15)).saturating_sub(running.elapsed())).await;
    // The guest sent its Exit to nobody and waits for an ack instead of powering off.
    assert!(
        process_alive(pid),
        "QEMU {pid} stopped while spored was down: the guest did not wait for the ExitAck"
    );
    let restarted = Instant::now();
    host.spored.restart();
    let zone = host.wait_state(&id, v1::ZoneState::Exited).await;
    eprintln!("restart to Exited: {} ms", restarted.elapsed().as_millis());
    let status = zone.status.clone().unwrap();
    assert_eq!(exit_of(zone), v1::exit_status::Status::Code(4));
    assert_eq!(status.reason, "workload exited with code 4");
    // The ack lets the guest power off; the VM is released either way.
    host.wait_vm_released(&id, pid).await;
    assert!(
        !host.spored.log().contains("cannot go from exited"),
        "a duplicate Exit caused a second transition attempt:\n{}",
        host.spored.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_fail_clearly_and_leak_nothing() {
    let host = Host::start().await;
    // An image that is nowhere: the zone fails and names it.
    let spec = v1::ZoneSpec {
        image: "127.0.0.1:9/nothing/here:1".into(),
        ..Default::default()
    };
    let id = host
        .client()
        .await
        .create_zone(v1::CreateZoneRequest { spec: Some(spec) })
        .await
        .unwrap()
        .into_inner()
        .zone_id;
    let zone = host.wait_state(&id, v1::ZoneState::Failed).await;
    let reason = &zone.status.as_ref().unwrap().reason;
    assert!(reason.contains("127.0.0.1:9/nothing/here:1"), "{reason}");
    assert!(!host.zone_dir(&id).exists());

    // Absurd memory: refused before anything is stored.
    let spec = v1::ZoneSpec {
        image: "demo".into(),
        memory_mib: Some(1 << 40),
        ..Default::default()
    };
    let err = host
        .client()
        .await
        .create_zone(v1::CreateZoneRequest { spec: Some(spec) })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("memory"), "{}", err.message());
    let zones = host.zones().await;
    assert_eq!(zones.len(), 1, "only the failed zone: {zones:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_qemu_host_status_and_create_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("spored.toml");
    std::fs::write(
        &config,
        "backend = \"qemu\"\n[qemu]\nbinary = \"/nonexistent/qemu-system-x86_64\"\n",
    )
    .unwrap();
    let spored = Spored::start_with_config(dir.path(), &config);
    let mut client = spored.client().await;
    let status = client
        .get_host_status(v1::GetHostStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.backend(), v1::BackendKind::None, "{status:?}");
    assert!(
        status
            .backend_reason
            .contains("/nonexistent/qemu-system-x86_64")
            && status.backend_reason.contains("not installed"),
        "{}",
        status.backend_reason
    );
    let spec = v1::ZoneSpec {
        image: "demo".into(),
        ..Default::default()
    };
    let err = client
        .create_zone(v1::CreateZoneRequest { spec: Some(spec) })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("not installed"), "{}", err.message());
}

/// An initrd whose /init never starts a workload (a guest stuck in its boot).
fn hanging_initrd(dir: &Path) -> PathBuf {
    let root = dir.join("hang-root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static is installed");
    std::fs::write(
        root.join("init"),
        "#!/bin/busybox sh\nexec /bin/busybox sleep 100000\n",
    )
    .unwrap();
    std::fs::set_permissions(
        root.join("init"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let initrd = dir.join("hang.initrd");
    let status = Command::new("sh")
        .arg("-c")
        .arg("cd \"$1\" && find . | cpio -o -H newc --quiet > \"$2\"")
        .args(["sh"])
        .arg(&root)
        .arg(&initrd)
        .status()
        .unwrap();
    assert!(status.success(), "cpio failed");
    initrd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_that_never_starts_fails_within_the_start_timeout() {
    let host = Host::start_with("[zones]\nstart_timeout_secs = 20\n").await;
    let initrd = hanging_initrd(host.dir.path());
    let started = Instant::now();
    let out = host.ctl(&[
        "zone",
        "launch",
        "--attach",
        "--name",
        "stuck",
        "--initrd",
        initrd.to_str().unwrap(),
        "demo",
        "true",
    ]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the guest did not start within 20 s"),
        "{}",
        text(&out)
    );
    assert!(took >= Duration::from_secs(20), "{took:?}");
    let zone = host.wait_state("stuck", v1::ZoneState::Failed).await;
    let status = zone.status.clone().unwrap();
    assert!(
        status
            .reason
            .starts_with("the guest did not start within 20 s"),
        "{}",
        status.reason
    );
    // Its VM goes: the domain handle is cleared once QEMU is destroyed, and no QEMU of this
    // zone runs (its pidfile went with it).
    let id = zone.id.clone();
    let pid = qemu_pid(&zone);
    host.wait_vm_released(&id, pid).await;
    assert!(!host.zone_dir(&id).join("qemu.pid").exists());
    let leftover = Command::new("pgrep")
        .args(["-f", &format!("spore-{id}")])
        .output()
        .unwrap();
    assert!(
        leftover.stdout.is_empty(),
        "QEMU left behind: {}",
        String::from_utf8_lossy(&leftover.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_of_every_accepted_shape_become_the_guests_host_name() {
    let host = Host::start().await;
    let long = "n".repeat(63);
    let dotted = "web-1.a0";
    for name in ["a", "7", dotted, long.as_str()] {
        let out = host.ctl(&[
            "zone", "launch", "--rm", "--attach", "--name", name, "demo", "hostname",
        ]);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", text(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), name);
    }
    let out = host.ctl(&[
        "zone", "launch", "--attach", "--name", "web_1", "demo", "true",
    ]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("spec.name"),
        "{}",
        text(&out)
    );
    assert!(host.zones().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kernel_that_cannot_boot_under_kvm_means_tcg_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let guest = dir.path().join("state/guest");
    std::fs::create_dir_all(&guest).unwrap();
    // The KVM probe boots the guest kernel: one that cannot boot must not pass for KVM.
    std::fs::write(guest.join("kernel"), vec![0x90u8; 1 << 20]).unwrap();
    std::fs::copy(
        spore_testkit::guest_bundle().join("initrd"),
        guest.join("initrd"),
    )
    .unwrap();
    let config = dir.path().join("spored.toml");
    std::fs::write(&config, "backend = \"qemu\"\n[qemu]\naccel = \"auto\"\n").unwrap();
    let spored = Spored::start_with_config(dir.path(), &config);
    let status = spored
        .client()
        .await
        .get_host_status(v1::GetHostStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.backend(), v1::BackendKind::Qemu, "{status:?}");
    let reason = &status.backend_reason;
    eprintln!("host status: {reason}");
    assert!(
        reason.contains("accelerator tcg: KVM unusable ("),
        "{reason}"
    );
    if Path::new("/dev/kvm").exists() {
        // The reason is the probe boot's, not a missing device.
        assert!(
            reason.contains("probe VM ended") || reason.contains("guest kernel"),
            "{reason}"
        );
    }
    // The verdict is cached for this kernel: a restart does not boot it again.
    let verdict = dir.path().join("state/kernels/kvm-verdict.json");
    if Path::new("/dev/kvm").exists() {
        assert!(
            verdict.is_file(),
            "no cached verdict at {}",
            verdict.display()
        );
    }
}

/// The demo image plus a layer that whites out `/bin/vi`, adds a file, and hard-links the
/// large busybox binary (umoci unpack, change, repack): the shape whose squashfs used to end
/// past its last sector. Returns the layout.
fn two_layer_image(dir: &Path) -> PathBuf {
    let layout = support::demo_image(dir, "base");
    let bundle = dir.join("two-layer-bundle");
    let image = format!("{}:base", layout.display());
    let run = |cmd: &mut Command| {
        let out = cmd.output().expect("run umoci");
        assert!(out.status.success(), "{cmd:?}: {}", text(&out));
    };
    run(Command::new("umoci")
        .args(["unpack", "--image", &image])
        .arg(&bundle));
    let root = bundle.join("rootfs");
    std::fs::remove_file(root.join("bin/vi")).unwrap();
    std::fs::write(root.join("etc/added"), "added in layer 2\n").unwrap();
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::hard_link(root.join("bin/busybox"), root.join("usr/bin/bb-link")).unwrap();
    std::fs::hard_link(root.join("etc/added"), root.join("etc/added-link")).unwrap();
    run(Command::new("umoci")
        .args(["repack", "--image", &image])
        .arg(&bundle));
    layout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_layer_image_with_whiteouts_and_hard_links_boots_by_id() {
    tokio::time::timeout(
        Duration::from_secs(2 * ZONE_TIMEOUT.as_secs() + 120),
        async {
            let host = Host::start().await;
            let layout = two_layer_image(host.dir.path());
            let out = host.ctl(&[
                "-o",
                "json",
                "image",
                "import",
                "--quiet",
                "--tag",
                "two-layer:1",
                layout.to_str().unwrap(),
            ]);
            assert!(out.status.success(), "import: {}", text(&out));
            let image: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let digest = image["manifestDigest"].as_str().unwrap().to_owned();
            let hex = digest.strip_prefix("sha256:").unwrap();
            let root = host
                .spored
                .state_dir
                .join(format!("images/images/squashfs/sha256/{hex}.squashfs"));
            let size = std::fs::metadata(&root).unwrap().len();
            assert!(
                spore_oci::attachable_size(size),
                "{} is {size} bytes",
                root.display()
            );

            // By a unique id prefix, as `sporectl image list` shows it.
            let out = host.ctl(&[
                "zone",
                "launch",
                "--attach",
                "--rm",
                &hex[..12],
                "sh",
                "-c",
                "test ! -e /bin/vi && cat /etc/added /etc/added-link \
             && cmp /bin/busybox /usr/bin/bb-link && echo two-layer-ok",
            ]);
            assert_eq!(out.status.code(), Some(0), "{}", text(&out));
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                stdout.contains("two-layer-ok") && stdout.matches("added in layer 2").count() == 2,
                "{}",
                text(&out)
            );
        },
    )
    .await
    .expect("the import and one boot finish in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_guest_bundle_fails_the_zone_naming_the_fix() {
    let host = Host::start().await;
    let initrd = host.dir.path().join("state/guest/initrd");
    std::fs::remove_file(&initrd).unwrap();
    let id = host.create(&["true"], false).await;
    let zone = host.wait_state(&id, v1::ZoneState::Failed).await;
    let reason = zone.status.unwrap().reason;
    assert!(
        reason.contains(&format!("initrd {} is not usable", initrd.display()))
            && reason.contains("kernel/build-bundle.sh"),
        "{reason}"
    );
    // Nothing of the VM was started or left.
    assert!(!host.zone_dir(&id).join("qemu.pid").exists());
    assert!(!host.zone_dir(&id).join("config.blk").exists());
}
