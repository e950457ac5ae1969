//! The QEMU backend against real QEMU (TCG here) and the real guest bundle
//! (`kernel/build-bundle.sh`; `SPORE_GUEST_DIR` or `target/guest`): a busybox squashfs built
//! here and a config block written with spore-idm, read back through the backend's console and
//! IDM streams.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use spore_idm::launch::*;
use spore_idm::proto::{self, idm_packet::Body};
use spore_idm::{ExitStatus, IdmCodec, IdmPacket};
use spore_runtime::qemu::{AccelChoice, QemuBackend, QemuConfig};
use spore_runtime::{Backend, LaunchSpec, RuntimeError as Error, StopReason};
use tokio::io::AsyncReadExt;
use tokio_util::codec::Framed;
use uuid::Uuid;

const BOOT: Duration = Duration::from_secs(120);

/// A busybox squashfs, padded to 4 KiB as the image store does.
fn root_image(dir: &Path) -> (PathBuf, u64) {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static is installed");
    for applet in ["sh", "echo", "sleep", "cat"] {
        symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").unwrap();
    let image = dir.join("root.squashfs");
    let status = Command::new("mksquashfs")
        .arg(&root)
        .arg(&image)
        .args(["-noappend", "-quiet", "-no-progress"])
        .status()
        .expect("squashfs-tools is installed");
    assert!(status.success());
    let len = std::fs::metadata(&image)
        .unwrap()
        .len()
        .next_multiple_of(4096);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .unwrap()
        .set_len(len)
        .unwrap();
    (image, len)
}

struct Lab {
    // Before the directory: the zones' QEMUs go before their files do.
    _reaper: spore_testkit::Reaper,
    _dir: tempfile::TempDir,
    zones: PathBuf,
    image: (PathBuf, u64),
}

impl Lab {
    fn new() -> Lab {
        let dir = tempfile::Builder::new()
            .prefix("spore-qemu-")
            .disable_cleanup(std::env::var_os("SPORE_TEST_KEEP").is_some())
            .tempdir_in("/tmp")
            .unwrap();
        let image = root_image(dir.path());
        let zones = dir.path().join("zones");
        Lab {
            _reaper: spore_testkit::Reaper::new(&zones),
            zones,
            image,
            _dir: dir,
        }
    }

    fn config(&self) -> QemuConfig {
        QemuConfig {
            accel: AccelChoice::Auto,
            ..QemuConfig::new(&self.zones)
        }
    }

    fn backend(&self) -> QemuBackend {
        QemuBackend::new(self.config()).expect("QEMU is usable")
    }

    /// A zone running `sh -c script`.
    fn spec(&self, script: &str) -> LaunchSpec {
        let zone_id = Uuid::new_v4();
        let zone_dir = self.zones.join(zone_id.to_string());
        std::fs::create_dir_all(&zone_dir).unwrap();
        let launch = LaunchConfig {
            version: LAUNCH_CONFIG_VERSION,
            zone_id: zone_id.to_string(),
            hostname: "qemu-test".into(),
            root: RootImage {
                format: spore_idm::launch::RootFormat::Squashfs,
                size_bytes: self.image.1,
            },
            overlay_size_mib: 16,
            image: ImageConfig {
                cmd: vec!["/bin/sh".into(), "-c".into(), script.into()],
                env: vec!["PATH=/bin".into()],
                ..Default::default()
            },
            overrides: Overrides::default(),
            network: None,
            hosts: vec![],
            rlimits: vec![],
            verbose: false,
        };
        let config_block = zone_dir.join("config.blk");
        spore_idm::config_block::write_to(&config_block, &launch).unwrap();
        let bundle = spore_testkit::guest_bundle();
        LaunchSpec {
            zone_id,
            name: "qemu-test".into(),
            kernel: bundle.join("vmlinux"),
            initrd: bundle.join("initrd"),
            kernel_cmdline: "console=hvc0 quiet".into(),
            root_image: self.image.0.clone(),
            config_block,
            vcpus: 1,
            memory_mib: 128,
            zone_dir,
            nic: None,
        }
    }
}

type Idm = Framed<Box<dyn spore_runtime::ByteStream>, IdmCodec>;

async fn next_body(idm: &mut Idm, what: &str) -> Body {
    loop {
        let packet = tokio::time::timeout(BOOT, idm.next())
            .await
            .unwrap_or_else(|_| panic!("no IDM packet ({what}) within {BOOT:?}"))
            .unwrap_or_else(|| panic!("IDM closed while waiting for {what}"))
            .expect("IDM stream readable")
            .expect("a valid IDM packet");
        if let Some(body) = packet.body {
            return body;
        }
    }
}

async fn read_all(mut console: Box<dyn spore_runtime::ByteStream>) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(BOOT, console.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn pid_alive(handle: &str) -> bool {
    let pid = handle.trim_start_matches("qemu pid ");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && !stat.contains(") Z ")
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zone_prints_exits_and_powers_off() {
    let lab = Lab::new();
    let backend = lab.backend();
    let mut spec = lab.spec("echo hello from the zone; exit 7");
    // The bundle's bzImage: the backend boots the ELF it extracts into its kernel cache.
    spec.kernel = spore_testkit::guest_bundle().join("kernel");
    let info = backend.create(&spec).await.expect("create");
    assert!(
        info.running && info.handle.starts_with("qemu pid "),
        "{info:?}"
    );
    let console = tokio::spawn(read_all(backend.open_console(spec.zone_id).await.unwrap()));
    let mut idm = Framed::new(
        backend.open_idm(spec.zone_id).await.unwrap(),
        IdmCodec::new(),
    );
    match next_body(&mut idm, "Started").await {
        Body::Started(s) => assert!(s.workload_pid > 1, "{s:?}"),
        other => panic!("expected Started, got {other:?}"),
    }
    match next_body(&mut idm, "Exit").await {
        Body::Exit(e) => assert_eq!(e.status().unwrap(), ExitStatus::Code(7)),
        other => panic!("expected Exit, got {other:?}"),
    }
    // spore-init powers off only once the host has acknowledged the Exit.
    idm.send(IdmPacket::event(Body::ExitAck(proto::ExitAck {})))
        .await
        .unwrap();
    let stop = tokio::time::timeout(BOOT, backend.wait_stopped(spec.zone_id))
        .await
        .expect("the VM stops after the workload")
        .unwrap();
    assert_eq!(stop.reason, StopReason::Poweroff, "{stop:?}");
    let listed = backend.list().await.unwrap();
    assert!(
        listed
            .iter()
            .any(|d| d.zone_id == spec.zone_id && !d.running),
        "a stopped, not destroyed VM is listed as not running: {listed:?}"
    );
    backend.destroy(spec.zone_id).await.unwrap();
    let out = console.await.unwrap();
    assert!(out.contains("hello from the zone"), "console: {out}");
    assert!(!pid_alive(&info.handle));
    // Only spored's config block is left in the zone directory.
    assert_eq!(files_in(&spec.zone_dir), ["config.blk"]);
    // Idempotent.
    backend.destroy(spec.zone_id).await.unwrap();
    let cached: Vec<_> = std::fs::read_dir(lab.zones.parent().unwrap().join("kernels"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        cached.len() == 1 && cached[0].ends_with(".elf"),
        "{cached:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_backend_readopts_and_destroys_a_running_zone() {
    let lab = Lab::new();
    let first = lab.backend();
    let spec = lab.spec("echo up; sleep 600");
    let info = first.create(&spec).await.expect("create");
    let mut idm = Framed::new(first.open_idm(spec.zone_id).await.unwrap(), IdmCodec::new());
    let console = first.open_console(spec.zone_id).await.unwrap();
    assert!(matches!(
        next_body(&mut idm, "Started").await,
        Body::Started(_)
    ));
    // spored goes away: its listeners and connections close, QEMU keeps running.
    drop(idm);
    drop(console);
    drop(first);

    let second = lab.backend();
    let listed = second.list().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].zone_id, spec.zone_id);
    assert!(listed[0].running);
    assert_eq!(listed[0].handle, info.handle);
    // The IDM channel comes back (QEMU reconnects) and the guest answers.
    let mut idm = Framed::new(
        second.open_idm(spec.zone_id).await.unwrap(),
        IdmCodec::new(),
    );
    idm.send(IdmPacket::request(5, Body::Ping(proto::Ping { nonce: 77 })))
        .await
        .unwrap();
    match next_body(&mut idm, "Pong").await {
        Body::Pong(p) => assert_eq!(p.nonce, 77),
        other => panic!("expected Pong, got {other:?}"),
    }
    let _console = second.open_console(spec.zone_id).await.unwrap();
    second.destroy(spec.zone_id).await.unwrap();
    assert!(!pid_alive(&info.handle), "QEMU survived destroy");
    assert!(second.list().await.unwrap().is_empty());
    assert_eq!(files_in(&spec.zone_dir), ["config.blk"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_specs_are_refused_before_anything_starts() {
    let lab = Lab::new();
    let backend = lab.backend();
    let mut spec = lab.spec("true");
    spec.memory_mib = 1 << 40;
    let e = backend.create(&spec).await.unwrap_err();
    assert!(
        matches!(e, Error::InvalidSpec { .. }) && e.to_string().contains("more than this host has"),
        "{e}"
    );
    spec.memory_mib = 16;
    let e = backend.create(&spec).await.unwrap_err();
    assert!(e.to_string().contains("below the 64 MiB"), "{e}");
    spec.memory_mib = 128;
    spec.kernel = "/nonexistent/vmlinux".into();
    let e = backend.create(&spec).await.unwrap_err();
    assert!(e.to_string().contains("/nonexistent/vmlinux"), "{e}");
    assert_eq!(files_in(&spec.zone_dir), ["config.blk"]);
    assert!(backend.list().await.unwrap().is_empty());
}

#[test]
fn missing_qemu_says_what_to_install() {
    let lab = Lab::new();
    let e = QemuBackend::new(QemuConfig {
        binary: "/nonexistent/qemu-system-x86_64".into(),
        ..lab.config()
    })
    .unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. }), "{e}");
    assert!(e.to_string().contains("is not installed"), "{e}");
}
