//! Boots the guest bundle (kernel/build-bundle.sh) in QEMU (TCG, microvm) without any daemon:
//! a busybox image built here (squashfs or erofs), a config block written with spore-idm, the
//! console (a virtconsole) and IDM (a virtio serial port, as the QEMU backend has them) on Unix
//! sockets this test listens on.
//!
//! Each test is one boot; nextest runs them in parallel. Set SPORE_GUEST_DIR to use another
//! bundle, SPORE_E2E_SERIAL=1 to keep kernel messages on a serial log in the test's temp dir
//! (printed on failure), SPORE_E2E_KEEP=1 to keep the temp dirs, SPORE_E2E_VERBOSE=1 for
//! spore-init's verbose messages (boot step times among them) on the console.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spore_idm::launch::*;
use spore_idm::proto::{self, exec_output::Stream, idm_packet::Body};
use spore_idm::{ExitStatus, IdmPacket, IdmReader, IdmWriter, config_block};

const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

fn bundle_dir() -> PathBuf {
    let dir = std::env::var_os("SPORE_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/guest"));
    for f in ["vmlinux", "initrd"] {
        assert!(
            dir.join(f).is_file(),
            "guest bundle missing: {} has no {f}; run kernel/build-bundle.sh (or set SPORE_GUEST_DIR)",
            dir.display()
        );
    }
    dir
}

/// The host's TSC rate. Under TCG the guest's TSC runs at the host's rate, and a guest that
/// has to calibrate it against the emulated PIT on a busy host sometimes hangs at boot; the
/// kernel skips that calibration with `tsc_early_khz=`.
fn tsc_khz() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        let t0 = Instant::now();
        // SAFETY: RDTSC has no preconditions on x86_64.
        let c0 = unsafe { core::arch::x86_64::_rdtsc() };
        std::thread::sleep(Duration::from_millis(50));
        // SAFETY: as above.
        let c1 = unsafe { core::arch::x86_64::_rdtsc() };
        let ns = t0.elapsed().as_nanos() as u64;
        (c1.wrapping_sub(c0)).saturating_mul(1_000_000) / ns.max(1)
    }
}

/// A busybox root filesystem with a non-root user.
fn rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "etc", "home/app", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static is installed");
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        if applet != "busybox" {
            symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:App:/home/app:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        root.join("etc/group"),
        "root:x:0:\napp:x:1000:\nstaff:x:50:app\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/locked"), "not a program\n").unwrap();
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    root
}

fn image(dir: &Path, format: RootFormat) -> (PathBuf, u64) {
    let root = rootfs(dir);
    let out = dir.join("root.img");
    let status = match format {
        RootFormat::Squashfs => Command::new("mksquashfs")
            .arg(&root)
            .arg(&out)
            .args(["-noappend", "-quiet", "-no-progress"])
            .stdout(Stdio::null())
            .status(),
        RootFormat::Erofs => Command::new("mkfs.erofs")
            .arg("--quiet")
            .arg(&out)
            .arg(&root)
            .stdout(Stdio::null())
            .status(),
    }
    .expect("squashfs-tools and erofs-utils are installed");
    assert!(status.success(), "building the {format:?} image failed");
    // The disk size the guest sees must be the image size: pad to 4 KiB like the host does.
    let len = std::fs::metadata(&out)
        .unwrap()
        .len()
        .next_multiple_of(4096);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&out)
        .unwrap()
        .set_len(len)
        .unwrap();
    (out, len)
}

fn config(format: RootFormat, size: u64, image: ImageConfig, overrides: Overrides) -> LaunchConfig {
    LaunchConfig {
        version: LAUNCH_CONFIG_VERSION,
        zone_id: "00000000-0000-4000-8000-00000000e2e0".into(),
        hostname: "e2e-zone".into(),
        root: RootImage {
            format,
            size_bytes: size,
        },
        overlay_size_mib: 32,
        image,
        overrides,
        network: None,
        hosts: vec![],
        rlimits: vec![],
        verbose: std::env::var_os("SPORE_E2E_VERBOSE").is_some(),
    }
}

fn sh(script: &str) -> ImageConfig {
    ImageConfig {
        cmd: vec!["/bin/sh".into(), "-c".into(), script.into()],
        env: vec!["PATH=/bin".into()],
        ..Default::default()
    }
}

