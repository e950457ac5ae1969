//! Test support: a private network namespace with the zone's tap, sporenet serving it, and a
//! watchdog that removes both even when the test process is killed.

#![allow(dead_code)]

pub mod double;

use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

pub const ZONE_V4: &str = "10.75.0.2";
pub const ZONE_V6: &str = "fdd4:1476:6c7e::2";
pub const GW_V4: &str = "10.75.0.1";
pub const GW_V6: &str = "fdd4:1476:6c7e::1";
pub const ZONE_MAC: &str = "02:73:70:00:00:02";
pub const TAP: &str = "tap0";

/// Runs `cmd`, panicking with its output when it fails.
pub fn sh(cmd: &[&str]) {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output().expect(cmd[0]);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What the watchdog runs once its stdin closes (the test ended or its process died): kill the
/// processes listed in `$2` (the file is emptied first on a clean end) and delete namespace `$1`.
const CLEANUP: &str = r#"
cat >/dev/null
if [ -s "$2" ]; then for p in $(cat "$2"); do kill -9 "$p" 2>/dev/null; done; fi
for ns in "$1" "$1-h" "$1-w"; do ip netns del "$ns" 2>/dev/null; done
rm -rf "$3"
true
"#;

/// A scratch directory, the processes a test starts and the namespace it makes (if any), all
/// removed on drop, or by a watchdog in its own session when the test process is killed (a
/// nextest timeout kills the test's process group).
pub struct Cleanup {
    pub name: String,
    pub dir: PathBuf,
    pids: PathBuf,
    trigger: Option<ChildStdin>,
    watchdog: Child,
}

impl Cleanup {
    pub fn new(tag: &str) -> Cleanup {
        let name = format!("spn-{tag}-{}", std::process::id());
        let dir = std::env::temp_dir().join(&name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let pids = dir.join("pids");
        std::fs::write(&pids, "").unwrap();
        let mut watchdog = Command::new("setsid")
            .args(["sh", "-c", CLEANUP, "sporenet-test-watchdog"])
            .arg(&name)
            .arg(&pids)
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start the watchdog (setsid, sh)");
        let trigger = watchdog.stdin.take();
        Cleanup {
            name,
            dir,
            pids,
            trigger,
            watchdog,
        }
    }

    /// Starts a process the watchdog kills if the test dies.
    pub fn spawn(&self, cmd: &mut Command) -> Child {
        let child = cmd.spawn().expect("start a test process");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.pids)
            .unwrap();
        writeln!(f, "{}", child.id()).unwrap();
        child
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // The test's own guards ended its processes: the watchdog must not kill recycled pids.
        let _ = std::fs::write(&self.pids, "");
        drop(self.trigger.take());
        let _ = self.watchdog.wait();
    }
}

/// Ends a test's child on drop.
pub struct Proc(pub Option<Child>);

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A network namespace holding the zone's tap (`tap0`, the zone's MAC, addresses and routes),
/// the sporenet serving it, and a scratch directory. With [`Lab::with_world`], sporenet runs in
/// a "host" namespace of its own (`<name>-h`) linked to a "world" namespace (`<name>-w`).
pub struct Lab {
    pub name: String,
    pub dir: PathBuf,
    pub sporenet: Option<Child>,
    pub mtu: usize,
    host_ns: Option<String>,
    /// How sporenet reaches the zone: the tap (default) or a QEMU stream socket.
    qemu_socket: Option<PathBuf>,
    // Last: it runs after the guards above ended their processes.
    cleanup: Cleanup,
}

