//! Pulls from a real registry (Debian's docker-registry, started per test) of images written by
//! the tests' own OCI writer and pushed with skopeo; packed trees compared with `umoci unpack`.

mod support;

use std::path::Path;

use spore_oci::{ImageFormat, NoProgress, OciError, PullOptions, Reference};
use support::ociwriter::{self as w, Compression, Image};
use support::registry::Registry;
use support::{fstree, skopeo_push};

fn reference(reg: &Registry, repo: &str) -> Reference {
    Reference::parse(&format!("{}/{repo}", reg.addr)).unwrap()
}

/// Writes `image` as `layout:tag` and pushes it to `repo:tag`.
fn publish(reg: &Registry, dir: &Path, repo: &str, tag: &str, image: &Image) -> w::Written {
    let layout = dir.join(format!("layout-{}", repo.replace('/', "-")));
    let written = w::write_image(&layout, image);
    w::write_layout(&layout, tag, &written);
    skopeo_push(&layout, tag, &reg.addr, repo, &[]);
    written
}

fn base_layer() -> Vec<w::Entry> {
    vec![
        w::dir("bin"),
        w::file("bin/sh", b"#!shell binary\n".repeat(100)).mode(0o755),
        w::symlink("bin/ls", "sh"),
        w::hardlink("bin/sh2", "bin/sh"),
        w::dir("etc"),
        w::file("etc/motd", "motd v1\n"),
        w::file("etc/shadow", "root:*:1::::::\n")
            .mode(0o640)
            .owner(0, 42),
        w::symlink("etc/localtime", "/usr/share/zoneinfo/UTC"),
        w::dir("usr"),
        w::dir("usr/bin"),
        w::file("usr/bin/su", b"\x7fELF su").mode(0o4755),
        w::file("usr/bin/wall", b"\x7fELF wall")
            .mode(0o2755)
            .owner(0, 5),
        w::symlink("usr/lib64", "lib"),
        w::dir("tmp").mode(0o1777),
        w::dir("home"),
        w::dir("home/user").mode(0o700).owner(1000, 1000),
        w::file("home/user/.profile", "export A=1\n").owner(1000, 1000),
        w::dir("dev"),
        w::chardev("dev/null", 1, 3),
        w::blockdev("dev/sda", 8, 0),
        w::dir("run"),
        w::fifo("run/fifo"),
        w::dir("data"),
        w::file("data/removeme.txt", "bye"),
        w::dir("data/olddir"),
        w::file("data/olddir/x", "x"),
        w::dir("opq"),
        w::file("opq/a", "a"),
        w::dir("opq/sub"),
        w::file("opq/sub/b", "b"),
        w::file(
            "big",
            (0..300_000u32)
                .flat_map(|i| i.to_le_bytes())
                .collect::<Vec<u8>>(),
        ),
    ]
}

