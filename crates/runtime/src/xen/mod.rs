//! The Xen backend: each zone is a PV domain built by `spore-xen` (no xl, libxl or libxc),
//! with its devices wired through xenstore and its two consoles served by this process.
//!
//! - xvda = the root image and xvdb = the config block, each a read-only loop device served
//!   by the kernel's blkback;
//! - hvc0 = the start_info console ring, hvc1 = a second PV console (`device/console/1`, the
//!   guest's hvc_xen frontend) carrying IDM; both rings are mapped through grants and pumped
//!   by tasks of this process ([`spore_xen::console`]);
//! - vif 0 (netback, `vif<domid>.0` in dom0) when the spec has a NIC.
//!
//! Domains outlive the process. Ownership lives in the hypervisor (domain handle = zone
//! UUID) and in dom0-owned xenstore keys ([`store`]), so a fresh backend lists, re-attaches
//! to and destroys what an earlier one created; no state is kept in files.
//!
//! By phase: [`create`] builds and starts a domain (and abandons it on failure), [`watch`]
//! waits for it to stop and for its IDM console, [`teardown`] takes it down, [`resources`]
//! changes a running one. The blocking core is generic over the seams in [`platform`]
//! ([`Dom0`] in production, in-memory doubles in the unit tests).

mod config;
mod create;
mod platform;
mod resources;
mod status;
mod store;
mod teardown;
#[cfg(test)]
mod tests;
mod watch;
mod zone;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use spore_xen::{EvtChn, GntDev, PrivCmd, XenError};
use uuid::Uuid;

use crate::boot_files::BootFiles;
use crate::probe::BackendKind;
use crate::sync::lock;
use crate::{
    Backend, ByteStream, LaunchSpec, Resources, Result, RuntimeError, VmInfo, VmLimits, VmStop,
};
pub use config::{BOOT_HEADROOM_MIB, FALLBACK_MIN_MEMORY_MIB, MAX_VCPUS, XenConfig};
pub use platform::{
    AttachDisk, Disk, Dom0, GrantRings, LoopDisks, Parts, Platform, ServeRings, XsConnect, XsSocket,
};
use zone::Zone;

/// The Xen backend, on the real dom0 unless the unit tests give it doubles.
#[derive(Debug)]
pub struct XenBackend<P: Platform = Dom0> {
    inner: Arc<Inner<P>>,
}

impl<P: Platform> Clone for XenBackend<P> {
    fn clone(&self) -> Self {
        XenBackend {
            inner: self.inner.clone(),
        }
    }
}

#[derive(Debug)]
struct Inner<P: Platform> {
    config: XenConfig,
    /// `spore/owner` of our domains.
    owner: String,
    /// `major.minor`.
    xen_version: String,
    hv: P::Hv,
    xs: P::Xs,
    disks: P::Disks,
    rings: P::Rings,
    boot_files: BootFiles,
    min_memory_mib: u64,
    zones: Mutex<HashMap<Uuid, Arc<Zone>>>,
}

/// Wraps an error of `spore-xen` with what was being done.
fn xen(context: impl Into<String>) -> impl FnOnce(XenError) -> RuntimeError {
    let context = context.into();
    move |e| RuntimeError::Backend {
        context,
        source: Box::new(e),
    }
}

fn unavailable(detail: String) -> RuntimeError {
    RuntimeError::Unavailable {
        kind: BackendKind::Xen,
        detail,
    }
}

/// `e` with its causes, for [`RuntimeError::Unavailable`], whose text is all spored shows:
/// the OS error under a failed open (no such device, or permission denied) says which fix
/// applies.
fn with_causes(e: &XenError) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text = format!("{text}: {c}");
        cause = c.source();
    }
    text
}

impl XenBackend<Dom0> {
    /// Opens the hypervisor, xenstore, grant and event channel devices and checks that
    /// blkback and loop devices are there (blocking). [`RuntimeError::Unavailable`] says what
    /// is missing when this is not a usable dom0.
    pub fn new(config: XenConfig) -> Result<XenBackend> {
        let hv = PrivCmd::open().map_err(|e| unavailable(with_causes(&e)))?;
        XsSocket.connect().map_err(|e| {
            unavailable(format!(
                "xenstored does not answer ({}): start xenstored",
                with_causes(&e)
            ))
        })?;
        let gnt = GntDev::open().map_err(|e| unavailable(with_causes(&e)))?;
        EvtChn::open().map_err(|e| unavailable(with_causes(&e)))?;
        for (path, fix) in [
            ("/dev/loop-control", "load the loop module (modprobe loop)"),
            (
                "/sys/bus/xen-backend/drivers/vbd",
                "load blkback (modprobe xen-blkback)",
            ),
        ] {
            if !Path::new(path).exists() {
                return Err(unavailable(format!("{path} is missing: {fix}")));
            }
        }
        let v = hv.version();
        let parts = Parts {
            hv,
            xs: XsSocket,
            disks: LoopDisks,
            rings: GrantRings { gnt },
        };
        XenBackend::with_parts(config, parts, format!("{}.{}", v.major, v.minor))
    }
}