impl Lab {
    pub fn new(tag: &str, mtu: usize) -> Lab {
        let cleanup = Cleanup::new(tag);
        let lab = Lab {
            name: cleanup.name.clone(),
            dir: cleanup.dir.clone(),
            sporenet: None,
            mtu,
            host_ns: None,
            qemu_socket: None,
            cleanup,
        };
        let n = lab.name.as_str();
        let mtu = mtu.to_string();
        sh(&["ip", "netns", "add", n]);
        sh(&["ip", "-n", n, "link", "set", "lo", "up"]);
        sh(&["ip", "-n", n, "tuntap", "add", "mode", "tap", "name", TAP]);
        sh(&[
            "ip",
            "-n",
            n,
            "link",
            "set",
            TAP,
            "address",
            ZONE_MAC,
            "mtu",
            &mtu,
            "txqueuelen",
            "10000",
            "up",
        ]);
        sh(&["ip", "-n", n, "addr", "add", "10.75.0.2/16", "dev", TAP]);
        sh(&[
            "ip",
            "-n",
            n,
            "addr",
            "add",
            "fdd4:1476:6c7e::2/48",
            "dev",
            TAP,
            "nodad",
        ]);
        sh(&["ip", "-n", n, "route", "add", "default", "via", GW_V4]);
        sh(&["ip", "-n", n, "-6", "route", "add", "default", "via", GW_V6]);
        lab
    }

    /// Gives sporenet a host namespace of its own, `<name>-h` (198.51.100.1/24, 2001:db8::1/64, no
    /// IPv6 default route), linked by a veth pair to a world namespace `<name>-w` (198.51.100.2,
    /// 2001:db8::2): destinations "outside" that the test made itself. Returns the world's name.
    pub fn with_world(&mut self) -> String {
        let (h, w) = (format!("{}-h", self.name), format!("{}-w", self.name));
        sh(&["ip", "netns", "add", &h]);
        sh(&["ip", "netns", "add", &w]);
        sh(&["ip", "-n", &h, "link", "set", "lo", "up"]);
        sh(&["ip", "-n", &w, "link", "set", "lo", "up"]);
        sh(&[
            "ip", "-n", &h, "link", "add", "vh", "type", "veth", "peer", "name", "vw", "netns", &w,
        ]);
        sh(&[
            "ip",
            "-n",
            &h,
            "addr",
            "add",
            "198.51.100.1/24",
            "dev",
            "vh",
        ]);
        sh(&[
            "ip",
            "-n",
            &w,
            "addr",
            "add",
            "198.51.100.2/24",
            "dev",
            "vw",
        ]);
        sh(&[
            "ip",
            "-n",
            &h,
            "addr",
            "add",
            "2001:db8::1/64",
            "dev",
            "vh",
            "nodad",
        ]);
        sh(&[
            "ip",
            "-n",
            &w,
            "addr",
            "add",
            "2001:db8::2/64",
            "dev",
            "vw",
            "nodad",
        ]);
        sh(&["ip", "-n", &h, "link", "set", "vh", "up"]);
        sh(&["ip", "-n", &w, "link", "set", "vw", "up"]);
        self.host_ns = Some(h);
        w
    }

