//! The seams between the backend and dom0: the hypervisor (`spore_xen::Hypervisor`, the
//! builder's seam), a blocking xenstore connection ([`XsConnect`]), disks for the guest
//! ([`AttachDisk`]) and the console rings this process serves ([`ServeRings`]). [`Dom0`] is
//! the real set: privcmd, the xenstored socket, loop devices and grant mappings. The unit
//! tests drive the same backend code over in-memory doubles, so create's cleanup and the
//! teardown order are checked without Xen.

use std::fmt::Debug;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use spore_xen::console::ConsoleBackend;
use spore_xen::loopdev::LoopDevice;
use spore_xen::xs::{AsyncXs, Transport, XsClient};
use spore_xen::{DomId, GntDev, Hypervisor, PrivCmd, devices};

use super::zone::Connected;

/// Opens blocking xenstore connections, one per piece of blocking work.
pub trait XsConnect: Debug + Send + Sync + 'static {
    type Io: Read + Write;
    fn connect(&self) -> spore_xen::Result<XsClient<Self::Io>>;
}

/// A read-only disk given to a guest through blkback. Dropping it releases this process's
/// hold; the kernel detaches it once blkback has let go too (autoclear).
pub trait Disk: Debug + Send {
    /// `major:minor` in hex, the vbd's `physical-device`.
    fn physical_device(&self) -> String;
    /// The device node, the vbd's `params`.
    fn device_path(&self) -> String;
}

/// Makes [`Disk`]s of image files.
pub trait AttachDisk: Debug + Send + Sync + 'static {
    fn attach_read_only(&self, image: &Path) -> spore_xen::Result<Box<dyn Disk>>;
}

/// Serves a guest's console rings from this process: maps a ring and starts its pump.
#[async_trait]
pub trait ServeRings: Debug + Send + Sync + 'static {
    /// Console 0: grant reference 0, seeded by the builder, and event channel `port`.
    fn primary(&self, domid: DomId, port: u32) -> spore_xen::Result<Connected>;
    /// Console `devid`, once the guest's frontend has published its ring (a watch on `xs`,
    /// bounded by `timeout`).
    async fn secondary(
        &self,
        xs: &AsyncXs,
        domid: DomId,
        devid: u32,
        timeout: Duration,
    ) -> spore_xen::Result<Connected>;
}

/// A set of seams the backend runs on.
pub trait Platform: Debug + Send + Sync + 'static {
    type Hv: Hypervisor + Debug + Send + Sync + 'static;
    type Xs: XsConnect;
    type Disks: AttachDisk;
    type Rings: ServeRings;
}

/// One value of each seam of `P`.
#[derive(Debug)]
pub struct Parts<P: Platform> {
    pub hv: P::Hv,
    pub xs: P::Xs,
    pub disks: P::Disks,
    pub rings: P::Rings,
}

/// The real dom0: privcmd, xenstored, loop devices, grant mappings.
#[derive(Debug)]
pub struct Dom0;

impl Platform for Dom0 {
    type Hv = PrivCmd;
    type Xs = XsSocket;
    type Disks = LoopDisks;
    type Rings = GrantRings;
}

/// xenstored's socket (or `/dev/xen/xenbus`).
#[derive(Debug)]
pub struct XsSocket;

impl XsConnect for XsSocket {
    type Io = Transport;
    fn connect(&self) -> spore_xen::Result<XsClient<Transport>> {
        XsClient::open()
    }
}

/// Read-only loop devices with autoclear.
#[derive(Debug)]
pub struct LoopDisks;

impl AttachDisk for LoopDisks {
    fn attach_read_only(&self, image: &Path) -> spore_xen::Result<Box<dyn Disk>> {
        Ok(Box::new(LoopDevice::attach_read_only(image)?))
    }
}

impl Disk for LoopDevice {
    fn physical_device(&self) -> String {
        LoopDevice::physical_device(self)
    }
    fn device_path(&self) -> String {
        self.path.display().to_string()
    }
}

/// Rings mapped through `/dev/xen/gntdev`.
#[derive(Debug)]
pub struct GrantRings {
    pub gnt: GntDev,
}

#[async_trait]
impl ServeRings for GrantRings {
    fn primary(&self, domid: DomId, port: u32) -> spore_xen::Result<Connected> {
        Ok(ConsoleBackend::connect_primary(&self.gnt, domid, port)?.spawn())
    }

    async fn secondary(
        &self,
        xs: &AsyncXs,
        domid: DomId,
        devid: u32,
        timeout: Duration,
    ) -> spore_xen::Result<Connected> {
        let backend = devices::connect_console_async(xs, &self.gnt, domid, devid, timeout).await?;
        Ok(backend.spawn())
    }
}