/// Accepts QEMU's connection, failing (with QEMU's stderr) if QEMU exits instead.
fn accept(listener: &UnixListener, qemu: &mut Child) -> UnixStream {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).unwrap();
                return stream;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("accept: {e}"),
        }
        if let Some(status) = qemu.try_wait().unwrap() {
            let mut stderr = String::new();
            let _ = qemu.stderr.take().unwrap().read_to_string(&mut stderr);
            panic!("qemu exited with {status} before connecting: {stderr}");
        }
        assert!(
            Instant::now() < deadline,
            "qemu did not connect within 30 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A booted zone: QEMU, its console bytes and its IDM packets.
struct Zone {
    qemu: Child,
    dir: tempfile::TempDir,
    console: Arc<Mutex<Vec<u8>>>,
    started_at: Instant,
    packets: Receiver<Result<IdmPacket, String>>,
    idm_errors: Vec<String>,
    idm: IdmWriter<UnixStream>,
    seen: Vec<IdmPacket>,
}

struct Boot {
    format: RootFormat,
    image: ImageConfig,
    overrides: Overrides,
    network: Option<NetworkConfig>,
    rlimits: Vec<Rlimit>,
    hosts: Vec<HostEntry>,
    verbose: bool,
    /// `-netdev user` (slirp) with this MAC.
    nic: Option<&'static str>,
}

impl Boot {
    fn new(image: ImageConfig) -> Self {
        Self {
            format: RootFormat::Squashfs,
            image,
            overrides: Overrides::default(),
            network: None,
            rlimits: vec![],
            hosts: vec![],
            verbose: false,
            nic: None,
        }
    }

    fn start(self) -> Zone {
        let bundle = bundle_dir();
        let keep = std::env::var_os("SPORE_E2E_KEEP").is_some();
        let dir = tempfile::Builder::new()
            .prefix("spore-e2e-")
            .disable_cleanup(keep)
            .tempdir()
            .unwrap();
        if keep {
            eprintln!("keeping {}", dir.path().display());
        }
        let (img, size) = image(dir.path(), self.format);
        let mut cfg = config(self.format, size, self.image, self.overrides);
        cfg.network = self.network;
        cfg.rlimits = self.rlimits;
        cfg.hosts = self.hosts;
        cfg.verbose |= self.verbose;
        let cfg_path = dir.path().join("config.img");
        config_block::write_to(&cfg_path, &cfg).unwrap();

        let console_sock = dir.path().join("console.sock");
        let idm_sock = dir.path().join("idm.sock");
        let console_listener = UnixListener::bind(&console_sock).unwrap();
        let idm_listener = UnixListener::bind(&idm_sock).unwrap();
        let serial = std::env::var_os("SPORE_E2E_SERIAL").is_some();
        // tsc=reliable: microvm has no HPET or ACPI PM timer, so the kernel's clocksource
        // watchdog checks the TSC against jiffies, which lag on a busy TCG host; it then marks
        // the TSC unstable and falls back to jiffies, and every guest timestamp (Started's
        // included) comes in 4 ms steps.
        let mut append = format!(
            "console=hvc0 quiet panic=-1 pci=off tsc_early_khz={} tsc=reliable",
            tsc_khz()
        );
        if serial {
            append = format!("console=ttyS0 {append} loglevel=7");
        }
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args([
            "-accel", "tcg", "-M", "microvm", "-cpu", "max", "-m", "256", "-smp", "1",
        ])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(bundle.join("vmlinux"))
        .arg("-initrd")
        .arg(bundle.join("initrd"))
        .args(["-append", &append])
        .args(["-device", "virtio-serial-device,max_ports=2"])
        .args([
            "-chardev",
            &format!("socket,id=console,path={}", console_sock.display()),
        ])
        .args(["-device", "virtconsole,chardev=console,nr=0"])
        .args([
            "-chardev",
            &format!("socket,id=idm,path={}", idm_sock.display()),
        ])
        .args(["-device", "virtserialport,chardev=idm,nr=1,name=spore.idm"])
        .args([
            "-drive",
            &format!(
                "if=none,id=root,file={},format=raw,readonly=on",
                img.display()
            ),
        ])
        .args(["-device", "virtio-blk-device,drive=root"])
        .args([
            "-drive",
            &format!(
                "if=none,id=config,file={},format=raw,readonly=on",
                cfg_path.display()
            ),
        ])
        .args(["-device", "virtio-blk-device,drive=config"]);
        if serial {
            cmd.args([
                "-serial",
                &format!("file:{}", dir.path().join("serial.log").display()),
            ]);
        } else {
            cmd.args(["-serial", "none"]);
        }
        if let Some(mac) = self.nic {
            // Both families named: QEMU reads `ipv6=on` alone as "IPv6 only" and its slirp then
            // ignores ARP, so IPv4 to 10.0.2.2 fails while IPv6 works.
            cmd.args(["-netdev", "user,id=net0,ipv4=on,ipv6=on"]).args([
                "-device",
                &format!("virtio-net-device,netdev=net0,mac={mac}"),
            ]);
        } else {
            cmd.args(["-nic", "none"]);
        }
        let started_at = Instant::now();
        let qemu = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("qemu-system-x86_64 runs");

        let mut qemu = qemu;
        let console = accept(&console_listener, &mut qemu);
        let idm = accept(&idm_listener, &mut qemu);

        let console_buf = Arc::new(Mutex::new(Vec::new()));
        {
            let buf = console_buf.clone();
            let mut console = console;
            std::thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n) = console.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    buf.lock().unwrap().extend_from_slice(&chunk[..n]);
                }
            });
        }
        let (tx, packets) = channel();
        let reader = idm.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut reader = IdmReader::new(reader);
            loop {
                let item = match reader.read_packet() {
                    Ok(Some(p)) => Ok(p),
                    Ok(None) => break,
                    // Garbage is reported and reading goes on; I/O errors end the stream.
                    Err(e @ spore_idm::IdmError::Skipped { .. }) => Err(e.to_string()),
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        break;
                    }
                };
                if tx.send(item).is_err() {
                    break;
                }
            }
        });
        Zone {
            qemu,
            dir,
            console: console_buf,
            started_at,
            packets,
            idm: IdmWriter::new(idm),
            seen: Vec::new(),
            idm_errors: Vec::new(),
        }
    }
}

