//! Local imports (OCI layout directory, oci-archive and docker-archive tars written by skopeo),
//! and every path-escape case run through the whole pipeline.

mod support;

use std::path::Path;
use std::process::Command;

use spore_oci::tree::EntryProblem;
use spore_oci::{
    ImageFormat, ImageStore, ImportOptions, NoProgress, OciError, Reference, StoreOptions,
};
use support::fstree;
use support::ociwriter::{self as w, Image};

fn open(dir: &Path) -> ImageStore {
    let options = StoreOptions {
        docker_config: dir.join("none.json"),
        ..Default::default()
    };
    ImageStore::open(&dir.join("store"), options).unwrap()
}

fn layout(dir: &Path, image: &Image) -> (std::path::PathBuf, w::Written) {
    let layout = dir.join("layout");
    let written = w::write_image(&layout, image);
    w::write_layout(&layout, "v1", &written);
    (layout, written)
}

fn sample() -> Image {
    let mut image = Image::new(vec![
        w::layer(vec![
            w::dir("etc"),
            w::file("etc/os-release", "ID=test\n"),
            w::file("bin/tool", "x").mode(0o755),
        ]),
        w::layer(vec![
            w::whiteout("bin/tool"),
            w::file("etc/motd", "hello\n"),
        ]),
    ]);
    image.config = serde_json::json!({"Cmd": ["/bin/sh"], "Env": ["K=V"]});
    image
}

