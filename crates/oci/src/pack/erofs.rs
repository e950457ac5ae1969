//! erofs through `mkfs.erofs`: the tree is first recreated in a staging directory (owners,
//! modes, mtimes, device nodes, real hard links), then `mkfs.erofs -zlz4hc --preserve-mtime`
//! packs it. Debian 12's erofs-utils 1.5 only has lz4 and lz4hc. Creating owners and device
//! nodes needs root, which the daemon has.
//!
//! The staging tree is built from our own tree, parents first, so every parent is a directory
//! this code created: nothing in it can be a symlink that redirects a write.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use rustix::fs::{
    AtFlags, CWD, FileType, Mode, Timespec, Timestamps, chownat, copy_file_range, mknodat,
    utimensat,
};

use super::{PackJob, open_spools, pad};
use crate::error::{OciError, Result};
use crate::tree::{Kind, Meta};

const MKFS: &str = "mkfs.erofs";

/// Whether `mkfs.erofs` can be run here.
pub fn erofs_available() -> bool {
    Command::new(MKFS).arg("--help").output().is_ok()
}

fn stage_err(path: &Path) -> impl Fn(std::io::Error) -> OciError + '_ {
    move |source| {
        if source.kind() == std::io::ErrorKind::PermissionDenied {
            OciError::ErofsNeedsRoot {
                entry: path.display().to_string(),
                source,
            }
        } else {
            OciError::Io {
                action: "stage erofs entry",
                path: path.to_owned(),
                source,
            }
        }
    }
}