impl Zone {
    fn console_text(&self) -> String {
        String::from_utf8_lossy(&self.console.lock().unwrap()).into_owned()
    }

    fn diagnostics(&mut self) -> String {
        let serial =
            std::fs::read_to_string(self.dir.path().join("serial.log")).unwrap_or_default();
        let qemu = match self.qemu.try_wait() {
            Ok(Some(status)) => {
                let mut stderr = String::new();
                if let Some(mut e) = self.qemu.stderr.take() {
                    let _ = e.read_to_string(&mut stderr);
                }
                format!("qemu exited with {status}: {stderr}")
            }
            _ => "qemu still running".to_string(),
        };
        format!(
            "{qemu}\nconsole:\n{}\nIDM packets: {:#?}\nIDM errors: {:?}\nserial log:\n{serial}",
            self.console_text(),
            self.seen,
            self.idm_errors
        )
    }

    /// The next packet matching `pick`, failing the test after the boot timeout.
    fn wait_packet<T>(&mut self, what: &str, mut pick: impl FnMut(&IdmPacket) -> Option<T>) -> T {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        for p in &self.seen {
            if let Some(t) = pick(p) {
                return t;
            }
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.packets.recv_timeout(left) {
                Ok(Err(e)) => self.idm_errors.push(e),
                Ok(Ok(p)) => {
                    let hit = pick(&p);
                    self.seen.push(p);
                    if let Some(t) = hit {
                        return t;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no {what} within {BOOT_TIMEOUT:?}\n{}", self.diagnostics())
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("IDM closed before {what}\n{}", self.diagnostics())
                }
            }
        }
    }

    fn wait_console(&mut self, needle: &str) {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        while !self.console_text().contains(needle) {
            if Instant::now() >= deadline {
                panic!("console never showed {needle:?}\n{}", self.diagnostics());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn started(&mut self) -> proto::Started {
        self.wait_packet("Started", |p| match &p.body {
            Some(Body::Started(s)) => Some(s.clone()),
            _ => None,
        })
    }

    /// The workload's Exit, acknowledged as spored does (the guest powers off only after).
    fn exit(&mut self) -> ExitStatus {
        let status = self.exit_unacked();
        self.ack_exit();
        status
    }

    fn exit_unacked(&mut self) -> ExitStatus {
        self.wait_packet("Exit", |p| match &p.body {
            Some(Body::Exit(e)) => Some(e.status().expect("Exit carries a status")),
            _ => None,
        })
    }

    fn ack_exit(&mut self) {
        self.send(IdmPacket::event(Body::ExitAck(proto::ExitAck {})));
    }

    fn exits_seen(&self) -> usize {
        self.seen
            .iter()
            .filter(|p| matches!(p.body, Some(Body::Exit(_))))
            .count()
    }

    fn send(&mut self, packet: IdmPacket) {
        self.idm.write_packet(&packet).unwrap();
    }

    /// Waits for QEMU to exit by itself (the guest powered off).
    fn powered_off(mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.qemu.try_wait().unwrap() {
                let mut stderr = String::new();
                let _ = self.qemu.stderr.take().unwrap().read_to_string(&mut stderr);
                if !status.success() {
                    panic!(
                        "qemu exited with {status}: {stderr}\n{}",
                        self.diagnostics()
                    );
                }
                // Give the console reader a moment to take the last bytes.
                std::thread::sleep(Duration::from_millis(100));
                if std::env::var_os("SPORE_E2E_VERBOSE").is_some() {
                    // The boot step times of verbose mode, for docs/guest.md.
                    for line in self.console_text().lines() {
                        if line.starts_with("spore-init: +") || line.contains("modules loaded") {
                            eprintln!("{line}");
                        }
                    }
                }
                assert!(
                    self.idm_errors.is_empty(),
                    "IDM stream errors: {:?}",
                    self.idm_errors
                );
                return self.console_text();
            }
            if Instant::now() >= deadline {
                panic!("the guest did not power off\n{}", self.diagnostics());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Prints the boot breakdown (docs/guest.md quotes it): host-side time from spawning QEMU
    /// to now (call it right after Started arrived), and the guest's Started timestamps
    /// relative to the kernel's start and to init's.
    fn report_times(&self, started: &proto::Started) {
        let boot = self.started_at.elapsed();
        let us = |ns: u64| ns / 1000;
        let since_init = |ns: u64| us(ns - started.init_start_ns);
        let modules = started.modules_loaded_ns - started.modules_start_ns;
        eprintln!(
            "timing: qemu spawned -> Started received {boot:?}; guest (CLOCK_BOOTTIME): \
             init start {} us after kernel start; since init start: modules start {} us, \
             modules loaded {} us ({} us loading), rootfs ready {} us, workload exec {} us; \
             init start -> exec without module loading {} us",
            us(started.init_start_ns),
            since_init(started.modules_start_ns),
            since_init(started.modules_loaded_ns),
            us(modules),
            since_init(started.rootfs_ready_ns),
            since_init(started.workload_exec_ns),
            us(started.workload_exec_ns - started.init_start_ns - modules),
        );
    }
}

impl Drop for Zone {
    fn drop(&mut self) {
        let _ = self.qemu.kill();
        let _ = self.qemu.wait();
    }
}

/// Console output, exit code 3, env/cwd/user from the image, zombies reaped, ping and metrics.
#[test]
fn workload_runs_as_the_image_says() {
    let script = r#"
echo "console says $GREETING"
echo "uid=$(id -u) gid=$(id -g) groups=$(id -G) cwd=$(pwd) home=$HOME extra=$EXTRA host=$(hostname)"
for i in 1 2 3 4 5; do (sleep 0.3 &); done
sleep 2
z=0
for s in /proc/[0-9]*/stat; do
  read -r line < "$s" || continue
  case "${line##*) }" in Z*) z=$((z+1));; esac
done
echo "zombies=$z orphans-left=$(ps -o comm | grep -c sleep)"
echo "hosts: $(grep e2e-zone /etc/hosts)"
exit 3
"#;
    let mut image = sh(script);
    image.env.push("GREETING=hello from the image".into());
    image.working_dir = "/work/dir".into();
    image.user = "app".into();
    let mut boot = Boot::new(image);
    boot.overrides.env = vec!["EXTRA=from-launch".into()];
    let mut zone = boot.start();

    let started = zone.started();
    assert!(started.init_start_ns > 0);
    assert!(started.init_start_ns <= started.modules_start_ns);
    assert!(started.modules_start_ns <= started.modules_loaded_ns);
    assert!(started.modules_loaded_ns <= started.rootfs_ready_ns);
    assert!(started.rootfs_ready_ns <= started.workload_exec_ns);
    assert!(started.workload_pid > 1);
    assert!(
        started.kernel_release.contains("amd64"),
        "{}",
        started.kernel_release
    );
    zone.report_times(&started);

    zone.send(IdmPacket::request(
        11,
        Body::Ping(proto::Ping { nonce: 77 }),
    ));
    let pong = zone.wait_packet("Pong", |p| match &p.body {
        Some(Body::Pong(pong)) if p.request_id == 11 => Some(*pong),
        _ => None,
    });
    assert_eq!(pong.nonce, 77);
    assert!(pong.guest_time_ns > started.workload_exec_ns);

    zone.send(IdmPacket::request(
        12,
        Body::MetricsRequest(proto::MetricsRequest { processes: true }),
    ));
    let metrics = zone.wait_packet("MetricsResponse", |p| match &p.body {
        Some(Body::MetricsResponse(m)) if p.request_id == 12 => Some(m.clone()),
        _ => None,
    });
    assert!(metrics.memory_total_bytes > 100 << 20, "{metrics:?}");
    assert!(
        metrics.memory_used_bytes > 0 && metrics.memory_used_bytes < metrics.memory_total_bytes
    );
    assert_eq!(metrics.cpu_count, 1);
    let init = metrics
        .processes
        .iter()
        .find(|p| p.pid == 1)
        .expect("pid 1 listed");
    assert_eq!(init.command, "init");
    let workload = metrics
        .processes
        .iter()
        .find(|p| p.pid == started.workload_pid)
        .expect("the workload is listed");
    assert_eq!(
        (workload.ppid, workload.uid, workload.command.as_str()),
        (1, 1000, "sh")
    );

    assert_eq!(zone.exit(), ExitStatus::Code(3));
    let console = zone.powered_off();
    assert!(
        console.contains("console says hello from the image\n"),
        "{console}"
    );
    assert!(
        console.contains("uid=1000 gid=1000 groups=1000 50 cwd=/work/dir home=/home/app extra=from-launch host=e2e-zone\n"),
        "{console}"
    );
    assert!(console.contains("zombies=0 orphans-left=0\n"), "{console}");
    assert!(
        console.contains("hosts: 127.0.1.1\te2e-zone\n"),
        "{console}"
    );
}

/// A workload killed by SIGKILL is reported as a signal death (erofs root this time).
#[test]
fn signal_death_is_reported_as_a_signal() {
    let mut boot = Boot::new(sh("echo about to die; kill -KILL $$; echo not reached"));
    boot.format = RootFormat::Erofs;
    let mut zone = boot.start();
    zone.started();
    assert_eq!(
        zone.exit(),
        ExitStatus::Signal {
            signal: 9,
            core_dumped: false
        }
    );
    let console = zone.powered_off();
    assert!(
        console.contains("about to die\n") && !console.contains("not reached"),
        "{console}"
    );
}

/// docker's rules where image config and launch overrides meet: the entrypoint kept with a
/// replaced cmd, launch env over image env, the default PATH, the launch working dir and a
/// `uid:gid` user (explicit group: no supplementary groups, HOME from /etc/passwd). Also the
/// workload's own session, the writable overlay root, the container mounts, /etc/hostname and
/// extra /etc/hosts entries, and an image without resolv.conf left without one.
#[test]
fn launch_overrides_follow_docker_rules() {
    let script = r#"echo "argv0=$0 first=$1"
echo "uid=$(id -u) gid=$(id -g) groups=$(id -G) home=$HOME"
echo "shared=$SHARED only=$ONLY_IMAGE path=$PATH term=${TERM-unset} hostname=$HOSTNAME"
echo "cwd=$(pwd)"
set -- $(sed 's/.*) //' /proc/$$/stat)
echo "ppid=$2 session-leader=$([ "$4" = $$ ] && echo yes || echo no)"
echo data > /tmp/written && echo "root writable: $(cat /tmp/written) on $(awk '$2 == "/" {print $3}' /proc/mounts)"
for m in /dev/pts /dev/shm /dev/mqueue /sys/fs/cgroup; do printf '%s=%s ' $m $(awk -v m=$m '$2 == m {print $3}' /proc/mounts); done; echo
echo "etc/hostname=$(cat /etc/hostname)"
grep 'db' /etc/hosts
[ -e /etc/resolv.conf ] && echo "resolv.conf exists" || echo "no resolv.conf"
exit 0"#;
    let image = ImageConfig {
        entrypoint: vec!["/bin/sh".into(), "-c".into()],
        cmd: vec!["echo image cmd ran".into()],
        env: vec!["SHARED=image".into(), "ONLY_IMAGE=kept".into()],
        working_dir: "/image/dir".into(),
        user: "app".into(),
    };
    let mut boot = Boot::new(image);
    boot.overrides.cmd = Some(vec![script.into(), "dollar-zero".into(), "one".into()]);
    boot.overrides.env = vec!["SHARED=launch".into()];
    boot.overrides.working_dir = Some("/launch/dir".into());
    boot.overrides.user = Some("1000:50".into());
    boot.hosts = vec![HostEntry {
        ip: "10.1.2.3".parse().unwrap(),
        names: vec!["db".into(), "db.internal".into()],
    }];
    let mut zone = boot.start();
    let started = zone.started();
    zone.report_times(&started);
    assert_eq!(zone.exit(), ExitStatus::Code(0));
    let console = zone.powered_off();
    for want in [
        "argv0=dollar-zero first=one\n",
        "uid=1000 gid=50 groups=50 home=/home/app\n",
        "shared=launch only=kept \
         path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin term=unset \
         hostname=e2e-zone\n",
        "cwd=/launch/dir\n",
        "ppid=1 session-leader=yes\n",
        "root writable: data on overlay\n",
        "/dev/pts=devpts /dev/shm=tmpfs /dev/mqueue=mqueue /sys/fs/cgroup=cgroup2 \n",
        "etc/hostname=e2e-zone\n",
        "10.1.2.3\tdb db.internal\n",
        "no resolv.conf\n",
    ] {
        assert!(console.contains(want), "missing {want:?} in:\n{console}");
    }
    assert!(!console.contains("image cmd ran"), "{console}");
}

/// docker's 126 for a program that exists but cannot be executed.
#[test]
fn not_executable_exits_126() {
    let mut boot = Boot::new(ImageConfig {
        cmd: vec!["/etc/locked".into()],
        ..Default::default()
    });
    boot.format = RootFormat::Erofs;
    let mut zone = boot.start();
    let error = zone.wait_packet("Error", |p| match &p.body {
        Some(Body::Error(e)) => Some(e.clone()),
        _ => None,
    });
    let want = "exec: \"/etc/locked\": permission denied";
    assert_eq!((error.message.as_str(), error.fatal), (want, false));
    assert_eq!(zone.exit(), ExitStatus::Code(126));
    let console = zone.powered_off();
    assert!(
        console.contains(&format!("spore-init: {want}\n")),
        "{console:?}"
    );
}

/// docker's 127 for a command that is not in PATH, with the reason on the console and in IDM.
#[test]
fn missing_command_exits_127() {
    let mut boot = Boot::new(ImageConfig {
        env: vec!["PATH=/bin".into()],
        ..Default::default()
    });
    boot.overrides.cmd = Some(vec!["no-such-program".into(), "arg".into()]);
    let mut zone = boot.start();
    let error = zone.wait_packet("Error", |p| match &p.body {
        Some(Body::Error(e)) => Some(e.clone()),
        _ => None,
    });
    let want = "exec: \"no-such-program\": executable file not found in $PATH (PATH=/bin)";
    assert_eq!(error.message, want);
    assert!(!error.fatal);
    // Without an ExitAck the guest stays up, answers requests and re-sends the same Exit
    // every second; after ~5 s it says on the console what it waits for.
    assert_eq!(zone.exit_unacked(), ExitStatus::Code(127));
    zone.wait_console("waiting for the host to acknowledge the exit status");
    zone.send(IdmPacket::request(
        12,
        Body::Ping(proto::Ping { nonce: 78 }),
    ));
    let pong = zone.wait_packet("Pong", |p| match &p.body {
        Some(Body::Pong(pong)) if p.request_id == 12 => Some(*pong),
        _ => None,
    });
    assert_eq!(pong.nonce, 78);
    assert!(
        zone.qemu.try_wait().unwrap().is_none(),
        "the guest powered off without an ExitAck\n{}",
        zone.diagnostics()
    );
    let exits = zone.exits_seen();
    assert!(exits >= 4, "{exits} Exits in ~5 s without an ack");
    let resent: Vec<_> = zone
        .seen
        .iter()
        .filter_map(|p| match &p.body {
            Some(Body::Exit(e)) => e.status(),
            _ => None,
        })
        .collect();
    assert!(
        resent.iter().all(|s| *s == ExitStatus::Code(127)),
        "{resent:?}"
    );
    zone.ack_exit();
    assert!(
        !zone
            .seen
            .iter()
            .any(|p| matches!(p.body, Some(Body::Started(_))))
    );
    let console = zone.powered_off();
    assert!(
        console.contains(&format!("spore-init: {want}\n")),
        "{console}"
    );
}

/// With a tty: hvc0 is the controlling terminal of init's session and the workload's own
/// process group is its foreground group (so the workload's exit hangs nothing up). Exec
/// sessions (pipes and pty) run beside the workload; Shutdown delivers SIGTERM, which the
/// workload traps.
#[test]
fn shutdown_forwards_sigterm_and_exec_works() {
    let script = r#"trap 'echo got SIGTERM; exit 42' TERM
set -- $(sed 's/.*) //' /proc/$$/stat)
echo "tty=$(tty) term=$TERM session=$4 own-group=$([ $3 = $$ ] && echo yes) foreground=$([ $6 = $$ ] && echo yes)"
echo ready
while true; do sleep 0.1; done"#;
    let mut boot = Boot::new(sh(script));
    boot.overrides.tty = true;
    // Verbose: init still writes to hvc0 after the workload exits (below).
    boot.verbose = true;
    let mut zone = boot.start();
    zone.started();
    zone.wait_console("ready");

    // Exec with pipes: stdout, stderr, stdin, exit code.
    let argv = [
        "sh",
        "-c",
        "echo out; echo err >&2; read x; echo got $x; exit 5",
    ];
    zone.send(IdmPacket::stream(
        5,
        Body::ExecStart(proto::ExecStart {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec!["X=1".into()],
            ..Default::default()
        }),
    ));
    zone.wait_packet("ExecStarted", |p| {
        matches!(p.body, Some(Body::ExecStarted(_))).then_some(())
    });
    zone.send(IdmPacket::stream(
        5,
        Body::ExecStdin(proto::ExecStdin {
            data: b"hi\n".to_vec(),
        }),
    ));
    zone.send(IdmPacket::stream(
        5,
        Body::ExecStdinClosed(proto::ExecStdinClosed {}),
    ));
    let code = zone.wait_packet("ExecExit", |p| match &p.body {
        Some(Body::ExecExit(e)) if p.stream_id == 5 => Some(e.status),
        _ => None,
    });
    assert_eq!(code, Some(proto::exec_exit::Status::Code(5)));
    let output = |zone: &Zone, id: u64, stream: Stream| -> String {
        zone.seen
            .iter()
            .filter(|p| p.stream_id == id)
            .filter_map(|p| match &p.body {
                Some(Body::ExecOutput(o)) if o.stream() == stream => {
                    Some(String::from_utf8_lossy(&o.data).into_owned())
                }
                _ => None,
            })
            .collect()
    };
    assert_eq!(output(&zone, 5, Stream::Stdout), "out\ngot hi\n");
    assert_eq!(output(&zone, 5, Stream::Stderr), "err\n");

    // Exec with a pseudo-terminal, as another user, and a command that does not exist.
    zone.send(IdmPacket::stream(
        6,
        Body::ExecStart(proto::ExecStart {
            argv: vec!["sh".into(), "-c".into(), "tty; id -u; stty size".into()],
            user: "app".into(),
            tty: true,
            size: Some(proto::TerminalSize {
                rows: 33,
                columns: 101,
            }),
            ..Default::default()
        }),
    ));
    zone.send(IdmPacket::stream(
        7,
        Body::ExecStart(proto::ExecStart {
            argv: vec!["nope".into()],
            ..Default::default()
        }),
    ));
    for id in [6, 7] {
        zone.wait_packet("ExecExit", |p| {
            (p.stream_id == id && matches!(p.body, Some(Body::ExecExit(_)))).then_some(())
        });
    }
    assert_eq!(
        output(&zone, 6, Stream::Stdout),
        "/dev/pts/0\r\n1000\r\n33 101\r\n"
    );
    let err7 = zone.seen.iter().find_map(|p| match &p.body {
        Some(Body::Error(e)) if p.stream_id == 7 => Some(e.message.clone()),
        _ => None,
    });
    assert_eq!(
        err7.as_deref(),
        Some("exec: \"nope\": executable file not found in $PATH (PATH=/bin)")
    );
    let exit7 = zone.seen.iter().find_map(|p| match &p.body {
        Some(Body::ExecExit(e)) if p.stream_id == 7 => e.status,
        _ => None,
    });
    assert_eq!(exit7, Some(proto::exec_exit::Status::Code(127)));

    // Output flow control: with a 1000-byte window the guest sends exactly that much until it
    // gets credit, then the rest; it offers a stdin window of its own.
    zone.send(IdmPacket::stream(
        8,
        Body::ExecStart(proto::ExecStart {
            argv: vec![
                "head".into(),
                "-c".into(),
                "100000".into(),
                "/dev/zero".into(),
            ],
            output_window: 1000,
            ..Default::default()
        }),
    ));
    let started8 = zone.wait_packet("ExecStarted", |p| match &p.body {
        Some(Body::ExecStarted(s)) if p.stream_id == 8 => Some(*s),
        _ => None,
    });
    assert!(started8.output_flow_control && started8.stdin_window == 256 * 1024);
    let output8 = |zone: &Zone| -> usize {
        zone.seen
            .iter()
            .filter(|p| p.stream_id == 8)
            .filter_map(|p| match &p.body {
                Some(Body::ExecOutput(o)) => Some(o.data.len()),
                _ => None,
            })
            .sum()
    };
    // Whatever arrives in the next 2 s (head is done long before) stays within the window.
    let until = Instant::now() + Duration::from_secs(2);
    while let Ok(item) = zone
        .packets
        .recv_timeout(until.saturating_duration_since(Instant::now()))
    {
        if let Ok(p) = item {
            zone.seen.push(p);
        }
    }
    assert_eq!(output8(&zone), 1000);
    zone.send(IdmPacket::stream(
        8,
        Body::ExecCredit(proto::ExecCredit { bytes: 99_000 }),
    ));
    let exit8 = zone.wait_packet("ExecExit", |p| match &p.body {
        Some(Body::ExecExit(e)) if p.stream_id == 8 => Some(e.status),
        _ => None,
    });
    assert_eq!(exit8, Some(proto::exec_exit::Status::Code(0)));
    assert_eq!(output8(&zone), 100_000);
    // ExecCancel: the client went away; the process group is killed.
    zone.send(IdmPacket::stream(
        9,
        Body::ExecStart(proto::ExecStart {
            argv: vec!["sleep".into(), "1000".into()],
            output_window: 1000,
            ..Default::default()
        }),
    ));
    zone.wait_packet("ExecStarted", |p| {
        (p.stream_id == 9 && matches!(p.body, Some(Body::ExecStarted(_)))).then_some(())
    });
    zone.send(IdmPacket::stream(9, Body::ExecCancel(proto::ExecCancel {})));
    let exit9 = zone.wait_packet("ExecExit", |p| match &p.body {
        Some(Body::ExecExit(e)) if p.stream_id == 9 => Some(e.status),
        _ => None,
    });
    assert_eq!(exit9, Some(proto::exec_exit::Status::Signal(9)));

    zone.send(IdmPacket::request(
        9,
        Body::Shutdown(proto::Shutdown {
            grace_period_ms: 20_000,
        }),
    ));
    let ack = zone.wait_packet("ShutdownAck", |p| match &p.body {
        Some(Body::ShutdownAck(a)) if p.request_id == 9 => Some(a.signalled),
        _ => None,
    });
    assert!(ack);
    assert_eq!(zone.exit(), ExitStatus::Code(42));
    let console = zone.powered_off();
    assert!(
        console.contains("tty=/dev/hvc0 term=xterm session=1 own-group=yes foreground=yes\r\n"),
        "{console}"
    );
    assert!(console.contains("got SIGTERM\r\n"), "{console}");
    // The workload's exit did not hang the console up: init's own line after it arrived.
    let after = console
        .rsplit_once("got SIGTERM\r\n")
        .map_or("", |(_, after)| after);
    assert!(
        after.contains("spore-init: workload exited: Code(42)"),
        "{console}"
    );
}

/// Static IPv4 and IPv6 through netlink, checked against QEMU's user-mode network: the zone
/// reaches a listener on the host. Also rlimits, resolv.conf, and SIGKILL after the grace period.
#[test]
fn network_rlimits_and_grace_period() {
    let v4 = TcpListener::bind("127.0.0.1:0").unwrap();
    let v6 = TcpListener::bind("[::1]:0").ok();
    let p4 = v4.local_addr().unwrap().port();
    let p6 = v6.as_ref().map_or(0, |l| l.local_addr().unwrap().port());
    let script = format!(
        r#"echo "nofile=$(ulimit -n) $(ip -o link show eth0 | grep -o 'mtu [0-9]*')"
echo "resolv=$(cat /etc/resolv.conf)"
ip -o addr show dev eth0 | grep -o 'inet6\? [^ ]*' | grep -v 'inet6 fe80:' | tr '\n' ' '; echo
ip route show default; ip -6 route show default
echo via-ipv4 | nc 10.0.2.2 {p4} && echo sent4
[ {p6} = 0 ] || (echo via-ipv6 | nc fec0::2 {p6} && echo sent6)
trap '' TERM
echo waiting
sleep 300"#
    );
    let mut boot = Boot::new(sh(&script));
    boot.nic = Some("02:00:00:00:e2:e0");
    boot.network = Some(NetworkConfig {
        mac: "02:00:00:00:e2:e0".parse().unwrap(),
        ipv4: Some(IpConfig {
            address: "10.0.2.15/24".parse().unwrap(),
            gateway: Some("10.0.2.2".parse().unwrap()),
        }),
        ipv6: Some(IpConfig {
            address: "fec0::15/64".parse().unwrap(),
            gateway: Some("fec0::2".parse().unwrap()),
        }),
        nameservers: vec!["10.0.2.3".parse().unwrap()],
        mtu: Some(1400),
    });
    boot.rlimits = vec![Rlimit {
        resource: RlimitResource::Nofile,
        soft: 321,
        hard: 4096,
    }];
    let mut zone = boot.start();
    zone.started();

    // What the guest sends to a host listener, or why nothing came.
    let accept = |l: TcpListener| -> Result<String, String> {
        l.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + BOOT_TIMEOUT;
        loop {
            match l.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    let mut line = String::new();
                    BufReader::new(s)
                        .read_line(&mut line)
                        .map_err(|e| e.to_string())?;
                    return Ok(line);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.to_string()),
            }
            if Instant::now() >= deadline {
                return Err("no connection".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let got4 = std::thread::spawn(move || accept(v4));
    let got6 = v6.map(|l| std::thread::spawn(move || accept(l)));
    zone.wait_console("waiting");
    let got4 = got4.join().unwrap();
    let got6 = got6.map(|g| g.join().unwrap());
    let diag = zone.diagnostics();
    assert_eq!(got4, Ok("via-ipv4\n".into()), "{diag}");
    if let Some(got6) = got6 {
        assert_eq!(got6, Ok("via-ipv6\n".into()), "{diag}");
    }

    zone.send(IdmPacket::request(
        3,
        Body::Shutdown(proto::Shutdown {
            grace_period_ms: 300,
        }),
    ));
    assert_eq!(
        zone.exit(),
        ExitStatus::Signal {
            signal: 9,
            core_dumped: false
        }
    );
    let console = zone.powered_off();
    assert!(console.contains("nofile=321 mtu 1400\n"), "{console:?}");
    assert!(
        console.contains("resolv=nameserver 10.0.2.3\n"),
        "{console}"
    );
    assert!(
        console.contains("inet 10.0.2.15/24 inet6 fec0::15/64"),
        "{console}"
    );
    assert!(
        console.contains("default via 10.0.2.2 dev eth0"),
        "{console}"
    );
    assert!(
        console.contains("default via fec0::2 dev eth0"),
        "{console}"
    );
    // QEMU's user network sends router advertisements; the zone ignores them.
    assert!(
        !console.contains("via fe80::2") && !console.contains("fec0::ff:fe"),
        "{console}"
    );
    assert!(console.contains("sent4\n"), "{console}");
}
