//! Filesystems: the early kernel mounts, the root (read-only image + tmpfs overlay), the switch
//! from the initramfs into it, the mounts a container expects, and the final unmount.

use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::Path;

use anyhow::{Context, Result};
use spore_idm::launch::RootFormat;

use crate::console::{alert, info};
use crate::sys;

const NOSUID_NODEV_NOEXEC: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

fn mkdir(path: &str, mode: u32) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
    {
        Ok(()) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot create directory {path}")),
    }
}

fn mount(
    source: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<()> {
    sys::mount(source, target, fstype, flags, data).with_context(|| {
        format!(
            "cannot mount {fstype} {source} on {target} (options {})",
            data.unwrap_or("none")
        )
    })
}

/// /dev, /proc, /sys in the initramfs, before anything else.
pub fn early() -> Result<()> {
    mkdir("/dev", 0o755)?;
    mount(
        "devtmpfs",
        "/dev",
        "devtmpfs",
        libc::MS_NOSUID,
        Some("mode=0755"),
    )?;
    mkdir("/proc", 0o555)?;
    mount("proc", "/proc", "proc", NOSUID_NODEV_NOEXEC, None)?;
    mkdir("/sys", 0o555)?;
    mount("sysfs", "/sys", "sysfs", NOSUID_NODEV_NOEXEC, None)?;
    Ok(())
}

/// Mounts the image read-only, a tmpfs for the writable layer, and the overlay of the two at
/// /newroot.
pub fn root(device: &str, format: RootFormat, overlay_size_mib: u64) -> Result<()> {
    mkdir("/image", 0o755)?;
    mount(device, "/image", format.fs_type(), libc::MS_RDONLY, None)
        .context("the root image does not mount (is the image file intact?)")?;
    mkdir("/overlay", 0o755)?;
    mount(
        "overlay-rw",
        "/overlay",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        Some(&format!("size={overlay_size_mib}m,mode=0755")),
    )?;
    mkdir("/overlay/upper", 0o755)?;
    mkdir("/overlay/work", 0o755)?;
    mkdir("/newroot", 0o755)?;
    mount(
        "overlay",
        "/newroot",
        "overlay",
        0,
        Some("lowerdir=/image,upperdir=/overlay/upper,workdir=/overlay/work"),
    )?;
    Ok(())
}

/// Deletes the initramfs's files (they are RAM) except mount points, like switch_root does.
fn free_initramfs(dir: &Path, root_dev: u64) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.dev() != root_dev {
            continue;
        }
        if meta.is_dir() {
            free_initramfs(&path, root_dev);
            // Mount points (other devices) live inside and keep the directory; that is fine.
            let _ = fs::remove_dir(&path);
        } else {
            let _ = fs::remove_file(&path);
        }
    }
}

/// Moves /dev, /proc and /sys into /newroot and makes it the root.
pub fn switch_root() -> Result<()> {
    for dir in ["dev", "proc", "sys"] {
        let target = format!("/newroot/{dir}");
        if !Path::new(&target).is_dir() {
            mkdir(&target, 0o755)?;
        }
        sys::move_mount(&format!("/{dir}"), &target)
            .with_context(|| format!("cannot move /{dir} into the new root"))?;
    }
    std::env::set_current_dir("/newroot").context("cannot enter /newroot")?;
    match fs::symlink_metadata("/") {
        Ok(meta) => free_initramfs(Path::new("/"), meta.dev()),
        Err(e) => alert!("cannot stat the initramfs to free it: {e}"),
    }
    sys::move_mount(".", "/").context("cannot move the new root onto /")?;
    sys::chroot(".").context("cannot chroot into the new root")?;
    std::env::set_current_dir("/").context("cannot enter the new root")?;
    Ok(())
}

/// What containers expect under /dev and /sys (as runc sets up, minus its bind mounts).
pub fn container_mounts() -> Result<()> {
    mkdir("/dev/pts", 0o755)?;
    mount(
        "devpts",
        "/dev/pts",
        "devpts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("gid=5,mode=0620,ptmxmode=0666"),
    )?;
    mkdir("/dev/shm", 0o1777)?;
    mount(
        "shm",
        "/dev/shm",
        "tmpfs",
        NOSUID_NODEV_NOEXEC,
        Some("mode=1777"),
    )?;
    mkdir("/dev/mqueue", 0o755)?;
    if let Err(e) = sys::mount("mqueue", "/dev/mqueue", "mqueue", NOSUID_NODEV_NOEXEC, None) {
        info!("no mqueue filesystem: {e}");
    }
    if Path::new("/sys/fs/cgroup").is_dir()
        && let Err(e) = sys::mount(
            "cgroup2",
            "/sys/fs/cgroup",
            "cgroup2",
            NOSUID_NODEV_NOEXEC,
            None,
        )
    {
        alert!("cannot mount cgroup2 on /sys/fs/cgroup: {e}");
    }
    for (link, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
        ("/dev/core", "/proc/kcore"),
    ] {
        if fs::symlink_metadata(link).is_err() {
            let _ = symlink(target, link);
        }
    }
    // devtmpfs already has /dev/ptmx; point it at this devpts instance as runc does.
    let _ = fs::remove_file("/dev/ptmx");
    let _ = symlink("pts/ptmx", "/dev/ptmx");
    Ok(())
}

/// Detaches every mount but / (nothing persistent is mounted; this is for tidiness and for a
/// future writable volume). Call after every process is gone.
pub fn unmount_all() {
    let Ok(mounts) = fs::read_to_string("/proc/self/mounts") else {
        return;
    };
    let targets: Vec<String> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .map(|t| t.replace("\\040", " "))
        .filter(|t| t != "/")
        .collect();
    for target in targets.iter().rev() {
        if target == "/proc" || target == "/sys" || target == "/dev" {
            continue;
        }
        let _ = sys::unmount_detach(target);
    }
}