fn three_layers() -> Image {
    let l1 = w::layer(base_layer());
    let l2 = w::layer(vec![
        w::whiteout("data/removeme.txt"),
        w::whiteout("data/olddir"),
        w::file("etc/motd", "motd v2\n"),
        w::file("data/new.txt", "new"),
        w::hardlink("data/motd-link", "etc/motd"),
        w::hardlink("bin/sh3", "bin/sh"),
    ]);
    let mut l3 = w::layer(vec![
        w::opaque("opq"),
        w::dir("opq"),
        w::file("opq/c", "c"),
        w::file("bin/ls", "ls is a file now"),
        w::dir("usr/lib64"),
        w::file("usr/lib64/libc.so", "libc"),
    ]);
    l3.compression = Compression::None;
    Image::new(vec![l1, l2, l3])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_layer_image() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let mut image = Image::new(vec![w::layer(vec![
        w::dir("bin"),
        w::file("bin/hello", "hi").mode(0o755),
    ])]);
    image.config = serde_json::json!({"Entrypoint": ["/bin/hello"], "Env": ["A=1"], "WorkingDir": "/bin",
        "User": "1000", "ExposedPorts": {"8080/tcp": {}}, "Labels": {"k": "v"}});
    let written = publish(&reg, tmp.path(), "test/one", "v1", &image);
    let store = support::store(tmp.path(), &reg.addr);
    let mut events = Vec::new();
    let sink = std::sync::Mutex::new(&mut events);
    let img = store
        .pull(
            &reference(&reg, "test/one:v1"),
            &PullOptions::default(),
            |p: &spore_oci::Progress| sink.lock().unwrap().push(p.clone()),
        )
        .await
        .unwrap();
    assert_eq!(img.manifest_digest.to_string(), written.manifest_digest);
    assert_eq!(img.config_digest.to_string(), written.config_digest);
    assert_eq!(
        img.layers.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
        written.layer_digests
    );
    assert_eq!(img.references, [format!("{}/test/one:v1", reg.addr)]);
    assert_eq!(img.platform.to_string(), "linux/amd64");
    assert_eq!(img.format, ImageFormat::Squashfs);
    assert_eq!(img.config.entrypoint, ["/bin/hello"]);
    assert_eq!(img.config.working_dir, "/bin");
    assert_eq!(img.config.exposed_ports, ["8080/tcp"]);
    assert_eq!(img.size_bytes, std::fs::metadata(&img.path).unwrap().len());
    assert_eq!(
        store
            .root_image(&img.manifest_digest, ImageFormat::Squashfs)
            .as_deref(),
        Some(img.path.as_path())
    );
    for d in &img.layers {
        assert!(store.has_blob(d));
    }
    // Progress went resolving -> ... -> done, and the last event says done.
    let phases: Vec<_> = events.iter().map(|p| p.phase).collect();
    assert_eq!(phases.first(), Some(&spore_oci::Phase::Resolving));
    assert_eq!(phases.last(), Some(&spore_oci::Phase::Done));
    assert!(phases.windows(2).all(|w| w[0] <= w[1]), "{phases:?}");
    assert!(
        events
            .last()
            .unwrap()
            .layers
            .iter()
            .all(|l| l.phase == spore_oci::Phase::Done && l.current_bytes == l.total_bytes)
    );

    let listing = support::run(
        std::process::Command::new("unsquashfs")
            .arg("-lln")
            .arg(&img.path),
    );
    let lines: Vec<Vec<&str>> = listing
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(
        lines.contains(&vec![
            "-rwxr-xr-x",
            "0/0",
            "2",
            "2023-11-14",
            "22:13",
            "squashfs-root/bin/hello"
        ]),
        "{listing}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.first() == Some(&"drwxr-xr-x") && l.last() == Some(&"squashfs-root")),
        "root is 0755: {listing}"
    );
    // The serialised record round-trips (the daemon stores it).
    let json = serde_json::to_string(&img).unwrap();
    assert_eq!(
        serde_json::from_str::<spore_oci::PackedImage>(&json).unwrap(),
        img
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_layers_match_umoci_unpack() {
    require_root!();
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let image = three_layers();
    let layout = tmp.path().join("layout");
    let written = w::write_image(&layout, &image);
    w::write_layout(&layout, "v1", &written);
    skopeo_push(&layout, "v1", &reg.addr, "test/three", &[]);
    let store = support::store(tmp.path(), &reg.addr);
    let img = store
        .pull(
            &reference(&reg, "test/three:v1"),
            &PullOptions::default(),
            NoProgress,
        )
        .await
        .unwrap();
    assert_eq!(img.layers.len(), 3);

    let ours = fstree::unsquashfs(&img.path, &tmp.path().join("ours"));
    let theirs = fstree::umoci_unpack(&layout, "v1", &tmp.path().join("bundle"));
    fstree::assert_same(&ours, &theirs, true);

    // The cases themselves, so the comparison cannot pass vacuously.
    assert!(!ours.contains_key("data/removeme.txt") && !ours.contains_key("data/olddir"));
    assert!(
        ours.contains_key("opq/c") && !ours.contains_key("opq/a") && !ours.contains_key("opq/sub")
    );
    assert_eq!(ours["usr/bin/su"].mode, 0o4755);
    assert_eq!(
        (ours["usr/bin/wall"].mode, ours["usr/bin/wall"].gid),
        (0o2755, 5)
    );
    assert_eq!(ours["tmp"].mode, 0o1777);
    assert_eq!(
        (ours["home/user"].uid, ours["home/user"].mode),
        (1000, 0o700)
    );
    assert_eq!(ours["etc/localtime"].detail, "/usr/share/zoneinfo/UTC");
    assert_eq!(ours["dev/null"].detail, "1:3");
    assert_eq!(ours["dev/sda"].kind, "block");
    assert_eq!(ours["run/fifo"].kind, "fifo");
    assert_eq!(ours["bin/ls"].kind, "file");
    assert_eq!(ours["usr/lib64"].kind, "dir");
    assert_eq!(ours["data/motd-link"].detail, ours["etc/motd"].detail);
    assert_eq!(ours["bin/sh3"].detail, ours["bin/sh"].detail);
    assert_eq!(ours["etc/motd"].mtime, w::MTIME as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_with_two_platforms_picks_by_platform_and_variant() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let mut arm = Image::new(vec![w::layer(vec![w::file("arch", "arm64")])]);
    arm.architecture = "arm64";
    arm.variant = Some("v8");
    let amd = Image::new(vec![w::layer(vec![w::file("arch", "amd64")])]);
    // arm64 first, so "the first entry" would be wrong.
    let (wa, wb) = (w::write_image(&layout, &arm), w::write_image(&layout, &amd));
    let index = w::write_index_layout(&layout, "multi", &[wa.clone(), wb.clone()]);
    skopeo_push(&layout, "multi", &reg.addr, "test/multi", &["--all"]);
    let store = support::store(tmp.path(), &reg.addr);
    let r = reference(&reg, "test/multi:multi");

    let img = store
        .pull(&r, &PullOptions::default(), NoProgress)
        .await
        .unwrap();
    assert_eq!(img.manifest_digest.to_string(), wb.manifest_digest);
    assert_eq!(
        img.index_digest.as_ref().map(|d| d.to_string()),
        Some(index.clone())
    );
    assert_eq!(img.platform.to_string(), "linux/amd64");

    let arm64 = PullOptions {
        platform: Some("linux/arm64".parse().unwrap()),
        ..Default::default()
    };
    let img = store.pull(&r, &arm64, NoProgress).await.unwrap();
    assert_eq!(img.manifest_digest.to_string(), wa.manifest_digest);
    assert_eq!(img.platform.to_string(), "linux/arm64/v8");
    let tree = fstree::unsquashfs(&img.path, &tmp.path().join("arm"));
    let content = std::fs::read(tmp.path().join("arm/arch")).unwrap();
    assert_eq!(
        (content.as_slice(), tree["arch"].kind),
        (&b"arm64"[..], "file")
    );

    let riscv = PullOptions {
        platform: Some("linux/riscv64".parse().unwrap()),
        ..Default::default()
    };
    let e = store.pull(&r, &riscv, NoProgress).await.unwrap_err();
    assert!(
        matches!(&e, OciError::PlatformNotFound { available, .. } if available == "linux/arm64/v8, linux/amd64"),
        "{e}"
    );
    let v7 = PullOptions {
        platform: Some("linux/arm64/v9".parse().unwrap()),
        ..Default::default()
    };
    assert!(matches!(
        store.pull(&r, &v7, NoProgress).await.unwrap_err(),
        OciError::PlatformNotFound { .. }
    ));
}

/// Polls `cond` for up to 10 s.
async fn eventually(cond: impl Fn() -> bool) -> bool {
    for _ in 0..200 {
        if cond() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}

/// No temporary file of blob `digest` is left (other, verified downloads may still run).
fn no_partial(store: &spore_oci::ImageStore, digest: &str) -> bool {
    let hex = digest.strip_prefix("sha256:").unwrap();
    std::fs::read_dir(store.root().join("tmp"))
        .unwrap()
        .all(|e| !e.unwrap().file_name().to_string_lossy().contains(hex))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_blob_is_rejected_and_nothing_is_cached() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let image = Image::new(vec![
        w::layer(vec![w::file("a", "x".repeat(50_000))]),
        w::layer(vec![w::file("b", "y")]),
    ]);
    let written = publish(&reg, tmp.path(), "test/bad", "v1", &image);
    let bad = &written.layer_digests[0];
    // Flip one byte in the registry's copy, same size: only the digest can catch it.
    let blob = reg.blob_file(bad);
    let mut bytes = std::fs::read(&blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();

    let store = support::store(tmp.path(), &reg.addr);
    let e = store
        .pull(
            &reference(&reg, "test/bad:v1"),
            &PullOptions::default(),
            NoProgress,
        )
        .await
        .unwrap_err();
    let text = spore_oci::chain(&e);
    match e.unshared() {
        OciError::DigestMismatch {
            digest,
            expected_size,
            actual_size,
            ..
        } => {
            assert_eq!(digest.to_string(), *bad);
            assert_eq!(expected_size, actual_size);
        }
        other => panic!("wrong error: {other:?}"),
    }
    assert!(
        text.contains(bad.as_str()) && text.contains("nothing was cached"),
        "{text}"
    );
    let d: spore_oci::Digest = bad.parse().unwrap();
    assert!(!store.has_blob(&d), "the corrupt blob must not be stored");
    assert!(
        store
            .root_image(
                &written.manifest_digest.parse().unwrap(),
                ImageFormat::Squashfs
            )
            .is_none()
    );
    assert!(no_partial(&store, bad), "partial data deleted");
    // It was not retried as if transient.
    assert_eq!(reg.blob_gets(bad), 1);

    // The intact layer was verified and may stay; it is the only blob besides the config.
    let good = &written.layer_digests[1];
    // (Its download runs on its own and may finish just after the failed pull returns.)
    assert!(eventually(|| store.has_blob(&good.parse().unwrap())).await);

    // A truncated blob (the registry now serves fewer bytes) is rejected the same way.
    let blob = reg.blob_file(good);
    let bytes = std::fs::read(&blob).unwrap();
    std::fs::write(&blob, &bytes[..bytes.len() - 5]).unwrap();
    std::fs::create_dir_all(tmp.path().join("second")).unwrap();
    let fresh = support::store(&tmp.path().join("second"), &reg.addr);
    let e = fresh
        .pull(
            &reference(&reg, "test/bad:v1"),
            &PullOptions::default(),
            NoProgress,
        )
        .await
        .unwrap_err();
    let text = spore_oci::chain(&e);
    assert!(text.contains("failed verification"), "{text}");
    assert!(!fresh.has_blob(&good.parse().unwrap()));
    assert!(!fresh.has_blob(&bad.parse().unwrap()));
    assert!(eventually(|| no_partial(&fresh, good) && no_partial(&fresh, bad)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_download_each_blob_once() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let shared = w::layer(vec![w::file("shared", "s".repeat(3_000_000))]);
    let a = Image::new(vec![
        shared,
        w::layer(vec![w::file("a", "a".repeat(1_000_000))]),
    ]);
    let written_a = publish(&reg, tmp.path(), "test/a", "v1", &a);
    // A second image sharing the bottom layer.
    let b = Image::new(vec![
        w::layer(vec![w::file("shared", "s".repeat(3_000_000))]),
        w::layer(vec![w::file("b", "b")]),
    ]);
    let written_b = publish(&reg, tmp.path(), "test/b", "v1", &b);
    assert_eq!(written_a.layer_digests[0], written_b.layer_digests[0]);

    let store = support::store(tmp.path(), &reg.addr);
    let (ra, rb) = (reference(&reg, "test/a:v1"), reference(&reg, "test/b:v1"));
    let opts = PullOptions::default();
    let (seen_x, seen_y) = (
        std::sync::Mutex::new(Vec::new()),
        std::sync::Mutex::new(Vec::new()),
    );
    let (x, y, z) = tokio::join!(
        store.pull(&ra, &opts, |p: &spore_oci::Progress| seen_x
            .lock()
            .unwrap()
            .push(p.clone())),
        store.pull(&ra, &opts, |p: &spore_oci::Progress| seen_y
            .lock()
            .unwrap()
            .push(p.clone())),
        store.pull(&rb, &opts, NoProgress)
    );
    let (x, y, z) = (x.unwrap(), y.unwrap(), z.unwrap());
    // Both waiters of the one shared build saw its layers progress to the end.
    for seen in [seen_x.into_inner().unwrap(), seen_y.into_inner().unwrap()] {
        let last = seen.last().unwrap();
        assert_eq!(last.phase, spore_oci::Phase::Done);
        assert_eq!(last.layers.len(), 2);
        assert!(
            last.layers
                .iter()
                .all(|l| l.phase == spore_oci::Phase::Done && l.current_bytes == l.total_bytes)
        );
    }
    assert_eq!(x, y);
    assert_eq!(z.layers[0], x.layers[0]);
    // Our counters: 2 configs + 3 distinct layers, each once; two images packed.
    let stats = store.stats();
    assert_eq!((stats.blob_downloads, stats.images_packed), (5, 2));
    // The registry's own access log agrees: one GET per blob.
    for d in written_a
        .layer_digests
        .iter()
        .chain(&written_b.layer_digests[1..])
        .chain([&written_a.config_digest])
    {
        assert_eq!(reg.blob_gets(d), 1, "{d}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_image_by_digest_needs_no_registry() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let written = publish(
        &reg,
        tmp.path(),
        "test/c",
        "v1",
        &Image::new(vec![w::layer(vec![w::file("f", "1")])]),
    );
    let store = support::store(tmp.path(), &reg.addr);
    let first = store
        .pull(
            &reference(&reg, "test/c:v1"),
            &PullOptions::default(),
            NoProgress,
        )
        .await
        .unwrap();
    let addr = reg.addr.clone();
    reg.stop();
    let pinned = Reference::parse(&format!("{addr}/test/c@{}", written.manifest_digest)).unwrap();
    let mut messages = Vec::new();
    let sink = std::sync::Mutex::new(&mut messages);
    let again = store
        .pull(
            &pinned,
            &PullOptions::default(),
            |p: &spore_oci::Progress| sink.lock().unwrap().push(p.message.clone()),
        )
        .await
        .unwrap();
    assert_eq!(again.path, first.path);
    assert_eq!(again.references, [pinned.to_string()]);
    assert!(
        messages.last().unwrap().starts_with("cache hit"),
        "{messages:?}"
    );
    assert_eq!(store.stats().images_packed, 1);
    // By tag the registry is asked, and it is gone: a clear error, after retries.
    let e = store
        .pull(
            &Reference::parse(&format!("{addr}/test/c:v1")).unwrap(),
            &PullOptions::default(),
            NoProgress,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, OciError::Registry { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_schema2_zstd_and_plain_layers() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let mut l2 = w::layer(vec![w::file("z", "zstd layer")]);
    l2.compression = Compression::Zstd;
    let mut l3 = w::layer(vec![w::file("p", "plain layer")]);
    l3.compression = Compression::None;
    let image = Image::new(vec![w::layer(vec![w::file("g", "gzip layer")]), l2, l3]);
    let layout = tmp.path().join("layout");
    let written = w::write_image(&layout, &image);
    w::write_layout(&layout, "v1", &written);
    // skopeo converts the manifest to Docker schema 2 (gzip and plain layers only).
    let docker_only = Image::new(vec![w::layer(vec![w::file("g", "gzip layer")])]);
    let layout2 = tmp.path().join("layout2");
    let w2 = w::write_image(&layout2, &docker_only);
    w::write_layout(&layout2, "v1", &w2);
    skopeo_push(
        &layout2,
        "v1",
        &reg.addr,
        "test/docker",
        &["--format", "v2s2"],
    );
    skopeo_push(&layout, "v1", &reg.addr, "test/zstd", &[]);
    let store = support::store(tmp.path(), &reg.addr);

    let img = store
        .pull(
            &reference(&reg, "test/docker:v1"),
            &PullOptions::default(),
            NoProgress,
        )
        .await
        .unwrap();
    assert_ne!(
        img.manifest_digest.to_string(),
        w2.manifest_digest,
        "skopeo rewrote the manifest as schema 2"
    );
    let manifest = std::fs::read_to_string(
        store
            .root()
            .join("blobs/sha256")
            .join(img.manifest_digest.hex()),
    )
    .unwrap();
    assert!(
        manifest.contains("application/vnd.docker.distribution.manifest.v2+json"),
        "{manifest}"
    );
    let tree = fstree::unsquashfs(&img.path, &tmp.path().join("d"));
    assert!(tree.contains_key("g"));

    let img = store
        .pull(
            &reference(&reg, "test/zstd:v1"),
            &PullOptions::default(),
            NoProgress,
        )
        .await
        .unwrap();
    let out = tmp.path().join("z");
    fstree::unsquashfs(&img.path, &out);
    for (f, c) in [
        ("g", "gzip layer"),
        ("z", "zstd layer"),
        ("p", "plain layer"),
    ] {
        assert_eq!(std::fs::read_to_string(out.join(f)).unwrap(), c);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erofs_format_matches_umoci_unpack() {
    require_root!();
    if !spore_oci::erofs_available() {
        panic!("mkfs.erofs missing: scripts/install-deps.sh installs erofs-utils");
    }
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let written = w::write_image(&layout, &three_layers());
    w::write_layout(&layout, "v1", &written);
    skopeo_push(&layout, "v1", &reg.addr, "test/erofs", &[]);
    let store = support::store(tmp.path(), &reg.addr);
    let opts = PullOptions {
        format: Some(ImageFormat::Erofs),
        ..Default::default()
    };
    let img = store
        .pull(&reference(&reg, "test/erofs:v1"), &opts, NoProgress)
        .await
        .unwrap();
    assert_eq!(img.format, ImageFormat::Erofs);
    assert!(img.path.to_string_lossy().ends_with(".erofs"));
    let ours = fstree::unerofs(&img.path, &tmp.path().join("ours"));
    let theirs = fstree::umoci_unpack(&layout, "v1", &tmp.path().join("bundle"));
    fstree::assert_same(&ours, &theirs, true);
    assert_eq!(ours["usr/bin/su"].mode, 0o4755);
    // The same store still has no squashfs of it.
    assert!(
        store
            .root_image(&img.manifest_digest, ImageFormat::Squashfs)
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_image_is_named() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let store = support::store(tmp.path(), &reg.addr);
    let e = store
        .pull(
            &reference(&reg, "test/nothing:v1"),
            &PullOptions::default(),
            NoProgress,
        )
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "image {}/test/nothing:v1 was not found in registry {} (check the name and tag)",
            reg.addr, reg.addr
        )
    );
    // Without the insecure listing, plain HTTP is not used: TLS to a plain HTTP server fails.
    let secure =
        spore_oci::ImageStore::open(&tmp.path().join("s2"), spore_oci::StoreOptions::default())
            .unwrap();
    let e = secure
        .pull(
            &reference(&reg, "test/nothing:v1"),
            &PullOptions::default(),
            NoProgress,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, OciError::Registry { .. }), "{e}");
}

/// bcrypt of "s3cret" (made once with Python's crypt; a fixture, not a secret).
const HTPASSWD: &str = "alice:$2b$12$SDi0M96Uu8nk991tUJnuZu7vut37cLeqgrgmvdFO1bHpA0xz0otem";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_from_the_docker_config() {
    let reg = Registry::start_with_auth(HTPASSWD);
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let written = w::write_image(
        &layout,
        &Image::new(vec![w::layer(vec![w::file("secret", "s")])]),
    );
    w::write_layout(&layout, "v1", &written);
    skopeo_push(
        &layout,
        "v1",
        &reg.addr,
        "test/private",
        &["--dest-creds", "alice:s3cret"],
    );
    let r = reference(&reg, "test/private:v1");

    // No credentials: refused, and the error says how to fix it.
    let anonymous = support::store(&tmp.path().join("anon"), &reg.addr);
    std::fs::create_dir_all(tmp.path().join("anon")).unwrap();
    let e = anonymous
        .pull(&r, &PullOptions::default(), NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(e, OciError::Unauthorized { .. }), "{e}");
    assert!(e.to_string().contains("docker login"), "{e}");

    // `auths` in the Docker config: basic auth, and the pull goes through.
    let config = tmp.path().join("docker.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"auths":{{"{}":{{"auth":"YWxpY2U6czNjcmV0"}}}}}}"#,
            reg.addr
        ),
    )
    .unwrap();
    let options = spore_oci::StoreOptions {
        insecure_registries: vec![reg.addr.clone()],
        docker_config: config,
        ..Default::default()
    };
    let store = spore_oci::ImageStore::open(&tmp.path().join("authed"), options).unwrap();
    let img = store
        .pull(&r, &PullOptions::default(), NoProgress)
        .await
        .unwrap();
    assert_eq!(img.manifest_digest.to_string(), written.manifest_digest);
}
