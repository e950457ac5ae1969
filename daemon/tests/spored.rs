//! The real spored binary on a temporary socket and state directory, driven over gRPC:
//! host status, unknown ids, bad input, events across restarts, durability across kill -9,
//! the single-instance lock, peer credentials, and a Python client.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use spore_api::v1;
use support::Spored;
use tonic::Code;

async fn import_demo(spored: &Spored, dir: &std::path::Path, tag: &str) -> v1::Image {
    let layout = support::demo_image(dir, tag);
    let mut client = spored.client().await;
    let mut stream = client
        .import_image(v1::ImportImageRequest {
            path: layout.display().to_string(),
            reference: tag.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    while let Some(message) = stream.next().await {
        if let Some(v1::pull_image_response::Kind::Image(image)) = message.unwrap().kind {
            return image;
        }
    }
    panic!("import ended without an image");
}

async fn events_from(spored: &Spored, from: u64, count: usize) -> Vec<v1::Event> {
    let mut client = spored.client().await;
    let mut stream = client
        .watch_events(v1::WatchEventsRequest {
            from_sequence: Some(from),
            zone_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while events.len() < count {
        let next = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("events in time");
        events.push(next.unwrap().unwrap());
    }
    events
}

#[tokio::test]
async fn host_status_and_unknown_zones() {
    let dir = tempfile::tempdir().unwrap();
    let spored = Spored::start(dir.path());
    let mut client = spored.client().await;
    let status = client
        .get_host_status(v1::GetHostStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.version, env!("CARGO_PKG_VERSION"));
    assert!(status.cpus >= 1 && status.memory_total_bytes > 0);
    assert_eq!(status.state_dir, spored.state_dir.display().to_string());
    assert_eq!(status.probes.len(), 2, "{status:?}");
    assert!(!status.backend_reason.is_empty());
    let bundle = status.guest_bundle.unwrap();
    assert!(!bundle.present && bundle.detail.contains("kernel/build-bundle.sh"));

    let zones = client
        .list_zones(v1::ListZonesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(zones.zones.is_empty());
    let id = "0b7c6a9e-8d43-4c1b-9a55-2f4f0e9d1c11";
    for err in [
        client
            .get_zone(v1::GetZoneRequest { zone: id.into() })
            .await
            .unwrap_err(),
        client
            .destroy_zone(v1::DestroyZoneRequest { zone: id.into() })
            .await
            .unwrap_err(),
    ] {
        assert_eq!(err.code(), Code::NotFound);
        assert_eq!(err.message(), format!("zone {id} not found"));
    }
}

#[tokio::test]
async fn bad_create_requests_name_the_field_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let spored = Spored::start(dir.path());
    let mut client = spored.client().await;
    let base = v1::ZoneSpec {
        image: "busybox".into(),
        ..Default::default()
    };
    let huge_env = vec![format!("BIG={}", "x".repeat(1 << 20))];
    let cases = [
        (
            v1::ZoneSpec {
                image: "Not A Ref".into(),
                ..base.clone()
            },
            "spec.image",
        ),
        (
            v1::ZoneSpec {
                image: "busybox:".into(),
                ..base.clone()
            },
            "spec.image",
        ),
        (
            v1::ZoneSpec {
                name: "Bad_Name".into(),
                ..base.clone()
            },
            "spec.name",
        ),
        (
            v1::ZoneSpec {
                name: "x".repeat(70),
                ..base.clone()
            },
            "spec.name",
        ),
        (
            v1::ZoneSpec {
                vcpus: Some(0),
                ..base.clone()
            },
            "spec.vcpus",
        ),
        (
            v1::ZoneSpec {
                memory_mib: Some(1 << 30),
                ..base.clone()
            },
            "spec.memory_mib",
        ),
        (
            v1::ZoneSpec {
                env: huge_env,
                ..base.clone()
            },
            "spec.env",
        ),
    ];
    for (spec, field) in cases {
        let err = client
            .create_zone(v1::CreateZoneRequest { spec: Some(spec) })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert!(
            err.message().starts_with(&format!("{field}: ")),
            "{}",
            err.message()
        );
    }
    // Over the whole-message limit: refused before decoding, still INVALID_ARGUMENT.
    let mut unlimited = spored.client().await.max_encoding_message_size(64 << 20);
    let err = unlimited
        .create_zone(v1::CreateZoneRequest {
            spec: Some(v1::ZoneSpec {
                env: vec![format!("BIG={}", "x".repeat(5 << 20))],
                ..base.clone()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().starts_with("request: the message is 52"),
        "{}",
        err.message()
    );
    let err = client
        .create_zone(v1::CreateZoneRequest { spec: None })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // A valid spec on a host with no usable backend: refused with what to install.
    let status = client
        .get_host_status(v1::GetHostStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    if status.backend == v1::BackendKind::None as i32 {
        let err = client
            .create_zone(v1::CreateZoneRequest { spec: Some(base) })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert!(
            err.message().contains("no backend can run zones"),
            "{}",
            err.message()
        );
    }
    let zones = client
        .list_zones(v1::ListZonesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(zones.zones.is_empty());
    let after = client
        .get_host_status(v1::GetHostStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        after.last_event_sequence, 0,
        "a refused request produced events"
    );
}

// Multi-threaded: the test blocks in waitpid while its clients' connections must stay served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_resume_across_restarts_and_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut spored = Spored::start(dir.path());
    let image = import_demo(&spored, dir.path(), "first").await;
    // kill -9 right after the acknowledged write: it is there after restart.
    spored.kill();
    spored.restart();
    let mut client = spored.client().await;
    let images = client
        .list_images(v1::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(images.images.len(), 1);
    assert_eq!(images.images[0].manifest_digest, image.manifest_digest);
    // Another event after the crash, then a clean restart.
    client
        .remove_image(v1::RemoveImageRequest {
            image: "first".into(),
        })
        .await
        .unwrap();
    assert_eq!(spored.stop().code(), Some(0));
    assert!(!spored.socket.exists(), "socket left behind after SIGTERM");
    spored.restart();
    let events = events_from(&spored, 1, 2).await;
    let kinds: Vec<(u64, i32)> = events
        .iter()
        .map(|e| match &e.kind {
            Some(v1::event::Kind::ImageChanged(c)) => (e.sequence, c.change),
            other => panic!("unexpected event {other:?}"),
        })
        .collect();
    use v1::image_changed::Change;
    assert_eq!(
        kinds,
        vec![(1, Change::Added as i32), (2, Change::Removed as i32)]
    );
    // Resuming after the last one seen gives only what came later, and sequences continue.
    let late = tokio::spawn({
        let socket = spored.socket.clone();
        async move {
            let mut client = spore_api::connect(&socket).await.unwrap();
            let mut stream = client
                .watch_events(v1::WatchEventsRequest {
                    from_sequence: Some(3),
                    zone_id: String::new(),
                })
                .await
                .unwrap()
                .into_inner();
            stream.next().await.unwrap().unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    import_demo(&spored, dir.path(), "second").await;
    let next = tokio::time::timeout(Duration::from_secs(10), late)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.sequence, 3);
}

#[tokio::test]
async fn a_second_daemon_on_the_same_state_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let spored = Spored::start(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_spored"))
        .arg("--socket")
        .arg(dir.path().join("other.sock"))
        .arg("--state-dir")
        .arg(&spored.state_dir)
        .arg("--config")
        .arg("/dev/null")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "in use by another spored (pid {})",
            spored.child.id()
        )),
        "{stderr}"
    );
}

/// sporectl, built beside this test binary by `cargo build --workspace`.
fn sporectl() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join("sporectl");
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        path.display()
    );
    path
}

#[tokio::test]
async fn callers_outside_root_and_group_spore_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // The unprivileged caller must reach the socket through the directory.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let spored = Spored::start(dir.path());
    let as_nobody = || {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(sporectl())
            .arg("--socket")
            .arg(&spored.socket)
            .args(["host", "status"])
            .output()
            .unwrap()
    };
    // The socket's mode (0660, root) stops it first.
    let out = as_nobody();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("permission denied"));
    // With the mode opened up, the daemon's own peer-credential check refuses it.
    std::fs::set_permissions(
        &spored.socket,
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    let out = as_nobody();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("uid 65534 may not use spored"), "{stderr}");
    assert!(
        spored
            .log()
            .contains("refused a caller that is neither root nor in group spore")
    );
    // Root still gets in.
    let out = Command::new(sporectl())
        .arg("--socket")
        .arg(&spored.socket)
        .args(["host", "status"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn python_client_with_grpcio_defaults_lists_zones_and_reads_events() {
    let dir = tempfile::tempdir().unwrap();
    let spored = Spored::start(dir.path());
    import_demo(&spored, dir.path(), "py").await;
    let python = support::repo_root().join(".cache/venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/install-deps.sh (it installs grpcio and grpcio-tools)",
        python.display()
    );
    let out_dir = dir.path().join("py");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = Command::new(python)
        .arg(support::repo_root().join("daemon/tests/python/client.py"))
        .arg(support::repo_root().join("proto"))
        .arg(&out_dir)
        .arg(&spored.socket)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["zones"], 0);
    assert_eq!(result["last"], 1);
    assert_eq!(result["events"][0]["sequence"], 1);
    assert_eq!(result["events"][0]["kind"], "image_changed");
    assert_eq!(
        result["events"][0]["references"][0],
        "docker.io/library/py:latest"
    );
    assert_eq!(result["others"], 2);
}

/// A string literal without Huffman coding (RFC 7541 §5.2), for lengths under 127.
fn hpack_string(block: &mut Vec<u8>, text: &[u8]) {
    assert!(text.len() < 127);
    block.push(text.len() as u8);
    block.extend_from_slice(text);
}

fn http2_frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

#[test]
fn a_client_naming_the_socket_path_as_authority_is_served() {
    // grpc-java and grpcurl send the socket path itself as :authority, which h2 alone refuses.
    // Spoken here frame by frame: the first call adds the path to the HPACK dynamic table,
    // the second names it by index.
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let spored = Spored::start(dir.path());
    let path = spored.socket.display().to_string();
    let mut first = vec![0x83, 0x86, 0x44]; // POST, http, :path with indexing
    hpack_string(&mut first, b"/grpc.health.v1.Health/Check");
    first.push(0x41); // :authority with indexing
    hpack_string(&mut first, path.as_bytes());
    first.push(0x5f); // content-type (static 31) with indexing
    hpack_string(&mut first, b"application/grpc");
    first.push(0x00); // te: trailers, a literal name, without indexing
    hpack_string(&mut first, b"te");
    hpack_string(&mut first, b"trailers");
    // Newest first: 62 content-type, 63 :authority, 64 :path.
    let second = [0x83, 0x86, 0xc0, 0xbf, 0xbe, 0x00, 2, b't', b'e', 8]
        .iter()
        .copied()
        .chain(*b"trailers")
        .collect::<Vec<u8>>();
    let empty_request = [0, 0, 0, 0, 0];
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    http2_frame(&mut out, 0x4, 0, 0, &[]);
    for (stream, block) in [(1, &first), (3, &second)] {
        http2_frame(&mut out, 0x1, 0x4, stream, block);
        http2_frame(&mut out, 0x0, 0x1, stream, &empty_request);
    }
    let mut socket = std::os::unix::net::UnixStream::connect(&spored.socket).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    socket.write_all(&out).unwrap();
    // Read frames until both calls have answered SERVING (a DATA frame holding the message
    // `status: SERVING`) and ended with trailers; a reset or GOAWAY fails the test.
    let (mut serving, mut ended) = (Vec::new(), Vec::new());
    let mut head = [0u8; 9];
    while serving.len() < 2 || ended.len() < 2 {
        socket.read_exact(&mut head).unwrap();
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]);
        let mut payload = vec![0; len];
        socket.read_exact(&mut payload).unwrap();
        match kind {
            0x0 if payload == [0, 0, 0, 0, 2, 0x08, 0x01] => serving.push(stream),
            0x1 if flags & 0x1 != 0 => ended.push(stream),
            0x3 | 0x7 => panic!("spored sent frame type {kind} on stream {stream}: {payload:?}"),
            0x4 if flags & 0x1 == 0 => {
                let mut ack = Vec::new();
                http2_frame(&mut ack, 0x4, 0x1, 0, &[]);
                socket.write_all(&ack).unwrap();
            }
            _ => {}
        }
    }
    serving.sort();
    ended.sort();
    assert_eq!((serving, ended), (vec![1, 3], vec![1, 3]));
}

#[test]
fn systemd_is_told_when_the_socket_is_ready() {
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify.sock");
    let listener = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let socket = dir.path().join("spored.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_spored"))
        .arg("--socket")
        .arg(&socket)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(["--config", "/dev/null"])
        .env("NOTIFY_SOCKET", &notify)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 64];
    let got = listener.recv(&mut buf);
    // Ready means the socket accepts connections.
    let connects = std::os::unix::net::UnixStream::connect(&socket).is_ok();
    let _ = child.kill();
    let _ = child.wait();
    let n = got.expect("READY=1 within 30 s");
    assert_eq!(&buf[..n], b"READY=1");
    assert!(connects);
}

async fn import(
    client: &mut spore_api::ControlClient,
    path: &std::path::Path,
    reference: &str,
    select: &str,
) -> Result<v1::Image, tonic::Status> {
    let mut stream = client
        .import_image(v1::ImportImageRequest {
            path: path.display().to_string(),
            reference: reference.into(),
            select: select.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    while let Some(message) = tokio::time::timeout(Duration::from_secs(120), stream.next())
        .await
        .expect("import progress in time")
    {
        if let v1::pull_image_response::Kind::Image(image) = message?.kind.unwrap() {
            return Ok(image);
        }
    }
    panic!("import ended without an image");
}

/// `image import --tag` records the tag for an image named otherwise in its layout, a selector
/// that names nothing is refused with the names, and the image's id then serves removal while
/// pull refuses it.
#[tokio::test]
async fn import_tags_selects_and_ids_name_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let spored = Spored::start(dir.path());
    let mut client = spored.client().await;
    let layout = support::demo_image(dir.path(), "demo");
    let image = import(&mut client, &layout, "myorg/app:1", "")
        .await
        .unwrap();
    assert_eq!(image.references, ["docker.io/myorg/app:1"]);
    let again = import(&mut client, &layout, "", "demo").await.unwrap();
    assert_eq!(again.manifest_digest, image.manifest_digest);
    let e = import(&mut client, &layout, "myorg/app:2", "nope")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(
        e.message()
            .contains(r#"no image named "nope" in it (names: demo)"#),
        "{}",
        e.message()
    );

    let e = client
        .pull_image(v1::PullImageRequest {
            reference: image.manifest_digest.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("is an image id"), "{}", e.message());

    let hex = image.manifest_digest.strip_prefix("sha256:").unwrap();
    let removed = client
        .remove_image(v1::RemoveImageRequest {
            image: hex[..12].into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(removed.manifest_digest, image.manifest_digest);
    let e = client
        .remove_image(v1::RemoveImageRequest {
            image: hex[..12].into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
}