fn set_meta(path: &Path, meta: &Meta, kind: &Kind) -> Result<()> {
    let err = stage_err(path);
    let id = |n| Some(rustix::fs::Uid::from_raw(n));
    chownat(
        CWD,
        path,
        id(meta.uid),
        Some(rustix::fs::Gid::from_raw(meta.gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| err(e.into()))?;
    if !matches!(kind, Kind::Symlink(_)) {
        // After chown, which clears setuid/setgid.
        fs::set_permissions(path, fs::Permissions::from_mode(meta.mode)).map_err(&err)?;
    }
    let t = Timespec {
        tv_sec: meta.mtime,
        tv_nsec: 0,
    };
    utimensat(
        CWD,
        path,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| err(e.into()))?;
    Ok(())
}

fn stage(job: &PackJob<'_>, root: &Path) -> Result<()> {
    let spools = open_spools(job.spools)?;
    let mut dirs: Vec<(PathBuf, Meta)> = Vec::new();
    let mut links: HashMap<u32, PathBuf> = HashMap::new();
    let mut failure = None;
    job.tree.walk(|rel, node| {
        if failure.is_some() {
            return;
        }
        let path = if rel.is_empty() {
            root.to_owned()
        } else {
            root.join(OsStr::from_bytes(rel))
        };
        let result = (|| -> Result<()> {
            let err = stage_err(&path);
            match &node.kind {
                Kind::Dir(_) => {
                    if !rel.is_empty() {
                        fs::DirBuilder::new()
                            .mode(0o700)
                            .create(&path)
                            .map_err(&err)?;
                    }
                    dirs.push((path.clone(), node.meta));
                    return Ok(());
                }
                Kind::File { data, link_group } => {
                    if let Some(first) = link_group.and_then(|g| links.get(&g)) {
                        return fs::hard_link(first, &path).map_err(&err);
                    }
                    let out = File::create_new(&path).map_err(&err)?;
                    let spool = &spools[data.spool as usize];
                    let (mut off, mut left) = (data.offset, data.len);
                    while left > 0 {
                        let chunk = usize::try_from(left).unwrap_or(usize::MAX).min(1 << 30);
                        let n = copy_file_range(&**spool, Some(&mut off), &out, None, chunk)
                            .map_err(|e| err(e.into()))?;
                        if n == 0 {
                            return Err(err(std::io::ErrorKind::UnexpectedEof.into()));
                        }
                        left -= n as u64;
                    }
                    if let Some(g) = link_group {
                        links.insert(*g, path.clone());
                    }
                }
                Kind::Symlink(target) => {
                    std::os::unix::fs::symlink(OsStr::from_bytes(target), &path).map_err(&err)?;
                }
                Kind::CharDevice { major, minor } | Kind::BlockDevice { major, minor } => {
                    let ft = if matches!(node.kind, Kind::CharDevice { .. }) {
                        FileType::CharacterDevice
                    } else {
                        FileType::BlockDevice
                    };
                    mknodat(
                        CWD,
                        &path,
                        ft,
                        Mode::from_raw_mode(0o600),
                        rustix::fs::makedev(*major, *minor),
                    )
                    .map_err(|e| err(e.into()))?;
                }
                Kind::Fifo => {
                    mknodat(CWD, &path, FileType::Fifo, Mode::from_raw_mode(0o600), 0)
                        .map_err(|e| err(e.into()))?;
                }
            }
            set_meta(&path, &node.meta, &node.kind)
        })();
        if let Err(e) = result {
            failure = Some(e);
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    // Directories last, deepest first, so creating their entries does not change their mtimes.
    for (path, meta) in dirs.iter().rev() {
        set_meta(path, meta, &Kind::Dir(Default::default()))?;
    }
    Ok(())
}

pub(super) fn write(job: &PackJob<'_>, out: &Path) -> Result<()> {
    if !erofs_available() {
        return Err(OciError::ErofsUnavailable);
    }
    let root = job.scratch.join("erofs-root");
    fs::create_dir(&root).map_err(OciError::io("create erofs staging directory", &root))?;
    let staged = stage(job, &root);
    let result = staged.and_then(|()| {
        let output = Command::new(MKFS)
            .arg("-zlz4hc")
            .arg("--preserve-mtime")
            .arg("--quiet")
            .arg(out)
            .arg(&root)
            .output()
            .map_err(OciError::io("run mkfs.erofs for", out))?;
        if !output.status.success() {
            return Err(OciError::Mkfs {
                manifest: job.manifest.clone(),
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr)
                    .chars()
                    .take(2000)
                    .collect(),
            });
        }
        // mkfs.erofs writes whole 4 KiB blocks; padding makes that a checked rule.
        let file = File::options()
            .write(true)
            .open(out)
            .map_err(OciError::io("open root image", out))?;
        pad(&file, out)?;
        file.sync_all()
            .map_err(OciError::io("sync root image", out))
    });
    // The staging tree can be large; it goes now rather than with the scratch directory.
    let _ = fs::remove_dir_all(&root);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{Extent, Op, OpKind, Tree};
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn staging_keeps_setuid_owners_and_hard_links() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        std::fs::write(&spool, b"hello").unwrap();
        let mut tree = Tree::new(100);
        let meta = Meta {
            mode: 0o4755,
            uid: 0,
            gid: 8,
            mtime: 1000,
        };
        let data = Extent {
            spool: 0,
            offset: 0,
            len: 5,
        };
        tree.apply(
            1,
            Op {
                path: b"bin/su".to_vec(),
                meta,
                kind: OpKind::File(data),
                xattrs: 0,
            },
        )
        .unwrap();
        tree.apply(
            1,
            Op {
                path: b"bin/su2".to_vec(),
                meta,
                kind: OpKind::Hardlink(b"bin/su".to_vec()),
                xattrs: 0,
            },
        )
        .unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let digest = crate::Digest::sha256_of(b"");
        let spools = [spool];
        let job = PackJob {
            tree: &tree,
            spools: &spools,
            format: super::super::ImageFormat::Erofs,
            zstd_level: 3,
            manifest: &digest,
            scratch: dir.path(),
        };
        stage(&job, &root).unwrap();
        let m = std::fs::metadata(root.join("bin/su")).unwrap();
        assert_eq!(
            (m.mode() & 0o7777, m.uid(), m.gid(), m.mtime(), m.nlink()),
            (0o4755, 0, 8, 1000, 2)
        );
        assert_eq!(std::fs::read(root.join("bin/su2")).unwrap(), b"hello");
    }
}
