//! Describes an extracted tree (paths, types, modes, owners, link targets, device numbers,
//! content hashes) so two extractions can be compared.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;

use sha2::{Digest as _, Sha256};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Symlink target, device numbers or content sha256.
    pub detail: String,
    pub mtime: i64,
}

pub fn describe(root: &Path) -> BTreeMap<String, Info> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, path: &Path, out: &mut BTreeMap<String, Info>) {
    let meta = std::fs::symlink_metadata(path).unwrap();
    let ft = meta.file_type();
    let (kind, detail) = if ft.is_dir() {
        ("dir", String::new())
    } else if ft.is_symlink() {
        (
            "symlink",
            std::fs::read_link(path).unwrap().display().to_string(),
        )
    } else if ft.is_file() {
        (
            "file",
            hex::encode(Sha256::digest(std::fs::read(path).unwrap())),
        )
    } else if ft.is_char_device() {
        (
            "char",
            format!(
                "{}:{}",
                rustix::fs::major(meta.rdev()),
                rustix::fs::minor(meta.rdev())
            ),
        )
    } else if ft.is_block_device() {
        (
            "block",
            format!(
                "{}:{}",
                rustix::fs::major(meta.rdev()),
                rustix::fs::minor(meta.rdev())
            ),
        )
    } else if ft.is_fifo() {
        ("fifo", String::new())
    } else {
        ("other", String::new())
    };
    let rel = path.strip_prefix(root).unwrap().display().to_string();
    out.insert(
        rel,
        Info {
            kind,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            detail,
            mtime: meta.mtime(),
        },
    );
    if ft.is_dir() {
        let mut names: Vec<_> = std::fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for p in names {
            walk(root, &p, out);
        }
    }
}

/// Extracts a squashfs with `unsquashfs` (owners kept when root) and describes it.
pub fn unsquashfs(image: &Path, dest: &Path) -> BTreeMap<String, Info> {
    super::run(
        Command::new("unsquashfs")
            .arg("-no-progress")
            .arg("-d")
            .arg(dest)
            .arg(image),
    );
    describe(dest)
}

/// Loop-mounts an erofs image read-only at `mnt` (root only) and describes it. (Debian 12's
/// `fsck.erofs --extract` loses setuid bits, so the kernel reads it instead.)
pub fn unerofs(image: &Path, mnt: &Path) -> BTreeMap<String, Info> {
    std::fs::create_dir_all(mnt).unwrap();
    super::run(
        Command::new("mount")
            .arg("-o")
            .arg("loop,ro")
            .arg(image)
            .arg(mnt),
    );
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _guard = Unmount(mnt);
    describe(mnt)
}

/// `umoci unpack` of `layout:tag`, described (its rootfs).
pub fn umoci_unpack(layout: &Path, tag: &str, bundle: &Path) -> BTreeMap<String, Info> {
    super::run(
        Command::new("umoci")
            .arg("unpack")
            .arg("--image")
            .arg(format!("{}:{tag}", layout.display()))
            .arg(bundle),
    );
    describe(&bundle.join("rootfs"))
}

/// Asserts two descriptions are equal, listing the differences. Directory mtimes are
/// compared too unless `dir_mtimes` is false (extractors differ on implicit parents).
pub fn assert_same(
    ours: &BTreeMap<String, Info>,
    theirs: &BTreeMap<String, Info>,
    dir_mtimes: bool,
) {
    let mut diffs = Vec::new();
    for (path, a) in ours {
        match theirs.get(path) {
            None => diffs.push(format!("only in ours: {path} {a:?}")),
            Some(b) => {
                let mut a2 = a.clone();
                let mut b2 = b.clone();
                if a.kind == "dir" && !dir_mtimes || a.kind == "symlink" {
                    a2.mtime = 0;
                    b2.mtime = 0;
                }
                if path.is_empty() {
                    // The extraction directory itself: its mode and times belong to the extractor.
                    continue;
                }
                if a2 != b2 {
                    diffs.push(format!(
                        "differs: {path}\n   ours:   {a:?}\n   theirs: {b:?}"
                    ));
                }
            }
        }
    }
    for path in theirs.keys().filter(|p| !ours.contains_key(*p)) {
        diffs.push(format!("only in theirs: {path} {:?}", theirs[path]));
    }
    assert!(diffs.is_empty(), "trees differ:\n{}", diffs.join("\n"));
}
