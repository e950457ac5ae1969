//! Whatever the packer writes must be attachable: generated layer shapes (file sizes around
//! sector and block boundaries, duplicate contents, hard links, whiteouts, opaque directories,
//! empty files, many small files, deep directories) are imported and packed, and each root image
//! is checked against the backends' rule (`spore_oci::attachable_size`), read back by
//! `unsquashfs` and compared with a model of the merge. A seeded generator: a failure names its
//! seed, and `PACK_SEED=N` runs that case alone.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use spore_oci::{ImageFormat, ImageStore, ImportOptions, NoProgress, PackedImage, StoreOptions};
use support::fstree;
use support::ociwriter::{self as w, Entry, Image};

/// Sizes around the edges that matter: sectors (512), pages and squashfs padding (4096), the
/// squashfs block (128 KiB), and files that only fill a fragment.
const EDGES: &[usize] = &[
    0, 1, 511, 512, 513, 4095, 4096, 4097, 65536, 131071, 131072, 131073, 262143, 262145,
];

#[derive(Debug, Clone, PartialEq)]
enum Want {
    Dir,
    File(String),
    Symlink(String),
}

/// The expected merged tree: path -> what it is (file contents by sha256).
#[derive(Default)]
struct Model(BTreeMap<String, Want>);

impl Model {
    fn add(&mut self, path: &str, want: Want) {
        let mut parent = String::new();
        for part in path.split('/').collect::<Vec<_>>().split_last().unwrap().1 {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            self.0.entry(parent.clone()).or_insert(Want::Dir);
        }
        self.0.insert(path.to_owned(), want);
    }

    /// What a whiteout of `path` removes: it and everything under it.
    fn remove_tree(&mut self, path: &str) {
        let under = format!("{path}/");
        self.0.retain(|p, _| p != path && !p.starts_with(&under));
    }

    /// What an opaque marker in `dir` removes: everything under it.
    fn clear_dir(&mut self, dir: &str) {
        let under = format!("{dir}/");
        self.0.retain(|p, _| !p.starts_with(&under));
    }

    /// Files, short enough to be a link target (the test writer keeps tar's 100-byte field).
    fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .0
            .iter()
            .filter(|(p, w)| matches!(w, Want::File(_)) && p.len() < 100)
            .map(|(p, _)| p.clone())
            .collect();
        v.sort();
        v
    }

    fn dirs(&self) -> Vec<String> {
        self.0
            .iter()
            .filter(|(_, w)| **w == Want::Dir)
            .map(|(p, _)| p.clone())
            .collect()
    }
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn size(rng: &mut fastrand::Rng) -> usize {
    if rng.u8(..4) == 0 {
        rng.usize(..300_000)
    } else {
        EDGES[rng.usize(..EDGES.len())]
    }
}

/// Contents that compress (repeated text) or do not (random bytes).
fn content(rng: &mut fastrand::Rng, len: usize) -> Vec<u8> {
    if rng.bool() {
        (0..len).map(|_| rng.u8(..)).collect()
    } else {
        b"spore root image\n"
            .iter()
            .copied()
            .cycle()
            .take(len)
            .collect()
    }
}

struct Case {
    layers: Vec<Vec<Entry>>,
    model: Model,
}

fn file(model: &mut Model, entries: &mut Vec<Entry>, path: String, data: Vec<u8>) {
    model.add(&path, Want::File(sha(&data)));
    entries.push(w::file(&path, data));
}

fn hardlink(model: &mut Model, entries: &mut Vec<Entry>, path: String, target: &str) {
    let want = model.0[target].clone();
    model.add(&path, want);
    entries.push(w::hardlink(&path, target));
}

