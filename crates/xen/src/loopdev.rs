//! Read-only loop devices for blkback, with our own `LOOP_CTL_GET_FREE` + `LOOP_CONFIGURE`
//! ioctls (no bindgen). Devices are configured with autoclear: the kernel detaches one when
//! its last user closes it, so a device held by blkback outlives us and still goes away with
//! the domain, and nothing leaks if we crash.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::sys::ioctl;
use crate::{Result, XenError};

/// An attached loop device; dropping it closes our handle (autoclear detaches the device
/// once blkback has closed it too).
#[derive(Debug)]
pub struct LoopDevice {
    pub path: PathBuf,
    pub number: u32,
    pub major: u32,
    pub minor: u32,
    file: File,
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> XenError {
    move |source| XenError::Io { what, source }
}

impl LoopDevice {
    /// Attaches `image` read-only to a free loop device.
    pub fn attach_read_only(image: &Path) -> Result<Self> {
        let backing = File::open(image).map_err(io(format!("opening {}", image.display())))?;
        let ctl = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open("/dev/loop-control")
            .map_err(|source| XenError::Open {
                path: "/dev/loop-control".into(),
                source,
            })?;
        // Another process can take the free device between GET_FREE and CONFIGURE: retry.
        for _ in 0..16 {
            // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
            let n = unsafe { libc::ioctl(ctl.as_raw_fd(), ioctl::LOOP_CTL_GET_FREE) };
            if n < 0 {
                return Err(XenError::Ioctl {
                    what: "LOOP_CTL_GET_FREE",
                    source: std::io::Error::last_os_error(),
                });
            }
            let path = PathBuf::from(format!("/dev/loop{n}"));
            let dev = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(&path)
                .map_err(|source| XenError::Open {
                    path: path.clone(),
                    source,
                })?;
            let mut info = ioctl::LoopInfo64 {
                lo_device: 0,
                lo_inode: 0,
                lo_rdevice: 0,
                lo_offset: 0,
                lo_sizelimit: 0,
                lo_number: 0,
                lo_encrypt_type: 0,
                lo_encrypt_key_size: 0,
                lo_flags: ioctl::LO_FLAGS_READ_ONLY | ioctl::LO_FLAGS_AUTOCLEAR,
                lo_file_name: [0; ioctl::LO_NAME_SIZE],
                lo_crypt_name: [0; ioctl::LO_NAME_SIZE],
                lo_encrypt_key: [0; 32],
                lo_init: [0; 2],
            };
            let name = image.as_os_str().as_encoded_bytes();
            let k = name.len().min(ioctl::LO_NAME_SIZE - 1);
            info.lo_file_name[..k].copy_from_slice(&name[..k]);
            let cfg = ioctl::LoopConfig {
                fd: backing.as_raw_fd() as u32,
                block_size: 0,
                info,
                reserved: [0; 8],
            };
            // SAFETY: LOOP_CONFIGURE reads a loop_config from the live `cfg`.
            let rc = unsafe { libc::ioctl(dev.as_raw_fd(), ioctl::LOOP_CONFIGURE, &cfg) };
            if rc < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EBUSY) {
                    continue;
                }
                return Err(XenError::Ioctl {
                    what: "LOOP_CONFIGURE",
                    source: e,
                });
            }
            let rdev = dev
                .metadata()
                .map_err(io(format!("stat {}", path.display())))?
                .rdev();
            return Ok(Self {
                path,
                number: n as u32,
                major: libc::major(rdev),
                minor: libc::minor(rdev),
                file: dev,
            });
        }
        Err(XenError::Io {
            what: "finding a free loop device".into(),
            source: std::io::Error::from_raw_os_error(libc::EBUSY),
        })
    }

    /// Detaches now (fails with EBUSY while blkback still has it open; autoclear then
    /// detaches it when blkback lets go).
    pub fn detach(self) -> Result<()> {
        // SAFETY: LOOP_CLR_FD takes no argument.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), ioctl::LOOP_CLR_FD) };
        if rc < 0 {
            return Err(XenError::Ioctl {
                what: "LOOP_CLR_FD",
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// `major:minor` in hex, as blkback's `physical-device` node wants it.
    pub fn physical_device(&self) -> String {
        format!("{:x}:{:x}", self.major, self.minor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sysfs(n: u32, attr: &str) -> Option<String> {
        std::fs::read_to_string(format!("/sys/block/loop{n}/{attr}"))
            .ok()
            .map(|s| s.trim().to_string())
    }

    #[test]
    fn attaches_read_only_and_autoclears() {
        if !Path::new("/dev/loop-control").exists() {
            panic!("/dev/loop-control is missing: load the loop module (modprobe loop)");
        }
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        std::fs::write(&img, vec![0x5a; 1 << 20]).unwrap();
        let dev = LoopDevice::attach_read_only(&img).unwrap();
        let n = dev.number;
        assert_eq!(sysfs(n, "ro").as_deref(), Some("1"));
        assert_eq!(sysfs(n, "loop/autoclear").as_deref(), Some("1"));
        assert_eq!(
            sysfs(n, "loop/backing_file").as_deref(),
            Some(img.to_str().unwrap())
        );
        assert_eq!(dev.major, 7);
        assert_eq!(dev.physical_device(), format!("7:{:x}", dev.minor));
        // The device is read-only: writing to it fails.
        use std::io::Write;
        let w = OpenOptions::new()
            .write(true)
            .open(&dev.path)
            .and_then(|mut f| f.write_all(&[0; 512]).and_then(|_| f.sync_all()));
        assert!(w.is_err(), "wrote to a read-only loop device");
        drop(dev);
        let mut gone = false;
        for _ in 0..100 {
            if sysfs(n, "loop/backing_file").is_none() {
                gone = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(gone, "loop{n} still attached after the last close");
    }
}