impl<P: Platform> XenBackend<P> {
    /// A backend over `parts` (blocking: reads the guest bundle for its memory floor).
    fn with_parts(config: XenConfig, parts: Parts<P>, xen_version: String) -> Result<Self> {
        std::fs::create_dir_all(&config.zones_root).map_err(|e| {
            RuntimeError::io(format!("cannot create {}", config.zones_root.display()), e)
        })?;
        let owner = config.zones_root.display().to_string();
        let boot_files = BootFiles::new(config.kernel_cache.clone());
        let min_memory_mib = create::bundle_min_mib(&boot_files, &config);
        tracing::info!(xen = %xen_version, min_memory_mib, "Xen backend ready");
        Ok(XenBackend {
            inner: Arc::new(Inner {
                config,
                owner,
                xen_version,
                hv: parts.hv,
                xs: parts.xs,
                disks: parts.disks,
                rings: parts.rings,
                boot_files,
                min_memory_mib,
                zones: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The hypervisor's version, `major.minor`.
    pub fn xen_version(&self) -> String {
        self.inner.xen_version.clone()
    }

    /// Runs blocking Xen work (hypercalls, the blocking xenstore client, loop ioctls) off
    /// the async workers.
    async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner<P>) -> T + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| RuntimeError::io("a Xen task failed", std::io::Error::other(e)))
    }

    /// `zone`'s domain as xenstore and the hypervisor show it, if we own one.
    async fn find(&self, zone: Uuid) -> Result<Option<store::Owned>> {
        self.blocking(move |i| i.find(zone))
            .await?
            .map_err(xen(format!("looking up the domain of zone {zone}")))
    }

    /// The zone's domain: known already, or re-adopted from the hypervisor and xenstore.
    async fn zone(&self, id: Uuid) -> Result<Arc<Zone>> {
        if let Some(z) = lock(&self.inner.zones).get(&id) {
            return Ok(z.clone());
        }
        let Some(owned) = self.find(id).await?.filter(|o| o.built) else {
            return Err(RuntimeError::NoSuchZone(id));
        };
        tracing::info!(zone = %id, domid = owned.domid, "re-adopted a Xen domain");
        let zone = Arc::new(Zone::adopted(owned.domid));
        Ok(lock(&self.inner.zones).entry(id).or_insert(zone).clone())
    }
}

impl<P: Platform> Inner<P> {
    fn find(&self, zone: Uuid) -> spore_xen::Result<Option<store::Owned>> {
        let mut xs = self.xs.connect()?;
        store::find(
            &self.hv,
            &mut xs,
            &self.owner,
            &self.config.zones_root,
            zone,
        )
    }
}

#[async_trait]
impl<P: Platform> Backend for XenBackend<P> {
    fn kind(&self) -> BackendKind {
        BackendKind::Xen
    }

    fn limits(&self) -> VmLimits {
        VmLimits {
            min_memory_mib: self.inner.min_memory_mib,
            max_vcpus: MAX_VCPUS,
        }
    }

    async fn create(&self, spec: &LaunchSpec) -> Result<VmInfo> {
        self.launch(spec).await
    }

    async fn destroy(&self, zone_id: Uuid) -> Result<()> {
        let known = lock(&self.inner.zones).remove(&zone_id);
        let (domid, disks) = match known {
            Some(z) => {
                z.stop_channels().await;
                (Some(z.domid), z.take_disks())
            }
            None => (self.find(zone_id).await?.map(|o| o.domid), Vec::new()),
        };
        let t = self.inner.config.timeouts();
        self.blocking(move |i| teardown::teardown(&i.hv, &i.xs, zone_id, domid, disks, t))
            .await?
            .map_err(|detail| RuntimeError::Destroy {
                zone: zone_id,
                detail,
            })
    }

    async fn list(&self) -> Result<Vec<VmInfo>> {
        let owned = self
            .blocking(|i| {
                let mut xs = i.xs.connect()?;
                store::owned_domains(&i.hv, &mut xs, &i.owner, &i.config.zones_root)
            })
            .await?
            .map_err(xen("listing Xen domains"))?;
        let mut found: Vec<VmInfo> = owned
            .into_iter()
            .map(|o| VmInfo {
                zone_id: o.zone,
                handle: if o.built {
                    format!("domid {}", o.domid)
                } else {
                    format!("domid {} (half-built)", o.domid)
                },
                running: o.running,
            })
            .collect();
        found.sort_by_key(|d| d.zone_id);
        Ok(found)
    }

    async fn open_console(&self, zone_id: Uuid) -> Result<Box<dyn ByteStream>> {
        let zone = self.zone(zone_id).await?;
        let connect = self.connect_console(zone_id, zone.domid, None);
        let stream = zone.console.lock().await.open(connect).await?;
        Ok(Box::new(stream))
    }

    async fn open_idm(&self, zone_id: Uuid) -> Result<Box<dyn ByteStream>> {
        let zone = self.zone(zone_id).await?;
        let stream = zone
            .idm
            .lock()
            .await
            .open(self.connect_idm(zone_id, zone.domid))
            .await?;
        Ok(Box::new(stream))
    }

    async fn wait_stopped(&self, zone_id: Uuid) -> Result<VmStop> {
        let zone = self.zone(zone_id).await?;
        self.watch_stop(zone_id, zone.domid).await
    }

    async fn update_resources(&self, zone_id: Uuid, resources: Resources) -> Result<()> {
        let zone = self.zone(zone_id).await?;
        let domid = zone.domid;
        let min = self.inner.min_memory_mib;
        self.blocking(move |i| {
            let mut xs = i.xs.connect().map_err(xen(format!(
                "connecting to xenstored for the resources of domain {domid}"
            )))?;
            resources::set(&mut xs, zone_id, domid, resources, min)
        })
        .await?
    }
}

/// Fixtures shared by the unit tests of this backend's modules.
#[cfg(test)]
mod testing {
    use spore_xen::{DomId, DomainInfo};
    use uuid::Uuid;

    /// What the hypervisor reports of a running one-vCPU domain whose handle is `zone`.
    pub fn domain_info(domid: DomId, zone: Uuid, flags: u32) -> DomainInfo {
        DomainInfo {
            domid,
            flags,
            tot_pages: 0,
            max_pages: 0,
            shared_info_frame: 0,
            cpu_time_ns: 0,
            online_vcpus: 1,
            handle: *zone.as_bytes(),
        }
    }
}