/// One generated image: a base layer, then a layer that deletes, hides and links.
fn generate(seed: u64) -> Case {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut model = Model::default();

    // Base layer: directories (one chain 24-48 deep in some cases), files of edge sizes, copies
    // of large contents (backhand stores them once and seeks back over the copy), hard links,
    // symlinks, and sometimes hundreds of small files.
    let mut base = Vec::new();
    let dirs: Vec<String> = (0..rng.usize(1..6)).map(|i| format!("d{i}")).collect();
    for d in &dirs {
        model.add(d, Want::Dir);
        base.push(w::dir(d));
    }
    let deep = if rng.u8(..3) == 0 {
        let depth = rng.usize(24..48);
        let path = (0..depth)
            .map(|i| format!("l{i}"))
            .collect::<Vec<_>>()
            .join("/");
        let p = format!("deep/{path}/leaf");
        let len = size(&mut rng);
        file(&mut model, &mut base, p.clone(), content(&mut rng, len));
        Some(p)
    } else {
        None
    };
    let pick_dir = |rng: &mut fastrand::Rng| dirs[rng.usize(..dirs.len())].clone();
    let mut big: Option<Vec<u8>> = None;
    for i in 0..rng.usize(2..14) {
        let len = size(&mut rng);
        let data = content(&mut rng, len);
        if len >= 131072 {
            big.get_or_insert_with(|| data.clone());
        }
        let path = format!("{}/f{i}", pick_dir(&mut rng));
        file(&mut model, &mut base, path, data);
    }
    if let Some(data) = &big {
        // Identical contents under another name, last: the duplicate is the last data written.
        file(&mut model, &mut base, "zz-copy".into(), data.clone());
    }
    if rng.u8(..4) == 0 {
        for i in 0..rng.usize(200..400) {
            let len = rng.usize(..64);
            let data = content(&mut rng, len);
            file(&mut model, &mut base, format!("many/s{i}"), data);
        }
    }
    let files = model.files();
    for i in 0..rng.usize(0..4) {
        let target = &files[rng.usize(..files.len())];
        hardlink(
            &mut model,
            &mut base,
            format!("{}/h{i}", pick_dir(&mut rng)),
            target,
        );
    }
    for i in 0..rng.usize(0..3) {
        let target = format!("/{}", files[rng.usize(..files.len())]);
        let path = format!("{}/s{i}", pick_dir(&mut rng));
        model.add(&path, Want::Symlink(target.clone()));
        base.push(w::symlink(&path, &target));
    }

    // Top layer: whiteouts of files and maybe of a directory, an opaque directory refilled in
    // the same layer, empty and new files, and hard links to lower files (large ones too).
    let mut top = Vec::new();
    let files = model.files();
    for _ in 0..rng.usize(0..3) {
        let victim = files[rng.usize(..files.len())].clone();
        if model.0.contains_key(&victim) {
            model.remove_tree(&victim);
            top.push(w::whiteout(&victim));
        }
    }
    if rng.bool() && dirs.len() > 1 {
        let victim = dirs[0].clone();
        model.remove_tree(&victim);
        top.push(w::whiteout(&victim));
    }
    if rng.bool()
        && let Some(d) = model.dirs().into_iter().find(|d| {
            d.strip_prefix('d')
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
    {
        model.clear_dir(&d);
        top.push(w::opaque(&d));
        let path = format!("{d}/refilled");
        file(&mut model, &mut top, path, content(&mut rng, 4097));
    }
    if let Some(leaf) = &deep
        && rng.bool()
    {
        model.remove_tree(leaf);
        top.push(w::whiteout(leaf));
    }
    file(&mut model, &mut top, "new/empty".into(), Vec::new());
    for i in 0..rng.usize(1..5) {
        let len = size(&mut rng);
        let data = content(&mut rng, len);
        file(&mut model, &mut top, format!("new/n{i}"), data);
    }
    let survivors = model.files();
    for i in 0..rng.usize(1..4) {
        let target = survivors[rng.usize(..survivors.len())].clone();
        hardlink(&mut model, &mut top, format!("new/link{i}"), &target);
    }
    // A hard link to the largest surviving file, written last in its layer.
    if let Some(target) = survivors.iter().find(|p| p.as_str() == "zz-copy") {
        hardlink(&mut model, &mut top, "zz-link".into(), &target.clone());
    }
    Case {
        layers: vec![base, top],
        model,
    }
}

fn run_ok(cmd: &mut Command) -> String {
    support::run(cmd)
}

fn check_squashfs(seed: u64, img: &PackedImage, model: &Model, scratch: &Path) {
    let len = std::fs::metadata(&img.path).unwrap().len();
    assert!(
        spore_oci::attachable_size(len),
        "seed {seed}: {} is {len} bytes, which no block device takes",
        img.path.display()
    );
    assert_eq!(
        len % spore_oci::PAD_BYTES,
        0,
        "seed {seed}: padded to 4 KiB"
    );
    assert_eq!(
        len, img.size_bytes,
        "seed {seed}: the recorded size is the file's"
    );
    let sb = run_ok(Command::new("unsquashfs").arg("-s").arg(&img.path));
    let used: u64 = sb
        .lines()
        .find_map(|l| l.strip_prefix("Filesystem size "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("seed {seed}: no size in unsquashfs -s:\n{sb}"));
    assert!(
        used <= len && len - used < spore_oci::PAD_BYTES + 1,
        "seed {seed}: {used} bytes used in a {len}-byte file: only padding may follow"
    );
    run_ok(Command::new("unsquashfs").arg("-lln").arg(&img.path));
    let out = scratch.join(format!("x-{seed}"));
    let tree = fstree::unsquashfs(&img.path, &out);
    compare(seed, &tree, model);
    std::fs::remove_dir_all(&out).unwrap();
}

fn compare(seed: u64, tree: &BTreeMap<String, fstree::Info>, model: &Model) {
    let mut diffs = Vec::new();
    for (path, want) in &model.0 {
        let got = tree.get(path);
        let ok = match (want, got) {
            (Want::Dir, Some(i)) => i.kind == "dir",
            (Want::File(h), Some(i)) => i.kind == "file" && &i.detail == h,
            (Want::Symlink(t), Some(i)) => i.kind == "symlink" && &i.detail == t,
            (_, None) => false,
        };
        if !ok {
            diffs.push(format!("{path}: want {want:?}, got {got:?}"));
        }
    }
    for path in tree
        .keys()
        .filter(|p| !p.is_empty() && !model.0.contains_key(*p))
    {
        diffs.push(format!("{path}: not expected"));
    }
    assert!(
        diffs.is_empty(),
        "seed {seed}: the image differs from the model:\n{}",
        diffs.join("\n")
    );
}

fn seeds() -> Vec<u64> {
    match std::env::var("PACK_SEED") {
        Ok(s) => vec![s.parse().expect("PACK_SEED is a number")],
        Err(_) => (1..=24).collect(),
    }
}

async fn import(store: &ImageStore, layout: &Path, format: ImageFormat) -> PackedImage {
    let opts = ImportOptions {
        format: Some(format),
        ..Default::default()
    };
    tokio::time::timeout(
        Duration::from_secs(120),
        store.import(layout, &opts, NoProgress),
    )
    .await
    .expect("an import of a few MB takes seconds")
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_generated_image_packs_to_an_attachable_squashfs() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(
        &tmp.path().join("store"),
        StoreOptions {
            docker_config: tmp.path().join("none.json"),
            ..Default::default()
        },
    )
    .unwrap();
    for seed in seeds() {
        let case = generate(seed);
        let layout = tmp.path().join(format!("layout-{seed}"));
        let image = Image::new(case.layers.into_iter().map(w::layer).collect());
        let written = w::write_image(&layout, &image);
        w::write_layout(&layout, "v1", &written);
        let img = import(&store, &layout, ImageFormat::Squashfs).await;
        check_squashfs(seed, &img, &case.model, tmp.path());
        std::fs::remove_dir_all(&layout).unwrap();
    }
}

/// The erofs writer under the same rule (needs root and mkfs.erofs; a sample of the seeds, each
/// mounted read-only and compared with the model).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_generated_image_packs_to_an_attachable_erofs() {
    require_root!();
    if !spore_oci::erofs_available() {
        eprintln!("skipped: mkfs.erofs is not installed");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(
        &tmp.path().join("store"),
        StoreOptions {
            docker_config: tmp.path().join("none.json"),
            ..Default::default()
        },
    )
    .unwrap();
    for seed in seeds().into_iter().filter(|s| s % 3 == 0) {
        let case = generate(seed);
        let layout = tmp.path().join(format!("layout-{seed}"));
        let image = Image::new(case.layers.into_iter().map(w::layer).collect());
        let written = w::write_image(&layout, &image);
        w::write_layout(&layout, "v1", &written);
        let img = import(&store, &layout, ImageFormat::Erofs).await;
        let len = std::fs::metadata(&img.path).unwrap().len();
        assert!(spore_oci::attachable_size(len), "seed {seed}: {len} bytes");
        run_ok(Command::new("fsck.erofs").arg(&img.path));
        let tree = fstree::unerofs(&img.path, &tmp.path().join(format!("mnt-{seed}")));
        compare(seed, &tree, &case.model);
    }
}

/// The default seeds reach every shape the generator can make, so a change to it cannot
/// quietly stop testing one.
#[test]
fn the_seeds_cover_every_shape() {
    use support::ociwriter::Kind;
    let mut seen = BTreeMap::<&str, usize>::new();
    for seed in 1..=24 {
        let case = generate(seed);
        let entries: Vec<&Entry> = case.layers.iter().flatten().collect();
        let mut mark = |shape, hit: bool| *seen.entry(shape).or_default() += usize::from(hit);
        mark(
            "deep directories",
            entries.iter().any(|e| e.path.matches('/').count() > 24),
        );
        mark(
            "many small files",
            entries
                .iter()
                .filter(|e| e.path.starts_with("many/"))
                .count()
                > 100,
        );
        mark(
            "opaque directory",
            entries.iter().any(|e| e.path.ends_with(".wh..wh..opq")),
        );
        mark(
            "whiteout",
            entries
                .iter()
                .any(|e| e.path.contains(".wh.") && !e.path.ends_with(".wh..wh..opq")),
        );
        mark(
            "hard link",
            entries.iter().any(|e| matches!(e.kind, Kind::Hardlink(_))),
        );
        mark(
            "duplicate large contents, linked last",
            entries.iter().any(|e| e.path == "zz-link"),
        );
        for (edge, shape) in [
            (511, "a 511-byte file"),
            (512, "a 512-byte file"),
            (513, "a 513-byte file"),
            (4095, "a 4095-byte file"),
            (4096, "a 4096-byte file"),
            (131072, "a 128 KiB file"),
            (131073, "a 128 KiB + 1 file"),
        ] {
            let hit = entries
                .iter()
                .any(|e| matches!(&e.kind, Kind::File(d) if d.len() == edge));
            mark(shape, hit);
        }
    }
    let missing: Vec<_> = seen.iter().filter(|(_, n)| **n == 0).collect();
    assert!(
        missing.is_empty(),
        "no seed makes: {missing:?} (all: {seen:?})"
    );
}