fn skopeo(src: String, dst: String) {
    support::run(
        Command::new("skopeo")
            .args(["copy", "--quiet"])
            .arg(src)
            .arg(dst),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_an_oci_layout_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let (layout, written) = layout(tmp.path(), &sample());
    let store = open(tmp.path());
    let img = store
        .import(&layout, &ImportOptions::default(), NoProgress)
        .await
        .unwrap();
    assert_eq!(img.manifest_digest.to_string(), written.manifest_digest);
    assert!(
        img.references.is_empty(),
        "a bare tag is not a reference: {:?}",
        img.references
    );
    assert_eq!(img.config.env, ["K=V"]);
    let out = tmp.path().join("x");
    let tree = fstree::unsquashfs(&img.path, &out);
    assert!(tree.contains_key("etc/motd") && !tree.contains_key("bin/tool"));

    // A tag is recorded for the image, whatever it is called in the layout (docker load + tag).
    let tagged = ImportOptions {
        tag: Some(Reference::parse("example.com/app:v2").unwrap()),
        ..Default::default()
    };
    let img = store.import(&layout, &tagged, NoProgress).await.unwrap();
    assert_eq!(img.manifest_digest.to_string(), written.manifest_digest);
    assert_eq!(img.references, ["example.com/app:v2"]);
    // A selector must name an image in the layout; the error lists the names.
    let unknown = ImportOptions {
        select: Some("v2".into()),
        ..Default::default()
    };
    let e = store
        .import(&layout, &unknown, NoProgress)
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains(r#"no image named "v2" in it (names: v1)"#),
        "{e}"
    );
    // A layout name that is a full reference is recorded after the tag.
    w::write_layout(&layout, "docker.io/local/app:v1", &written);
    let both = ImportOptions {
        tag: Some(Reference::parse("other/app:2").unwrap()),
        select: Some("local/app:v1".into()),
        ..Default::default()
    };
    let img = store.import(&layout, &both, NoProgress).await.unwrap();
    assert_eq!(
        img.references,
        ["docker.io/other/app:2", "docker.io/local/app:v1"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layout_of_several_images_needs_a_selector() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let a = w::write_image(&layout, &sample());
    let b = w::write_image(
        &layout,
        &Image::new(vec![w::layer(vec![w::file("only-in-b", "b")])]),
    );
    w::write_layout(&layout, "a", &a);
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": b.manifest_digest, "size": b.manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": "b"},
        }));
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    let store = open(tmp.path());

    // Neither a selector nor a tag picks one: the error names them all.
    let tag_only = ImportOptions {
        tag: Some(Reference::parse("a").unwrap()),
        ..Default::default()
    };
    for opts in [ImportOptions::default(), tag_only] {
        let e = store.import(&layout, &opts, NoProgress).await.unwrap_err();
        assert!(
            e.to_string()
                .contains("it holds 2 images (names: a, b): select one by name"),
            "{e}"
        );
    }
    let select_b = ImportOptions {
        select: Some("b".into()),
        tag: Some(Reference::parse("myorg/b:1").unwrap()),
        ..Default::default()
    };
    let img = store.import(&layout, &select_b, NoProgress).await.unwrap();
    assert_eq!(img.manifest_digest.to_string(), b.manifest_digest);
    assert_eq!(img.references, ["docker.io/myorg/b:1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_an_oci_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let (layout, written) = layout(tmp.path(), &sample());
    let archive = tmp.path().join("image.oci.tar");
    skopeo(
        format!("oci:{}:v1", layout.display()),
        format!("oci-archive:{}:example.com/app:2", archive.display()),
    );
    let store = open(tmp.path());
    let img = store
        .import(&archive, &ImportOptions::default(), NoProgress)
        .await
        .unwrap();
    assert_eq!(img.manifest_digest.to_string(), written.manifest_digest);
    assert_eq!(img.references, ["example.com/app:2"]);
    let tree = fstree::unsquashfs(&img.path, &tmp.path().join("x"));
    assert_eq!(tree["etc/os-release"].kind, "file");
    assert!(
        std::fs::read_dir(store.root().join("tmp"))
            .unwrap()
            .next()
            .is_none(),
        "extracted files cleaned up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_a_docker_save_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let (layout, _) = layout(tmp.path(), &sample());
    let archive = tmp.path().join("image.docker.tar");
    skopeo(
        format!("oci:{}:v1", layout.display()),
        format!("docker-archive:{}:busybox:1.36", archive.display()),
    );
    let listing = support::run(Command::new("tar").arg("-tf").arg(&archive));
    assert!(listing.lines().any(|l| l == "manifest.json"), "{listing}");
    let store = open(tmp.path());
    let img = store
        .import(&archive, &ImportOptions::default(), NoProgress)
        .await
        .unwrap();
    assert_eq!(img.references, ["docker.io/library/busybox:1.36"]);
    assert_eq!(img.config.cmd, ["/bin/sh"]);
    let tree = fstree::unsquashfs(&img.path, &tmp.path().join("x"));
    assert!(tree.contains_key("etc/motd") && !tree.contains_key("bin/tool"));
    // Deterministic: importing again finds the same image.
    let again = store
        .import(&archive, &ImportOptions::default(), NoProgress)
        .await
        .unwrap();
    assert_eq!(again.manifest_digest, img.manifest_digest);
    assert_eq!(store.stats().images_packed, 1);
    // A tag is recorded first, the archive's RepoTags after it; a selector names a RepoTag.
    let opts = ImportOptions {
        tag: Some(Reference::parse("myorg/app:1").unwrap()),
        select: Some("docker.io/library/busybox:1.36".into()),
        ..Default::default()
    };
    let tagged = store.import(&archive, &opts, NoProgress).await.unwrap();
    assert_eq!(
        tagged.references,
        ["docker.io/myorg/app:1", "docker.io/library/busybox:1.36"]
    );
    let opts = ImportOptions {
        select: Some("busybox:1.37".into()),
        ..Default::default()
    };
    let e = store.import(&archive, &opts, NoProgress).await.unwrap_err();
    assert!(
        e.to_string().contains(
            r#"no image named "busybox:1.37" in it (names: docker.io/library/busybox:1.36)"#
        ),
        "{e}"
    );

    // A tampered layer is refused.
    let bad = tmp.path().join("bad.tar");
    let x = tmp.path().join("unpacked");
    std::fs::create_dir(&x).unwrap();
    support::run(
        Command::new("tar")
            .arg("-xf")
            .arg(&archive)
            .arg("-C")
            .arg(&x),
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(x.join("manifest.json")).unwrap()).unwrap();
    let layer = x.join(manifest[0]["Layers"][0].as_str().unwrap());
    let mut bytes = std::fs::read(&layer).unwrap();
    let n = bytes.len();
    bytes[n - 2000] ^= 1;
    std::fs::write(&layer, bytes).unwrap();
    support::run(
        Command::new("tar")
            .arg("-cf")
            .arg(&bad)
            .arg("-C")
            .arg(&x)
            .arg("."),
    );
    let fresh = ImageStore::open(&tmp.path().join("store2"), StoreOptions::default()).unwrap();
    let e = fresh
        .import(&bad, &ImportOptions::default(), NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(e, OciError::DigestMismatch { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_reject_what_is_not_an_image() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let junk = tmp.path().join("junk.tar");
    std::fs::write(&junk, vec![7u8; 4096]).unwrap();
    let e = store
        .import(&junk, &ImportOptions::default(), NoProgress)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not a readable tar archive"), "{e}");
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let e = store
        .import(&empty, &ImportOptions::default(), NoProgress)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("neither an OCI layout"), "{e}");
    // A layout whose blob does not match its name.
    let (layout, written) = layout(tmp.path(), &sample());
    let blob = layout
        .join("blobs/sha256")
        .join(written.layer_digests[1].strip_prefix("sha256:").unwrap());
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&blob, bytes).unwrap();
    let e = store
        .import(&layout, &ImportOptions::default(), NoProgress)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, OciError::DigestMismatch { digest, .. } if digest.to_string() == written.layer_digests[1]),
        "{e}"
    );
    assert!(!store.has_blob(&written.layer_digests[1].parse().unwrap()));
}

// ---- path escapes, each through import + merge + pack ------------------------------------

async fn import_layers(
    layers: Vec<Vec<w::Entry>>,
) -> (tempfile::TempDir, Result<spore_oci::PackedImage, OciError>) {
    let tmp = tempfile::tempdir().unwrap();
    let image = Image::new(layers.into_iter().map(w::layer).collect());
    let (layout, _) = layout(tmp.path(), &image);
    let store = open(tmp.path());
    let result = store
        .import(&layout, &ImportOptions::default(), NoProgress)
        .await;
    (tmp, result)
}

fn listing(img: &spore_oci::PackedImage) -> String {
    support::run(Command::new("unsquashfs").arg("-lln").arg(&img.path))
}

fn entry_problem(e: &OciError) -> (&str, &EntryProblem) {
    match e.unshared() {
        OciError::Entry { entry, problem, .. } => (entry.as_str(), problem),
        other => panic!("expected an entry error, got {other}"),
    }
}

#[tokio::test]
async fn escape_dotdot_entry_is_rejected() {
    let (_t, r) = import_layers(vec![vec![w::file("../../etc/evil", "x")]]).await;
    let e = r.unwrap_err();
    assert_eq!(
        entry_problem(&e),
        ("../../etc/evil", &EntryProblem::EscapesRoot)
    );
    assert!(e.to_string().contains("climbs above the image root"), "{e}");
}

#[tokio::test]
async fn escape_absolute_entry_lands_inside() {
    let (_t, r) = import_layers(vec![vec![w::file("/etc/abs", "x")]]).await;
    let l = listing(&r.unwrap());
    assert!(l.contains("squashfs-root/etc/abs"), "{l}");
}

#[tokio::test]
async fn escape_through_symlink_lands_inside() {
    let (_t, r) = import_layers(vec![
        vec![
            w::dir("etc"),
            w::symlink("evil", "/etc"),
            w::symlink("up", "../../../../../.."),
        ],
        vec![w::file("evil/owned", "x"), w::file("up/top", "y")],
    ])
    .await;
    let l = listing(&r.unwrap());
    assert!(
        l.contains("squashfs-root/etc/owned") && l.contains("squashfs-root/top"),
        "{l}"
    );
    assert!(l.contains("squashfs-root/evil -> /etc"), "{l}");
}

#[tokio::test]
async fn escape_hardlink_outside_is_rejected() {
    let (_t, r) = import_layers(vec![vec![
        w::file("etc/shadow", "s"),
        w::hardlink("x", "../../../etc/shadow"),
    ]])
    .await;
    let e = r.unwrap_err();
    assert_eq!(
        entry_problem(&e),
        (
            "x",
            &EntryProblem::HardlinkEscapesRoot("../../../etc/shadow".into())
        )
    );
}

#[tokio::test]
async fn escape_hardlink_to_host_path_missing_in_image_is_rejected() {
    // "/etc/passwd" exists on the host but not in the image: never linked to the host's.
    let (_t, r) = import_layers(vec![vec![w::hardlink("pw", "/etc/passwd")]]).await;
    let e = r.unwrap_err();
    assert_eq!(
        entry_problem(&e),
        (
            "pw",
            &EntryProblem::HardlinkTargetMissing("/etc/passwd".into())
        )
    );
}

#[tokio::test]
async fn escape_symlink_loop_is_rejected() {
    let (_t, r) = import_layers(vec![vec![
        w::symlink("a", "b"),
        w::symlink("b", "a"),
        w::file("a/x", "x"),
    ]])
    .await;
    assert_eq!(
        entry_problem(&r.unwrap_err()),
        ("a/x", &EntryProblem::SymlinkLoop)
    );
}

#[tokio::test]
async fn escape_final_symlink_is_replaced_not_followed() {
    let (_t, r) = import_layers(vec![
        vec![
            w::file("etc/passwd", "root"),
            w::symlink("p", "/etc/passwd"),
        ],
        vec![w::file("p", "replaced")],
    ])
    .await;
    let img = r.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x");
    fstree::unsquashfs(&img.path, &out);
    assert_eq!(
        std::fs::read_to_string(out.join("etc/passwd")).unwrap(),
        "root"
    );
    assert_eq!(std::fs::read_to_string(out.join("p")).unwrap(), "replaced");
}

#[tokio::test]
async fn erofs_import_keeps_hard_links() {
    require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let image = Image::new(vec![w::layer(vec![
        w::file("a", "same"),
        w::hardlink("b", "a"),
    ])]);
    let (layout, _) = layout(tmp.path(), &image);
    let store = open(tmp.path());
    let opts = ImportOptions {
        format: Some(ImageFormat::Erofs),
        ..Default::default()
    };
    let img = store.import(&layout, &opts, NoProgress).await.unwrap();
    let mnt = tmp.path().join("m");
    std::fs::create_dir(&mnt).unwrap();
    support::run(
        Command::new("mount")
            .arg("-o")
            .arg("loop,ro")
            .arg(&img.path)
            .arg(&mnt),
    );
    let nlink = std::os::unix::fs::MetadataExt::nlink(&std::fs::metadata(mnt.join("b")).unwrap());
    support::run(Command::new("umount").arg(&mnt));
    assert_eq!(nlink, 2);
}
