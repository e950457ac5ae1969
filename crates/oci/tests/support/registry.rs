//! A private `docker-registry` on 127.0.0.1 for one test: free port, its own storage and
//! config, its access log in a file, killed on drop.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Registry {
    child: Child,
    pub addr: String,
    pub storage: PathBuf,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Registry {
        Registry::start_with(None)
    }

    /// A registry that demands HTTP basic auth for the `user:bcrypt-hash` htpasswd line.
    pub fn start_with_auth(htpasswd: &str) -> Registry {
        Registry::start_with(Some(htpasswd))
    }

    fn start_with(htpasswd: Option<&str>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("storage");
        let log = dir.path().join("registry.log");
        // Pick a free port; the registry binds it right after (retried on the rare clash).
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let addr = format!("127.0.0.1:{port}");
            let config = dir.path().join("config.yml");
            let auth = match htpasswd {
                Some(line) => {
                    let file = dir.path().join("htpasswd");
                    std::fs::write(&file, format!("{line}\n")).unwrap();
                    format!(
                        "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                        file.display()
                    )
                }
                None => String::new(),
            };
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\n{auth}log:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
                    storage.display()
                ),
            )
            .unwrap();
            let out = std::fs::File::create(&log).unwrap();
            let child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .expect("docker-registry (apt-get install docker-registry)");
            let mut child = child;
            if wait_ready(&mut child, &addr) {
                return Registry {
                    child,
                    addr,
                    storage,
                    log,
                    _dir: dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("docker-registry did not start; see its log");
    }

    /// A plain HTTP GET; returns the whole response.
    pub fn get(&self, path: &str) -> Option<String> {
        http_get(&self.addr, path)
    }

    /// The access log's `GET /v2/<repo>/blobs/<digest>` lines for a digest.
    pub fn blob_gets(&self, digest: &str) -> usize {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines()
            .filter(|l| l.contains("\"GET /v2/") && l.contains(&format!("/blobs/{digest} ")))
            .count()
    }

    /// The file the registry keeps a blob's bytes in.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn storage(&self) -> &Path {
        &self.storage
    }
}

fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn wait_ready(child: &mut Child, addr: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if http_get(addr, "/v2/")
            .is_some_and(|s| s.starts_with("HTTP/1.1 200") || s.starts_with("HTTP/1.1 401"))
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
