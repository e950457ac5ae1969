//! Pulls from a real registry (Debian's docker-registry, started per test) of images written by
//! the tests' own OCI writer and pushed with skopeo; packed trees compared with `umoci unpack`.

mod support;

use std::path::Path;

use spore_oci::{Error, ImageFormat, NoProgress, PullOptions, Reference};
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
