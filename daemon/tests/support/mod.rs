//! Shared test support: a demo OCI image, a daemon core over a test double backend, and the
//! real spored binary on a temporary socket.

#![allow(dead_code)]

pub mod fake_backend;
pub mod pty;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use spore_api::v1;
use spored::config::Config;
use spored::daemon::{Daemon, Selection, Shared};
use spored::events::EventBus;
use spored::images::Images;
use spored::store::Store;
use spored::zones::Zones;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Builds the busybox demo image as an OCI layout (scripts/demo-image.sh: umoci, busybox-static).
pub fn demo_image(dir: &Path, tag: &str) -> PathBuf {
    let layout = dir.join(format!("oci-{tag}"));
    let out = Command::new(repo_root().join("scripts/demo-image.sh"))
        .arg(&layout)
        .arg(tag)
        .output()
        .expect("run scripts/demo-image.sh");
    assert!(
        out.status.success(),
        "scripts/demo-image.sh failed (needs umoci and busybox-static: scripts/install-deps.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    layout
}

/// A config rooted in `dir`, with a guest bundle that exists (the test double never boots it).
pub fn config(dir: &Path) -> Config {
    let state_dir = dir.join("state");
    std::fs::create_dir_all(state_dir.join("guest")).unwrap();
    std::fs::write(state_dir.join("guest/kernel"), b"not a kernel").unwrap();
    std::fs::write(state_dir.join("guest/initrd"), b"not an initrd").unwrap();
    let mut config = Config {
        socket: dir.join("spored.sock"),
        state_dir,
        ..Config::default()
    };
    config.zones.stop_timeout_secs = 2;
    config
}

/// A daemon core over `backend`, started (reconciled) like spored does.
pub async fn core(config: Config, backend: Arc<fake_backend::FakeBackend>) -> Arc<Daemon> {
    let store = Store::open(&config.state_dir.join("state.db"), config.events.retained).unwrap();
    let zones = Zones::load(store, EventBus::new(config.events.client_queue)).unwrap();
    let images = Images::open(&config, zones.clone()).unwrap();
    let selection = Selection {
        kind: v1::BackendKind::Qemu,
        reason: "test double".into(),
        probes: Vec::new(),
    };
    let daemon = Daemon::new(Shared::new(config, zones, images, Some(backend), selection));
    daemon.start().await;
    daemon
}

/// Waits until `f` holds (polling), or panics with `what`.
pub async fn until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The real spored binary on a temporary socket and state dir.
pub struct Spored {
    pub child: Child,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub log: PathBuf,
}

impl Spored {
    pub fn start(dir: &Path) -> Spored {
        let socket = dir.join("spored.sock");
        let state_dir = dir.join("state");
        let log = dir.join("spored.log");
        let child = Self::spawn(&socket, &state_dir, &log);
        let spored = Spored {
            child,
            socket,
            state_dir,
            log,
        };
        spored.wait_ready();
        spored
    }

    /// Like [`Spored::start`] with a config file (restarts use `/dev/null`).
    pub fn start_with_config(dir: &Path, config: &Path) -> Spored {
        let socket = dir.join("spored.sock");
        let state_dir = dir.join("state");
        let log = dir.join("spored.log");
        let child = Self::spawn_with(&socket, &state_dir, &log, config);
        let spored = Spored {
            child,
            socket,
            state_dir,
            log,
        };
        spored.wait_ready();
        spored
    }

    pub fn spawn(socket: &Path, state_dir: &Path, log: &Path) -> Child {
        Self::spawn_with(socket, state_dir, log, Path::new("/dev/null"))
    }

    fn spawn_with(socket: &Path, state_dir: &Path, log: &Path, config: &Path) -> Child {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        Command::new(env!("CARGO_BIN_EXE_spored"))
            .arg("--socket")
            .arg(socket)
            .arg("--state-dir")
            .arg(state_dir)
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .expect("start spored")
    }

    fn wait_ready(&self) {
        let start = Instant::now();
        while std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "spored did not listen on {}: {}",
                self.socket.display(),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub async fn client(&self) -> spore_api::ControlClient {
        spore_api::connect(&self.socket).await.unwrap()
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::Signal::TERM,
        )
        .unwrap();
        self.child.wait().unwrap()
    }

    /// SIGKILL and wait: a crash.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn restart(&mut self) {
        self.child = Self::spawn(&self.socket, &self.state_dir, &self.log);
        self.wait_ready();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Spored {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