    /// Starts QEMU in the namespace as a pure frame relay between the zone's tap and a
    /// `-netdev stream,server=on` socket (no guest: `-M none`, the two netdevs on one hub),
    /// and makes sporenet connect to that socket as it does to a zone's QEMU.
    pub fn start_qemu_relay(&mut self) -> Proc {
        let socket = self.dir.join("net.sock");
        let log = std::fs::File::create(self.dir.join("qemu.log")).unwrap();
        let child = self.cleanup.spawn(
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &self.name,
                    "qemu-system-x86_64",
                    "-M",
                    "none",
                ])
                .args(["-nographic", "-nodefaults"])
                .args([
                    "-netdev",
                    &format!("tap,id=t0,ifname={TAP},script=no,downscript=no"),
                ])
                .arg("-netdev")
                .arg(format!(
                    "stream,id=s0,server=on,addr.type=unix,addr.path={}",
                    socket.display()
                ))
                .args(["-netdev", "hubport,id=h0,hubid=0,netdev=t0"])
                .args(["-netdev", "hubport,id=h1,hubid=0,netdev=s0"])
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        );
        until("QEMU's stream socket", Duration::from_secs(20), || {
            socket.exists().then_some(())
        });
        self.qemu_socket = Some(socket);
        Proc(Some(child))
    }

    /// Sets a sysctl in sporenet's host namespace (only with [`Lab::with_world`]).
    pub fn host_sysctl(&self, key_value: &str) {
        let h = self.host_ns.as_deref().expect("with_world first");
        sh(&["ip", "netns", "exec", h, "sysctl", "-q", "-w", key_value]);
    }

    pub fn netns_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    pub fn status_file(&self) -> PathBuf {
        self.dir.join("status.json")
    }

    /// Starts `sporenet zone` for this namespace with `args` added (config, ports).
    pub fn start_sporenet(&mut self, args: &[&str]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("sporenet.log"))
            .unwrap();
        // In the host namespace of its own when there is one (`ip netns exec` execs sporenet,
        // so the pid is sporenet's).
        let mut cmd = match &self.host_ns {
            Some(h) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", h, env!("CARGO_BIN_EXE_sporenet")]);
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_sporenet")),
        };
        let child = self.cleanup.spawn(
            cmd.arg("--config")
                .arg(self.dir.join("sporenet.toml"))
                .arg("--status-file")
                .arg(self.status_file())
                .arg("zone")
                .args(match &self.qemu_socket {
                    Some(path) => vec!["--qemu-socket".into(), path.display().to_string()],
                    None => vec![
                        "--tap".into(),
                        TAP.into(),
                        "--netns".into(),
                        self.netns_path().display().to_string(),
                    ],
                })
                .args(["--mtu", &self.mtu.to_string()])
                .args(args)
                .env("RUST_LOG", "sporenet=debug")
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        );
        self.sporenet = Some(child);
        self.wait_link_up();
    }

    /// Writes the config file `start_sporenet` passes.
    pub fn config(&self, toml: &str) {
        std::fs::write(self.dir.join("sporenet.toml"), toml).unwrap();
    }

    /// Waits until the status file says the tap is served.
    pub fn wait_link_up(&self) {
        let start = Instant::now();
        loop {
            if let Some(s) = self.status()
                && s["zones"][0]["link_up"] == serde_json::Value::Bool(true)
            {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "sporenet did not bring the link up; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn status(&self) -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(self.status_file()).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The zone's drop counter `name` in the status file (0 when absent).
    pub fn dropped(&self, name: &str) -> u64 {
        self.status()
            .and_then(|s| s["zones"][0]["dropped"][name].as_u64())
            .unwrap_or(0)
    }

    /// Waits (the status file is rewritten every second) until drop counter `name` is at
    /// least `min`.
    pub fn wait_dropped(&self, name: &str, min: u64) {
        until(
            &format!("drop counter {name} >= {min}"),
            Duration::from_secs(5),
            || (self.dropped(name) >= min).then_some(()),
        );
    }

    /// Waits until the zone's status field `key` satisfies `ok`.
    pub fn wait_status(&self, key: &str, ok: impl Fn(&serde_json::Value) -> bool) {
        until(&format!("status {key}"), Duration::from_secs(5), || {
            self.status()
                .filter(|s| ok(&s["zones"][0][key]))
                .map(|_| ())
        });
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sporenet.log")).unwrap_or_default()
    }

    /// SIGKILLs sporenet.
    pub fn kill_sporenet(&mut self) {
        if let Some(mut c) = self.sporenet.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, cmd: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd)
            .output()
            .expect("ip netns exec")
    }

    /// Runs `f` on a thread inside the namespace: the sockets it makes are the zone's.
    pub fn inside<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let ns = std::fs::File::open(self.netns_path()).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                rustix::thread::move_into_link_name_space(
                    ns.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .expect("setns");
                f()
            })
            .join()
            .expect("the test's thread in the namespace panicked")
        })
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.kill_sporenet();
        if std::thread::panicking() {
            eprintln!("--- sporenet log ({}) ---\n{}", self.name, self.log());
        }
    }
}

/// Polls `f` until it returns Some, or panics after `timeout`.
pub fn until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
