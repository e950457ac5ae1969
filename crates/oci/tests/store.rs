//! The store itself: one process per store, crash leftovers cleaned, remove and garbage
//! collection.

mod support;

use spore_oci::{ImageFormat, ImageStore, ImportOptions, NoProgress, OciError, StoreOptions};
use support::ociwriter::{self as w, Image};

fn options(dir: &std::path::Path) -> StoreOptions {
    StoreOptions {
        docker_config: dir.join("none.json"),
        ..Default::default()
    }
}

#[test]
fn a_second_open_is_refused_while_the_first_is_alive() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let first = ImageStore::open(&root, options(tmp.path())).unwrap();
    let e = ImageStore::open(&root, options(tmp.path())).unwrap_err();
    assert!(matches!(e, OciError::StoreLocked { .. }), "{e}");
    assert!(e.to_string().contains("in use by another process"), "{e}");
    drop(first);
    ImageStore::open(&root, options(tmp.path())).unwrap();
}

#[test]
fn open_removes_what_a_crash_left() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    drop(ImageStore::open(&root, options(tmp.path())).unwrap());
    // What an interrupted download, pack and erofs staging leave behind.
    std::fs::write(root.join("tmp/blob-3"), b"partial").unwrap();
    std::fs::create_dir_all(root.join("tmp/pack-7/erofs-root/usr")).unwrap();
    std::fs::write(root.join("tmp/pack-7/image"), b"half an image").unwrap();
    let store = ImageStore::open(&root, options(tmp.path())).unwrap();
    assert!(
        std::fs::read_dir(store.root().join("tmp"))
            .unwrap()
            .next()
            .is_none()
    );
}

#[test]
fn open_pads_root_images_that_no_block_device_takes() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    drop(ImageStore::open(&root, options(tmp.path())).unwrap());
    // What an older spore could leave: a squashfs of 2,221,954 bytes, and an aligned erofs.
    let hex = "ab".repeat(32);
    let odd = root.join(format!("images/squashfs/sha256/{hex}.squashfs"));
    let aligned = root.join(format!("images/erofs/sha256/{hex}.erofs"));
    for path in [&odd, &aligned] {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    }
    let content: Vec<u8> = (0..2_221_954u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&odd, &content).unwrap();
    std::fs::write(&aligned, vec![1u8; 1024]).unwrap();
    let store = ImageStore::open(&root, options(tmp.path())).unwrap();
    let padded = std::fs::read(&odd).unwrap();
    assert_eq!(padded.len(), 2_224_128, "the next multiple of 4096");
    assert!(spore_oci::attachable_size(padded.len() as u64));
    assert_eq!(&padded[..content.len()], &content[..], "contents kept");
    assert!(padded[content.len()..].iter().all(|b| *b == 0));
    // An image a block device already takes is left alone.
    assert_eq!(std::fs::metadata(&aligned).unwrap().len(), 1024);
    drop(store);
}

async fn import(
    store: &ImageStore,
    dir: &std::path::Path,
    name: &str,
    content: &str,
) -> spore_oci::PackedImage {
    let layout = dir.join(name);
    let shared = w::layer(vec![w::file("shared", "the same bottom layer")]);
    let written = w::write_image(
        &layout,
        &Image::new(vec![shared, w::layer(vec![w::file("f", content)])]),
    );
    w::write_layout(&layout, "v1", &written);
    store
        .import(&layout, &ImportOptions::default(), NoProgress)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_and_collect_garbage() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&tmp.path().join("store"), options(tmp.path())).unwrap();
    let a = import(&store, tmp.path(), "a", "aaa").await;
    let b = import(&store, tmp.path(), "b", "bbb").await;
    assert_eq!(a.layers[0], b.layers[0]);

    let size = std::fs::metadata(&a.path).unwrap().len();
    assert_eq!(
        store
            .remove(&a.manifest_digest, ImageFormat::Squashfs)
            .await
            .unwrap(),
        size
    );
    assert!(
        store
            .root_image(&a.manifest_digest, ImageFormat::Squashfs)
            .is_none()
    );
    assert_eq!(
        store
            .remove(&a.manifest_digest, ImageFormat::Squashfs)
            .await
            .unwrap(),
        0,
        "idempotent"
    );
    assert!(
        store.has_blob(&a.layers[1]),
        "blobs stay until garbage collection"
    );

    // Keep b: a's own layer, config and manifest go; the shared layer stays.
    let report = store
        .collect_garbage(std::slice::from_ref(&b.manifest_digest))
        .await
        .unwrap();
    let mut removed: Vec<String> = report.removed_blobs.iter().map(|d| d.to_string()).collect();
    removed.sort();
    let mut expected = vec![
        a.layers[1].to_string(),
        a.config_digest.to_string(),
        a.manifest_digest.to_string(),
    ];
    expected.sort();
    assert_eq!(removed, expected);
    assert!(report.removed_images.is_empty());
    assert!(report.reclaimed_bytes > 0);
    for d in b
        .layers
        .iter()
        .chain([&b.config_digest, &b.manifest_digest])
    {
        assert!(store.has_blob(d), "{d} kept");
    }
    assert!(
        store
            .root_image(&b.manifest_digest, ImageFormat::Squashfs)
            .is_some()
    );

    // Keep nothing: everything goes.
    let report = store.collect_garbage(&[]).await.unwrap();
    assert_eq!(report.removed_images.len(), 1);
    assert_eq!(report.removed_blobs.len(), 4);
    assert!(
        store
            .root_image(&b.manifest_digest, ImageFormat::Squashfs)
            .is_none()
    );

    // And it can all come back.
    let b2 = import(&store, tmp.path(), "b", "bbb").await;
    assert_eq!(b2.manifest_digest, b.manifest_digest);
}

/// The daemon spawns pulls and imports on tokio tasks: their futures must be Send, the store
/// Send + Sync + Clone.
#[test]
fn futures_are_send_and_the_store_is_shareable() {
    fn send<T: Send>(_: &T) {}
    fn shareable<T: Send + Sync + Clone + 'static>() {}
    shareable::<ImageStore>();
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&tmp.path().join("s"), options(tmp.path())).unwrap();
    let r = spore_oci::Reference::parse("busybox").unwrap();
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel::<spore_oci::Progress>();
    let (pull_opts, import_opts) = (spore_oci::PullOptions::default(), ImportOptions::default());
    let pull = store.pull(&r, &pull_opts, tx);
    send(&pull);
    let import = store.import(tmp.path(), &import_opts, NoProgress);
    send(&import);
    send(&store.collect_garbage(&[]));
    send(&store.remove(&spore_oci::Digest::sha256_of(b""), ImageFormat::Squashfs));
}
